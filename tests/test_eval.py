"""``longvid eval synth``: the question set, the statistics, the results folder, and errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from longvid.cli import app
from longvid.synth import KINDS, split_of
from longvid.eval.synth import EvalSettings, clustered_se, parse_letter, run_eval, select_questions


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


def test_run_eval_writes_its_folder_and_the_same_command_finds_it(untrained_tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("LONGVID_CACHE_DIR", str(tmp_path / "cache"))
    settings = EvalSettings(methods=["full", "evs", "fastv"], keeps=[0.5], lengths=[30.0], n=1, seed=3,
                            model=str(untrained_tiny), out=str(tmp_path / "out"))
    first = run_eval(settings, log=lambda _: None)
    samples = (first / "samples.jsonl").read_text()
    logged = []
    second = run_eval(settings, log=logged.append)
    assert second == first and (first / "samples.jsonl").read_text() == samples  # complete: nothing re-run
    assert logged == [f"{first} is complete"]
    other = run_eval(EvalSettings(methods=["full"], lengths=[30.0], n=1, seed=3, model=str(untrained_tiny),
                                  out=str(tmp_path / "out")), log=lambda _: None)
    assert other != first and other.parent == first.parent
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


class Interrupt(Exception):
    pass


def test_an_interrupted_eval_continues_where_it_stopped(untrained_tiny, tmp_path, monkeypatch):
    """Stopped after its second unit (and with a torn last line, as a kill mid-write leaves), the same settings
    continue: every row once, the same answers as an uninterrupted run."""
    monkeypatch.setenv("LONGVID_CACHE_DIR", str(tmp_path / "cache"))
    kwargs = dict(methods=["full", "evs", "fastv"], keeps=[0.5], lengths=[30.0], n=1, seed=3,
                  model=str(untrained_tiny))
    whole = run_eval(EvalSettings(**kwargs, out=str(tmp_path / "whole")), log=lambda _: None)

    def stop_after_two(done, total):
        if done >= 12:
            raise Interrupt

    settings = EvalSettings(**kwargs, out=str(tmp_path / "out"))
    with pytest.raises(Interrupt):
        run_eval(settings, log=lambda _: None, progress=stop_after_two)
    folder = next((tmp_path / "out").iterdir())
    assert len((folder / "samples.jsonl").read_text().splitlines()) == 12
    with open(folder / "samples.jsonl", "a") as f:
        f.write('{"video": "synth_')  # a row cut short by a kill
    logged, seen = [], []
    again = run_eval(settings, log=logged.append, progress=lambda d, t: seen.append(d))
    assert again == folder and logged[0] == f"continuing {folder}: 6 of 18 answers left"
    assert seen == [18]
    rows = [json.loads(line) for line in open(folder / "samples.jsonl")]
    reference = [json.loads(line) for line in open(whole / "samples.jsonl")]
    key = lambda r: (r["video"], r["method"], r["kind"])  # noqa: E731
    assert sorted(map(key, rows)) == sorted(map(key, reference)) and len(set(map(key, rows))) == 18
    answers = {key(r): r["answer"] for r in reference}
    assert all(answers[key(r)] == r["answer"] for r in rows)


@pytest.mark.parametrize("args, message", [
    (["--methods", "full,nope"], "--methods full,nope has unknown methods (nope)"),
    (["--keep", "0"], "every keep ratio must be in (0, 1]"),
    (["--keep", "a,b"], "comma-separated list of float"),
    (["--length", "5"], "must be in [12, 3600] seconds"),
    (["--n", "0"], "positive number of questions per kind"),
])
def test_eval_synth_bad_input_is_one_line(args, message, tmp_path):
    result = CliRunner().invoke(app, ["eval", "synth", "--out", str(tmp_path), *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # nothing written
