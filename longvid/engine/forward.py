"""One LLM forward over transformers' own decoder layers, with explicit positions and a layer-pruner hook.

We run the loop ourselves (embed -> layers -> norm) rather than calling ``language_model.forward`` because a layer
pruner changes the sequence length between layers, and the causal mask must then follow the kept tokens. The layers,
rotary embedding, norm and head are the model's own modules; nothing is forked.

    from longvid.engine.forward import forward
"""

from __future__ import annotations

import functools
import inspect
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from longvid.methods.base import LayerPruner, PruneContext


@dataclass
class LanguageModel:
    """The text half of a VLM, resolved once by the model adapter.

    Attributes
    ----------
    config : transformers.PretrainedConfig
        The text config (``_attn_implementation`` picks the mask format).
    embed_tokens, layers, norm, rotary_emb, lm_head : torch.nn.Module
        The model's own modules.
    attention : object
        The family's attention internals (``longvid.models.attention.AttentionOps``): q/k of a layer for its input
        with the layer's own norms, the modules whose outputs are the pre-RoPE q/k, RoPE and its inverse.
    """

    config: object
    embed_tokens: torch.nn.Module
    layers: torch.nn.ModuleList
    norm: torch.nn.Module
    rotary_emb: torch.nn.Module
    lm_head: torch.nn.Module
    attention: object = None

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, L, vocab) float32 logits from normed hidden states (B, L, D)."""
        return self.lm_head(hidden).float()

    def rope(self, x: torch.Tensor, positions: torch.Tensor):
        """(cos, sin) of the model's rotary embedding at ``positions`` (R, 1, L): M-RoPE takes the R = 3 rows, plain
        RoPE the single row as (1, L)."""
        return self.rotary_emb(x, positions if positions.shape[0] > 1 else positions[0])

    @functools.cached_property
    def cache_kwarg(self) -> str:
        """The keyword the decoder layers take the KV cache under: ``cache`` from transformers 5.24 (5.40 removes
        ``past_key_values``, which 5.24 still accepts with a FutureWarning), ``past_key_values`` before."""
        return cache_kwarg(self.layers[0])


def cache_kwarg(layer: torch.nn.Module) -> str:
    """``"cache"`` if this decoder layer's forward takes ``cache``, else ``"past_key_values"``."""
    return "cache" if "cache" in inspect.signature(layer.forward).parameters else "past_key_values"


def causal_mask(attn_impl: str, q_len: int, k_len: int, dtype: torch.dtype, device) -> torch.Tensor | None:
    """Bottom-right-aligned causal mask for ``q_len`` new queries over ``k_len`` keys (the last q_len are new).

    Returns None where the attention function is causal by itself: a single query, flash attention (bottom-right
    by construction), or SDPA without a past (``is_causal``, and transformers keeps its GQA fast path). Otherwise a
    (1, 1, q_len, k_len) mask: boolean for SDPA (a quarter of a float mask's memory), additive float for eager and
    registered wrappers.
    """
    past = k_len - q_len
    if q_len == 1 or "flash" in attn_impl or (past == 0 and attn_impl == "sdpa"):
        return None
    q_idx = torch.arange(q_len, device=device).unsqueeze(1) + past
    allowed = (torch.arange(k_len, device=device).unsqueeze(0) <= q_idx)[None, None]
    if attn_impl == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)


