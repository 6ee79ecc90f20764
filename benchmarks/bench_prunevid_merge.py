"""Cost of PruneVid's stage-1 merge (``PruneVidMerge().reduce``) at 4k, 16k and 64k visual tokens, on CPU.

Issue target: the merge stays per segment (no whole-video N x N matrix: the largest pairwise matrix is one
segment's static set or one step's dynamic set) and takes under 1 s at 16k tokens.

Inputs are random VisualTokens with D=3584 (Qwen2-VL-7B hidden size), float32, 256 tokens per temporal step (a
448x448 frame) and grids (16,16,16), (64,16,16), (256,16,16). Random tokens are the expensive case: no slot is
static, so every step's 256 dynamic tokens go through DPC-kNN. Paper defaults, 2 torch threads; the median of 3
runs after one warmup. One extra, untimed run records the shape of every distance matrix DPC-kNN builds
((W, M, M) is a batch of W per-step M x M matrices). Peak memory is the growth of the peak RSS (VmHWM) during one
``reduce`` in a fresh subprocess, after the input is built (Linux only). A contention probe (median of a small
matmul, before and after each size) shows whether other processes slowed the run: the JSON says ``"quiet"``.
Prints a table, then one JSON object as the last line.

Run (about 1 minute on 2 cores)::

    python benchmarks/bench_prunevid_merge.py
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager

import torch

from longvid.methods import clustering
from longvid.methods.tokens.prunevid_merge import PruneVidMerge
from longvid.tokens import VisualTokens

HIDDEN, STEP_SIDE, THREADS, RUNS = 3584, 16, 2, 3
STEPS = (16, 64, 256)
TARGET_TOKENS, TARGET_SEC = 16384, 1.0
QUIET_PROBE_MS = 1.5  # the probe takes ~0.8 ms on an idle 2-core machine and ~8 ms when another job holds a core


def random_tokens(steps: int) -> VisualTokens:
    grid = (steps, STEP_SIDE, STEP_SIDE)
    axes = [torch.arange(n) for n in grid]
    thw = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).view(-1, 3)
    embeds = torch.randn(len(thw), HIDDEN, generator=torch.Generator().manual_seed(0))
    return VisualTokens(embeds, thw, thw.T.clone(), thw[:, 0].double(), torch.ones(len(thw), dtype=torch.long),
                        grid, len(thw))


@contextmanager
def recorded_distance_shapes():
    """Record the (..., M, M) shape of every distance matrix DPC-kNN computes."""
    shapes, original = [], clustering.pairwise_distance

    def recording(x):
        out = original(x)
        shapes.append(tuple(out.shape))
        return out

    clustering.pairwise_distance = recording
    try:
        yield shapes
    finally:
        clustering.pairwise_distance = original


def contention_probe_ms() -> float:
    a = torch.randn(512, 512)
    times = []
    for _ in range(20):
        start = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def peak_extra_bytes(steps: int) -> int:
    """Peak RSS growth of one reduce in a fresh process (input already built)."""
    out = subprocess.run([sys.executable, __file__, "--memory-child", str(steps)], capture_output=True, text=True,
                         check=True)
    return int(out.stdout.split()[-1])


def peak_rss_bytes() -> int:
    """The kernel's VmHWM; unlike ``ru_maxrss`` it is not inherited from the parent across fork and exec."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM"))
    return int(line.split()[1]) * 1024


def memory_child(steps: int) -> None:
    torch.set_num_threads(THREADS)
    tokens = random_tokens(steps)
    before = peak_rss_bytes()
    PruneVidMerge().reduce(tokens)
    print(peak_rss_bytes() - before)


def measure(steps: int) -> dict:
    tokens, method = random_tokens(steps), PruneVidMerge()
    probe_before = contention_probe_ms()
    out = method.reduce(tokens)  # warmup
    runs_sec = []
    for _ in range(RUNS):
        start = time.perf_counter()
        method.reduce(tokens)
        runs_sec.append(time.perf_counter() - start)
    probe_ms = [probe_before, contention_probe_ms()]
    with recorded_distance_shapes() as shapes:
        method.reduce(tokens)
    largest = max(shapes, key=lambda s: (s[-1], math.prod(s)))  # the largest M, then the largest batch
    return {
        "tokens": len(tokens), "grid_thw": list(tokens.grid_thw), "out_tokens": len(out),
        "groups": int(out.group.max()) + 1, "median_sec": statistics.median(runs_sec), "runs_sec": runs_sec,
        "largest_distance_matrix": list(largest), "distance_matrices": len(shapes),
        "peak_extra_bytes": peak_extra_bytes(steps), "probe_ms": probe_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        return memory_child(args.memory_child)
    torch.set_num_threads(THREADS)
    results = [measure(steps) for steps in STEPS]
    print(f"PruneVidMerge (paper defaults), D={HIDDEN}, float32, {THREADS} threads, median of {RUNS} after a warmup")
    print(f"{'tokens':>7} {'grid':>12} {'out':>6} {'groups':>6} {'median s':>9} {'runs s':>20} "
          f"{'largest dist':>15} {'peak extra MiB':>14} {'probe ms':>11}")
    for r in results:
        runs = " ".join(f"{t:.3f}" for t in r["runs_sec"])
        print(f"{r['tokens']:>7} {'x'.join(map(str, r['grid_thw'])):>12} {r['out_tokens']:>6} {r['groups']:>6} "
              f"{r['median_sec']:>9.3f} {runs:>20} {'x'.join(map(str, r['largest_distance_matrix'])):>15} "
              f"{r['peak_extra_bytes'] / 2**20:>14.0f} {'{:.2f} {:.2f}'.format(*r['probe_ms']):>11}")
    at_target = next(r for r in results if r["tokens"] == TARGET_TOKENS)
    print(f"target: {TARGET_TOKENS} tokens under {TARGET_SEC} s -> {at_target['median_sec']:.3f} s; probe ms: "
          f"median 512x512 matmul before and after each size ({QUIET_PROBE_MS} ms or less: no contention seen)")
    print(json.dumps({
        "benchmark": "prunevid_merge", "machine": platform.machine(), "processor": platform.processor(),
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": THREADS, "hidden": HIDDEN,
        "results": results, "target_tokens": TARGET_TOKENS, "target_sec": TARGET_SEC,
        "meets_target": at_target["median_sec"] < TARGET_SEC,
        "quiet": all(max(r["probe_ms"]) <= QUIET_PROBE_MS for r in results),
    }))


if __name__ == "__main__":
    main()
