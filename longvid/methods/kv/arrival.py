"""Presses whose score of a cache entry is a function of when it arrived: its index among the visual tokens.

Each entry is scored once, on arrival, from its absolute visual index (the chunk's new visual entries are the last
``n_new_visual`` of ``visual_seen``), and the score travels with it (``per_entry_scores``). Under a fixed ``budget``
how the prefill is chunked never changes what is kept: the same entries survive as if the whole video had been
scored at once. Under a ``keep`` ratio the target grows with the visual tokens seen, so an entry evicted while it
was small is not taken back: chunked runs keep relatively more of the later entries (as every press applied between
chunks does, knorm included); pass ``budget`` for a chunking-independent choice.
"""

from __future__ import annotations

import torch

from longvid.methods.base import KVPress, PrefillChunk


class ArrivalScoredPress(KVPress):
    """A KV press scoring entries by ``index_score(layer_idx, index)``, ``index`` (H_kv, n) absolute visual indices."""

    per_entry_scores = True

    def index_score(self, layer_idx: int, index: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def new_scores(self, layer_idx: int, keys: torch.Tensor, values: torch.Tensor, chunk: PrefillChunk,
                   n_old: int) -> torch.Tensor:
        n_new = keys.shape[2] - chunk.n_protected - n_old
        first = chunk.visual_seen - n_new
        index = torch.arange(first, first + n_new, device=keys.device).expand(keys.shape[1], -1)
        return self.index_score(layer_idx, index).expand(keys.shape[0], -1, -1)
