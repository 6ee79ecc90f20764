"""Seed splits for the synthetic suite: training and evaluation videos never share a seed.

A seed fixes everything about a video (its events, background, distractors and questions), so keeping the two
ranges disjoint keeps every evaluation video out of training. `train_seed(i)` and `eval_seed(i)` number the
videos of each split from 0; `check_seed` is what `write_suite` calls before writing anything.

Example::

    python -c "from longvid.synth import train_seed, eval_seed; print(train_seed(0), eval_seed(0))"
"""

from __future__ import annotations

from numbers import Integral

import numpy as np

__all__ = ["TRAIN_SEEDS", "EVAL_SEEDS", "SPLITS", "train_seed", "eval_seed", "check_seed", "split_of", "rng"]

TRAIN_SEEDS = range(0, 1_000_000_000)
"""Seeds of training videos: ``0 <= seed < 1e9``."""

EVAL_SEEDS = range(1_000_000_000, 2_000_000_000)
"""Seeds of evaluation videos: ``1e9 <= seed < 2e9``."""

SPLITS = {"train": TRAIN_SEEDS, "eval": EVAL_SEEDS}

# Independent random streams drawn from one seed: changing how one part is drawn never shifts another part.
_STREAMS = {"spec": 0, "texture": 1, "question": 2}


def _check_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name}={value!r} must be an int. Pass e.g. {name}=0.")
    return int(value)


def split_of(seed: int) -> str:
    """``"train"`` or ``"eval"``: the split whose range holds ``seed``; ValueError for a seed in neither."""
    seed = _check_int("seed", seed)
    for split, seeds in SPLITS.items():
        if seed in seeds:
            return split
    raise ValueError(
        f"seed={seed} is in no split: train seeds are {TRAIN_SEEDS.start} <= seed < {TRAIN_SEEDS.stop}, eval seeds "
        f"{EVAL_SEEDS.start} <= seed < {EVAL_SEEDS.stop}. Use train_seed(i) or eval_seed(i)."
    )


def check_seed(seed: int, split: str) -> int:
    """Return ``seed`` if it belongs to ``split``; raise ValueError naming the right split otherwise."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not supported. Pass one of {tuple(SPLITS)}.")
    actual = split_of(seed)
    if actual != split:
        helper = f"{split}_seed(i)"
        raise ValueError(
            f"seed={seed} is a {actual} seed, but split={split!r} was requested: {split} seeds are "
            f"{SPLITS[split].start} <= seed < {SPLITS[split].stop}. Use {helper} (e.g. {SPLITS[split].start}), "
            "so evaluation videos never appear in training."
        )
    return int(seed)


def _nth(i: int, split: str) -> int:
    i = _check_int("i", i)
    seeds = SPLITS[split]
    if not 0 <= i < len(seeds):
        raise ValueError(f"i={i} is out of range for the {split} split: it needs 0 <= i < {len(seeds)}.")
    return seeds[i]


def train_seed(i: int) -> int:
    """Seed of the ``i``-th training video (``0 <= i < 1e9``)."""
    return _nth(i, "train")


def eval_seed(i: int) -> int:
    """Seed of the ``i``-th evaluation video (``0 <= i < 1e9``)."""
    return _nth(i, "eval")


def rng(seed: int, stream: str, *extra: int) -> np.random.Generator:
    """Generator for one named stream of ``seed`` (``"spec"``, ``"texture"`` or ``"question"``, plus ``extra``)."""
    return np.random.default_rng(np.random.SeedSequence([_check_int("seed", seed), _STREAMS[stream], *extra]))
