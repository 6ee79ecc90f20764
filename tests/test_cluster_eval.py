"""``longvid eval NAME --ray local --actors 2`` on a local Ray cluster of two CPU actors with longvid-tiny: the same
samples and table as one process, an actor killed by its process id mid-run has its unit retried on another with
nothing lost or written twice, and a driver stopped mid-run continues from samples.jsonl.

    pytest tests/test_cluster_eval.py -q
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

import pytest

pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

STABLE = ("video_path", "method", "keep", "qid", "categories", "answer", "reply", "truth", "correct", "retention",
          "visual_tokens", "kept_tokens", "llm_tokens", "kv_bytes")
VIDEOS = 6
ARGS = ("--methods", "evs", "--keep", "0.5", "--fps", 4, "--max-new-tokens", 6)


@pytest.fixture(scope="module")
def videomme(tmp_path_factory, video_path):
    root = tmp_path_factory.mktemp("videomme")
    (root / "data").mkdir()
    rows = []
    for i in range(VIDEOS):
        v = f"vid{i}"
        shutil.copy(video_path, root / "data" / f"{v}.mp4")
        for k, (question, answer) in enumerate((("What colour was the square?", "B"), ("Where did it move?", "D"))):
            rows.append(dict(video_id=v, duration=("short", "medium", "long")[i % 3], domain="d", sub_category="s",
                             url="u", videoID=v, question_id=f"{v}-{k}", task_type=f"type{k}", question=question,
                             options=["A. red", "B. green", "C. blue", "D. right"], answer=answer))
    (root / "videomme").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), root / "videomme" / "test-00000-of-00001.parquet")
    return root


def command(data, out, *extra):
    return [sys.executable, "-m", "longvid", "eval", "videomme", "--data", str(data), *map(str, ARGS), "--out",
            str(out), *map(str, extra)]


def run(data, out, *extra):
    r = subprocess.run(command(data, out, *extra), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return r


def rows_of(out: Path) -> list[dict]:
    folder = next(p for p in out.iterdir() if p.is_dir())
    return [json.loads(line) for line in open(folder / "samples.jsonl")]


def stable(rows) -> list[tuple]:
    return sorted(json.dumps({k: r[k] for k in STABLE}, sort_keys=True) for r in rows)


def table_without_timing(out: Path) -> list[str]:
    """table.md without the run's own lines (command, device, overhead) and the main table's TTFT and peak columns."""
    folder = next(p for p in out.iterdir() if p.is_dir())
    lines = [line for line in (folder / "table.md").read_text().splitlines()
             if not line.startswith(("Command:", "Device:", "Runner overhead:"))]
    header = next(i for i, line in enumerate(lines) if line.startswith("| method | keep | n |"))
    cols = [c.strip() for c in lines[header].split("|")]
    drop = {cols.index("TTFT ms"), cols.index("peak MiB")}
    i = header
    while i < len(lines) and lines[i].startswith("|"):
        lines[i] = "|".join(c for j, c in enumerate(lines[i].split("|")) if j not in drop)
        i += 1
    return lines


@pytest.fixture(scope="module")
def local_run(videomme, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    run(videomme, out)
    return out


def test_ray_run_equals_one_process(videomme, local_run, tmp_path):
    r = run(videomme, tmp_path, "--ray", "local", "--actors", 2)
    assert "ray: 6 units on 2 actors" in r.stderr, r.stderr
    assert re.search(r"driver overhead per unit \d+ ms", r.stderr)
    ray_rows, local_rows = rows_of(tmp_path), rows_of(local_run)
    assert len(ray_rows) == VIDEOS * 2 * 4  # questions x (full, evs, uniform, random)
    assert stable(ray_rows) == stable(local_rows)
    assert table_without_timing(tmp_path) == table_without_timing(local_run)
    folder = next(p for p in tmp_path.iterdir() if p.is_dir())
    assert json.loads((folder / "config.json").read_text())["device"].startswith("ray: 2 actors (cpu@")


def actor_pids(running_only: bool) -> list[int]:
    """Process ids of this machine's Ray eval actors (Ray titles them ``ray::EvalActor[.method]``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title.startswith("ray::EvalActor") and (not running_only or title.startswith("ray::EvalActor.run")):
            pids.append(int(entry.name))
    return pids


def wait_for_rows(out: Path, proc, at_least: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            if len(rows_of(out)) >= at_least:
                return
        except (StopIteration, FileNotFoundError):
            pass
        time.sleep(0.2)
    raise AssertionError("no rows written")


def test_killed_actor_has_its_unit_retried_on_another(videomme, local_run, tmp_path):
    proc = subprocess.Popen(command(videomme, tmp_path, "--ray", "local", "--actors", 2), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for_rows(tmp_path, proc, 8)  # one unit back: both actors are busy with the next ones
        deadline = time.monotonic() + 60
        while not (busy := actor_pids(running_only=True)):
            assert time.monotonic() < deadline, "no actor running a unit"
            time.sleep(0.05)
        os.kill(busy[0], signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "an actor died while answering" in stderr and "retrying it (retry 1)" in stderr, stderr
    assert "1 retried" in stderr
    rows = rows_of(tmp_path)
    keys = [(r["video_path"], r["method"], r["keep"], r["qid"]) for r in rows]
    assert len(keys) == len(set(keys)) == VIDEOS * 2 * 4  # nothing lost, nothing twice
    assert stable(rows) == stable(rows_of(local_run))
    assert not actor_pids(running_only=False)  # the run's actors (and its local cluster) are gone


def test_stopped_driver_continues_from_the_samples(videomme, local_run, tmp_path):
    proc = subprocess.Popen(command(videomme, tmp_path, "--ray", "local", "--actors", 2), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for_rows(tmp_path, proc, 8)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    before = len(rows_of(tmp_path))
    assert 8 <= before < VIDEOS * 2 * 4
    r = run(videomme, tmp_path, "--ray", "local", "--actors", 2)
    assert f"of {VIDEOS * 2 * 4} answers left" in r.stderr
    rows = rows_of(tmp_path)
    assert stable(rows) == stable(rows_of(local_run))
    assert not actor_pids(running_only=False)


@pytest.mark.parametrize("args, words", [
    (("--actors", 2), "--actors 2 needs --ray"),
    (("--ray", "local", "--actors", 0), "--actors 0 is invalid"),
    (("--ray", "127.0.0.1:1"), "--ray 127.0.0.1:1: no Ray cluster could be joined"),
    (("--ray", "local", "--device", "cuda"), "--device cuda: the Ray cluster has no GPU"),
    (("--ray", "local", "--methods", "fastv", "--set", "fastv.layer=40"), "layer"),
    (("--ray", "local", "--model", "/nonexistent/model"), "pass --model with a local checkpoint"),  # the actor's
])
def test_bad_ray_options_are_one_line(videomme, tmp_path, args, words):
    r = subprocess.run(command(videomme, tmp_path / "out", *args), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0], r.stderr
    assert not any(tmp_path.iterdir())  # nothing written, not even the --out folder