def forward(
    lm: LanguageModel,
    hidden: torch.Tensor,
    positions: torch.Tensor,
    cache,
    *,
    pruner: LayerPruner | None = None,
    visual: torch.Tensor | None = None,
    query: torch.Tensor | None = None,
    groups: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    residuals: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run all decoder layers on ``hidden`` (1, L, D) at ``positions`` (R, 1, L), appending to ``cache``.

    Parameters
    ----------
    pruner
        Optional LayerPruner; needs ``visual`` and ``query`` (L,) bool masks and ``groups`` (L,) long.
    attention_mask
        Optional 4-D additive mask (1, 1 or H, L, past + L) replacing the causal one (tests use it to mask keys).
    residuals
        Optional ``(rows, features)``: ``rows`` (L,) bool, ``features`` (K, rows.sum(), D) added to the hidden
        states at ``rows`` after layers 0..K-1 (Qwen3-VL's DeepStack, from ``VideoBlock.residuals``); they follow a
        layer pruner's selection.

    Returns
    -------
    hidden : torch.Tensor
        (1, L', D) normed final hidden states, L' = L unless the pruner dropped tokens.
    kept : torch.LongTensor or None
        (L',) indices into the input sequence that survived the pruner (None without a pruner).
    """
    impl = lm.config._attn_implementation
    if pruner is not None and attention_mask is not None:
        raise ValueError("an attention_mask override cannot be combined with a layer pruner")
    if pruner is not None:
        pruner.check_layers(len(lm.layers))
        prune_at = pruner.layer_index(len(lm.layers))
    past = cache.get_seq_length()
    q_len = hidden.shape[1]
    mask = attention_mask if attention_mask is not None else causal_mask(
        impl, q_len, past + q_len, hidden.dtype, hidden.device)
    cos_sin = lm.rope(hidden, positions)
    kept = None
    for i, layer in enumerate(lm.layers):
        hidden_in = hidden
        hidden = layer(hidden, attention_mask=mask, position_embeddings=cos_sin, use_cache=True,
                       **{lm.cache_kwarg: cache})
        if residuals is not None and i < len(residuals[1]):
            rows, features = residuals
            hidden = hidden.index_add(1, rows.nonzero().flatten(), features[i].to(hidden.device, hidden.dtype)[None])
        if pruner is not None and i == prune_at:
            ctx = PruneContext(i, layer, hidden_in, hidden, cos_sin, visual, query, groups,
                               qk=_qk_for(lm, layer, hidden_in, cos_sin), scaling=layer.self_attn.scaling)
            kept = _checked_keep(pruner.select(ctx), visual)
            hidden = hidden[:, kept]
            cos_sin = (cos_sin[0][:, kept], cos_sin[1][:, kept])
            for lower in cache.layers[: i + 1]:  # every layer then holds the same entries: one mask serves all
                lower.keys = torch.cat([lower.keys[:, :, :past], lower.keys[:, :, past:][:, :, kept]], dim=2)
                lower.values = torch.cat([lower.values[:, :, :past], lower.values[:, :, past:][:, :, kept]], dim=2)
            mask = causal_mask(impl, len(kept), past + len(kept), hidden.dtype, hidden.device)
            if residuals is not None:
                rows, features = residuals
                ordinal = rows.cumsum(0) - 1  # row -> its features' index
                residuals = (rows[kept], features[:, ordinal[kept][rows[kept]]])
    return lm.norm(hidden), kept


def _qk_for(lm: LanguageModel, layer, hidden_in, cos_sin):
    """``qk(query_rows, rope)`` for a pruner: the layer's q/k for its input, rotated or not, via the family's ops."""

    def qk(query_rows=None, rope: bool = True):
        return lm.attention.qk(layer, hidden_in, cos_sin if rope else None, query_rows)

    return qk


@contextmanager
def observing(lm: LanguageModel, press, rows: torch.Tensor):
    """While active, ``press.observe`` sees each layer's pre-RoPE queries and keys at ``rows`` (indices into the
    forward's sequence: the chunk's visual tokens) as the attention computed them, and their values (``v=``) if the
    press sets ``observes_values``; yields the dict
    ``layer index -> observe's result`` (hooks removed in ``finally``).

    The family's capture points (``q_proj``/``k_proj``, or the QK-norms where a family has them) are hooked and only
    the rows are kept; ``observe`` runs in a hook after the layer's attention, so nothing is computed twice.
    """
    observed: dict = {}
    if press is None or not press.observes or len(rows) == 0:
        yield observed
        return
    ops, handles = lm.attention, []
    for i, layer in enumerate(lm.layers):
        captured = {}

        def grab(name, captured=captured):
            def hook(module, args, output):
                captured[name] = output[:, rows]
            return hook

        def done(module, args, kwargs, output, layer_idx=i, captured=captured):
            q = ops.to_heads(captured.pop("q"), module.head_dim)
            k = ops.to_heads(captured.pop("k"), module.head_dim)
            cos, sin = kwargs["position_embeddings"]
            rope = (cos[:, rows], sin[:, rows])
            extra = {"v": ops.to_heads(captured.pop("v"), module.head_dim)} if "v" in captured else {}
            observed[layer_idx] = press.observe(layer_idx, q, k, lambda x, pe=rope: ops.apply_rope(x, pe),
                                                module.scaling, **extra)

        q_at, k_at = ops.capture_points(layer)
        handles += [q_at.register_forward_hook(grab("q")), k_at.register_forward_hook(grab("k")),
                    layer.self_attn.register_forward_hook(done, with_kwargs=True)]
        if getattr(press, "observes_values", False):  # a press that also reads the values (CITR's heads)
            handles.append(layer.self_attn.v_proj.register_forward_hook(grab("v")))
    try:
        yield observed
    finally:
        for handle in handles:
            handle.remove()


def _checked_keep(keep: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
    """A pruner's indices must be sorted, unique, and keep every non-visual token."""
    keep = torch.as_tensor(keep, dtype=torch.long, device=visual.device)
    if keep.ndim != 1 or (keep.numel() > 1 and not bool((keep[1:] > keep[:-1]).all())):
        raise ValueError("a LayerPruner must return sorted, unique 1-D indices")
    if int((~visual).sum()) != int((~visual[keep]).sum()):
        raise ValueError("a LayerPruner may drop visual tokens only; it dropped text tokens")
    return keep
