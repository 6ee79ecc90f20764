"""PruneVid stage 1 and its clustering blocks on hand-built tensors: DPC-kNN, contiguity refinement, the merge.

    pytest tests/test_prunevid_merge.py -q
"""

from __future__ import annotations

import itertools

import pytest
import torch

from longvid.methods.clustering import cluster_means, dpc_knn, pairwise_distance, refine_clusters, segments
from longvid.methods.tokens.prunevid_merge import PruneVidMerge, slot_similarity
from longvid.tokens import VisualTokens


def tokens_from(embeds: torch.Tensor, grid) -> VisualTokens:
    t, h, w = grid
    thw = torch.stack(torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij"), -1).view(-1, 3)
    return VisualTokens(embeds, thw, thw.T.clone(), thw[:, 0].double(), torch.ones(len(thw), dtype=torch.long),
                        grid, len(thw))


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


# -- DPC-kNN ---------------------------------------------------------------------------------------------------------

BLOBS = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.2, 0.0], [10.0, 5.0], [10.05, 5.0], [10.1, 5.0]])


def test_dpc_knn_two_blobs():
    # k=3 covers a blob (self included). The middle point of each blob has the smallest mean squared distance to
    # its blob, so it is the densest; the right blob is tighter, so its peak scores first (higher density, and
    # as the densest point overall its delta is the largest distance in the set).
    labels, centres = dpc_knn(BLOBS, 2, k=3, generator=seeded())
    assert centres.tolist() == [4, 1]
    assert labels.tolist() == [1, 1, 1, 0, 0, 0]


def test_dpc_knn_is_batched_and_seeded():
    labels, centres = dpc_knn(torch.stack([BLOBS, BLOBS.flip(0)]), 2, k=3, generator=seeded())
    assert labels.tolist() == [[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]]
    assert centres.tolist() == [[4, 1], [1, 4]]
    x = torch.randn(40, 5, generator=seeded(1))
    a, b = dpc_knn(x, 6, generator=seeded(3)), dpc_knn(x, 6, generator=seeded(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].unique().tolist() == list(range(6))
    assert torch.equal(a[0][a[1]], torch.arange(6))  # each centre is in its own cluster


def test_dpc_knn_small_sets_and_large_k():
    labels, centres = dpc_knn(torch.randn(3, 4), 3)
    assert labels.tolist() == centres.tolist() == [0, 1, 2]  # M <= n_clusters: every point its own cluster
    assert dpc_knn(torch.randn(2, 4), 5)[0].tolist() == [0, 1]
    labels, centres = dpc_knn(BLOBS, 2, k=100, generator=seeded())  # k clamped to M
    assert sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1] and len(centres) == 2
    labels, centres = dpc_knn(torch.zeros(6, 2), 2, generator=seeded())  # all tied: still 2 distinct centres
    assert centres.unique().numel() == 2 and torch.equal(labels[centres], torch.arange(2))
    with pytest.raises(ValueError, match="n_clusters"):
        dpc_knn(BLOBS, 0)


def test_pairwise_distance_matches_cdist():
    x = torch.randn(3, 20, 7, generator=seeded()) * 4 + 30  # a large common offset: centring keeps precision
    torch.testing.assert_close(pairwise_distance(x), torch.cdist(x.double(), x.double()).float(), atol=1e-3, rtol=0)
    assert (pairwise_distance(x).diagonal(dim1=-2, dim2=-1) == 0).all()


def test_cluster_means():
    x = torch.tensor([[[1.0], [3.0], [10.0]], [[2.0], [4.0], [6.0]]])
    means = cluster_means(x, torch.tensor([[0, 0, 1], [1, 1, 1]]), 2)
    assert means[0].flatten().tolist() == [2.0, 10.0]
    assert means[1, 1].item() == 4.0


