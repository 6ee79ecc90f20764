"""Knorm: a query-agnostic KV press keeping the visual entries with the smallest key norm.

Applied between prefill chunks: once more visual entries are cached than the budget allows, each layer and KV head
keeps its ``budget`` lowest-norm visual keys (keys are post-RoPE; RoPE preserves norms). Text before the video is
never evicted. Low key norm correlates with high attention (Devoto et al.). Each key is scored once, when its chunk
arrives (a norm depends on that key alone), and its score travels with it, so a long video costs a top-k per chunk,
not a re-scoring of the whole cache. Norms are computed in float32 (kvpress uses the cache's dtype, bf16 in practice,
where near-equal norms tie; float32 is the more precise of the two); equal norms keep the earlier entry.

Based on: https://arxiv.org/abs/2406.11430 ("A Simple and Effective L2 Norm-Based Strategy for KV Cache
Compression") and kvpress ``KnormPress``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longvid.methods.base import KVPress


@dataclass
class KnormPress(KVPress):
    per_entry_scores = True  # a key's norm is its own: scored once on arrival, kept beside it

    def score(self, layer_idx: int, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return -keys.float().norm(dim=-1)
