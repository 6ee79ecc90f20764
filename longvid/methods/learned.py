"""What the learned methods (CITR's retaining heads, QTSplus's modules) share: the description of the base model
their parts were trained for, the one-line refusal to run them on another, and the parts shipped in the package.

A learned method's parts setting (``heads=``, ``modules=``) is a loaded object, a folder, or `BUNDLED`: the set
shipped for the model the method is run on (each bundled longvid-tiny has its own), chosen when the engine first
shows the method its model (`settle`), since a preset is built before the model is known.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import torch

from longvid.errors import setting

ASSETS = Path(__file__).resolve().parents[1] / "assets"
BUNDLED = "bundled"


def base_description(model) -> dict:
    """What learned parts are tied to, from a model adapter: family, LLM sizes, and a fingerprint of the LLM's weights
    (SHA-256 over a fixed sample of the embedding and of every layer's q/k/v projections, rounded to bfloat16 first,
    so the same checkpoint loaded in float32, bfloat16 or float16 has one fingerprint)."""
    config = model.lm.config
    digest = hashlib.sha256()
    with torch.no_grad():
        digest.update(_rounded(model.lm.embed_tokens.weight[:64]))
        for layer in model.lm.layers:
            attn = layer.self_attn
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
                digest.update(_rounded(proj.weight[:8]))
    return dict(family=model.family, num_layers=len(model.lm.layers), hidden_size=config.hidden_size,
                num_attention_heads=config.num_attention_heads, num_key_value_heads=config.num_key_value_heads,
                head_dim=model.lm.layers[0].self_attn.head_dim, fingerprint=digest.hexdigest()[:16])


def _rounded(w: torch.Tensor) -> bytes:
    return w.detach().to(torch.bfloat16).float().cpu().numpy().tobytes()


def base_mismatch(base: dict, model) -> str:
    """How ``model`` (an adapter) differs from the base model learned parts described by ``base`` were trained for
    (``"num_layers 6 vs 28, ..."``), or "" if it is that model."""
    theirs = base_description(model)
    return ", ".join(f"{k} {base[k]} vs {theirs.get(k)}" for k in base if base[k] != theirs.get(k))


def check_base(base: dict, model, what: str, name: str, command: str) -> None:
    """A one-line ValueError unless ``model`` (an adapter) is the one learned parts described by ``base`` (their
    `base_description`) were trained for: ``what`` names the parts, ``name`` their setting, ``command`` the
    ``longvid train`` command that makes them."""
    diff = base_mismatch(base, model)
    if diff:
        raise ValueError(f"these {what} were trained for another model ({diff}); pass {name} trained for this "
                         f"checkpoint with {setting(name, 'DIR')} (`longvid train {command}` makes them)")


def load_setting(value, folders: tuple[Path, ...], load: Callable):
    """``(parts, bundled)`` for a parts setting: `BUNDLED` loads every shipped set in ``folders`` (``parts`` is the
    first until `settle` picks; ``bundled`` the list to pick from), a folder is loaded, anything else is kept."""
    if isinstance(value, str) and value == BUNDLED:
        bundled = [load(folder) for folder in folders if folder.is_dir()]
        return (bundled[0] if bundled else None), bundled
    if isinstance(value, (str, Path)):
        return load(value), None
    return value, None


def settle(parts, bundled: list | None, model, what: str, name: str, command: str):
    """The parts to run on ``model``: of the ``bundled`` sets (from `load_setting`), the one trained for it, else
    ``parts`` itself; a one-line ValueError if they were trained for another model."""
    if bundled is None:
        check_base(parts.base, model, what, name, command)
        return parts
    theirs = base_description(model)
    for candidate in bundled:
        if all(candidate.base[k] == theirs.get(k) for k in candidate.base):
            return candidate
    raise ValueError(f"the bundled {what} were trained for another model (each bundled longvid-tiny has its own); "
                     f"pass {name} trained for this checkpoint with {setting(name, 'DIR')} (`longvid train {command}` "
                     "makes them)")
