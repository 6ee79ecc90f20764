"""CITR's similarity merge against a plain reading of its spec (slot by slot, run by run), on the real stage."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from longvid.methods.registry import get_method
from longvid.methods.tokens.similarity_merge import SimilarityMerge
from longvid.tokens import VisualTokens


def grid_tokens(t=12, h=2, w=3, d=8, seed=0, repeat=0.6):
    """Tokens whose slots often repeat the previous step (plus a little noise), so runs of similar tokens exist."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(t, h * w, d, generator=g)
    for step in range(1, t):
        same = torch.rand(h * w, generator=g) < repeat
        x[step, same] = x[step - 1, same] + 0.3 * torch.randn(int(same.sum()), d, generator=g)
    thw = torch.stack(torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij"), -1).view(-1, 3)
    positions = torch.stack([thw[:, 0] + 5, thw[:, 1] + 5, thw[:, 2] + 5])
    return VisualTokens(x.view(-1, d), thw, positions, thw[:, 0].double(), torch.ones(t * h * w, dtype=torch.long),
                        (t, h, w), t * h * w)


def reference(x: torch.Tensor, threshold: float, max_ratio: float):
    """The spec, written as loops: returns {surviving flat index: mean of it and its run}."""
    t, p, _ = x.shape
    sim = torch.full((t, p), -2.0)
    for s in range(1, t):
        for slot in range(p):
            sim[s, slot] = F.cosine_similarity(x[s - 1, slot], x[s, slot], dim=0)
    cand = sim >= threshold
    if cand.sum() / (t * p) > max_ratio:
        flat = sorted(range(t * p), key=lambda i: -float(sim.view(-1)[i]))[: int(max_ratio * t * p)]
        cand = torch.zeros(t * p, dtype=torch.bool)
        cand[flat] = True
        cand = cand.view(t, p)
    out = {}
    for slot in range(p):
        s = 0
        while s < t:
            members = [s]
            while s + len(members) < t and cand[s + len(members), slot]:
                members.append(s + len(members))
            out[s * p + slot] = torch.stack([x[m, slot] for m in members]).mean(0)
            s += len(members)
    return out


@pytest.mark.parametrize("threshold, max_ratio", [(0.4, 0.4), (0.6, 0.4), (0.4, 0.1), (0.95, 0.4), (-1.0, 0.3)])
def test_merge_matches_the_spec(threshold, max_ratio):
    tokens = grid_tokens()
    t, h, w = tokens.grid_thw
    out = SimilarityMerge(threshold, max_ratio).reduce(tokens)
    want = reference(tokens.embeds.view(t, h * w, -1), threshold, max_ratio)
    kept = sorted(want)
    assert len(out) == len(kept) and len(out) >= (1 - max_ratio) * len(tokens) - 1
    torch.testing.assert_close(out.positions, tokens.positions[:, kept])  # survivors keep their positions
    torch.testing.assert_close(out.embeds, torch.stack([want[i] for i in kept]), atol=1e-6, rtol=0)
    assert int(out.merged.sum()) == len(tokens)  # every token is in exactly one survivor
    assert torch.equal(out.thw[out.thw[:, 0] == 0], tokens.thw[:h * w])  # the first step never merges


def test_a_static_video_merges_at_most_the_cap():
    tokens = grid_tokens(repeat=1.0)
    tokens = tokens.replace(embeds=tokens.embeds.view(12, 6, -1)[:1].expand(12, -1, -1).reshape(72, -1))
    out = SimilarityMerge().reduce(tokens)
    assert len(out) == 72 - int(0.4 * 72)


def test_citr_merge_preset_and_bad_settings():
    m = get_method("citr-merge")
    assert [type(r).__name__ for r in m.token_reducers] == ["SimilarityMerge"] and m.keep == 0.25
    assert get_method("citr-merge", threshold=0.6).token_reducers[0].threshold == 0.6
    with pytest.raises(ValueError, match="max_ratio=1.5"):
        get_method("citr-merge", max_ratio=1.5)
