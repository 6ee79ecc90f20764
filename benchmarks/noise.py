"""Noise probe shared by the benchmarks: how long a tiny matmul takes right now on this (shared) machine.

    python -c "import sys; sys.path.insert(0, 'benchmarks'); from noise import small_op_ms; print(small_op_ms())"
"""

from __future__ import annotations

import statistics
import time

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