# -- temporal refinement ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("labels, refined", [
    ([0, 0, 0, 1, 1], [0, 0, 0, 1, 1]),  # already contiguous
    ([0, 0, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0]),  # 0 keeps its longer run; the gap at the start joins 1
    ([0, 0, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 0, 0]),  # equally long runs: all kept (the reference code)
    ([0, 0, 1, 1, 1, 0, 0, 2, 2, 2], [0, 0, 1, 1, 1, 0, 0, 2, 2, 2]),  # the example, unchanged
    ([2, 2, 0, 0, 1, 1, 0, 0], [2, 2, 0, 0, 1, 1, 0, 0]),
    ([0, 1, 0, 1, 0, 1], [0, 0, 0, 0, 0, 0]),  # every run of length 1: all dissolved
    ([0, 0, 0, 1, 2, 2], [0, 0, 0, 0, 2, 2]),  # cluster 1 (longest run 1) dissolved; left run is longer
    ([0, 0, 1, 2, 2, 2], [0, 0, 2, 2, 2, 2]),  # right run is longer
    ([0, 0, 1, 2, 2], [0, 0, 0, 2, 2]),  # tie: left
    ([0, 0, 0, 1, 0, 2, 2, 2, 2], [0, 0, 0, 2, 2, 2, 2, 2, 2]),  # leftovers of 1 and 0 form one gap: 3 < 4
    ([5, 0, 0, 6, 1, 1, 1], [0, 0, 0, 0, 1, 1, 1]),  # the first gap joins 0, so the second sees 3 vs 3: left
    ([0, 1, 2, 3], [0, 0, 0, 0]),  # every cluster dissolved: no neighbour, cluster 0
    ([3], [0]),
    ([2, 1], [0, 0]),
])
def test_refine_clusters_hand_worked(labels, refined):
    assert refine_clusters(torch.tensor(labels)).tolist() == refined


def test_segments():
    assert segments(torch.tensor([2, 2, 0, 1, 1, 1])) == [(0, 2), (2, 3), (3, 6)]
    assert segments(torch.tensor([4])) == [(0, 1)]
    assert segments(torch.tensor([1, 0, 1])) == [(0, 1), (1, 2), (2, 3)]


# -- static / dynamic split --------------------------------------------------------------------------------------------

def test_slot_similarity_hand_worked():
    # slot 0 never changes (1), slot 1 flips sign every step (-1 for every pair), slot 2 is zero then not (0).
    e = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]],
                      [[2.0, 0.0], [0.0, -1.0], [1.0, 1.0]]])
    torch.testing.assert_close(slot_similarity(e), torch.tensor([1.0, -1.0, 0.0]))
    # three steps, one slot: cos(a, b) = 0, cos(a, c) = cos(b, c) = 1/sqrt(2); mean over 6 ordered pairs
    e = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 1.0]]])
    torch.testing.assert_close(slot_similarity(e), torch.tensor([4 / (6 * 2**0.5)]))
    with pytest.raises(ValueError, match="at least 2 steps"):
        slot_similarity(e[:1])


def two_static_two_dynamic(steps=4):
    """(steps, 1, 4) grid: slots 0 and 1 constant, slots 2 and 3 point along a new axis at every step."""
    d = 2 + 2 * steps
    e = torch.zeros(steps, 4, d)
    e[:, 0, 0], e[:, 1, 1] = 1.0, 2.0
    for t in range(steps):
        e[t, 2, 2 + 2 * t], e[t, 3, 3 + 2 * t] = 1.0, 1.0
    return tokens_from(e.view(-1, d), (steps, 1, 4))


def test_static_and_dynamic_split_on_a_constructed_grid():
    tokens = two_static_two_dynamic()
    out = PruneVidMerge().reduce(tokens)  # T=4: one segment (int(4 * 0.25) = 1); sets <= 14 tokens: no clustering
    grid = tokens.embeds.view(4, 4, -1)
    expected = torch.cat([grid[:, :2].mean(0), grid[:, 2:].reshape(8, -1)])
    torch.testing.assert_close(out.embeds, expected)
    assert out.merged.tolist() == [4, 4] + [1] * 8
    assert out.group.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    # static tokens sit at the segment's first step, dynamic ones at their own step
    assert out.positions.T.tolist() == [[0, 0, 0], [0, 0, 1]] + [[t, 0, s] for t in range(4) for s in (2, 3)]
    assert torch.equal(out.thw, out.positions.T)
    assert out.time.tolist() == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0]
    assert out.num_original == 16 and out.grid_thw == (4, 1, 4) and out.end_position is None


def test_two_scenes_make_two_segments_numbered_in_output_order():
    # steps 0-3 and 4-7 differ in what the static slots show (scene cut at step 4); the dynamic slots change always
    d = 2 + 2 * 8 + 2
    e = torch.zeros(8, 4, d)
    e[:4, 0, 0], e[:4, 1, 1] = 1.0, 2.0
    e[4:, 0, d - 2], e[4:, 1, d - 1] = 3.0, 6.0
    for t in range(8):
        e[t, 2, 2 + 2 * t], e[t, 3, 3 + 2 * t] = 1.0, 1.0
    out = PruneVidMerge().reduce(tokens_from(e.view(-1, d), (8, 1, 4)))  # int(8 * 0.25) = 2 segments
    assert out.merged.tolist() == ([4, 4] + [1] * 8) * 2
    assert out.group.tolist() == [g for g in range(10) for _ in range(2)]
    first, second = out.positions.T[:10].tolist(), out.positions.T[10:].tolist()
    assert first[:2] == [[0, 0, 0], [0, 0, 1]] and second[:2] == [[4, 0, 0], [4, 0, 1]]
    assert [p[0] for p in second[2:]] == [4, 4, 5, 5, 6, 6, 7, 7]


