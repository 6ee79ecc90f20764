"""DPSelect (ReTaKe): change scores, peak rule, sync/async selection, time squeeze of positions, keep=1 == full.

    pytest tests/test_dpselect.py -q
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import longvid
from longvid.methods.tokens.dpselect import DPSelect, local_peaks, temporal_change
from longvid.tokens import VisualTokens

ATOL = 1e-5


def grid_tokens(embeds: torch.Tensor, grid, start: int = 0, interval: float = 1.0) -> VisualTokens:
    """Tokens of a full grid with positions as the Qwen adapter makes them: (start + floor(t * interval), ...)."""
    t, h, w = grid
    thw = torch.stack(torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij"), -1).view(-1, 3)
    t_pos = torch.tensor([math.floor(s * interval) for s in thw[:, 0].tolist()])
    positions = start + torch.stack([t_pos, thw[:, 1], thw[:, 2]])
    return VisualTokens(embeds, thw, positions, thw[:, 0].double() * 2.0, torch.ones(len(thw), dtype=torch.long),
                        grid, len(thw))


def angles(*per_slot_degrees) -> torch.Tensor:
    """(T * N, 2) unit vectors, time-major, from per-slot angle lists in degrees (consecutive cos = cos of the turn)."""
    a = torch.tensor(per_slot_degrees, dtype=torch.float64).T.deg2rad()  # (T, N)
    return torch.stack([a.cos(), a.sin()], -1).view(-1, 2).float()


def sync_async_grid() -> VisualTokens:
    # 4 steps x 2 slots. Slot 0 turns 90 degrees at step 2: d = [1, 0, 1, 0]; slot 1 flips at step 1: d = [1, 2, 0, 0]
    return grid_tokens(angles([0, 0, 90, 90], [0, 180, 180, 180]), (4, 1, 2), start=7)


def test_change_on_a_hand_worked_grid():
    # 3 steps x 2 slots: slot 0 [1,0] [1,0] [0,1]; slot 1 [1,0] [-1,0] [-1,1] (a 45-degree turn: 1 - 1/sqrt2)
    e = torch.tensor([[[1.0, 0.0], [1.0, 0.0]],
                      [[1.0, 0.0], [-1.0, 0.0]],
                      [[0.0, 1.0], [-1.0, 1.0]]])
    d = temporal_change(e)
    assert d.dtype == torch.float32
    torch.testing.assert_close(d, torch.tensor([[1.0, 1.0], [0.0, 2.0], [1.0, 1 - 1 / math.sqrt(2)]]))
    torch.testing.assert_close(temporal_change(e.half()), d, atol=1e-3, rtol=0)  # computed in fp32 whatever the input


@pytest.mark.parametrize("x, peaks", [
    ([0, 1, 0], [0, 1, 0]),                 # single peak
    ([0, 2, 1, 3, 0], [0, 1, 0, 1, 0]),     # two peaks
    ([3, 1, 2], [1, 0, 1]),                 # both edges (outside the sequence counts as -inf)
    ([5], [1]),                             # one step
    ([0, 1, 1, 0], [0, 1, 0, 0]),           # plateau: only its first step
    ([1, 1, 0], [1, 0, 0]),                 # plateau at t = 0
    ([0, 1, 1], [0, 1, 0]),                 # plateau at the end: its first step
    ([2, 2, 2], [1, 0, 0]),                 # constant: only t = 0
    ([1, 0, 0, 2, 2, 1], [1, 0, 0, 1, 0, 0]),
])
def test_peak_rule(x, peaks):
    assert local_peaks(torch.tensor(x, dtype=torch.float32)).int().tolist() == peaks


def test_peaks_are_per_column_and_equal_the_max_pool_argmax():
    x = torch.tensor([[0.0, 3.0], [1.0, 1.0], [0.0, 2.0]])
    assert local_peaks(x).int().tolist() == [[0, 1], [1, 0], [0, 1]]
    # the spec's definition: 1-D max pool, kernel 3, stride 1, padding 1, and t is a peak iff its argmax is t
    x = torch.randint(0, 3, (40, 7)).float()  # many ties
    _, argmax = F.max_pool1d(x.T[:, None], 3, 1, 1, return_indices=True)
    assert torch.equal(local_peaks(x), (argmax[:, 0] == torch.arange(40)).T)


def test_keep_one_returns_the_input_with_pivots():
    tokens = sync_async_grid()
    out = DPSelect().reduce(tokens)  # keep None == 1.0, ReTaKe's released configs
    for name in ("embeds", "thw", "positions", "time", "merged"):
        assert torch.equal(getattr(out, name), getattr(tokens, name)), name
    assert out.end_position is None and out.grid_thw == tokens.grid_thw and out.retention == 1.0
    # async peaks: slot 0 d = [1, 0, 1, 0] -> t = 0, 2; slot 1 d = [1, 2, 0, 0] -> t = 1
    assert out.pivot.view(4, 2).int().tolist() == [[1, 0], [0, 1], [1, 0], [0, 0]]
    sync = DPSelect(keep=1.0, patch_sync=True).reduce(tokens)  # mean d = [1, 1, .5, 0] -> t = 0 (plateau start)
    assert sync.pivot.view(4, 2).int().tolist() == [[1, 1], [0, 0], [0, 0], [0, 0]]


def test_sync_and_async_select_different_steps():
    tokens = sync_async_grid()
    out = DPSelect(keep=0.5).reduce(tokens)  # t' = 2 of 4 steps per slot
    # slot 0 scores [3, 0, 3, 0] -> steps 0, 2; slot 1 scores [1, 4, 0, 0] -> steps 0, 1; rank-major order
    assert out.thw.tolist() == [[0, 0, 0], [0, 0, 1], [2, 0, 0], [1, 0, 1]]
    assert out.time.tolist() == [0.0, 0.0, 4.0, 2.0]  # original step times
    assert out.pivot.tolist() == [True, False, True, True]
    torch.testing.assert_close(out.embeds, tokens.embeds[[0, 1, 4, 3]])
    sync = DPSelect(keep=0.5, patch_sync=True).reduce(tokens)  # scores [3, 1, .5, 0] -> whole steps 0, 1
    assert sync.thw.tolist() == [[0, 0, 0], [0, 0, 1], [1, 0, 0], [1, 0, 1]]
    assert sync.pivot.tolist() == [True, True, False, False]
    for o in (out, sync):  # both squeeze time to two steps: positions of grid steps 0 and 1
        assert o.positions.T.tolist() == [[7, 7, 7], [7, 7, 8], [8, 7, 7], [8, 7, 8]]
        assert o.end_position == 9 and o.retention == 0.5


def test_each_slot_keeps_its_best_steps_peaks_first_in_time_order():
    torch.manual_seed(0)
    t, h, w = 10, 3, 3
    tokens = grid_tokens(torch.randn(t * h * w, 8), (t, h, w))
    d = temporal_change(tokens.embeds.view(t, h * w, -1))
    key = local_peaks(d)
    score = d + 2 * key
    for keep, n_steps in [(0.3, 3), (0.25, 3), (0.04, 1), (0.95, 10)]:  # round half up: 2.5 -> 3; never below 1
        out = DPSelect(keep=keep).reduce(tokens)
        assert len(out) == n_steps * h * w and out.retention == n_steps / t
        steps = out.thw[:, 0].view(n_steps, h * w)
        assert (steps.diff(dim=0) > 0).all()  # time order inside a slot
        for slot in range(h * w):
            kept = set(steps[:, slot].tolist())
            dropped = [s for s in range(t) if s not in kept]
            if dropped:
                assert score[sorted(kept), slot].min() >= score[dropped, slot].max()
            n_peaks = int(key[:, slot].sum())
            assert int(key[sorted(kept), slot].sum()) == min(n_peaks, n_steps)  # peaks first
        assert torch.equal(out.pivot, key[out.thw[:, 0], out.thw[:, 1] * w + out.thw[:, 2]])


@pytest.mark.parametrize("interval, t_ids, end", [
    (1, [5, 6, 7], 8),        # Qwen2-VL: step r -> start + r; the width (cols 5..7) also ends at 7
    (3, [5, 8, 11], 12),      # Qwen2.5-VL, integer interval: the dropped time span is removed
    (1.5, [5, 6, 8], 9),      # Qwen2.5-VL with floor: start + floor(r * 1.5)
])
def test_positions_squeeze_to_a_shorter_video(interval, t_ids, end):
    torch.manual_seed(1)
    t, h, w = 6, 2, 3
    tokens = grid_tokens(torch.randn(t * h * w, 4), (t, h, w), start=5, interval=interval)
    out = DPSelect(keep=0.5).reduce(tokens)
    short = grid_tokens(torch.randn(3 * h * w, 4), (3, h, w), start=5, interval=interval)  # a 3-step video's layout
    assert torch.equal(out.positions, short.positions)
    assert out.positions[0].view(3, h * w)[:, 0].tolist() == t_ids
    assert out.positions[1:].T.tolist() == [[5 + r, 5 + c] for _ in range(3) for r in range(h) for c in range(w)]
    assert out.end_position == end


def test_budget_is_whole_steps_per_slot():
    tokens = grid_tokens(torch.randn(10 * 9, 4), (10, 3, 3))
    assert len(DPSelect(budget=30).reduce(tokens)) == 27  # 30 // 9 = 3 steps
    assert len(DPSelect(budget=5).reduce(tokens)) == 9  # never below one step
    assert DPSelect(budget=1000).reduce(tokens).end_position is None  # everything kept
    with pytest.raises(ValueError, match="not both"):
        DPSelect(keep=0.5, budget=10)


def test_deterministic_and_ties_go_to_the_earlier_step():
    tokens = grid_tokens(torch.ones(4 * 2, 3), (4, 1, 2))  # constant: d = [1, 0, 0, 0], one peak at t = 0
    out = DPSelect(keep=0.5).reduce(tokens)
    assert out.thw[:, 0].tolist() == [0, 0, 1, 1] and out.pivot.tolist() == [True, True, False, False]
    torch.manual_seed(2)
    tokens = grid_tokens(torch.randint(0, 2, (12 * 4, 3)).float() + 0.1, (12, 2, 2))
    a, b = DPSelect(keep=0.4).reduce(tokens), DPSelect(keep=0.4).reduce(tokens)
    assert torch.equal(a.thw, b.thw) and torch.equal(a.pivot, b.pivot) and torch.equal(a.positions, b.positions)


def test_needs_the_full_grid():
    tokens = grid_tokens(torch.randn(6, 4), (3, 1, 2))
    with pytest.raises(ValueError, match="full 3x1x2 grid"):
        DPSelect(keep=0.5).reduce(tokens.select(torch.tensor([0, 1, 2])))
    with pytest.raises(ValueError, match="grid order"):
        DPSelect(keep=0.5).reduce(tokens.select(torch.tensor([1, 0, 2, 3, 4, 5])))
    later = tokens.replace(thw=tokens.thw + torch.tensor([4, 0, 0]))  # streaming: a chunk starting at step 4
    assert len(DPSelect(keep=0.5).reduce(later)) == 4


def test_end_to_end_keep_one_equals_full_and_half_keeps_half_the_steps(lm, frames):
    full = lm.ask(frames, "What is it?", max_new_tokens=2, record_logits=True)
    ours = lm.ask(frames, "What is it?", method=longvid.Method("dpselect", token_reducers=[DPSelect(keep=1.0)]),
                  max_new_tokens=2, record_logits=True)
    assert ours.token_ids == full.token_ids
    for a, b in zip(ours.logits, full.logits):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    method = longvid.Method("dpselect", token_reducers=[DPSelect(keep=0.5)])
    if lm.adapter.time_row is None:  # Qwen3-VL writes time as text: squeezing it has no row to act on
        with pytest.raises(ValueError, match="squeezes time into fewer steps, which qwen3_vl writes as text"):
            lm.ask(frames, "q?", method=method, max_new_tokens=2)
        return
    half = lm.ask(frames, "q?", method=method, max_new_tokens=2)
    assert half.stats.retention == 0.5  # half the steps per slot
    enc = lm.encode(frames, method)
    assert enc.tokens.end_position == int(enc.tokens.positions.max()) + 1
    assert enc.next_position == int(enc.block.positions.max()) + 1  # text follows the squeezed block (and its tail)
