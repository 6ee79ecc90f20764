"""Attention internals of rotate-half RoPE decoder layers (Llama, Qwen2, Qwen2-VL, Qwen2.5-VL, Qwen3-VL), for methods
that score tokens by attention: q and k of a layer for its input, with the layer's own norms and rotary.

Methods never compute these themselves (a family with QK-norm would make their scores silently wrong): the engine
hands them ``AttentionOps`` calls through ``PruneContext.qk`` and the press hooks. A family with other internals gives
its adapter another ``AttentionOps``.

    from longvid.models.attention import AttentionOps
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """The RoPE rotation these families use: (x1, x2) -> (-x2, x1) over the two halves of the last dimension."""
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


@dataclass(frozen=True)
class AttentionOps:
    """q/k of a decoder layer as its attention computes them.

    ``qk_norm``: the family normalises each head's q and k after the projections (Qwen3: ``q_norm``/``k_norm``), so
    scores and captures must too.
    """

    qk_norm: bool = False

    def qk(self, layer: torch.nn.Module, hidden_in: torch.Tensor, position_embeddings=None,
           query_rows: torch.Tensor | slice | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries (B, H_q, R, d) and keys (B, H_kv, L, d) of ``layer`` for its input ``hidden_in`` (B, L, D).

        The layer's input norm and projections (and QK-norms) apply; queries only for ``query_rows`` (all when
        None). With ``position_embeddings`` (cos, sin), each (B, L, d), RoPE is applied as the model does; without,
        q and k are un-rotated.
        """
        attn = layer.self_attn
        x = layer.input_layernorm(hidden_in)
        rows = slice(None) if query_rows is None else query_rows
        bsz, length, _ = x.shape
        d = attn.head_dim
        q = attn.q_proj(x[:, rows]).view(bsz, -1, attn.config.num_attention_heads, d)
        k = attn.k_proj(x).view(bsz, length, -1, d)
        if self.qk_norm:
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        if position_embeddings is not None:
            cos, sin = position_embeddings
            q, k = self.apply_rope(q, (cos[:, rows], sin[:, rows])), self.apply_rope(k, position_embeddings)
        return q, k

    def capture_points(self, layer: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
        """The modules whose outputs are the pre-RoPE q and k the attention uses (after QK-norm where there is one),
        each (B, L, H * d) or (B, L, H, d): forward hooks there capture them without recomputing anything."""
        attn = layer.self_attn
        return (attn.q_norm, attn.k_norm) if self.qk_norm else (attn.q_proj, attn.k_proj)

    @staticmethod
    def to_heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
        """A captured (B, n, H * d) or (B, n, H, d) output as (B, H, n, d)."""
        return x.reshape(x.shape[0], x.shape[1], -1, head_dim).transpose(1, 2)

    @staticmethod
    def apply_rope(x: torch.Tensor, position_embeddings) -> torch.Tensor:
        """RoPE on x (B, H, L, d) with (cos, sin), each (B, L, d) (M-RoPE sections already merged by the model)."""
        cos, sin = (t.unsqueeze(1) for t in position_embeddings)
        return x * cos + rotate_half(x) * sin

    @staticmethod
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
