"""Token-by-token decoding on a (possibly compressed) cache with explicit M-RoPE positions.

Positions continue from the full layout's last position + 1, never from the cache length (design invariant 2:
no ``rope_deltas``), so evicted or pruned entries do not shift the answer's positions.

    from longvid.engine.decode import Sampling, generate
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longvid.engine.forward import LanguageModel, forward


@dataclass
class Sampling:
    """Greedy by default; ``do_sample`` draws with temperature / top-k / top-p from a seeded generator."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self):
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}; use do_sample=False for greedy")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")

    def pick(self, logits: torch.Tensor, generator: torch.Generator | None) -> int:
        """Next token id from (vocab,) float logits."""
        if not self.do_sample:
            return int(logits.argmax())
        logits = logits / self.temperature
        if self.top_k:
            kth = torch.topk(logits, min(self.top_k, logits.numel())).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p < 1:
            sorted_logits, order = logits.sort(descending=True)
            cum = sorted_logits.softmax(-1).cumsum(-1)
            drop = cum - sorted_logits.softmax(-1) > self.top_p  # keep the smallest prefix reaching top_p
            logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
        probs = logits.softmax(-1)
        return int(torch.multinomial(probs.cpu(), 1, generator=generator))


@torch.inference_mode()
def generate(lm: LanguageModel, cache, logits: torch.Tensor, next_position: torch.Tensor, stop_ids: set[int],
             max_new_tokens: int, sampling: Sampling | None = None, record_logits: bool = False,
             on_token=None, stream=None) -> tuple[list[int], list[torch.Tensor]]:
    """Decode from ``logits`` (vocab,) of the last prompt token; the first new token sits at ``next_position``.

    ``next_position`` is (R,) position ids (R rows of the model: equal unless a press shifted only the time row).

    Returns the new token ids (stop token excluded) and, if ``record_logits``, the (vocab,) logits each was
    chosen from. ``on_token(n)`` is called after each token (progress bars), ``stream(token_id)`` too (a server's
    streamed reply): decoding stops when it returns True, and an exception it raises propagates.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    sampling = sampling or Sampling()
    generator = torch.Generator().manual_seed(sampling.seed) if sampling.seed is not None else None
    ids, seen = [], []
    device = lm.lm_head.weight.device
    start = torch.as_tensor(next_position, dtype=torch.long, device=device).reshape(-1, 1, 1)  # (R, 1, 1)
    for step in range(max_new_tokens):
        if record_logits:
            seen.append(logits)
        token = sampling.pick(logits, generator)
        if token in stop_ids:
            break
        ids.append(token)
        if on_token is not None:
            on_token(len(ids))
        if stream is not None and stream(token):  # the caller has what it needs (a stop string)
            break
        if step + 1 == max_new_tokens:
            break
        hidden = lm.embed_tokens(torch.tensor([[token]], device=device))
        positions = start + step
        hidden, _ = forward(lm, hidden, positions, cache)
        logits = lm.logits(hidden[:, -1])[0]
    return ids, seen
