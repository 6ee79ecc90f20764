"""PruneVid stage 2: at layer K, keep the visual tokens the question attends to most, a share of each group.

Scores come from the question rows (every token after the video: the question and the assistant prefix) attending
over the whole sequence at layer ``layer``, recomputed from that layer's input WITHOUT RoPE and WITHOUT a causal
mask, as the paper's code does; only those rows are computed, never the full S x S map. A visual token's score is
its max over heads and rows. Within each group (PruneVid stage 1 makes one group per segment's static tokens and
one per frame's dynamic tokens; without stage 1, one group per temporal step) the top ``max(1, int(alpha * n))`` are
kept, the reference code's count (``int`` alone can empty a group of one or two tokens, which never happens at the
paper's 144 tokens per frame; the ``max`` keeps one). Equal scores go to the earlier token. Scores are computed in
float32 (the reference uses the model's dtype, bf16 in practice, where near-equal scores tie and kept sets differ;
float32 is the more precise of the two). Kept tokens keep their positions; the hidden states, positions and the KV
of layers ``0..K`` are gathered by the engine.

The layer: the paper's K = 10 of a 32-layer LLM. By default it is taken as a relative depth (10/32 of the model's
layers), so the preset runs on every model; ``layer=`` fixes an absolute layer.

Based on: https://arxiv.org/abs/2412.16117 (PruneVid), stage 2; defaults K = 10 (of 32), alpha = 0.4.
Requires: the question in the same forward (query-aware).
"""

from __future__ import annotations

from dataclasses import dataclass

import math

import torch

from longvid.errors import setting
from longvid.methods.attention import attention_received
from longvid.methods.base import LayerPruner, PruneContext, num_to_keep_floor, top_k_indices


@dataclass
class PruneVidPrune(LayerPruner):
    """PruneVid stage 2 at layer ``layer``, or, when it is None, at ``depth`` of the model's decoder layers.

    Attributes
    ----------
    alpha : float
        Share of each group kept: ``max(1, int(alpha * n))``.
    layer : int or None
        Scoring layer (0-based); pruning applies from ``layer + 1`` on.
    depth : float
        Relative depth used when ``layer`` is None: ``floor(depth * num_layers + 0.5)``, so the paper's K=10 of 32
        layers (0.3125) is layer 9 of Qwen2-VL-7B's 28, layer 2 of longvid-tiny's 6 (v1: 1 of 4).
    """

    alpha: float = 0.4
    layer: int | None = None
    depth: float = 10 / 32

    def __post_init__(self):
        if not 0 < self.alpha <= 1:
            raise ValueError(f"{setting('alpha', self.alpha)} is invalid: alpha must be in (0, 1]; the paper uses 0.4")
        if self.layer is not None and self.layer < 0:
            raise ValueError(f"{setting('layer', self.layer)} is invalid: layer must be >= 0")
        if not 0 <= self.depth < 1:
            raise ValueError(f"{setting('depth', self.depth)} is invalid: depth must be in [0, 1); the paper uses "
                             "10/32 = 0.3125")

    def layer_index(self, num_layers: int) -> int:
        if self.layer is not None:
            return self.layer
        return min(num_layers - 1, math.floor(self.depth * num_layers + 0.5))

    def scores(self, ctx: PruneContext) -> torch.Tensor:
        """(L,) max over heads and question rows of the RoPE-free, unmasked attention at this layer."""
        q, k = ctx.qk(query_rows=ctx.query.nonzero().flatten(), rope=False)
        return attention_received(q, k, ctx.scaling, reduce="max")[0].amax(0)

    def select(self, ctx: PruneContext) -> torch.Tensor:
        if self.alpha >= 1:
            return torch.arange(len(ctx.visual), device=ctx.visual.device)
        scores = self.scores(ctx)
        keep = ~ctx.visual
        for group in ctx.groups[ctx.visual].unique():
            members = (ctx.groups == group).nonzero().flatten()
            keep[members[top_k_indices(scores[members], num_to_keep_floor(len(members), self.alpha))]] = True
        return keep.nonzero().flatten()
