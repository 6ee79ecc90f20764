"""Knorm: a query-agnostic KV press keeping the visual entries with the smallest key norm.

Applied between prefill chunks: once more visual entries are cached than the budget allows, each layer and KV head
keeps its ``budget`` lowest-norm visual keys (keys are post-RoPE; RoPE preserves norms). Text before the video is
never evicted. Low key norm correlates with high attention (Devoto et al.).

Based on: https://arxiv.org/abs/2406.11430 ("A Simple and Effective L2 Norm-Based Strategy for KV Cache
Compression") and kvpress ``KnormPress``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longvid.methods.base import KVPress


@dataclass
class KnormPress(KVPress):
    def score(self, layer_idx: int, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return -keys.float().norm(dim=-1)
