"""DPSelect (ReTaKe): keep each spatial slot's key time steps, where its features change most, and mark key patches.

For every slot of the merged grid, the change of a step is ``1 - cos`` to the same slot one step earlier; steps that
are local maxima of that change are key patches ("pivots"), which ReTaKe's PivotKV later protects. DPSelect keeps
the ``t'`` highest-scoring steps of every slot (peaks first) and squeezes the time axis to ``t'`` steps.

    from longvid.methods.tokens.dpselect import DPSelect; tokens = DPSelect(keep=0.5).reduce(tokens)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longvid.errors import option
from longvid.methods.base import Budget, TokenReducer, num_to_keep
from longvid.methods.change import slot_change
from longvid.tokens import VisualTokens


def temporal_change(features: torch.Tensor) -> torch.Tensor:
    """(T, N) float32 change ``d[t, n] = 1 - cos(F[t-1, n], F[t, n])``, with ``d[0, n] = 1`` (ReTaKe's convention);
    ``features`` is (T, N, D). Computed a block of steps at a time (`slot_change`)."""
    return slot_change(features, first=1.0)


def local_peaks(x: torch.Tensor) -> torch.Tensor:
    """(T, ...) bool: t is a peak iff the argmax of the window ``x[t-1 : t+2]`` (width 3, -inf outside) is t.

    Works along dim 0, independently for every trailing index. Ties go to the earliest index of the window (as
    ``torch.argmax``, and as ``F.max_pool1d(..., return_indices=True)`` does on CPU): t is a peak iff
    ``x[t] > x[t-1]`` and ``x[t] >= x[t+1]``. Of a plateau only its first step can be a peak (when the step before
    it is lower); step 0 is a peak iff ``x[0] >= x[1]``; the last step iff ``x[T-1] > x[T-2]``.

    Example: ``x = [0, 1, 1, 0, 3]`` -> peaks at t = 1 (first of the plateau) and t = 4 (edge).
    """
    pad = torch.full_like(x[:1], float("-inf"))
    padded = torch.cat([pad, x, pad])  # (T + 2, ...)
    windows = padded.unfold(0, 3, 1)  # (T, ..., 3): x[t-1], x[t], x[t+1]
    return windows.argmax(dim=-1) == 1


@dataclass
class DPSelect(TokenReducer, Budget):
    """Per-slot keyframe selection and key-patch (pivot) marking of ReTaKe.

    Based on: https://arxiv.org/abs/2412.20504 (ReTaKe)
    Requires: the full grid (put it first among the token reducers).

    ``keep`` is ReTaKe's ``compression_ratio``: each slot keeps ``t' = max(1, round(keep * T))`` of its T steps
    (half rounds up, as everywhere in longvid); ``budget`` gives ``t' = max(1, budget // (H * W))``. The default
    (None, i.e. 1.0, as every released ReTaKe config) drops nothing and only sets ``pivot``. Realised retention is
    ``t' / T``: the granularity is one step per slot, i.e. H * W tokens.

    Selection: score ``d + 2 * K`` where ``d`` is ``temporal_change`` and ``K`` the key-patch mask from
    ``local_peaks``, so peaks come first; equal scores go to the earlier step. ``d`` is computed in float32 (ReTaKe's
    code uses the model's dtype, bf16 in practice, where slowly changing slots tie and kept sets differ; float32 is
    the more precise of the two). ``patch_sync=False`` (ReTaKe's
    "async", used by all released configs) finds peaks and keeps steps independently per slot, so one output step
    can mix slots from different frames; ``patch_sync=True`` finds peaks of ``mean_n d[t, n]`` and keeps whole
    steps. Output tokens are time-major: rank r = 0..t'-1 of a slot's kept steps, then slot order. ``thw`` and
    ``time`` keep each token's original step, so one can see which frame it came from; ``pivot`` is ``K``.

    Positions: at t' = T the tokens are returned unchanged (full-layout positions) but for ``pivot``. At t' < T
    this deliberately breaks "positions from the full layout", as the ReTaKe spec does: time is squeezed, and the
    token of rank r in slot n gets the full layout's position of grid step r at slot n, i.e. the layout of a
    t'-step video; ``end_position`` = max of those + 1, so the text after the video follows the squeezed block.
    For Qwen2.5-VL, whose temporal id of step r is ``start + floor(r * interval)``, this removes the dropped time
    span rather than T - t' ids (spec section 2.4). The ids are read from the input's own positions, so the reducer
    needs no model adapter.
    """

    patch_sync: bool = False

    def check_model(self, model) -> None:
        keep = 1.0 if self.keep is None else self.keep
        if (keep < 1 or self.budget is not None) and model.time_row is None:
            raise ValueError(f"below keep 1 it squeezes time into fewer steps, which {model.family} writes as text "
                             f"between frames; pass {option('keep', 1.0)} to mark pivots only, or use evs")

    def reduce(self, tokens: VisualTokens, query_embeds: torch.Tensor | None = None) -> VisualTokens:
        t, h, w = tokens.grid_thw
        n = h * w
        _check_full_grid(tokens)
        change = temporal_change(tokens.embeds.reshape(t, n, -1)).cpu()  # (T, N)
        if self.patch_sync:
            step_change = change.mean(dim=1, keepdim=True)  # (T, 1)
            key = local_peaks(step_change).expand(t, n)
            score = (step_change + 2.0 * key).expand(t, n)
        else:
            key = local_peaks(change)
            score = change + 2.0 * key
        pivot = key.flatten().to(tokens.thw.device)
        n_steps = num_to_keep(t, self.keep, None if self.budget is None else self.budget // n)
        if n_steps == t:
            return tokens.replace(pivot=pivot)
        # stable descending sort: equal scores keep the earlier step first, so the choice is deterministic
        steps = score.sort(dim=0, descending=True, stable=True).indices[:n_steps].sort(dim=0).values  # (t', N)
        index = (steps * n + torch.arange(n)).flatten()  # time-major: rank r, then slot
        rows = tokens.positions.shape[0]  # 3 M-RoPE rows, or 1
        positions = tokens.positions.reshape(rows, t, n)[:, :n_steps].reshape(rows, -1)  # a t'-step video's layout
        kept = tokens.select(index)
        return kept.replace(positions=positions, pivot=pivot[index.to(pivot.device)],
                            end_position=int(positions.max()) + 1)


def _check_full_grid(tokens: VisualTokens) -> None:
    t, h, w = tokens.grid_thw
    thw = tokens.thw.cpu()
    full = len(tokens) == t * h * w == tokens.num_original
    if full:
        steps, rows, cols = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
        grid = torch.stack([steps + thw[0, 0], rows, cols], -1).view(-1, 3)  # streaming starts at a later step
        full = torch.equal(thw, grid)
    if not full:
        raise ValueError(f"DPSelect needs the full {t}x{h}x{w} grid ({t * h * w} tokens in grid order), got "
                         f"{len(tokens)} tokens; put it first among the token reducers")
