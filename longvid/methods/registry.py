"""Method registry: name -> preset. ``longvid methods`` and the README's methods table come from here.

A preset is a factory ``(keep, budget, **settings) -> Method`` (``longvid.methods.presets``); its entry records the
stage, the defaults and the paper. The registry itself imports neither torch nor transformers, so ``longvid
methods`` and name checks stay instant; the factory is imported when a method is built.

Adding a method: write the stage in one file under methods/{frames,tokens,layers,kv}/, a factory in presets.py,
then ``register`` a `MethodSpec` here.

    from longvid.methods.registry import get_method; method = get_method("evs", keep=0.25)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from longvid.errors import method_context, option
from longvid.methods.budget import check_keep_budget


@dataclass(frozen=True)
class MethodSpec:
    """One registered preset.

    Attributes
    ----------
    name, stage, defaults, paper : str
        What ``longvid methods`` prints; ``defaults`` says what a run without ``keep``/``budget`` does.
    factory : callable or str
        ``(keep, budget, **settings) -> Method``, or ``"module:attribute"`` naming one (imported on first use).
    query_aware : bool
        Needs the question during prefill (one-shot ``ask`` only; sessions refuse it).
    keep_ratio : bool
        Whether ``keep`` sets how much it keeps (False: ``full``, ``prunevid-merge``).
    keep_is_retention : bool
        Whether ``keep`` is the visual-token retention the run should realise (False where ``keep`` sets another
        quantity, e.g. PruneVid's per-group ``alpha`` after its merge); runs that miss it by more than a temporal
        step are reported.
    """

    name: str
    stage: str
    factory: Callable | str
    defaults: str
    paper: str
    query_aware: bool = False
    keep_ratio: bool = True
    keep_is_retention: bool = True

    def build(self, keep: float | None, budget: int | None, settings: dict):
        factory = self.factory
        if isinstance(factory, str):
            module, _, attr = factory.partition(":")
            factory = getattr(importlib.import_module(module), attr)
        with method_context(self.name):
            return factory(keep=keep, budget=budget, **settings)


METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> None:
    if spec.name in METHODS:
        raise ValueError(f"method {spec.name!r} is already registered")
    METHODS[spec.name] = spec


def check_name(name: str) -> MethodSpec:
    """The spec of method ``name``; an unknown name raises a ValueError listing the valid ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r} ({option('method')}); valid methods: {', '.join(METHODS)}")
    return METHODS[name]


def get_method(name: str, keep: float | None = None, budget: int | None = None, **settings):
    """Build the preset ``name``; ``keep`` in (0, 1] or ``budget`` (visual tokens) sets how much to keep.

    Without either, the preset's default operating point applies (``longvid methods`` lists them). ``settings``
    go to the stages that have them (e.g. ``layer=8`` for PruneVid); an unknown setting or a value of the wrong
    type raises a ValueError that lists the preset's settings. ``name`` may be a composition of presets
    (`compose`): ``"uniform:0.5+evs:0.5+knorm"``.
    """
    if is_composition(name):
        if keep is not None or budget is not None or settings:
            what = "keep" if keep is not None else "budget" if budget is not None else "settings"
            raise ValueError(f"{option(what, keep if what == 'keep' else budget if what == 'budget' else settings)}"
                             f" does not apply to the composition {name!r}: give each part its own ratio or budget "
                             "inside it (e.g. evs:0.5, knorm:4096)")
        return compose(name)
    spec = check_name(name)
    check_keep_budget(keep, budget)
    method = spec.build(keep, budget, settings)
    method.keep, method.budget = method.keep if keep is None else keep, budget
    return method


def is_composition(name: str) -> bool:
    return isinstance(name, str) and ("+" in name or ":" in name)


