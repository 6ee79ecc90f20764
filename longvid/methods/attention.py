"""Attention scores recomputed from a layer's input, for methods that score tokens by attention under SDPA.

``output_attentions`` returns nothing under SDPA / flash attention (design invariant 4), and a full S x S map does
not fit for long videos anyway, so methods recompute q and k with the layer's own norm and projections for the
few query rows they need. RoPE is optional: FastV scores with it, PruneVid and PivotKV without.

    from longvid.methods.attention import project_qk, attention_probs
"""

from __future__ import annotations

import torch
from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb, rotate_half


def project_qk(attn: torch.nn.Module, hidden: torch.Tensor, position_embeddings=None) -> tuple[torch.Tensor, ...]:
    """Queries (B, H_q, L, d) and keys (B, H_kv, L, d) of ``attn`` (a ``self_attn`` module) for its input.

    ``hidden`` (B, L, D) is what ``self_attn`` receives (after the layer's input norm). With ``position_embeddings``
    (cos, sin), each (B, L, d), RoPE is applied as the model does; without, q and k are un-rotated.
    """
    bsz, length, _ = hidden.shape
    d = attn.head_dim
    q = attn.q_proj(hidden).view(bsz, length, -1, d).transpose(1, 2)
    k = attn.k_proj(hidden).view(bsz, length, -1, d).transpose(1, 2)
    if position_embeddings is not None:
        q, k = apply_rotary_pos_emb(q, k, *position_embeddings)
    return q, k


def attention_probs(q: torch.Tensor, k: torch.Tensor, scaling: float, *, key_offset: int | None = None,
                    heads_per_step: int = 4) -> torch.Tensor:
    """Softmax attention of queries (B, H_q, R, d) over keys (B, H_kv, S, d): (B, H_q, R, S), float32.

    GQA: query head h reads key head ``h // (H_q / H_kv)``. ``key_offset`` makes it causal: row r sees keys
    ``<= key_offset + r``; None is bidirectional. Heads are processed a few at a time to bound memory.
    """
    groups = q.shape[1] // k.shape[1]
    out = []
    for h0 in range(0, q.shape[1], heads_per_step):
        qh = q[:, h0:h0 + heads_per_step].float()
        kh = k[:, torch.arange(h0, min(h0 + heads_per_step, q.shape[1])) // groups].float()
        logits = qh @ kh.transpose(-1, -2) * scaling
        if key_offset is not None:
            rows = torch.arange(q.shape[2], device=q.device).unsqueeze(1) + key_offset
            logits = logits.masked_fill(torch.arange(k.shape[2], device=q.device) > rows, float("-inf"))
        out.append(logits.softmax(-1))
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
