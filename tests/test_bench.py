"""``longvid bench``: the efficiency profiler prints a table and a JSON last line with every field, writes its files,
and builds random-weight models from a config (as for real-size configs on a GPU).

    pytest tests/test_bench.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys

FIELDS = {"tokens", "visual_tokens", "method", "keep", "retention", "kept_tokens", "llm_tokens", "kv_bytes",
          "decode_s", "vision_s", "reduce_s", "prefill_s", "ttft_s", "ms_per_token", "peak_bytes", "generated", "runs",
          "pre_llm", "text_tokens", "prefill_flops", "prefill_speedup", "ideal_speedup", "of_ideal"}


def bench(*args):
    return subprocess.run([sys.executable, "-m", "longvid", "bench", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_bench_on_the_tiny_model(tmp_path):
    r = bench("--model", "longvid-tiny", "--tokens", 128, "--methods", "evs,knorm", "--keep", "0.5,default",
              "--runs", 1, "--warmup", 0, "--new-tokens", 2, "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert [(row["method"], row["keep"]) for row in result["rows"]] == [
        ("full", None), ("evs", 0.5), ("evs", None), ("knorm", 0.5), ("knorm", None)]  # None: the preset's default
    rows = {row["method"]: row for row in result["rows"] if row["keep"] in (None, 0.5) and
            (row["method"] == "full" or row["keep"] == 0.5)}
    assert set(rows) == {"full", "evs", "knorm"} and all(set(row) == FIELDS for row in result["rows"])
    assert rows["full"]["visual_tokens"] >= 128 and rows["evs"]["retention"] == 0.5
    assert rows["evs"]["kv_bytes"] < rows["full"]["kv_bytes"] and rows["knorm"]["kv_bytes"] < rows["full"]["kv_bytes"]
    assert rows["evs"]["ideal_speedup"] > 1 and rows["knorm"]["ideal_speedup"] is None  # presses: no FLOP ideal
    assert "| visual tokens | method |" in r.stdout and "| evs | default |" in r.stdout
    assert {p.name for p in tmp_path.iterdir()} >= {"table.md", "results.json", "ttft_vs_tokens.png",
                                                     "peak_vs_tokens.png"}


def test_bench_builds_a_random_model_from_a_config(tmp_path):
    from longvid.tiny import tiny_config

    config = tmp_path / "config.json"
    tiny_config("qwen2_5_vl", num_layers=3, vision_depth=3).to_json_file(config)
    r = bench("--config", config, "--layers", 1, "--vision-layers", 1, "--tokens", 256, "--methods", "full",
              "--runs", 1, "--warmup", 0, "--new-tokens", 2, "--vs-generate", "--min-pixels", 112 * 112, "--max-pixels", 112 * 112,
              "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["family"] == "qwen2_5_vl" and result["layers"] == 1 and result["rows"][0]["visual_tokens"] >= 256
    full = result["rows"][0]  # transformers' own generate on the same prompt, longvid's preprocessing apart
    assert set(full) == FIELDS | {"generate_ttft_s", "ask_ttft_s", "preprocess_s", "vs_generate"}
    assert full["generate_ttft_s"] > 0 and full["vs_generate"] > 0 and "transformers s" in r.stdout
    assert full["visual_tokens"] % 16 == 0  # 112 x 112 frames: 4 x 4 merged tokens a temporal step


def test_bad_bench_options_are_one_line(tmp_path):
    for args, words in ((["--model", "longvid-tiny", "--tokens", "0"], "--tokens 0 is invalid"),
                        (["--tokens", "64"], "pass one of --model"),
                        (["--model", "longvid-tiny", "--methods", "nope"], "--methods nope has unknown methods"),
                        (["--model", "longvid-tiny", "--keep", "abc"], "is not a comma-separated list of ratios"),
                        (["--config", tmp_path / "none.json"], "cannot be read as a model config"),
                        (["--model", "longvid-tiny", "--max-pixels", "0"], "--max-pixels 0 is invalid")):
        r = bench(*args, "--out", tmp_path / "o")
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and words in r.stderr, r.stderr
        assert not (tmp_path / "o").exists()  # nothing written
