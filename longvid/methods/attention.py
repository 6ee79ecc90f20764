"""Attention each key receives from some query rows, for methods that score tokens by attention under SDPA.

``output_attentions`` returns nothing under SDPA / flash attention (design invariant 4), and a full S x S map does
not fit for long videos anyway, so methods take the q and k of the few rows they need from the engine (computed
with the family's own norms and projections, ``PruneContext.qk``, or captured from the attention itself in a press's
``observe``) and reduce the softmax here. Nothing in this file knows a model family.

    from longvid.methods.attention import attention_received
"""

from __future__ import annotations

import torch


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