def parse_composition(text: str, field: str = "method") -> list[tuple[str, float | None, int | None]]:
    """``"uniform:0.5+evs:0.5+knorm:4096"`` -> ``[("uniform", 0.5, None), ("evs", 0.5, None), ("knorm", None,
    4096)]``: a ratio has a decimal point (or is 1), a budget is a whole number of visual tokens (or KV entries)."""
    parts = []
    for part in text.split("+"):
        name, colon, amount = part.strip().partition(":")
        if not name:
            raise ValueError(f"{option(field, text)} has an empty part; write presets joined by '+', each with an "
                             "optional :ratio or :budget, e.g. uniform:0.5+evs:0.5+knorm")
        if name not in METHODS:
            raise ValueError(f"{option(field, text)}: unknown method {name!r}; valid methods: {', '.join(METHODS)}")
        keep = budget = None
        if colon:
            try:
                if "." in amount or amount.strip() == "1":
                    keep = float(amount)
                else:
                    budget = int(amount)
            except ValueError:
                raise ValueError(f"{option(field, text)}: {part!r} needs a ratio in (0, 1] (evs:0.5) or a budget "
                                 f"of tokens (knorm:4096) after the colon") from None
            try:
                check_keep_budget(keep, budget)
            except ValueError as err:
                raise ValueError(f"{option(field, text)}: {part.strip()!r}: {err}") from None
        parts.append((name, keep, budget))
    return parts


def compose(text: str):
    """A `Method` named ``text`` from the stages of the presets it joins, in data-flow order: at most one frame
    selector, the token reducers in the order written, at most one layer pruner and one KV press. Each part is built
    as ``get_method(part, keep=..., budget=...)`` would build it."""
    from longvid.methods.compose import Method

    method = Method(text)
    owner = {}
    for name, keep, budget in parse_composition(text):
        part = get_method(name, keep=keep, budget=budget)
        for slot in ("frame_selector", "layer_pruner", "press"):
            stage = getattr(part, slot)
            if stage is None:
                continue
            if getattr(method, slot) is not None:
                kind = {"frame_selector": "frame selector", "layer_pruner": "layer pruner", "press": "KV press"}[slot]
                raise ValueError(f"{option('method', text)}: {owner[slot]!r} and {name!r} both bring a {kind}; a "
                                 f"method has at most one")
            setattr(method, slot, stage)
            owner[slot] = name
        method.token_reducers.extend(part.token_reducers)
    return method


def takes_keep(name: str) -> bool:
    """Whether a run's keep ratio applies to ``name`` (False for ``full``, ``prunevid-merge`` and compositions,
    which carry their own)."""
    return not is_composition(name) and check_name(name).keep_ratio


def check_method_names(names: list[str]) -> None:
    """Raise one line unless every name is a preset or a composition of presets (a bad composition names its bad
    part); an empty list is refused too."""
    for name in names:
        if is_composition(name):
            parse_composition(name, "methods")
    unknown = [name for name in names if not is_composition(name) and name not in METHODS]
    if unknown or not names:
        raise ValueError(f"{option('methods', ','.join(names))} has unknown methods "
                         f"({', '.join(unknown) or 'none given'}); pass a comma list of: {', '.join(METHODS)}")


def check_keep_ratios(keeps, *, default: bool = False) -> None:
    """Raise one line unless every keep is a ratio in (0, 1] (or None, each preset's own point, when ``default``)."""
    for k in keeps:
        if k is None and default:
            continue
        if isinstance(k, bool) or not (isinstance(k, (int, float)) and 0 < k <= 1):
            raise ValueError(f"{option('keeps', k)} is invalid: every keep ratio must be in (0, 1]; pass e.g. "
                             "0.5,0.25")


def query_agnostic_methods() -> list[str]:
    return [name for name, spec in METHODS.items() if not spec.query_aware]


P = "longvid.methods.presets:"
register(MethodSpec("full", "none", P + "full", "keeps everything", "-", keep_ratio=False))
register(MethodSpec(
    "uniform", "frame selector", P + "uniform",
    "keep=0.25 (whole temporal steps, evenly spaced); the equal-budget control", "baseline (UniPruneBench, VTC-Bench)"))
register(MethodSpec(
    "random", "token reducer", P + "random",
    "keep=0.25, seed=0; the equal-budget control", "baseline (UniPruneBench, VTC-Bench)"))
register(MethodSpec(
    "evs", "token reducer", P + "evs",
    "keep=0.25 (= vLLM --video-pruning-rate 0.75); first temporal step kept whole", "https://arxiv.org/abs/2510.14624"))
register(MethodSpec(
    "knorm", "KV press", P + "knorm",
    "keep=0.5 (kvpress compression_ratio 0.5), applied between prefill chunks", "https://arxiv.org/abs/2406.11430"))
register(MethodSpec(
    "prunevid", "token reducer + layer pruner", P + "prunevid",
    "alpha=0.4 (--keep sets alpha), layer at depth 10/32 (the paper's K=10 of 32 layers: 9 of a 28-layer LLM, "
    "2 of 6 on longvid-tiny; --set layer=N fixes it), tau=0.8, temporal_segment_ratio=0.25, cluster_ratio=0.5, k=7",
    "https://arxiv.org/abs/2412.16117", query_aware=True, keep_is_retention=False))
