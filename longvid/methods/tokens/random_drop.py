"""Random visual-token drop at the keep ratio: the control every pruning method must beat.

Seeded: the same seed and token count give the same kept set. Kept tokens keep their original M-RoPE positions.

Based on: the random-pruning control of the token-compression benchmarks UniPruneBench and VTC-Bench, where it beats
several published pruners (see shared/research/anchors.md, section 1.4); it has no paper of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longvid.methods.base import ScoredTokenReducer
from longvid.tokens import VisualTokens


@dataclass
class RandomDrop(ScoredTokenReducer):
    seed: int = 0

    def score(self, tokens: VisualTokens, query_embeds: torch.Tensor | None) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        return torch.rand(len(tokens), generator=generator)