def test_tau_boundary_is_strict():
    # one slot over two steps: cos([1, 0, 0, 0], [.5, .5, .5, .5]) = 0.5 exactly
    tokens = tokens_from(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]]), (2, 1, 1))
    assert len(PruneVidMerge(tau=0.5).reduce(tokens)) == 2  # 0.5 is not > 0.5: dynamic, one token per step
    static = PruneVidMerge(tau=0.49).reduce(tokens)
    assert static.merged.tolist() == [2] and static.positions.T.tolist() == [[0, 0, 0]]


def test_a_one_step_segment_is_all_dynamic():
    tokens = tokens_from(torch.ones(6, 3), (1, 2, 3))  # would be static if there were a second step
    out = PruneVidMerge().reduce(tokens)
    assert torch.equal(out.embeds, tokens.embeds) and torch.equal(out.positions, tokens.positions)
    assert out.group.tolist() == [0] * 6 and out.merged.tolist() == [1] * 6


# -- clustering inside a segment ---------------------------------------------------------------------------------------

def test_static_pairs_merge_into_their_means():
    # 16 static slots (> 14), in 8 well-separated pairs of near-duplicates, over 2 steps: 8 clusters, one per pair
    pairs = 10.0 * torch.eye(8).repeat_interleave(2, 0)  # (16, 8)
    pairs[1::2] += 0.1 * torch.eye(8).roll(1, 1)
    tokens = tokens_from(pairs.repeat(2, 1), (2, 4, 4))
    out = PruneVidMerge().reduce(tokens)
    assert len(out) == 8 and out.merged.tolist() == [4] * 8 and out.group.tolist() == [0] * 8
    slots = out.positions[1] * 4 + out.positions[2]
    assert (out.positions[0] == 0).all()
    assert sorted((slots // 2).tolist()) == list(range(8))  # one centre per pair, a real member slot
    torch.testing.assert_close(out.embeds, pairs.view(8, 2, 8).mean(1)[slots // 2])


def test_random_video_bookkeeping():
    tokens = tokens_from(torch.randn(8 * 32, 16, generator=seeded()), (8, 4, 8))
    out = PruneVidMerge().reduce(tokens)
    assert out.merged.sum().item() == tokens.num_original
    groups = out.group.tolist()
    assert groups[0] == 0 and all(b - a in (0, 1) for a, b in itertools.pairwise(groups))
    for g in range(groups[-1] + 1):
        members = out.group == g
        assert out.thw[members, 0].unique().numel() == 1  # a group is one step's or one segment's set
    # every output carries a real input token's (t, h, w), and no two outputs share one
    index = out.positions[0] * 32 + out.positions[1] * 8 + out.positions[2]
    assert torch.equal(tokens.positions[:, index], out.positions) and index.unique().numel() == len(out)
    assert len(out) <= tokens.num_original // 2  # random tokens are dynamic, 32 > 14 per step: halved


def test_seeded_and_dtype_preserving():
    tokens = tokens_from(torch.randn(8 * 32, 16, generator=seeded()).bfloat16(), (8, 4, 8))
    a, b = PruneVidMerge(seed=1).reduce(tokens), PruneVidMerge(seed=1).reduce(tokens)
    assert a.embeds.dtype == torch.bfloat16
    assert torch.equal(a.embeds, b.embeds) and torch.equal(a.positions, b.positions)
    assert torch.equal(a.group, b.group) and torch.equal(a.merged, b.merged)


def test_needs_the_full_grid():
    tokens = tokens_from(torch.randn(8, 4), (2, 2, 2)).select(torch.arange(6))
    with pytest.raises(ValueError, match="full 2x2x2 grid"):
        PruneVidMerge().reduce(tokens)


def test_rejects_bad_ratios():
    with pytest.raises(ValueError, match="cluster_ratio"):
        PruneVidMerge(cluster_ratio=0.0)
    with pytest.raises(ValueError, match="temporal_segment_ratio"):
        PruneVidMerge(temporal_segment_ratio=1.5)
