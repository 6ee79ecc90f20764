"""Method registry: name -> preset. ``longvid methods`` and the README's methods table come from here.

A preset is a factory ``(keep, budget, **overrides) -> Method``; its entry records the stage, defaults and paper.
Adding a method: write the stage in one file under methods/{frames,tokens,kv}/, then ``register`` a preset here.

    from longvid.methods.registry import get_method; method = get_method("evs", keep=0.25)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from longvid.methods.base import check_keep_budget
from longvid.methods.compose import Method
from longvid.methods.frames.uniform import UniformFrames
from longvid.methods.kv.knorm import KnormPress
from longvid.methods.tokens.evs import EVS
from longvid.methods.tokens.random_drop import RandomDrop


@dataclass(frozen=True)
class MethodSpec:
    name: str
    stage: str
    factory: Callable[..., Method]
    defaults: str
    paper: str
    query_aware: bool = False


METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> None:
    if spec.name in METHODS:
        raise ValueError(f"method {spec.name!r} is already registered")
    METHODS[spec.name] = spec


def get_method(name: str, keep: float | None = None, budget: int | None = None, **overrides) -> Method:
    """Build the preset ``name``; ``keep`` in (0, 1] or ``budget`` (visual tokens) sets how much to keep."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}")
    check_keep_budget(keep, budget)
    method = METHODS[name].factory(keep=keep, budget=budget, **overrides)
    method.keep, method.budget = keep, budget
    return method


def query_agnostic_methods() -> list[str]:
    return [name for name, spec in METHODS.items() if not spec.query_aware]


def _full(keep=None, budget=None) -> Method:
    if (keep is not None and keep < 1) or budget is not None:
        raise ValueError("method 'full' keeps every visual token; drop --keep/--budget or pick a reducing method")
    return Method("full")


register(MethodSpec("full", "none", _full, "keeps everything", "-"))
register(MethodSpec(
    "uniform", "frame selector",
    lambda keep=None, budget=None: Method("uniform", frame_selector=UniformFrames(keep, budget)),
    "keep=1.0; fewer frames at the same visual-token budget", "baseline (UniPruneBench, VTC-Bench)"))
register(MethodSpec(
    "random", "token reducer",
    lambda keep=None, budget=None, seed=0: Method("random", token_reducers=[RandomDrop(keep, budget, seed)]),
    "keep=1.0, seed=0", "baseline (UniPruneBench, VTC-Bench)"))
register(MethodSpec(
    "evs", "token reducer",
    lambda keep=None, budget=None: Method("evs", token_reducers=[EVS(keep, budget)]),
    "keep=1.0 (= vLLM --video-pruning-rate 1-keep)", "https://arxiv.org/abs/2510.14624"))
register(MethodSpec(
    "knorm", "KV press",
    lambda keep=None, budget=None: Method("knorm", press=KnormPress(keep, budget)),
    "keep=1.0, applied between prefill chunks", "https://arxiv.org/abs/2406.11430"))
