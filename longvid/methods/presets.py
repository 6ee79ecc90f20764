"""Preset factories: ``(keep, budget, **settings) -> Method`` for every name in the registry.

Each setting goes to the stage that has a field of that name; its value is checked against the field's type, so
``--set layer=abc`` fails with one line instead of a TypeError deep in a forward. ``keep`` and ``budget`` are not
settings (they have their own options). The default operating points (``keep`` when neither is given) are the
papers' or the most common use; ``longvid methods`` prints them.

    from longvid.methods.presets import prunevid; prunevid(keep=None, budget=None, layer=8)
"""

from __future__ import annotations

import dataclasses
from types import NoneType

from longvid.errors import option, setting
from longvid.methods.compose import Method
from longvid.methods.frames.uniform import UniformFrames
from longvid.methods.kv.citr import CITRPress
from longvid.methods.learned import BUNDLED
from longvid.methods.tokens.qtsplus import QTSPlusSelector
from longvid.methods.tokens.similarity_merge import SimilarityMerge
from longvid.methods.kv.knorm import KnormPress
from longvid.methods.kv.pivotkv import PivotKV
from longvid.methods.kv.random_kv import RandomKVPress
from longvid.methods.kv.streaming import StreamingLLMPress
from longvid.methods.layers.fastv import FastV
from longvid.methods.layers.prunevid_prune import PruneVidPrune
from longvid.methods.tokens.dpselect import DPSelect
from longvid.methods.tokens.evs import EVS
from longvid.methods.tokens.prunevid_merge import PruneVidMerge
from longvid.methods.tokens.random_drop import RandomDrop

_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "None": (NoneType,)}
_EXAMPLES = {"int": 8, "float": 0.5, "bool": True, "str": "name"}
_KINDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string", "None": "null"}


def settings_of(*stage_classes) -> dict[str, dataclasses.Field]:
    """The settable fields of some stage classes: dataclass init fields, but not keep/budget or private ones."""
    out = {}
    for cls in stage_classes:
        for f in dataclasses.fields(cls):
            if f.init and not f.name.startswith("_") and f.name not in ("keep", "budget"):
                out.setdefault(f.name, f)
    return out


def check_setting(key: str, value, annotation: str) -> None:
    """Raise a one-line ValueError unless ``value`` fits a field annotated ``annotation`` (e.g. ``"int | None"``)."""
    names = [part.strip() for part in str(annotation).split("|")]
    allowed = tuple(t for name in names for t in _TYPES.get(name, (object,)))
    if isinstance(value, bool) and bool not in allowed:
        allowed = ()  # a bool is an int to Python, not to a user who typed true
    if not isinstance(value, allowed):
        kind = " or ".join(_KINDS.get(n, n) for n in names)
        example = next((_EXAMPLES[n] for n in names if n in _EXAMPLES), None)
        raise ValueError(f"{setting(key, value)} is invalid: {key} must be {kind}; e.g. {setting(key, example)}")


def take(settings: dict, *stage_classes) -> dict:
    """Pop and type-check the entries of ``settings`` that are fields of the first of ``stage_classes`` that has them."""
    fields = settings_of(*stage_classes)
    taken = {}
    for key in [k for k in settings if k in fields]:
        check_setting(key, settings[key], fields[key].type)
        taken[key] = settings.pop(key)
    return taken


def no_leftovers(name: str, settings: dict, *stage_classes, extra: tuple[str, ...] = ()) -> None:
    if not settings:
        return
    key = next(iter(settings))
    if key in ("keep", "budget"):
        raise ValueError(f"method {name!r}: {key} is not a setting; pass {option(key, settings[key])}")
    valid = sorted(set(settings_of(*stage_classes)) | set(extra))
    listing = ", ".join(valid) if valid else "none"
    raise ValueError(f"method {name!r} has no setting {key!r} ({setting(key, settings[key])}); its settings: {listing}")


def _stage(name: str, cls, keep, budget, settings: dict, default_keep: float | None):
    fields = take(settings, cls)
    no_leftovers(name, settings, cls)
    if keep is None and budget is None:
        keep = default_keep
    return cls(keep, budget, **fields)


def full(keep=None, budget=None, **settings) -> Method:
    no_leftovers("full", settings)
    if (keep is not None and keep < 1) or budget is not None:
        raise ValueError(f"method 'full' keeps every visual token; drop {option('keep')}/{option('budget')} or pick a "
                         "reducing method")
    return Method("full")


def uniform(keep=None, budget=None, **settings) -> Method:
    stage = _stage("uniform", UniformFrames, keep, budget, settings, 0.25)
    return Method("uniform", frame_selector=stage, keep=stage.keep)


def random(keep=None, budget=None, **settings) -> Method:
    stage = _stage("random", RandomDrop, keep, budget, settings, 0.25)
    return Method("random", token_reducers=[stage], keep=stage.keep)


