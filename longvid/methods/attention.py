"""Attention scores recomputed from a layer's input, for methods that score tokens by attention under SDPA.

``output_attentions`` returns nothing under SDPA / flash attention (design invariant 4), and a full S x S map does
not fit for long videos anyway, so methods recompute q and k with the layer's own norm and projections for the
few query rows they need. RoPE is optional: FastV scores with it, PruneVid and PivotKV without.

    from longvid.methods.attention import attention_received, project_qk
"""

from __future__ import annotations

import torch
from transformers.models.qwen2_vl.modeling_qwen2_vl import rotate_half


def project_qk(attn: torch.nn.Module, hidden: torch.Tensor, position_embeddings=None,
               query_rows: torch.Tensor | slice | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries (B, H_q, R, d) and keys (B, H_kv, L, d) of ``attn`` (a ``self_attn`` module) for its input.

    ``hidden`` (B, L, D) is what ``self_attn`` receives (after the layer's input norm); queries are computed only
    for ``query_rows`` (all rows when None). With ``position_embeddings`` (cos, sin), each (B, L, d), RoPE is
    applied as the model does; without, q and k are un-rotated.
    """
    rows = slice(None) if query_rows is None else query_rows
    bsz, length, _ = hidden.shape
    d = attn.head_dim
    q = attn.q_proj(hidden[:, rows]).view(bsz, -1, attn.config.num_attention_heads, d).transpose(1, 2)
    k = attn.k_proj(hidden).view(bsz, length, -1, d).transpose(1, 2)
    if position_embeddings is not None:
        cos, sin = position_embeddings
        q, k = apply_rope(q, (cos[:, rows], sin[:, rows])), apply_rope(k, position_embeddings)
    return q, k


def apply_rope(x: torch.Tensor, position_embeddings) -> torch.Tensor:
    """RoPE as the model applies it: x (B, H, L, d) with (cos, sin), each (B, L, d) (M-RoPE sections already merged)."""
    cos, sin = (t.unsqueeze(1) for t in position_embeddings)
    return x * cos + rotate_half(x) * sin


def attention_received(q: torch.Tensor, k: torch.Tensor, scaling: float, *, reduce: str = "sum",
                       key_offset: int | None = None, heads_per_step: int = 4) -> torch.Tensor:
    """Attention each key receives from the query rows: (B, H_q, S), float32, reduced over rows.

    ``q`` (B, H_q, R, d) attends over ``k`` (B, H_kv, S, d) with a softmax per row; ``reduce`` is "sum" (PivotKV),
    "max" (PruneVid) or "mean" over the R rows. GQA: query head h reads key head ``h // (H_q / H_kv)``.
    ``key_offset`` makes it causal (row r sees keys ``<= key_offset + r``); None is bidirectional. A few heads at a
    time, so at most (B, heads_per_step, R, S) is materialised, never the whole map.
    """
    if reduce not in ("sum", "max", "mean"):
        raise ValueError(f"reduce must be 'sum', 'max' or 'mean', got {reduce!r}")
    groups = q.shape[1] // k.shape[1]
    out = []
    for h0 in range(0, q.shape[1], heads_per_step):
        heads = torch.arange(h0, min(h0 + heads_per_step, q.shape[1]), device=q.device)
        logits = q[:, heads].float() @ k[:, heads // groups].float().transpose(-1, -2) * scaling
        if key_offset is not None:
            rows = torch.arange(q.shape[2], device=q.device).unsqueeze(1) + key_offset
            logits = logits.masked_fill(torch.arange(k.shape[2], device=q.device) > rows, float("-inf"))
        probs = logits.softmax(-1)
        out.append(probs.amax(dim=2) if reduce == "max" else probs.sum(2) if reduce == "sum" else probs.mean(2))
    return torch.cat(out, dim=1)


def rerotate(keys: torch.Tensor, old, new) -> torch.Tensor:
    """Move post-RoPE keys (B, H, L, d) from the rotation ``old`` = (cos, sin) to ``new`` (each (B, L, d)).

    The inverse of ``x cos + rotate_half(x) sin`` (cos and sin carry the RoPE attention scaling ``s``, so
    ``cos^2 + sin^2 = s^2``) is ``(y cos - rotate_half(y) sin) / s^2``.
    """
    cos_old, sin_old = (x.unsqueeze(1).float() for x in old)
    cos_new, sin_new = (x.unsqueeze(1).float() for x in new)
    y = keys.float()
    scale2 = cos_old.pow(2) + sin_old.pow(2)
    x = (y * cos_old - rotate_half(y) * sin_old) / scale2
    return (x * cos_new + rotate_half(x) * sin_new).to(keys.dtype)
