"""VisualTokens: the video's LLM-space tokens with the bookkeeping every reducer must carry.

Reducers never mutate a VisualTokens; they return a new one: a subset (``select``) or a merge (``pool``). Positions
come from the full, unreduced layout (design invariant 1): a kept token keeps its position ids.

Per-token extras (``extras``: a model's DeepStack features, PruneVid's groups, DPSelect's pivots, whatever a learned
method attaches) travel generically: ``select`` takes the same rows of every extra, ``pool`` averages the float
ones over a merged token's members and takes the others from its representative, and ``replace`` refuses a change
that leaves any of them with another token count. So no reducer can leave one stale.

    from longvid.tokens import VisualTokens
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch


@dataclass(frozen=True)
class VisualTokens:
    """Visual tokens of one video after the vision encoder (one token per merged patch per temporal step).

    Attributes
    ----------
    embeds : torch.Tensor
        (N, D) LLM-space embeddings.
    thw : torch.LongTensor
        (N, 3) coordinates in the merged grid: temporal step, row, column.
    positions : torch.LongTensor
        (R, N) position ids taken from the full layout of the prompt: R = 3 M-RoPE rows (temporal, height, width),
        or 1 for 1-D RoPE.
    time : torch.Tensor
        (N,) float64 timestamp in seconds of the token's temporal step.
    merged : torch.LongTensor
        (N,) how many original tokens each token stands for (1 unless a reducer merged tokens).
    grid_thw : tuple[int, int, int]
        Merged-grid shape (T, H, W) of the unreduced video: ``T * H * W == num_original``.
    num_original : int
        Visual token count before any reduction; realised retention is ``len(self) / num_original``.
    end_position : int or None
        First text position after the video when a reducer re-indexed positions (DPSelect at ratio < 1 squeezes
        time); None means the full layout's max + 1.
    extras : dict[str, torch.Tensor]
        Per-token tensors with N rows: ``"group"`` (N,) long, selection groups for later stages (PruneVid: one per
        segment's static set and per frame's dynamic set); ``"pivot"`` (N,) bool, key patches (ReTaKe's DPSelect
        marks them, PivotKV keeps them); a family's features (Qwen3-VL: ``"deepstack"`` (N, K, D)).
    """

    embeds: torch.Tensor
    thw: torch.Tensor
    positions: torch.Tensor
    time: torch.Tensor
    merged: torch.Tensor
    grid_thw: tuple[int, int, int]
    num_original: int
    end_position: int | None = None
    extras: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.embeds.shape[0]

    @property
    def group(self) -> torch.Tensor | None:
        return self.extras.get("group")

    @property
    def pivot(self) -> torch.Tensor | None:
        return self.extras.get("pivot")

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

        def take(x: torch.Tensor, dim: int = 0) -> torch.Tensor:  # each field on its own device
            return x.index_select(dim, index.to(x.device))

        return replace(self, embeds=take(self.embeds), thw=take(self.thw), positions=take(self.positions, 1),
                       time=take(self.time), merged=take(self.merged),
                       extras={k: take(v) for k, v in self.extras.items()})

    def pool(self, assign: torch.Tensor, representative: torch.Tensor, **changes) -> VisualTokens:
        """Merge tokens: output token j stands for the inputs with ``assign == j`` (assign (N,) in [0, N')).

        Its position, ``thw``, ``time`` and every non-float extra come from input ``representative[j]`` (a real
        member, so positions stay in the full layout); ``embeds`` and every float extra are the members' means
        (float32, cast back), ``merged`` their sum. ``changes`` override any field or extra (a reducer that computed
        its means in another order passes ``embeds``; new extras, e.g. ``group``, go in the same way).
        """
        n_out = len(representative)
        assign = torch.as_tensor(assign, dtype=torch.long)
        counts = torch.bincount(assign, minlength=n_out).clamp_min(1)

        def mean(x: torch.Tensor) -> torch.Tensor:
            a = assign.to(x.device)
            sums = torch.zeros(n_out, *x.shape[1:], device=x.device).index_add_(0, a, x.float())
            return (sums / counts.to(x.device).view(-1, *([1] * (x.dim() - 1)))).to(x.dtype)

        def rep(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
            return x.index_select(dim, representative.to(x.device))

        extras = {k: mean(v) if v.is_floating_point() else rep(v) for k, v in self.extras.items() if k not in changes}
        fields = dict(thw=rep(self.thw), positions=rep(self.positions, 1), time=rep(self.time))
        if "embeds" not in changes:
            fields["embeds"] = mean(self.embeds)
        if "merged" not in changes:
            fields["merged"] = torch.zeros(n_out, dtype=self.merged.dtype, device=self.merged.device).index_add_(
                0, assign.to(self.merged.device), self.merged)
        return self.replace(**(fields | extras | changes))

    def replace(self, **changes) -> VisualTokens:
        """A copy with some fields or extras changed (``group=``, ``pivot=``, ``deepstack=``: extras by name); every
        per-token field and extra must then have the same token count, else a ValueError names them."""
        fields = set(self.__dataclass_fields__)
        extras = dict(self.extras) | {k: v for k, v in changes.items() if k not in fields}
        extras = {k: v for k, v in extras.items() if v is not None}
        new = replace(self, extras=extras, **{k: v for k, v in changes.items() if k in fields and k != "extras"})
        n = new.embeds.shape[0]
        bad = {name: tuple(x.shape) for name, x in
               (("thw", new.thw), ("time", new.time), ("merged", new.merged), *new.extras.items()) if x.shape[0] != n}
        if new.positions.shape[-1] != n:
            bad["positions"] = tuple(new.positions.shape)
        if new.thw.shape != (n, 3) or bad:
            raise ValueError(f"VisualTokens fields disagree on the token count {n}: "
                             + ", ".join(f"{k} {v}" for k, v in bad.items()))
        return new
