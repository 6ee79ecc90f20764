"""Every selection breaks ties towards the earliest token, deterministically: one input full of ties per method.

``torch.topk`` breaks ties arbitrarily (and differently on CPU and GPU); vLLM's EVS uses a stable order. On a static
video every later step ties at zero change, so the earliest steps must keep their tokens.

    pytest tests/test_ties.py -q
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from longvid.methods.base import PrefillChunk, PruneContext, top_k_indices
from longvid.methods.kv.knorm import KnormPress
from longvid.methods.kv.pivotkv import PivotKV
from longvid.methods.layers.fastv import FastV
from longvid.methods.layers.prunevid_prune import PruneVidPrune
from longvid.methods.tokens.dpselect import DPSelect
from longvid.methods.tokens.evs import EVS
from longvid.methods.tokens.random_drop import RandomDrop
from longvid.tokens import VisualTokens


def static_video(steps: int = 8, per_step: int = 16, frame: torch.Tensor | None = None) -> VisualTokens:
    """Every temporal step identical. With one-hot tokens (the default) every cosine is exactly 1, so every change
    after the first step is exactly zero."""
    frame = torch.eye(per_step) if frame is None else frame
    embeds = frame.repeat(steps, 1)
    t, side = steps, int(per_step ** 0.5)
    thw = torch.stack(torch.meshgrid(torch.arange(t), torch.arange(side), torch.arange(side), indexing="ij"), -1)
    thw = thw.view(-1, 3)
    return VisualTokens(embeds, thw, thw.T.clone(), thw[:, 0].double(), torch.ones(len(thw), dtype=torch.long),
                        (t, side, side), len(thw))


def kept_per_step(tokens: VisualTokens, steps: int) -> list[int]:
    return torch.bincount(tokens.thw[:, 0], minlength=steps).tolist()


def test_top_k_indices_prefers_the_earliest_of_equal_scores():
    scores = torch.tensor([1.0, 2.0, 2.0, 1.0, 2.0, 1.0])
    assert top_k_indices(scores, 2).tolist() == [1, 2]
    assert top_k_indices(scores, 4).tolist() == [0, 1, 2, 4]
    assert top_k_indices(torch.zeros(2, 5), 3, dim=-1).tolist() == [[0, 1, 2], [0, 1, 2]]


def test_evs_on_a_static_video_keeps_the_earliest_steps():
    """vLLM's order: the first step whole (it ranks first), then the tied steps earliest first."""
    tokens = static_video()
    kept = EVS(keep=0.5).reduce(tokens)
    assert kept_per_step(kept, 8) == [16, 16, 16, 16, 0, 0, 0, 0]
    assert kept_per_step(EVS(keep=0.3).reduce(tokens), 8) == [16, 16, 6, 0, 0, 0, 0, 0]


def test_evs_order_is_vllms_stable_argsort():
    """Random static tokens: float32 cosines of a token with itself are not all exactly 1, so the tie is per slot
    (the pattern vLLM shows on a static video). The kept set is vLLM's: first step scored highest, then a stable
    descending argsort of 1 - cos over the flattened (step, slot) grid."""
    frame = torch.randn(16, 64, generator=torch.Generator().manual_seed(0))
    tokens = static_video(frame=frame)
    x = tokens.embeds.view(8, 16, -1)
    change = torch.cat([torch.full((1, 16), 255.0), 1 - torch.nn.functional.cosine_similarity(x[1:], x[:-1], dim=-1)])
    order = torch.argsort(change.flatten(), descending=True, stable=True)
    for keep in (0.5, 0.3):
        n = max(16, round(keep * 128))
        expected = torch.zeros(128, dtype=torch.bool)
        expected[order[:n]] = True
        kept = EVS(keep=keep).reduce(tokens)
        assert torch.equal(kept.thw[:, 0] * 16 + kept.thw[:, 1] * 4 + kept.thw[:, 2], expected.nonzero().flatten())


def test_dpselect_on_a_static_video_keeps_the_earliest_steps_per_slot():
    kept = DPSelect(keep=0.25).reduce(static_video())
    assert sorted(set(kept.thw[:, 0].tolist())) == [0, 1]  # 2 of 8 steps per slot: the first two


def test_random_is_not_tied_but_seeded():
    tokens = static_video()
    a, b = RandomDrop(keep=0.5, seed=3).reduce(tokens), RandomDrop(keep=0.5, seed=3).reduce(tokens)
    assert torch.equal(a.thw, b.thw)


def test_knorm_with_equal_norms_keeps_the_earliest_entries():
    keys = torch.ones(1, 2, 10, 4)  # every key the same norm
    cache = DynamicCache()
    cache.update(keys.clone(), torch.arange(10.0).view(1, 1, 10, 1).expand(1, 2, 10, 4).clone(), 0)
    chunk = PrefillChunk(2, 10, 8, 8, torch.zeros(3, 10, dtype=torch.long), None, 10, None)
    KnormPress(keep=0.5).compress(cache, chunk)
    assert cache.layers[0].values[0, :, :, 0].tolist() == [[0, 1, 2, 3, 4, 5]] * 2  # prefix 0-1, then 2-5


def test_pivotkv_with_equal_scores_keeps_the_earliest_tokens():
    assert PivotKV()._kept(torch.ones(8), None, 3).tolist() == [0, 1, 2]
    pivot = torch.tensor([False, False, False, False, True, True, True, False])
    assert PivotKV()._kept(torch.ones(8), pivot, 2).tolist() == [4, 5]  # pivots first, then earliest


class Constant:
    def scores(self, ctx):
        return torch.ones(len(ctx.visual))


class ConstantFastV(Constant, FastV):
    pass


class ConstantPruneVid(Constant, PruneVidPrune):
    pass


def context(n_text: int = 3, n_visual: int = 12, groups: int = 3) -> PruneContext:
    n = n_text + n_visual + 2
    visual = torch.zeros(n, dtype=torch.bool)
    visual[n_text:n_text + n_visual] = True
    query = torch.zeros(n, dtype=torch.bool)
    query[-2:] = True
    group = torch.full((n,), -1)
    group[visual] = torch.arange(n_visual) // (n_visual // groups)
    return PruneContext(0, None, None, None, None, visual, query, group)


def test_fastv_with_equal_scores_keeps_the_earliest_visual_tokens():
    ctx = context()
    keep = ConstantFastV(keep=0.25, layer=0).select(ctx)
    assert keep.tolist() == [0, 1, 2, 3, 4, 5, 15, 16]  # text, the first 3 of 12 visual, the question


def test_prunevid_with_equal_scores_keeps_the_earliest_of_each_group():
    ctx = context()
    keep = ConstantPruneVid(alpha=0.5, layer=0).select(ctx)
    assert keep.tolist() == [0, 1, 2, 3, 4, 7, 8, 11, 12, 15, 16]  # 2 of each group of 4, earliest first
