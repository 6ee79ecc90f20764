"""CITR's similarity merge: runs of visual tokens that barely change in one spatial slot fold into the token before.

For each spatial slot p of the merged grid, in time order: ``sim[t] = cos(x[t-1], x[t])`` (float32), and the first
step's tokens are never candidates. Candidates are the tokens with ``sim >= threshold``; if they are more than
``max_ratio`` of the video's tokens, the ``floor(max_ratio * N)`` most similar are the candidates instead. Each
maximal run of consecutive candidates in a slot merges into the token just before it (its anchor, a non-candidate):
``anchor <- (anchor + sum(run)) / (len(run) + 1)``; the run's tokens go. Survivors keep their original (t, h, w)
positions (gaps allowed), as in CITR. Query-agnostic, so it runs once per video and serves a whole session; its
retention follows the video (a static video merges up to ``max_ratio``).

Defaults are CITR's VideoMME evaluation (threshold 0.4, at most 40 % merged); the function in the released code
defaults to 0.6. Ties under the cap keep the earlier token as a non-candidate (stable sort, descending similarity).

Based on: CITR (ACM MM 2025), ``similarity_merge`` applied to the vision merger's output before the LLM.
Requires: the full grid (run it before any other reducer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longvid.errors import setting
from longvid.methods.base import TokenReducer
from longvid.methods.change import slot_change
from longvid.tokens import VisualTokens


@dataclass
class SimilarityMerge(TokenReducer):
    threshold: float = 0.4
    max_ratio: float = 0.4

    def __post_init__(self):
        if not -1.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"{setting('threshold', self.threshold)} is invalid: it is a cosine similarity, in [-1, 1]; "
                             "CITR uses 0.4")
        if not 0.0 <= float(self.max_ratio) < 1.0:
            raise ValueError(f"{setting('max_ratio', self.max_ratio)} is invalid: it is the largest share of tokens merged, in "
                             "[0, 1); CITR uses 0.4")

    def candidates(self, tokens: VisualTokens) -> torch.Tensor:
        """(T, P) bool: the tokens that merge into their slot's previous survivor."""
        t, h, w = tokens.grid_thw
        if len(tokens) != t * h * w:
            raise ValueError(f"the similarity merge needs the full {t}x{h}x{w} grid ({t * h * w} tokens), got "
                             f"{len(tokens)}; put it first among the token reducers")
        sim = 1.0 - slot_change(tokens.embeds.view(t, h * w, -1), first=3.0)  # first step: -2, never a candidate
        chosen = sim >= self.threshold
        cap = int(self.max_ratio * len(tokens))
        if int(chosen.sum()) > cap:
            order = torch.sort(sim.flatten(), descending=True, stable=True).indices[:cap]
            chosen = torch.zeros(t * h * w, dtype=torch.bool, device=sim.device)
            chosen[order] = True
            chosen = chosen.view(t, h * w) & (sim > -1.5)
        return chosen.cpu()

    def reduce(self, tokens: VisualTokens, query_embeds: torch.Tensor | None = None) -> VisualTokens:
        chosen = self.candidates(tokens)
        if not chosen.any():
            return tokens
        t, p = chosen.shape
        index = torch.arange(t * p).view(t, p)
        # each token's anchor: the latest non-candidate at or before it in its slot
        anchor = torch.where(chosen, torch.full_like(index, -1), index).cummax(dim=0).values
        keep = ~chosen.flatten()
        out_of = torch.full((t * p,), -1, dtype=torch.long)
        out_of[keep.nonzero().flatten()] = torch.arange(int(keep.sum()))
        assign = out_of[anchor.flatten()]
        # sort survivors by their original order (time-major), as every reducer keeps them
        representative = keep.nonzero().flatten()
        return tokens.pool(assign, representative)
