"""``longvid eval synth``: the question set, the statistics, the results folder, and errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from longvid.cli import app
from longvid.synth import KINDS, split_of
from longvid.synth.evaluate import EvalSettings, clustered_se, parse_letter, run_eval, select_questions


def test_select_questions_takes_n_per_kind_from_eval_seeds_only():
    n_videos, rows = select_questions(30.0, 7, seed=5)
    counts = {k: sum(r["kind"] == k for r in rows) for k in KINDS}
    assert counts == dict.fromkeys(KINDS, 7)
    seeds = {int(r["video_id"].split("_")[1]) for r in rows}
    assert all(split_of(s) == "eval" for s in seeds) and len(seeds) == n_videos
    assert select_questions(30.0, 7, seed=5) == (n_videos, rows)  # deterministic
    assert select_questions(30.0, 7, seed=6)[1] != rows  # another seed, another hold-out set


def test_clustered_se_by_hand():
    # one question per video: CR1 = sqrt(G / (G - 1)) * population SD / sqrt(N)
    x = [1, 0, 1, 1, 0, 1, 1, 1]
    expected = math.sqrt(8 / 7) * np.std(x) / math.sqrt(8)
    assert clustered_se(x, range(8)) == pytest.approx(expected)
    # two videos, all-or-nothing: the SE is that of two observations, far wider than the binomial SE of eight
    x, videos = [1, 1, 1, 1, 0, 0, 0, 0], ["a"] * 4 + ["b"] * 4
    assert clustered_se(x, videos) == pytest.approx(math.sqrt(2 / 1 * (2 * 2**2)) / 8)
    assert clustered_se(x, videos) > math.sqrt(0.25 / 8)


def test_parse_letter():
    assert parse_letter(" B") == "B" and parse_letter("c.") == "C"
    assert parse_letter("E") is None and parse_letter("") is None and parse_letter("the answer") is None


def test_run_eval_writes_a_new_folder_every_time(untrained_tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("LONGVID_CACHE_DIR", str(tmp_path / "cache"))
    settings = EvalSettings(methods=["full", "evs", "fastv"], keeps=[0.5], lengths=[30.0], n=1, seed=3,
                            model=str(untrained_tiny), out=str(tmp_path / "out"))
    first = run_eval(settings, log=lambda _: None)
    second = run_eval(settings, log=lambda _: None)
    assert first != second and first.parent == second.parent
    rows = [json.loads(line) for line in open(first / "samples.jsonl")]
    assert len(rows) == 6 * 3  # 6 kinds, 1 question each, 3 runs
    need = {"video", "kind", "length", "method", "keep", "answer", "truth", "correct", "retention", "llm_tokens",
            "ttft", "peak_bytes"}
    assert all(need <= set(r) for r in rows)
    assert {r["method"] for r in rows} == {"full", "evs", "fastv"}
    for r in rows:
        assert r["correct"] == (r["answer"] == r["truth"])
        assert r["retention"] == pytest.approx(1.0 if r["method"] == "full" else 0.5, abs=0.05)
    table = (first / "table.md").read_text()
    assert "| 30 | evs | 0.5 | 6 |" in table and "accuracy" in table
    assert (first / "accuracy_vs_retention.png").read_bytes()[:4] == b"\x89PNG"
    assert [json.loads(line) for line in open(second / "samples.jsonl")] == [
        r | {"ttft": r2["ttft"], "seconds": r2["seconds"], "peak_bytes": r2["peak_bytes"]}
        for r, r2 in zip(rows, [json.loads(line) for line in open(second / "samples.jsonl")])]


@pytest.mark.parametrize("args, message", [
    (["--methods", "full,nope"], "unknown methods ['nope']"),
    (["--keep", "0"], "every keep ratio must be in (0, 1]"),
    (["--keep", "a,b"], "comma-separated list of float"),
    (["--length", "5"], "must be in [12, 3600] seconds"),
    (["--n", "0"], "positive number of questions per kind"),
])
def test_eval_synth_bad_input_is_one_line(args, message, tmp_path):
    result = CliRunner().invoke(app, ["eval", "synth", "--out", str(tmp_path), *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not any(tmp_path.iterdir())  # nothing written
