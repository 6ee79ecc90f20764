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
from longvid.methods.kv.pivotkv import PivotKV
from longvid.methods.layers.fastv import FastV
from longvid.methods.layers.prunevid_prune import PruneVidPrune
from longvid.methods.tokens.dpselect import DPSelect
from longvid.methods.tokens.evs import EVS
from longvid.methods.tokens.prunevid_merge import PruneVidMerge
from longvid.methods.tokens.random_drop import RandomDrop


@dataclass(frozen=True)
class MethodSpec:
    name: str
    stage: str
    factory: Callable[..., Method]
    defaults: str
    paper: str
    query_aware: bool = False
    keep_ratio: bool = True  # whether ``keep`` (< 1) sets how much it keeps; False: full, prunevid-merge


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


def _split(overrides: dict, stage_cls) -> dict:
    """The overrides that are fields of ``stage_cls`` (presets route each override to the stage that has it)."""
    names = set(getattr(stage_cls, "__dataclass_fields__", {}))
    return {k: overrides.pop(k) for k in list(overrides) if k in names}


def _no_leftovers(name: str, overrides: dict) -> None:
    if overrides:
        raise ValueError(f"method {name!r} has no setting {', '.join(map(repr, overrides))}; see `longvid methods`")


def _prunevid(keep=None, budget=None, **overrides) -> Method:
    if budget is not None:
        raise ValueError("prunevid keeps a share of each group (--keep sets alpha); a token budget does not apply")
    merge, prune = _split(overrides, PruneVidMerge), _split(overrides, PruneVidPrune)
    _no_leftovers("prunevid", overrides)
    if keep is not None:
        prune["alpha"] = keep
    return Method("prunevid", token_reducers=[PruneVidMerge(**merge)], layer_pruner=PruneVidPrune(**prune))


def _prunevid_merge(keep=None, budget=None, **overrides) -> Method:
    if keep is not None or budget is not None:
        raise ValueError("prunevid-merge's retention follows the video (static share, cluster_ratio); "
                         "--keep/--budget do not apply")
    merge = _split(overrides, PruneVidMerge)
    _no_leftovers("prunevid-merge", overrides)
    return Method("prunevid-merge", token_reducers=[PruneVidMerge(**merge)])


def _retake(keep=None, budget=None, **overrides) -> Method:
    select, press = _split(overrides, DPSelect), _split(overrides, PivotKV)
    _no_leftovers("retake", overrides)
    return Method("retake", token_reducers=[DPSelect(**select)], press=PivotKV(keep, budget, **press))


def _single(name: str, stage_cls, slot: str, **defaults):
    def factory(keep=None, budget=None, **overrides) -> Method:
        fields = _split(overrides, stage_cls)
        _no_leftovers(name, overrides)
        if keep is None and budget is None and "keep" in defaults:
            keep = defaults["keep"]
        stage = stage_cls(keep, budget, **{k: v for k, v in defaults.items() if k != "keep"} | fields)
        return Method(name, **{slot: [stage] if slot == "token_reducers" else stage})

    return factory


def _full(keep=None, budget=None) -> Method:
    if (keep is not None and keep < 1) or budget is not None:
        raise ValueError("method 'full' keeps every visual token; drop --keep/--budget or pick a reducing method")
    return Method("full")


register(MethodSpec("full", "none", _full, "keeps everything", "-", keep_ratio=False))
register(MethodSpec(
    "uniform", "frame selector", _single("uniform", UniformFrames, "frame_selector"),
    "keep=1.0; fewer frames at the same visual-token budget", "baseline (UniPruneBench, VTC-Bench)"))
register(MethodSpec(
    "random", "token reducer", _single("random", RandomDrop, "token_reducers"),
    "keep=1.0, seed=0", "baseline (UniPruneBench, VTC-Bench)"))
register(MethodSpec(
    "evs", "token reducer", _single("evs", EVS, "token_reducers"),
    "keep=1.0 (= vLLM --video-pruning-rate 1-keep)", "https://arxiv.org/abs/2510.14624"))
register(MethodSpec(
    "knorm", "KV press", _single("knorm", KnormPress, "press"),
    "keep=1.0, applied between prefill chunks", "https://arxiv.org/abs/2406.11430"))
register(MethodSpec(
    "prunevid", "token reducer + layer pruner", _prunevid,
    "tau=0.8, temporal_segment_ratio=0.25, cluster_ratio=0.5, k=7, layer=10, alpha=0.4 (--keep sets alpha)",
    "https://arxiv.org/abs/2412.16117", query_aware=True))
register(MethodSpec(
    "prunevid-merge", "token reducer", _prunevid_merge,
    "PruneVid stage 1 only: tau=0.8, temporal_segment_ratio=0.25, cluster_ratio=0.5, k=7",
    "https://arxiv.org/abs/2412.16117", keep_ratio=False))
register(MethodSpec(
    "retake", "token reducer + KV press", _retake,
    "DPSelect (keep 1.0, pivots) + PivotKV (chunk 16 steps, max_input_length=32000; --keep sets the chunk ratio, "
    "--budget the max input length)", "https://arxiv.org/abs/2412.20504"))
register(MethodSpec(
    "dpselect", "token reducer", _single("dpselect", DPSelect, "token_reducers"),
    "keep=1.0 (marks pivots only, as the released configs); --keep drops steps per slot, squeezing time",
    "https://arxiv.org/abs/2412.20504"))
register(MethodSpec(
    "pivotkv", "KV press", _single("pivotkv", PivotKV, "press"),
    "chunk 16 steps, max_input_length=32000 (--keep sets the chunk ratio, --budget the max input length)",
    "https://arxiv.org/abs/2412.20504"))
register(MethodSpec(
    "fastv", "layer pruner", _single("fastv", FastV, "layer_pruner", keep=0.5, layer=1),
    "K=2 (scores at layer 1), keep=0.5", "https://arxiv.org/abs/2403.06764", query_aware=True))
