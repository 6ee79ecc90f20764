"""Helpers shared by the benchmarks: a noise probe for this shared machine, and the state of the code measured.

    python -c "import sys; sys.path.insert(0, 'benchmarks'); from common import small_op_ms; print(small_op_ms())"
"""

from __future__ import annotations

import statistics
import subprocess
import time
from pathlib import Path

import torch


def small_op_ms(calls: int = 50) -> float:
    """Median ms of a (38, 256) x (256, 512) matmul: ~0.05-0.1 ms when idle; several ms when other processes keep
    torch's thread pool waiting for a descheduled thread (every parallel op then pays it)."""
    x, w = torch.randn(38, 256), torch.randn(512, 256)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        torch.nn.functional.linear(x, w)
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1e3, 3)


def git_state() -> dict:
    """Commit of the library being measured, and the files of longvid/ with uncommitted changes."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "longvid"], cwd=root, capture_output=True,
                               text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as err:
        return {"commit": None, "error": str(err)}
    return {"commit": head.stdout.strip(), "longvid_dirty": [line[3:] for line in dirty.stdout.splitlines()]}