def evs(keep=None, budget=None, **settings) -> Method:
    stage = _stage("evs", EVS, keep, budget, settings, 0.25)
    return Method("evs", token_reducers=[stage], keep=stage.keep)


def dpselect(keep=None, budget=None, **settings) -> Method:
    stage = _stage("dpselect", DPSelect, keep, budget, settings, 0.25)
    return Method("dpselect", token_reducers=[stage], keep=stage.keep)


def knorm(keep=None, budget=None, **settings) -> Method:
    stage = _stage("knorm", KnormPress, keep, budget, settings, 0.5)
    return Method("knorm", press=stage, keep=stage.keep)


def random_kv(keep=None, budget=None, **settings) -> Method:
    stage = _stage("random-kv", RandomKVPress, keep, budget, settings, 0.5)
    return Method("random-kv", press=stage, keep=stage.keep)


def streamingllm(keep=None, budget=None, **settings) -> Method:
    stage = _stage("streamingllm", StreamingLLMPress, keep, budget, settings, 0.5)
    return Method("streamingllm", press=stage, keep=stage.keep)


def citr(keep=None, budget=None, **settings) -> Method:
    settings.setdefault("heads", BUNDLED)
    stage = _stage("citr", CITRPress, keep, budget, settings, 0.25)
    return Method("citr", press=stage, keep=stage.keep)


def citr_merge(keep=None, budget=None, **settings) -> Method:
    """CITR's VideoMME setting: the similarity merge (threshold 0.4, at most 40 % merged) before the LLM, then the
    CITR press at ``keep`` of the merged video's visual entries."""
    merge = take(settings, SimilarityMerge)
    settings.setdefault("heads", BUNDLED)
    press = _stage("citr-merge", CITRPress, keep, budget, settings, 0.25)
    return Method("citr-merge", token_reducers=[SimilarityMerge(**merge)], press=press, keep=press.keep)


def qtsplus(keep=None, budget=None, **settings) -> Method:
    if keep is not None or budget is not None:
        raise ValueError(f"method 'qtsplus' predicts its retention for each question; {option('keep')}/"
                         f"{option('budget')} do not apply ({setting('rho', 0.25)} forces one)")
    settings.setdefault("modules", BUNDLED)
    stage = QTSPlusSelector(**take(settings, QTSPlusSelector))
    no_leftovers("qtsplus", settings, QTSPlusSelector)
    return Method("qtsplus", token_reducers=[stage])


def pivotkv(keep=None, budget=None, **settings) -> Method:
    stage = _stage("pivotkv", PivotKV, keep, budget, settings, None)
    return Method("pivotkv", press=stage)


def fastv(keep=None, budget=None, **settings) -> Method:
    stage = _stage("fastv", FastV, keep, budget, settings, 0.5)
    return Method("fastv", layer_pruner=stage, keep=stage.keep)


def prunevid(keep=None, budget=None, **settings) -> Method:
    if budget is not None:
        raise ValueError(f"method 'prunevid' keeps a share of each group ({option('keep')} sets alpha); "
                         f"{option('budget')} does not apply")
    merge, prune = take(settings, PruneVidMerge), take(settings, PruneVidPrune)
    no_leftovers("prunevid", settings, PruneVidMerge, PruneVidPrune)
    if keep is not None:
        if "alpha" in prune:
            raise ValueError(f"method 'prunevid': {option('keep')} sets alpha; pass it or {setting('alpha')}, not both")
        prune["alpha"] = keep
    return Method("prunevid", token_reducers=[PruneVidMerge(**merge)], layer_pruner=PruneVidPrune(**prune))


def prunevid_merge(keep=None, budget=None, **settings) -> Method:
    if keep is not None or budget is not None:
        raise ValueError(f"method 'prunevid-merge': its retention follows the video (static share, cluster_ratio); "
                         f"{option('keep')}/{option('budget')} do not apply")
    merge = take(settings, PruneVidMerge)
    no_leftovers("prunevid-merge", settings, PruneVidMerge)
    return Method("prunevid-merge", token_reducers=[PruneVidMerge(**merge)])


def retake(keep=None, budget=None, **settings) -> Method:
    """ReTaKe as released: DPSelect (pivots; ``dpselect=False`` drops it, as the Qwen2-VL VideoMME config), PivotKV
    with the recipe's YaRN RoPE (``yarn_factor=4``; ``yarn_factor=None`` for the model's own RoPE)."""
    use_dpselect = settings.pop("dpselect", True)
    check_setting("dpselect", use_dpselect, "bool")
    select = take(settings, DPSelect)
    press = {"yarn_factor": 4.0} | take(settings, PivotKV)
    no_leftovers("retake", settings, DPSelect, PivotKV, extra=("dpselect",))
    if select and not use_dpselect:
        raise ValueError(f"method 'retake': {setting('dpselect', False)} turns DPSelect off, so "
                         f"{', '.join(select)} cannot apply")
    reducers = [DPSelect(**select)] if use_dpselect else []
    return Method("retake", token_reducers=reducers, press=PivotKV(keep, budget, **press))
