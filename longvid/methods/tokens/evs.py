"""EVS (Efficient Video Sampling): drop visual tokens that repeat the same spatial slot of the previous step.

Score of a token = 1 - cosine(token, token at the same (row, col) in the previous temporal step); the first step is
always kept whole; the top ``max(tokens_per_step, round(keep * N))`` tokens are kept globally across the video;
kept tokens keep their original (t, h, w) positions. This is vLLM's ``--video-pruning-rate q`` with ``keep = 1 - q``
(vLLM rounds the count down with ``int``; we round to nearest so the realised ratio is within one token). Equal
scores keep the earlier token (vLLM's stable descending argsort: on a static video the earliest steps keep their
tokens). Cosines are computed in float32, a block of steps at a time (vLLM uses the embeddings' dtype, bf16 in
practice, where slowly changing slots tie and kept sets differ; float32 is the more precise of the two).

Based on: https://arxiv.org/abs/2510.14624 (EVS) and vLLM ``vllm/multimodal/evs.py``.
Requires: the full grid (run it before any other reducer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longvid.methods.base import ScoredTokenReducer
from longvid.methods.change import slot_change
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
        return slot_change(tokens.embeds.view(t, h * w, -1), first=float("inf")).flatten().cpu()
