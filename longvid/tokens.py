"""VisualTokens: the video's LLM-space tokens with the bookkeeping every reducer must carry.

Reducers never mutate a VisualTokens; they return a new one (a subset via ``select`` or a merge via ``replace``).
Positions come from the full, unreduced layout (design invariant 1): a kept token keeps its M-RoPE ids.

    from longvid.tokens import VisualTokens
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class VisualTokens:
    """Visual tokens of one video after the vision encoder's merger (one token per 2x2 patches per temporal step).

    Attributes
    ----------
    embeds : torch.Tensor
        (N, D) LLM-space embeddings.
    thw : torch.LongTensor
        (N, 3) coordinates in the merged grid: temporal step, row, column.
    positions : torch.LongTensor
        (3, N) M-RoPE (temporal, height, width) ids taken from the full layout of the prompt.
    time : torch.Tensor
        (N,) float64 timestamp in seconds of the first frame of the token's temporal step.
    merged : torch.LongTensor
        (N,) how many original tokens each token stands for (1 unless a reducer merged tokens).
    grid_thw : tuple[int, int, int]
        Merged-grid shape (T, H, W) of the unreduced video: ``T * H * W == num_original``.
    num_original : int
        Visual token count before any reduction; realised retention is ``len(self) / num_original``.
    group : torch.LongTensor or None
        (N,) selection groups for later stages (PruneVid: one group per segment's static set and per frame's dynamic
        set; its layer pruner keeps a share of each group).
    pivot : torch.BoolTensor or None
        (N,) key-patch flags (ReTaKe's DPSelect marks them; PivotKV keeps them).
    end_position : int or None
        First text position after the video when a reducer re-indexed positions (DPSelect at ratio < 1 squeezes
        time); None means the full layout's max + 1.
    """

    embeds: torch.Tensor
    thw: torch.Tensor
    positions: torch.Tensor
    time: torch.Tensor
    merged: torch.Tensor
    grid_thw: tuple[int, int, int]
    num_original: int
    group: torch.Tensor | None = None
    pivot: torch.Tensor | None = None
    end_position: int | None = None

    def __len__(self) -> int:
        return self.embeds.shape[0]

    @property
    def tokens_per_step(self) -> int:
        """Tokens in one temporal step of the unreduced grid (H * W)."""
        return self.grid_thw[1] * self.grid_thw[2]

    @property
    def retention(self) -> float:
        return len(self) / self.num_original

    def select(self, index: torch.Tensor) -> VisualTokens:
        """Subset by token index (N',), kept in the order given; reducers pass sorted indices to keep time order."""
        index = torch.as_tensor(index, dtype=torch.long)

        def take(x: torch.Tensor | None, dim: int = 0) -> torch.Tensor | None:  # each field on its own device
            return None if x is None else x.index_select(dim, index.to(x.device))

        return replace(self, embeds=take(self.embeds), thw=take(self.thw), positions=take(self.positions, 1),
                       time=take(self.time), merged=take(self.merged), group=take(self.group),
                       pivot=take(self.pivot))

    def replace(self, **changes) -> VisualTokens:
        """A copy with some fields changed (used by merging reducers); shapes are checked."""
        new = replace(self, **changes)
        n = new.embeds.shape[0]
        optional = [x.shape == (n,) for x in (new.group, new.pivot) if x is not None]
        if not (new.thw.shape == (n, 3) and new.positions.shape == (3, n) and new.time.shape == (n,)
                and new.merged.shape == (n,) and all(optional)):
            raise ValueError(
                f"VisualTokens fields disagree on the token count {n}: thw {tuple(new.thw.shape)}, positions "
                f"{tuple(new.positions.shape)}, time {tuple(new.time.shape)}, merged {tuple(new.merged.shape)}"
            )
        return new