register(MethodSpec(
    "prunevid-merge", "token reducer", P + "prunevid_merge",
    "PruneVid stage 1 only: tau=0.8, temporal_segment_ratio=0.25, cluster_ratio=0.5, k=7; retention follows the video",
    "https://arxiv.org/abs/2412.16117", keep_ratio=False))
register(MethodSpec(
    "retake", "token reducer + KV press", P + "retake",
    "the released configs: YaRN RoPE x4, DPSelect marking pivots (--set dpselect=false as the VideoMME config), "
    "PivotKV keeping max(1, int(r * n)) per chunk of min(T, 32)/2 steps, r = max_input_length 32000 / prompt (reduces "
    "nothing below 32000 tokens; --keep sets r, --budget the max input length). Differs from the code where the "
    "paper differs: pivots kept (--set faithful=true: scored 1.0) and text shifted on all M-RoPE rows",
    "https://arxiv.org/abs/2412.20504"))
register(MethodSpec(
    "dpselect", "token reducer", P + "dpselect",
    "keep=0.25 (the equal-budget point of uniform, random and evs): each spatial slot keeps its most-changing quarter "
    "of temporal steps (peaks first), time squeezed; keep=1 marks pivots only, as the released ReTaKe configs",
    "https://arxiv.org/abs/2412.20504"))
register(MethodSpec(
    "pivotkv", "KV press", P + "pivotkv",
    "as retake without DPSelect and YaRN: per chunk of min(T, 32)/2 steps keep max(1, int(r * n)), r = 32000 / prompt "
    "(--keep sets r, --budget the max input length; --set yarn_factor=4 for the recipe's RoPE)",
    "https://arxiv.org/abs/2412.20504"))
register(MethodSpec(
    "citr", "KV press", P + "citr",
    "keep=0.25; retaining heads score each visual entry from its own q/k/v on arrival, each layer and KV head keeps "
    "its top entries, the most recent 128 (at most a quarter of the budget) always; heads: the bundled set trained "
    "for the model, if it is a bundled longvid-tiny (--set heads=DIR for another checkpoint's, from "
    "`longvid train citr`)",
    "CITR (ACM MM 2025), Locret https://arxiv.org/abs/2410.01805"))
register(MethodSpec(
    "citr-merge", "token reducer + KV press", P + "citr_merge",
    "CITR's VideoMME setting: similarity merge before the LLM (runs of a slot's tokens with cosine >= 0.4 to the "
    "previous step fold into the token before, at most 40 % merged; --set threshold=, max_ratio=), then citr at "
    "keep=0.25 of the merged tokens",
    "CITR (ACM MM 2025), Locret https://arxiv.org/abs/2410.01805", keep_is_retention=False))
register(MethodSpec(
    "qtsplus", "token reducer", P + "qtsplus",
    "learned: the question's embeddings score each visual token (cross-attention, max over heads and words), a "
    "budget head predicts the retention rho in [0.05, 0.5], the top min(ceil(rho M), n_max=512) tokens are kept in "
    "order and re-encoded (2 bidirectional blocks); kept tokens keep their positions (--set positions=faithful: 1-D, "
    "as the released code); modules: the bundled set trained for the model, if it is a bundled longvid-tiny "
    "(--set modules=DIR)",
    "https://arxiv.org/abs/2511.11910", query_aware=True, keep_ratio=False))
register(MethodSpec(
    "random-kv", "KV press", P + "random_kv",
    "keep=0.5, seed=0: each layer and KV head keeps a random share of the visual entries; the scorer-free floor of "
    "the presses", "baseline (kvpress RandomPress)"))
register(MethodSpec(
    "streamingllm", "KV press", P + "streamingllm",
    "keep=0.5: the most recent visual entries, with the chat prefix as the attention sink (--set sink=N keeps the "
    "first N visual entries too)", "https://arxiv.org/abs/2309.17453"))
register(MethodSpec(
    "fastv", "layer pruner", P + "fastv",
    "keep=0.5, layer=1 (the paper's K=2: scores at layer 1, prunes from layer 2, absolute as in the paper)",
    "https://arxiv.org/abs/2403.06764", query_aware=True))
