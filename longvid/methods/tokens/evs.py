"""EVS (Efficient Video Sampling): drop visual tokens that repeat the same spatial slot of the previous step.

Score of a token = 1 - cosine(token, token at the same (row, col) in the previous temporal step); the first step is
always kept whole; the top ``max(tokens_per_step, round(keep * N))`` tokens are kept globally across the video;
kept tokens keep their original (t, h, w) positions. This is vLLM's ``--video-pruning-rate q`` with ``keep = 1 - q``
(vLLM rounds the count down with ``int``; we round to nearest so the realised ratio is within one token).

Based on: https://arxiv.org/abs/2510.14624 (EVS) and vLLM ``vllm/multimodal/evs.py``.
Requires: the full grid (run it before any other reducer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from longvid.methods.base import ScoredTokenReducer
from longvid.tokens import VisualTokens


@dataclass
class EVS(ScoredTokenReducer):
    def min_keep(self, tokens: VisualTokens) -> int:
        return tokens.tokens_per_step

    def score(self, tokens: VisualTokens, query_embeds: torch.Tensor | None) -> torch.Tensor:
        t, h, w = tokens.grid_thw
        if len(tokens) != t * h * w:
            raise ValueError(f"EVS needs the full {t}x{h}x{w} grid ({t * h * w} tokens), got {len(tokens)}; "
                             "put it first among the token reducers")
        x = tokens.embeds.float().view(t, h * w, -1)
        change = 1.0 - F.cosine_similarity(x[1:], x[:-1], dim=-1)  # (t - 1, h * w)
        first = torch.full((1, h * w), float("inf"))
        return torch.cat([first, change.cpu()]).flatten()
