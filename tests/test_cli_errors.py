"""Every bad input to every command: one ``error:`` line on stderr, exit code 2, worded in the CLI's flags (no
``fps=``, ``None`` or class names), and nothing written. Ctrl-C is one ``interrupted`` line, exit code 130.

    pytest tests/test_cli_errors.py -q
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from longvid.cli import app

runner = CliRunner()
PYTHONISMS = re.compile(r"(?<!--set )(?<![\w.-])\w+=\S|\bNone\b|\['|, got \b|\b[A-Z][a-z]+[A-Z][A-Za-z]*(Error|Prune|"
                        r"Merge|Press|Frames|Drop|Select|KV)\b")  # keyword=value outside --set, None, lists, class names


def run(*args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


def one_line_error(result, *expected: str) -> str:
    """The single stderr line of a failed run, after checking the exit code, the wording and the expected parts."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    assert not PYTHONISMS.search(lines[0]), f"Python API wording in a CLI message: {lines[0]}"
    for part in expected:
        assert part in lines[0], (part, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def model(tiny_dirs):
    return str(tiny_dirs["qwen2_vl"])


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    pixels = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    for ext in ("png", "jpg"):
        Image.fromarray(pixels).save(root / f"still.{ext}")
    return root


@pytest.mark.parametrize("args, expected", [
    (["--set", "foo=1"], ["method 'full' has no setting 'foo' (--set foo=1)"]),
    (["--set", "prunevid.layer=999"], ["--set prunevid.layer=999 is a setting of method 'prunevid', but --method is "
                                       "'full'"]),
    (["--method", "prunevid", "--set", "layer=999"], ["--set layer=999 is past the model's last decoder layer: it has "
                                                      "2 layers"]),
    (["--method", "prunevid", "--set", "layer=abc"], ["--set layer=abc is invalid: layer must be an integer"]),
    (["--method", "fastv", "--set", "keep=0.3"], ["keep is not a setting; pass --keep 0.3"]),
    (["--method", "evs", "--keep", "0.3", "--budget", "4"], ["pass --keep (got 0.3) or --budget (got 4), not both"]),
    (["--method", "prunevid-merge", "--keep", "0.3"], ["--keep/--budget do not apply"]),
    (["--max-pixels", "0"], ["--max-pixels 0 is invalid: it must be a positive integer"]),
    (["--min-pixels", "-1"], ["--min-pixels -1 is invalid"]),
    (["--min-pixels", "20000", "--max-pixels", "10000"], ["--min-pixels 20000 must not exceed --max-pixels 10000"]),
    (["--max-frames", "0"], ["--max-frames 0 is invalid"]),
    (["--frames", "0"], ["--frames 0 is invalid"]),
    (["--fps", "0"], ["--fps 0.0 is invalid"]),
    (["--fps", "nan"], ["--fps nan is invalid"]),
    (["--max-new-tokens", "0"], ["--max-new-tokens 0 is invalid"]),
    (["--chunk-size", "0"], ["--chunk-size 0 is invalid"]),
    (["--start", "-1"], ["--start -1.0 is invalid"]),
    (["--start", "2", "--end", "1"], ["--start 2.0 must be before --end 1.0"]),
    (["--start", "99"], ["--start 99.0 is outside", "which lasts 6.000 s"]),
    (["--frames", "999"], ["--frames 999 is more than the 60 frames in range"]),
    (["--fps", "100"], ["--fps 100.0 asks for 600 frames but only 60 are in range"]),
    (["--device", "gpu"], ["--device gpu is not a torch device"]),
    (["--dtype", "fp8"], ["--dtype fp8 is not a dtype"]),
    (["--attn", "nope"], ["--attn nope is not an attention implementation"]),
    (["--keep", "abc"], ["Invalid value for '--keep'"]),
    (["--kep", "0.3"], ["No such option: --kep"]),
])
def test_ask_bad_options(model, video_path, args, expected):
    one_line_error(run("ask", video_path, "What moves?", "--model", model, *args), *expected)


def test_ask_cuda_without_a_cuda_build(model, video_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    one_line_error(run("ask", video_path, "q?", "--model", model, "--device", "cuda"),
                   "--device cuda is not available", "--device cpu")


def test_ask_bad_videos(model, tmp_path, images):
    one_line_error(run("ask", tmp_path, "q?", "--model", model), "is a directory, not a video file")
    one_line_error(run("ask", "https://example.com/v.mp4", "q?", "--model", model), "is a URL", "download it first")
    one_line_error(run("ask", "", "q?", "--model", model), "the video path is empty")
    one_line_error(run("ask", tmp_path / "missing.mp4", "q?", "--model", model), "video file not found", "missing.mp4")
    one_line_error(run("ask", images / "still.png", "q?", "--model", model), "is an image (png), not a video")
    one_line_error(run("ask", images / "still.jpg", "q?", "--model", model), "is an image (jpeg), not a video")
    text = tmp_path / "notes.txt"
    text.write_text("not a video\n" * 20)
    one_line_error(run("ask", text, "q?", "--model", model), "is not a readable video")


def test_info_and_ask_agree_on_what_is_a_video(model, video_path, images):
    """info refuses what ask refuses, with the same line; what info accepts, ask answers with info's token count."""
    for bad in (images / "still.jpg", images / "still.png"):
        assert one_line_error(run("info", bad)) == one_line_error(run("ask", bad, "q?", "--model", model))
    info = json.loads(run("info", video_path, "--model", model, "--fps", 2, "--json").stdout)
    answer = json.loads(run("ask", video_path, "q?", "--model", model, "--fps", 2, "--max-new-tokens", 1,
                            "--json").stdout.strip().splitlines()[-1])
    assert answer["visual_tokens"] == info["visual_tokens"] and answer["frames_decoded"] == info["sampled_frames"]


def test_ask_bad_question_and_model(model, tiny_dirs, video_path, tmp_path):
    one_line_error(run("ask", video_path, "  ", "--model", model), "the question is empty")
    one_line_error(run("ask", video_path, "q?", "--model", tmp_path / "nope"), "no model checkpoint at", "--model")
    no_weights = tmp_path / "no-weights"
    shutil.copytree(tiny_dirs["qwen2_vl"], no_weights)
    (no_weights / "model.safetensors").unlink()
    one_line_error(run("ask", video_path, "q?", "--model", no_weights), "no weights in", "model.safetensors")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dirs["qwen2_vl"], broken)
    (broken / "config.json").write_text('{"model_type": "qwen2_vl",')
    one_line_error(run("ask", video_path, "q?", "--model", broken), f"{broken / 'config.json'} is not valid JSON",
                   "line 1")
    (broken / "config.json").write_text(json.dumps({"model_type": "llama"}))
    one_line_error(run("ask", video_path, "q?", "--model", broken), "unsupported model family 'llama'")


def test_ask_without_a_model_names_the_bundled_one(video_path, monkeypatch):
    monkeypatch.delenv("LONGVID_MODEL", raising=False)
    one_line_error(run("ask", video_path, "q?"), "no model: pass --model DIR", "--model longvid-tiny")


def test_the_bundled_model_loads_by_name(video_path):
    from longvid.models import BUNDLED_MODELS, resolve_model

    assert resolve_model("longvid-tiny") == BUNDLED_MODELS["longvid-tiny"]
    r = run("ask", video_path, "What colour?", "--model", "longvid-tiny", "--max-new-tokens", 1, "--json")
    assert r.exit_code == 0, r.output


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder on a read-only tmpfs (needs root and mount), else skipped."""
    path = tmp_path / "ro"
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("cannot mount a read-only tmpfs here")
    yield path
    subprocess.run(["umount", str(path)], check=True)


@pytest.fixture
def immutable_dir(tmp_path):
    """A folder with the immutable attribute (chattr +i; needs root on ext4/xfs), else skipped."""
    path = tmp_path / "immutable"
    path.mkdir()
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip("cannot set the immutable attribute here")
    yield path
    subprocess.run(["chattr", "-i", str(path)], check=True)


def unusable_outputs(tmp_path, request) -> list[tuple[Path, str]]:
    existing = tmp_path / "a-file"
    existing.write_text("x")
    cases = [(existing, "is a file, not a folder"), (existing / "below", "a parent of it is a file")]
    for fixture, why in (("read_only_dir", "Read-only file system"), ("immutable_dir", "Operation not permitted")):
        try:
            cases.append((request.getfixturevalue(fixture) / "out", why))
        except pytest.skip.Exception:
            pass
    return cases


def test_demo_out_unusable(tmp_path, request, monkeypatch):
    monkeypatch.setenv("LONGVID_CACHE_DIR", str(tmp_path / "cache"))
    for path, why in unusable_outputs(tmp_path, request):
        one_line_error(run("demo", "--seconds", 30, "--out", path), f"--out {path}", why)
    assert not (tmp_path / "cache").exists()


def test_eval_out_unusable(tmp_path, request, monkeypatch, untrained_tiny):
    monkeypatch.setenv("LONGVID_CACHE_DIR", str(tmp_path / "cache"))
    for path, why in unusable_outputs(tmp_path, request):
        one_line_error(run("eval", "synth", "--model", untrained_tiny, "--n", 1, "--length", 30, "--out", path),
                       f"--out {path}", why)
    assert not (tmp_path / "cache").exists()  # no suite written either


@pytest.mark.parametrize("args, expected", [
    (["--set", "full.foo=1"], ["method 'full' has no setting 'foo' (--set full.foo=1)"]),
    (["--methods", "prunevid", "--set", "prunevid.layer=9"], ["--set prunevid.layer=9 is past the model's last decoder "
                                                              "layer"]),
    (["--methods", "evs", "--set", "evs.seed=1"], ["method 'evs' has no setting 'seed'"]),
    (["--methods", "full", "--set", "evs.seed=1"], ["settings name methods that are not in --methods full: evs"]),
    (["--methods", "prunevid-merge", "--set", "prunevid-merge.cluster_ratio=0"],
     ["--set prunevid-merge.cluster_ratio=0 is invalid: it must be in (0, 1]"]),
    (["--fps", "0"], ["--fps 0.0 is invalid"]),
    (["--seed", "-1"], ["--seed -1 is invalid"]),
])
def test_eval_synth_bad_settings_write_nothing(args, expected, tmp_path, monkeypatch, untrained_tiny):
    monkeypatch.setenv("LONGVID_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "out"
    one_line_error(run("eval", "synth", "--model", untrained_tiny, "--n", 1, "--length", 30, "--out", out, *args),
                   *expected)
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_demo_bad_arguments(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGVID_CACHE_DIR", str(tmp_path))
    one_line_error(run("demo", "--seconds", 3), "--seconds 3.0 is invalid: it must be in [12, 3600]")
    one_line_error(run("demo", "--seed", -1), "--seed -1 is invalid")
    one_line_error(run("demo", "--model", tmp_path / "nope"), "no model checkpoint at")
    assert not any(tmp_path.iterdir())


def test_truncated_video_is_reported_in_one_line_and_in_the_json(model, tmp_path):
    from longvid.video import write_test_video

    full = write_test_video(tmp_path / "full.mp4", seconds=4, gop=10, faststart=True, preset="veryfast")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(Path(full).read_bytes()[: Path(full).stat().st_size // 2])
    r = run("ask", cut, "q?", "--model", model, "--frames", 10, "--max-new-tokens", 1, "--json")
    assert r.exit_code == 0, r.output
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "cut.mp4: decoding failed" in warnings[0] and "using" in warnings[0]
    assert not any("warnings.warn" in line or "UserWarning" in line for line in r.stderr.splitlines())
    d = json.loads(r.stdout.strip().splitlines()[-1])
    assert d["truncated"] is True and d["frames_planned"] == 10 and 0 < d["frames_decoded"] < 10
    assert len(r.stderr.strip().splitlines()) == 1  # the warning only: no second line about the same thing


def test_ctrl_c_during_start_up_is_one_line(video_path, tiny_dirs):
    """SIGINT while the command imports torch (where a KeyboardInterrupt inside torch's C++ once aborted the process)
    and loads the model: 'interrupted', exit code 130. The first delay leaves Python's own start-up (interpreter,
    runpy reading ``longvid/__main__.py``: 0.2 s was not always enough in a fresh venv that compiles its bytecode
    first), before which no code of ours can catch the signal; torch's import, the window this guards, comes after."""
    for delay in (0.4, 0.7, 1.0, 1.4):
        proc = subprocess.Popen([sys.executable, "-m", "longvid", "ask", str(video_path), "q?", "--model",
                                 str(tiny_dirs["qwen2_vl"])], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=dict(os.environ, COLUMNS="200"))
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        if proc.returncode == 0:  # the whole run finished before the signal: nothing to check at this delay
            continue
        assert proc.returncode == 130, (delay, proc.returncode, err)
        assert err.strip() == "interrupted", (delay, err)
