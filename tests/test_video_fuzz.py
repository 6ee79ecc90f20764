"""Fuzz the video reader: seeded byte-level corruptions and truncations of real mp4 (H.264), webm (VP9) and mkv
(H.264) files. Each case either decodes (at least one frame, of the requested size) or raises one of the documented
`VideoError` subclasses, within a time limit; never another exception, a crash or a hang.

    pytest tests/test_video_fuzz.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from longvid.video import write_test_video

CASES, SEED = 360, 0
PER_CASE_SECONDS, TOTAL_SECONDS = 5.0, 240
DOCUMENTED = {"frames", "VideoNotFoundError", "NotAVideoError", "NoVideoStreamError", "NoFramesError", "SamplingError",
              "VideoError"}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_sources")
    common = dict(seconds=2, fps=10, width=64, height=48, gop=5)
    return [
        write_test_video(root / "clip.mp4", **common, faststart=True),
        write_test_video(root / "clip.webm", **common, codec="libvpx-vp9"),
        write_test_video(root / "clip.mkv", **common, preset="veryfast"),
    ]


def test_corrupted_videos_decode_or_raise_a_video_error(sources, tmp_path):
    worker = Path(__file__).with_name("video_fuzz_worker.py")
    try:
        run = subprocess.run([sys.executable, str(worker), str(tmp_path), str(CASES), str(SEED), *sources],
                             capture_output=True, text=True, timeout=TOTAL_SECONDS)
    except subprocess.TimeoutExpired as err:
        last = (err.stdout or b"").decode().strip().splitlines()[-1:] if err.stdout else []
        pytest.fail(f"the fuzz run hung (over {TOTAL_SECONDS} s); last case reported: {last}")
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert run.returncode == 0, f"the worker died (exit {run.returncode}) after case {rows[-1] if rows else None}: " \
                                f"{run.stderr[-2000:]}"
    assert len(rows) == CASES
    unexpected = [r for r in rows if r["outcome"] not in DOCUMENTED]
    assert not unexpected, f"{len(unexpected)} cases ended in another exception, e.g. {unexpected[:3]}"
    slow = [r for r in rows if r["seconds"] > PER_CASE_SECONDS]
    assert not slow, f"{len(slow)} cases took over {PER_CASE_SECONDS} s, e.g. {slow[:3]}"
    outcomes = Counter(r["outcome"] for r in rows)
    assert outcomes["frames"] > CASES // 4 and len(outcomes) >= 3  # both paths really exercised
    for name in ("clip.mp4", "clip.webm", "clip.mkv"):
        assert any(r["file"] == name and r["outcome"] != "frames" for r in rows), name
