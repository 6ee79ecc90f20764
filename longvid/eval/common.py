"""What the evaluations share: the bundled model's path, peak memory of a block, the results folder of a set of
settings (found again to continue a run), and the complete units of an interrupted ``samples.jsonl``."""

from __future__ import annotations

import json
import os
import threading
from collections import defaultdict
from pathlib import Path
from typing import Callable

import torch

from longvid.errors import option


def tiny_model_path() -> Path:
    """The bundled ``longvid-tiny`` checkpoint: longvid-tiny 2 (``longvid train tiny``)."""
    from longvid.models import BUNDLED_MODELS

    return BUNDLED_MODELS["longvid-tiny"]


class PeakMemory:
    """Peak extra memory of a block: CUDA allocator peak on a GPU, else resident-set peak sampled every ~1 ms."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.peak = 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        self.base = self.peak_rss = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.001):
            self.peak_rss = max(self.peak_rss, _rss())

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak_rss, _rss()) - self.base
        return False


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the peak reads as 0
        return 0


def results_folder(parent: Path, name: str, config: dict) -> tuple[Path, bool]:
    """The folder of a run with ``config``: an existing one with the same settings and model (resumed), or the first
    free name (``name``, ``name_2``, ...). Returns (folder, resumed)."""
    for i in range(1, 10_000):
        path = parent / (name if i == 1 else f"{name}_{i}")
        if not path.exists():
            return path, False
        try:
            old = json.loads((path / "config.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if old.get("settings") == config["settings"] and old.get("model") == config["model"]:
            return path, True
    raise ValueError(f"too many result folders named {name} in {parent}; pass another {option('out')}")


def load_done(samples: Path, unit: Callable[[dict], tuple], expected: Callable[[tuple], int | None]) -> set:
    """Units (``unit(row)``) whose every row is in ``samples`` (``expected(unit)`` rows each); rewrites the file
    without a torn last line or a unit cut short (a run interrupted while writing), so the same command continues
    without a duplicated or missing row."""
    if not samples.exists():
        return set()
    rows, torn = [], False
    with open(samples) as f:
        for line in f:
            try:
                if not line.endswith("\n"):
                    raise ValueError("no newline")
                rows.append(json.loads(line))
            except ValueError:
                torn = True
    counts = defaultdict(int)
    for row in rows:
        counts[unit(row)] += 1
    done = {u for u, n in counts.items() if n == expected(u)}
    kept = [row for row in rows if unit(row) in done]
    if torn or len(kept) < len(rows):
        tmp = samples.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in kept))
        tmp.replace(samples)
    return done
