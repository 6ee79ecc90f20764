"""PruneVid stage 2: at layer K, keep the visual tokens the question attends to most, a share of each group.

Scores come from the question rows (every token after the video: the question and the assistant prefix) attending
over the whole sequence at layer ``layer``, recomputed from that layer's input WITHOUT RoPE and WITHOUT a causal
mask, as the paper's code does; only those rows are computed, never the full S x S map. A visual token's score is
its max over heads and rows. Within each group (PruneVid stage 1 makes one group per segment's static tokens and
one per frame's dynamic tokens; without stage 1, one group per temporal step) the top ``alpha`` are kept:
``round(alpha * n)``, at least one per group (the paper's ``int(alpha * n)`` can empty a group of one or two
tokens, which never happens at the paper's 144 tokens per frame). Kept tokens keep their positions; the hidden
states, positions and the KV of layers ``0..K`` are gathered by the engine.

Based on: https://arxiv.org/abs/2412.16117 (PruneVid), stage 2; defaults K = 10, alpha = 0.4.
Requires: the question in the same forward (query-aware).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longvid.methods.attention import attention_received, project_qk
from longvid.methods.base import LayerPruner, PruneContext, num_to_keep


@dataclass
class PruneVidPrune(LayerPruner):
    layer: int = 10
    alpha: float = 0.4

    def __post_init__(self):
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")
        if self.layer < 0:
            raise ValueError(f"layer must be >= 0, got {self.layer}")

    def scores(self, ctx: PruneContext) -> torch.Tensor:
        """(L,) max over heads and question rows of the RoPE-free, unmasked attention at this layer."""
        attn = ctx.layer.self_attn
        rows = ctx.query.nonzero().flatten()
        q, k = project_qk(attn, ctx.layer.input_layernorm(ctx.hidden_in), None, query_rows=rows)
        return attention_received(q, k, attn.scaling, reduce="max")[0].amax(0)

    def select(self, ctx: PruneContext) -> torch.Tensor:
        if self.alpha >= 1:
            return torch.arange(len(ctx.visual), device=ctx.visual.device)
        scores = self.scores(ctx)
        keep = ~ctx.visual.clone()
        for group in ctx.groups[ctx.visual].unique():
            members = (ctx.groups == group).nonzero().flatten()
            n_keep = num_to_keep(len(members), self.alpha, None)
            keep[members[torch.topk(scores[members], n_keep).indices]] = True
        return keep.nonzero().flatten()
