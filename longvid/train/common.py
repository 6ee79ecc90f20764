"""What the training recipes share: the code version recorded in their cards, data parallelism, and the loop of the
learned parts' recipes (`PartsTrainer`)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np


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


class PartsTrainer:
    """The loop the learned parts' recipes share (CITR's heads, QTSplus's modules): the base model frozen, one
    seeded example stream (`longvid.train.citr.training_example`), held-out evaluation every ``eval_every`` steps,
    a checkpoint every ``checkpoint_every`` steps that the same command continues from, the parts and a training
    card written at the end, data parallel over processes (`DataParallel`).

    A recipe subclass sets ``kind`` and ``card_name``, builds ``self.parts`` (with ``.base``, ``.save``) and
    ``self.optimizer``, and gives `train_step` (one optimiser step, returning a dict of numbers with ``loss``),
    `evaluate` (a dict with ``step``), `report` (the progress bar's words and the evaluation's log line) and `card`
    (what its card adds); `state` / `load_state` carry anything else the checkpoint must hold.
    """

    kind = ""  # "CITR", "QTSplus": in messages
    card_name = ""  # "citr_card.json"
    parts_key = ""  # the parts' key in checkpoint.pt ("heads", "modules")

    def __init__(self, lm, out, recipe, data: str = "synth", log=print, progress=None):
        from longvid.train.citr import training_rows

        self.lm, self.recipe, self.log, self.progress = lm, recipe, log, progress
        self.out, self.data = Path(out), data
        self.rows = training_rows(lm, data)
        self.step, self.history = 0, []
        self._held_out = None
        self.dp = DataParallel()

    # ----- data ----------------------------------------------------------------------------------------------
    def example(self, i: int, split: str = "train"):
        from longvid.train.citr import training_example

        return training_example(self.lm, self.rows, self.data, self.recipe, i, split)

    def held_out(self, prepare=None) -> list:
        """The held-out examples (evaluation seeds, or the data's first lines), made once, through ``prepare``."""
        if self._held_out is None:
            n = self.recipe.held_out if self.rows is None else min(self.recipe.held_out, len(self.rows))
            examples = (self.example(i, "eval") for i in range(n))
            self._held_out = [prepare(ex) if prepare else ex for ex in examples]
        return self._held_out

    # ----- what a recipe gives -------------------------------------------------------------------------------
    def train_step(self) -> dict:
        raise NotImplementedError

    def evaluate(self) -> dict:
        raise NotImplementedError

    def report(self, recent: list[dict], last: dict | None) -> tuple[str, str | None]:
        """The progress bar's words after a step, and the log line of the evaluation ``last`` (None: none yet)."""
        raise NotImplementedError

    def card(self) -> dict:
        return {}

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        pass

    # ----- checkpoints ---------------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        import torch

        tmp = self.out / "checkpoint.pt.tmp"
        torch.save({"step": self.step, self.parts_key: self.parts.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "history": self.history, "recipe": asdict(self.recipe), "data": self.data, "base": self.parts.base,
                    **self.state()}, tmp)
        tmp.replace(self.out / "checkpoint.pt")

    def resume(self) -> bool:
        import torch

        from longvid.errors import option

        path = self.out / "checkpoint.pt"
        if not path.exists():
            return False
        state = torch.load(path, weights_only=False, map_location=self.lm.adapter.device)
        if state["recipe"] != asdict(self.recipe) or state["data"] != self.data or state.get("base") != self.parts.base:
            raise ValueError(f"{option('out', str(self.out))} holds a {self.kind} run with other settings; pass "
                             f"another {option('out')} or the same settings to continue it")
        self.parts.load_state_dict(state[self.parts_key])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.history = state["step"], state["history"]
        self.load_state(state)
        return True

    # ----- the loop ------------------------------------------------------------------------------------------
    def run(self, command: str = "") -> Path:
        import torch

        from longvid.output import writable_folder
        from longvid.train.citr import model_suite_of

        r = self.recipe
        if self.dp.main:
            writable_folder(self.out, option="out")
        self.dp.barrier()
        if self.resume() and self.dp.main:
            self.log(f"continuing {self.out} from step {self.step} of {r.steps}")
        t0, recent = time.perf_counter(), []
        while self.step < r.steps:
            recent = (recent + [self.train_step()])[-50:]
            if not self.dp.main:
                continue
            if self.progress is not None:
                self.progress(self.step, r.steps, self.report(recent, self.history[-1] if self.history else None)[0])
            if self.step % r.eval_every == 0 or self.step == r.steps:
                self.history.append(self.evaluate() | {f"train_{k}": float(np.mean([x[k] for x in recent]))
                                                       for k in recent[0]})
                self.log(self.report(recent, self.history[-1])[1])
            if self.step % r.checkpoint_every == 0 or self.step == r.steps:
                self.save_checkpoint()
        self.dp.barrier()
        if not self.dp.main:
            return self.out
        self.parts.save(self.out)
        data = f"synth (suite v{model_suite_of(self.lm)})" if self.data == "synth" else self.data
        card = dict(recipe=asdict(r), data=data, base=self.parts.base, steps_done=self.step, processes=self.dp.world,
                    history=self.history, seconds_this_run=round(time.perf_counter() - t0, 1), command=command,
                    torch=torch.__version__) | self.card()
        (self.out / self.card_name).write_text(json.dumps(card, indent=1) + "\n")
        return self.out
