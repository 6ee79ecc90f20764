"""lmms-eval end to end, offline, with ``--model longvid`` (the plugin registered through lmms-eval's
``lmms_eval.models`` entry point) on a local task over generated videos, through lmms-eval's own CLI.

lmms-eval lives in its own venv (``.venv-lmms``, made by ``.ci/lmms-venv``; ``.ci/run`` makes it): installed without
its dependencies (they would pull torchvision and a CUDA torch, and downgrade av), plus what its CLI path imports:
accelerate, datasets, evaluate, sacrebleu, loguru, tenacity, pytz, pytablewriter and filelock<4. Skipped when that
venv is missing (``LONGVID_LMMS_PYTHON`` may name another interpreter).

    bash .ci/lmms-venv && pytest tests/test_lmms_eval.py -q
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON = os.environ.get("LONGVID_LMMS_PYTHON") or str(ROOT / ".venv-lmms" / "bin" / "python")
pytestmark = pytest.mark.skipif(not Path(PYTHON).is_file(), reason="no lmms-eval venv: run bash .ci/lmms-venv")


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    from longvid.eval.lmms_task import write_synth_task

    return write_synth_task(tmp_path_factory.mktemp("lmms") / "synth", n_videos=2, length=30, seed=7)


def test_lmms_eval_runs_longvid_end_to_end(task, tmp_path, bundled):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
               TOKENIZERS_PARALLELISM="false")
    r = subprocess.run([PYTHON, "-m", "lmms_eval", "--model", "longvid", "--model_args",
                        "pretrained=longvid-tiny,method=evs,keep=0.5,fps=1", "--tasks", "longvid_synth",
                        "--include_path", str(task / "task"), "--batch_size", "1", "--limit", "6", "--log_samples",
                        "--output_path", str(tmp_path / "out")], capture_output=True, text=True, timeout=900,
                       env=env, cwd=tmp_path)
    found = list((tmp_path / "out").rglob("*_results.json"))  # lmms-eval exits 0 after logging an error
    assert r.returncode == 0 and found, r.stderr[-3000:]
    results = json.loads(found[0].read_text())
    samples = [json.loads(line) for line in open(next((tmp_path / "out").rglob("*samples_longvid_synth*.jsonl")))]
    assert len(samples) == 6
    questions = [json.loads(line) for line in open(task / "videos" / "questions.jsonl")][:6]
    for sample, q in zip(sorted(samples, key=lambda s: s["doc_id"]), questions):  # the library's answers, exactly
        expected = bundled.ask(task / "videos" / q["video"], q["question"], method="evs", keep=0.5, fps=1,
                               max_new_tokens=4).text
        assert sample["filtered_resps"] == expected
    letters = [re.search(r"\b([ABCD])\b", s["filtered_resps"]) for s in samples]  # as the task scores
    accuracy = sum(m is not None and m.group(1) == s["target"] for m, s in zip(letters, samples)) / 6
    assert results["results"]["longvid_synth"]["accuracy,none"] == pytest.approx(accuracy)
    assert results["throughput"]["avg_retention"] == pytest.approx(0.5, abs=0.01)  # each video within one token
    assert results["throughput"]["avg_ttft"] > 0
