"""Temporal change of each spatial slot: ``1 - cos`` between a token and the same slot one temporal step earlier.

Shared by EVS and DPSelect (and any method that scores tokens by how much they changed). Computed a block of steps at a
time in float32, so the working memory is a block, not a float copy of the whole video: at 64k tokens of hidden size
3584 a whole-video computation holds ~3x the embeddings (2.7 GiB) on top of them, a 16-step block ~0.2 GiB.

    python -c "import torch; from longvid.methods.change import slot_change; print(slot_change(torch.randn(4, 9, 8)))"
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BLOCK_STEPS = 16  # temporal steps per block: 16 x 256 tokens x 3584 x 4 bytes = 59 MB per float32 operand


def slot_change(features: torch.Tensor, first: float = 1.0, block_steps: int = BLOCK_STEPS) -> torch.Tensor:
    """(T, N) float32 change ``d[t, n] = 1 - cos(F[t-1, n], F[t, n])`` for t >= 1, and ``d[0, n] = first``.

    ``features`` is (T, N, D): N spatial slots per temporal step, any dtype; cosines are taken in float32 (the
    references use the model's dtype, bf16 in practice, where slowly changing slots tie and the kept sets differ
    while both are "right"; float32 is the more precise of the two), with ``F.cosine_similarity``'s zero-vector rule.
    """
    t, n, _ = features.shape
    out = torch.empty(t, n, dtype=torch.float32, device=features.device)
    out[0] = first
    for start in range(1, t, block_steps):
        end = min(t, start + block_steps)
        cur = features[start:end].float()
        prev = features[start - 1:end - 1].float()
        out[start:end] = 1.0 - F.cosine_similarity(cur, prev, dim=-1)
    return out
