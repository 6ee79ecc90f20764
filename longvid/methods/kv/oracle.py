"""The oracle press: evicts by the true answer-attention labels (CITR's training target), the upper bound a learned
press is measured against. Evaluation only: its scores need the ground-truth answer, so it is built per question
(`longvid.train.citr_labels.oracle_method`), never from the registry.

Each layer and KV head keeps its ``budget`` visual entries with the largest label, exactly what CITR's heads learn to
predict; as CITR's released ``golden_generate``, scores are fixed per entry on arrival (here: looked up by the
entry's visual index), so under a fixed budget chunking never changes the kept set (under a keep ratio, see
`longvid.methods.kv.arrival`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from longvid.methods.kv.arrival import ArrivalScoredPress


@dataclass
class OraclePress(ArrivalScoredPress):
    labels: torch.Tensor | None = field(default=None, repr=False)  # (layers, H_kv, n_visual)

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.labels, torch.Tensor) or self.labels.ndim != 3:
            raise ValueError("the oracle press needs labels (layers, kv_heads, visual tokens): build it with "
                             "longvid.train.citr_labels.oracle_method(lm, frames, question, answer)")

    def index_score(self, layer_idx: int, index: torch.Tensor) -> torch.Tensor:
        labels = self.labels[layer_idx].to(index.device)
        if index.shape[0] != labels.shape[0] or int(index.max()) >= labels.shape[1]:
            raise ValueError(f"the oracle's labels cover {labels.shape[1]} visual tokens and {labels.shape[0]} KV "
                             f"heads; this run has more: build them from the same frames and model")
        return labels.gather(1, index)
