"""Random KV eviction: each layer and KV head keeps a random ``keep`` share of the visual entries.

The scorer-free floor a learned or scored press (CITR, knorm, PivotKV) must beat at the same KV budget. An entry's
score is a fixed pseudo-random number of ``(seed, layer, head, visual index)``, drawn on arrival: under a fixed
budget the same seed keeps the same entries however the prefill is chunked (under a keep ratio, see
`longvid.methods.kv.arrival`), and heads and layers keep different ones (as kvpress's ``RandomPress``, which draws
``torch.rand`` per head over the whole cache at once; drawing per entry instead is what makes the choice independent
of chunking, which a press applied between chunks needs).

Based on: kvpress ``RandomPress``; the random-eviction baseline of the KV-cache compression literature.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longvid.methods.kv.arrival import ArrivalScoredPress

_P1, _P2 = 2_147_483_629, 2_147_483_587  # primes below 2**31: products with 31-bit values fit in int64


@dataclass
class RandomKVPress(ArrivalScoredPress):
    seed: int = 0

    def index_score(self, layer_idx: int, index: torch.Tensor) -> torch.Tensor:
        heads = torch.arange(index.shape[0], device=index.device)[:, None]
        x = (index * 1_000_003 + heads * 7_919 + layer_idx * 104_729 + self.seed * 15_485_863) % _P1
        for _ in range(3):  # a few rounds of a multiplicative hash, mod primes: well mixed, and exact
            x = (x * 48_271 + 11) % _P2
            x = (x * 69_621 + 7) % _P1
        return x.double() / _P1
