"""StreamingLLM: attention sinks plus a window of the most recent entries, under the KV budget.

Query-agnostic and streaming by construction: after each chunk, each layer and KV head keeps the ``sink`` first
visual entries and the most recent ones up to the budget. The chat prefix before the video (the system prompt and
the turn's opening tokens) is never evicted, so it is the attention sink StreamingLLM keeps (its first 4 tokens);
``sink`` keeps that many first *visual* entries on top (0 by default: the prefix is the sink).

Based on: https://arxiv.org/abs/2309.17453 ("Efficient Streaming Language Models with Attention Sinks") and kvpress
``StreamingLLMPress`` (``n_sink=4`` counted from the start of the sequence, which here is the protected prefix).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longvid.errors import setting
from longvid.methods.kv.arrival import ArrivalScoredPress


@dataclass
class StreamingLLMPress(ArrivalScoredPress):
    sink: int = 0

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.sink, bool) or not isinstance(self.sink, int) or self.sink < 0:
            raise ValueError(f"{setting('sink', self.sink)} is invalid: it must be 0 or more visual entries; pass "
                             f"e.g. {setting('sink', 4)}")

    def index_score(self, layer_idx: int, index: torch.Tensor) -> torch.Tensor:
        recency = index.double()
        return torch.where(index < self.sink, torch.full_like(recency, float("inf")), recency)
