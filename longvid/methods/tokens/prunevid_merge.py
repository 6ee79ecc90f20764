"""PruneVid stage 1: merge the visual tokens of each temporal segment into static and per-frame dynamic clusters.

The video is cut into segments of similar steps (DPC-kNN on step descriptors, made contiguous); inside a segment a
spatial slot whose tokens barely change is static and is averaged over time; static tokens, and each step's dynamic
tokens, are then merged spatially by DPC-kNN. Stage 2 (a layer pruner) keeps a share of each group set here.

    python -c "import torch; from longvid.methods.tokens.prunevid_merge import PruneVidMerge; help(PruneVidMerge)"
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longvid.errors import setting
from longvid.methods.base import TokenReducer
from longvid.methods.clustering import cluster_means, dpc_knn, refine_clusters, segments
from longvid.tokens import VisualTokens

# Steps whose dynamic sets are clustered in one batched call: 8 keeps the temporaries under glibc's 32 MiB mmap
# threshold at D=3584 and 256 tokens a step, so they are reused instead of page-faulted in afresh, and bounds the
# working memory by 8 steps whatever the segment length (results/prunevid_merge_cost.md).
STEPS_PER_BATCH = 8


def slot_similarity(x: torch.Tensor) -> torch.Tensor:
    """Mean pairwise cosine of each spatial slot over the steps of a segment (ordered pairs ``w != t``).

    Uses ``sum_{w != t} cos(x_w, x_t) = |sum_w u_w|^2 - sum_w |u_w|^2`` with ``u = x / |x|``, where
    ``|u_w|^2`` is 1, or 0 for a zero vector (cosine 0 with everything, as in ``F.cosine_similarity``): two passes
    over the segment, no (W, W) matrix per slot and no normalised copy.

    Parameters
    ----------
    x : torch.Tensor
        (W, P, D) the segment's tokens, W >= 2 steps of P slots.

    Returns
    -------
    torch.Tensor
        (P,) float32 similarity in [-1/(W-1), 1].
    """
    w = x.shape[0]
    if w < 2:
        raise ValueError(f"slot similarity needs at least 2 steps, got {w}; a 1-step segment has no pairs")
    x = x.float()
    norm = torch.linalg.vector_norm(x, dim=-1)  # (W, P)
    u_sum = torch.einsum("wpd,wp->pd", x, 1.0 / norm.clamp_min(1e-12))  # (P, D)
    pair_sum = u_sum.square().sum(-1) - (norm > 0).sum(0)  # (P,)
    return pair_sum / (w * (w - 1))


@dataclass
class PruneVidMerge(TokenReducer):
    """PruneVid's spatial-temporal token merging (stage 1), training-free.

    Per segment of W steps (a "frame" of the paper is one temporal step here): slots with mean pairwise cosine
    ``> tau`` are static, averaged over the W steps, and merged into ``int(n_s * cluster_ratio)`` DPC-kNN clusters
    if there are more than ``min_cluster_tokens``; the other (dynamic) slots of each step are merged the same way
    per step. Output per segment, segments in time order: ``[static | dynamic step 1 | ... | dynamic step W]``;
    clustered sets are in DPC centre order (best centre first), unclustered sets in raster order.

    A 1-step segment has no pairs: the paper's formula gives 0/0 = NaN, and ``NaN > tau`` is False, so the source
    silently makes every slot dynamic. We make that choice explicitly: W == 1 means every slot is dynamic.

    Positions: the paper re-indexes a 1-D sequence, which M-RoPE cannot do without losing the grid. Every output
    token instead carries the 3-D position (and ``thw``, ``time``) of one real member token, so all positions stay
    in the unpruned layout (invariant 1) and ``end_position`` stays None. A cluster uses its DPC centre, a density
    peak and a real input token, so its (h, w) is a real grid slot. A static token uses the segment's first step,
    its earliest member, so inside a segment the static block comes first in time as it does in the sequence;
    dynamic tokens keep their own step.

    Bookkeeping: ``merged`` counts the original tokens each output stands for (a static slot of a W-step segment
    stands for W; a cluster sums its members); ``group`` numbers each non-empty set, the static set of a segment
    and the dynamic set of each of its steps, 0, 1, ... in output order (stage 2 keeps a share of each group).

    Precision and ties: similarities, distances and means are computed in float32 (the reference uses the model's
    dtype, bf16 in practice, where near-equal values tie and the clusters differ; float32 is the more precise of the
    two); equal DPC-kNN scores go to the lower index. Segments follow the reference's refinement exactly, which keeps
    every longest run of a cluster (`refine_clusters`).

    Based on: https://arxiv.org/abs/2412.16117
    Requires: the full grid in raster order (run it first among the token reducers).

    Attributes
    ----------
    tau : float
        Static threshold on the mean pairwise cosine of a slot.
    temporal_segment_ratio : float
        Segments asked of DPC-kNN: ``max(1, int(T * ratio))`` (refinement may change the count).
    cluster_ratio : float
        Clusters per merged set: ``int(n * cluster_ratio)``.
    k : int
        Neighbours in the DPC-kNN density.
    min_cluster_tokens : int
        A set is merged only if it has more tokens than this.
    seed : int
        Seed of the DPC-kNN density noise; the same input and seed give the same output.
    """

    tau: float = 0.8
    temporal_segment_ratio: float = 0.25
    cluster_ratio: float = 0.5
    k: int = 7
    min_cluster_tokens: int = 14
    seed: int = 0

    def __post_init__(self):
        if not 0.0 < self.temporal_segment_ratio <= 1.0:
            raise ValueError(f"{setting('temporal_segment_ratio', self.temporal_segment_ratio)} is invalid: it must be "
                             "in (0, 1]; the paper uses 0.25 (a quarter as many segments as steps)")
        if not 0.0 < self.cluster_ratio <= 1.0:
            raise ValueError(f"{setting('cluster_ratio', self.cluster_ratio)} is invalid: it must be in (0, 1]; the "
                             "paper uses 0.5")
        if self.k < 1:
            raise ValueError(f"{setting('k', self.k)} is invalid: it must be >= 1 neighbour; the paper uses 7")
        if self.min_cluster_tokens < 0:
            raise ValueError(f"{setting('min_cluster_tokens', self.min_cluster_tokens)} is invalid: it must be >= 0; "
                             "the paper uses 14")

    def reduce(self, tokens: VisualTokens, query_embeds: torch.Tensor | None = None) -> VisualTokens:
        t, h, w = tokens.grid_thw
        p = h * w
        if len(tokens) != t * p:
            raise ValueError(f"PruneVidMerge needs the full {t}x{h}x{w} grid ({t * p} tokens), got {len(tokens)}; "
                             "put it first among the token reducers")
        generator = torch.Generator().manual_seed(self.seed)
        x = tokens.embeds.float().view(t, p, -1)
        labels, _ = dpc_knn(x.mean(1), max(1, int(t * self.temporal_segment_ratio)), self.k, generator)
        parts = []  # per non-empty set: embeds (n, D), representative (n,), merged (n,), members (token, output)
        for start, end in segments(refine_clusters(labels)):
            parts += self._segment(x, tokens.merged.view(t, p), start, end, generator)
        embeds, index, merged = (torch.cat(z) for z in list(zip(*parts))[:3])
        group = torch.cat([torch.full((len(z[0]),), g, dtype=torch.long) for g, z in enumerate(parts)])
        assign = torch.empty(len(tokens), dtype=torch.long, device=index.device)
        offset = 0
        for e, _, _, (members, local) in parts:
            assign[members] = offset + local
            offset += len(e)
        # embeds are the means as the reference computes them (static: over time, then over a cluster); every other
        # per-token extra (e.g. DeepStack features) is pooled over the same members by ``pool``
        return tokens.pool(assign, index, embeds=embeds.to(tokens.embeds.dtype), merged=merged,
                           group=group.to(merged.device))

    def _segment(self, x: torch.Tensor, merged: torch.Tensor, start: int, end: int, generator: torch.Generator):
        """Static set then each step's dynamic set of steps ``start:end`` of x (T, P, D); merged is (T, P)."""
        seg, p = x[start:end], x.shape[1]
        if end - start > 1:
            static = slot_similarity(seg) > self.tau
        else:
            static = torch.zeros(p, dtype=torch.bool, device=x.device)
        slots, dynamic = torch.arange(p, device=x.device), ~static
        parts = []
        if static.any():
            e, index, count, labels = self._merge(seg[:, static].mean(0, keepdim=True),
                                                  merged[start:end, static].sum(0)[None],
                                                  start * p + slots[static][None], generator)
            steps = torch.arange(start, end, device=x.device).unsqueeze(-1) * p  # a static slot stands for every step
            members = (steps + slots[static]).flatten(), labels[0].expand(end - start, -1).flatten()
            parts.append((e[0], index[0], count[0], members))
        if dynamic.any():
            for first in range(start, end, STEPS_PER_BATCH):
                last = min(first + STEPS_PER_BATCH, end)
                e = x[first:last] if dynamic.all() else x[first:last, dynamic]  # no copy when all are dynamic
                index = torch.arange(first, last, device=x.device).unsqueeze(-1) * p + slots[dynamic]
                out_e, out_index, out_count, labels = self._merge(e, merged[first:last, dynamic], index, generator)
                parts += [(a, b, c, (i, lab)) for a, b, c, i, lab in zip(out_e, out_index, out_count, index, labels)]
        return parts

    def _merge(self, e: torch.Tensor, merged: torch.Tensor, index: torch.Tensor, generator: torch.Generator):
        """DPC-kNN merge of B sets of n tokens if n > min_cluster_tokens, else the tokens as they are.

        e is (B, n, D); merged and index (B, n) give each token's original count and representative token.
        Returns embeds (B, n', D), index (B, n') of each cluster's centre token, merged (B, n'), and labels (B, n):
        the output each input element went to.
        """
        n = e.shape[1]
        n_clusters = int(n * self.cluster_ratio)
        if n <= self.min_cluster_tokens or n_clusters < 1:
            return e, index, merged, torch.arange(n, device=e.device).expand(len(e), n)
        labels, centres = dpc_knn(e, n_clusters, self.k, generator)
        counts = torch.zeros(len(e), n_clusters, dtype=merged.dtype, device=merged.device)
        return (cluster_means(e, labels, n_clusters), index.gather(1, centres),
                counts.scatter_add_(1, labels, merged), labels)
