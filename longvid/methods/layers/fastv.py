"""FastV: after an early decoder layer, drop the visual tokens the last prompt token attends to least.

The score of a visual token is the attention it receives from the last prompt token at layer ``layer``, averaged
over heads, recomputed from that layer's input with RoPE (as the model attends; the last row of a causal map sees
every key, so no mask is needed). The lowest-scoring visual tokens are dropped from the following layers on; equal
scores keep the earlier token. Scores are computed in float32 (FastV's code uses the model's dtype, fp16/bf16, where
near-equal scores tie and kept sets differ; float32 is the more precise of the two).

FastV's ``K`` is the first layer that sees the pruned sequence, scored with the attention of layer ``K - 1``; our
``layer`` is that scoring layer, so the paper's default K = 2 is ``layer=1``. One difference from FastV's code: the
dropped tokens also leave the KV cache of layers ``0..layer`` (every layer then holds the same entries, see
docs/architecture.md), so decoding does not attend to them in the first layers either.

Based on: https://arxiv.org/abs/2403.06764 ("An Image is Worth 1/2 Tokens After Layer 2").
Requires: the question in the same forward (query-aware); any attention implementation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longvid.errors import setting
from longvid.methods.attention import attention_received
from longvid.methods.base import Budget, LayerPruner, PruneContext, num_to_keep, top_k_indices


@dataclass
class FastV(LayerPruner, Budget):
    layer: int = 1

    def __post_init__(self):
        super().__post_init__()
        if self.layer < 0:
            raise ValueError(f"{setting('layer', self.layer)} is invalid: layer must be >= 0")

    def scores(self, ctx: PruneContext) -> torch.Tensor:
        """(L,) mean-over-heads attention of the last token over every position of the sequence."""
        q, k = ctx.qk(query_rows=[-1], rope=True)
        return attention_received(q, k, ctx.scaling)[0].mean(0)

    def select(self, ctx: PruneContext) -> torch.Tensor:
        visual_idx = ctx.visual.nonzero().flatten()
        n_keep = num_to_keep(len(visual_idx), self.keep, self.budget)
        if n_keep >= len(visual_idx):
            return torch.arange(len(ctx.visual), device=ctx.visual.device)
        keep = ~ctx.visual
        keep[visual_idx[top_k_indices(self.scores(ctx)[visual_idx], n_keep)]] = True
        return keep.nonzero().flatten()
