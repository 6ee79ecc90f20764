"""What the training recipes share: the code version recorded in their cards."""

from __future__ import annotations

from pathlib import Path


def code_version() -> str | None:
    """The git commit of this code (``+dirty`` with uncommitted changes), or None outside a git checkout."""
    import subprocess

    here = Path(__file__).resolve().parents[1]  # the longvid package
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=here, capture_output=True, text=True,
                               timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode != 0:
        return None
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


class DataParallel:
    """Data parallelism when launched as several processes (``accelerate launch --num_processes N``); a no-op in one.

    Every process builds the same modules from the same seed, takes its own examples (``index``), and averages the
    gradients with the others before each optimiser step (``average``), so the replicas stay identical; the main
    process alone evaluates, logs and writes. Plain all-reduce rather than a DDP wrapper: the learned parts are
    called several times per step (CITR once per layer), which DDP's one-forward-per-backward bookkeeping refuses.
    """

    def __init__(self):
        import os

        self.acc, self.rank, self.world = None, 0, 1
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            try:
                from accelerate import Accelerator
            except ImportError:
                raise ValueError("several training processes need accelerate: pip install 'longvid[train]'") from None
            import torch

            self.acc = Accelerator(cpu=not torch.cuda.is_available())  # gloo on CPU processes (tested), NCCL on GPUs
            self.rank, self.world = self.acc.process_index, self.acc.num_processes

    @property
    def main(self) -> bool:
        return self.rank == 0

    def index(self, step: int, j: int = 0, per_step: int = 1) -> int:
        """The example this process takes for micro-step ``j`` of ``step``: disjoint across processes."""
        return (step * per_step + j) * self.world + self.rank

    def average(self, params) -> None:
        """Average every gradient over the processes (in place)."""
        if self.acc is None:
            return
        for p in params:
            if p.grad is not None:
                p.grad.copy_(self.acc.reduce(p.grad, reduction="mean"))

    def barrier(self) -> None:
        if self.acc is not None:
            self.acc.wait_for_everyone()


def local_device(device: str) -> str:
    """``cuda`` becomes this process's GPU (``cuda:LOCAL_RANK``) under a multi-process launch."""
    import os

    if device == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return device
