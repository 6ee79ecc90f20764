"""``longvid eval NAME --data DIR`` end to end on a Video-MME-layout fixture with longvid-tiny: the rows equal the
library's answers, full and the controls are always run, the table has paired deltas and categories, and a run
cut at any byte continues to the same samples as an uninterrupted one.

    pytest tests/test_eval_runner.py -q
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

STABLE = ("video_path", "method", "keep", "qid", "categories", "answer", "reply", "truth", "correct", "retention",
          "visual_tokens", "kept_tokens", "llm_tokens", "kv_bytes")


@pytest.fixture(scope="module")
def videomme(tmp_path_factory, video_path):
    root = tmp_path_factory.mktemp("videomme")
    rows = []
    for v, duration in (("vidA", "short"), ("vidB", "long")):
        (root / "data").mkdir(exist_ok=True)
        shutil.copy(video_path, root / "data" / f"{v}.mp4")
        for k, (question, answer) in enumerate((("What colour was the square?", "B"), ("Where did it move?", "D"))):
            rows.append(dict(video_id=v, duration=duration, domain="d", sub_category="s", url="u", videoID=v,
                             question_id=f"{v}-{k}", task_type=f"type{k}", question=question,
                             options=["A. red", "B. green", "C. blue", "D. right"], answer=answer))
    (root / "videomme").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), root / "videomme" / "test-00000-of-00001.parquet")
    return root


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "longvid", "eval", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


def stable(path):
    return [{k: row[k] for k in STABLE} for row in map(json.loads, open(path))]


def test_eval_videomme_end_to_end(videomme, tmp_path, bundled):
    from longvid.eval.readers import read_benchmark

    r = run("videomme", "--data", videomme, "--methods", "evs", "--keep", "0.5", "--fps", 2, "--max-new-tokens", 4,
            "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    folder = next(tmp_path.iterdir())
    rows = [json.loads(line) for line in open(folder / "samples.jsonl")]
    assert sorted({(x["method"], x["keep"]) for x in rows}) == [("evs", 0.5), ("full", None), ("random", 0.5),
                                                                  ("uniform", 0.5)]
    assert len(rows) == 4 * 4  # 4 questions x (full, evs, uniform, random)
    bench = read_benchmark("videomme", videomme)
    for q in bench.questions:  # full's rows are the library's answers to the benchmark's prompt
        row = next(x for x in rows if x["qid"] == q.qid and x["method"] == "full")
        assert row["reply"] == bundled.ask(q.video, bench.prompt(q), fps=2, max_new_tokens=4).text
    evs = next(x for x in rows if x["method"] == "evs")
    assert 0 < evs["retention"] < 1 and evs["categories"]["duration"] in ("short", "long")
    table = (folder / "table.md").read_text()
    assert "| full | - | 4 |" in table and "| evs | 0.5 | 4 |" in table and "delta vs full" in table
    assert "Accuracy % by duration (n):" in table and "| method | keep | short (2) | long (2) |" in table
    assert "Runner overhead:" in table and (folder / "accuracy_vs_retention.png").stat().st_size > 0
    summary = json.loads((folder / "summary.json").read_text())
    full = next(x for x in summary["runs"] if x["method"] == "full")
    assert full["delta"] is None and all(x["delta"]["n"] == 4 for x in summary["runs"] if x["method"] != "full")
    again = run("videomme", "--data", videomme, "--methods", "evs", "--keep", "0.5", "--fps", 2, "--max-new-tokens",
                4, "--out", tmp_path)
    assert again.returncode == 0 and "is complete" in again.stderr and len(list(tmp_path.iterdir())) == 1


def test_a_run_cut_anywhere_continues_to_the_same_samples(videomme, tmp_path):
    args = ("videomme", "--data", videomme, "--methods", "knorm", "--keep", "0.5", "--fps", 2, "--max-new-tokens", 4)
    whole = run(*args, "--out", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    reference = stable(next((tmp_path / "whole").iterdir()) / "samples.jsonl")
    cut = run(*args, "--out", tmp_path / "cut")
    folder = next((tmp_path / "cut").iterdir())
    data = (folder / "samples.jsonl").read_bytes()
    at = random.Random(0).randrange(1, len(data) - 1)  # a kill at any byte: mid-row, mid-unit
    (folder / "samples.jsonl").write_bytes(data[:at])
    resumed = run(*args, "--out", tmp_path / "cut")
    assert cut.returncode == 0 and resumed.returncode == 0, resumed.stderr
    assert "continuing" in resumed.stderr
    assert stable(folder / "samples.jsonl") == reference


@pytest.mark.parametrize("args, words", [
    (["--data", "/nonexistent"], "is not a folder"),
    (["--methods", "nope"], "--methods nope has unknown methods"),
    (["--keep", "2"], "--keep 2.0 is invalid"),
    (["--fps", "1", "--frames", "8"], "--fps 1.0 and --frames 8 both set the sampling"),
    (["--shard", "3/2"], "--shard 3/2 is invalid"),
    (["--limit", "0"], "--limit 0 is invalid"),
])
def test_bad_eval_options_are_one_line(videomme, tmp_path, args, words):
    base = {"--data": str(videomme)}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    r = run("videomme", *[x for kv in base.items() for x in kv], "--out", tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and words in r.stderr, r.stderr
    assert not any(tmp_path.iterdir())  # nothing written
