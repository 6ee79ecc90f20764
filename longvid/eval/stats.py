"""Accuracy statistics for benchmarks whose questions come in groups (several questions per video).

Questions about one video are not independent (a method that misses the video's key moment misses all of them), so
standard errors are clustered by video: the sandwich estimator of a mean with one cluster per video and the usual
small-sample factor ``G / (G - 1)``,

    SE = sqrt(G / (G - 1) * sum_g (sum_{i in g} (x_i - mean))^2) / n,

which is the i.i.d. standard error when every video has one question. A method is compared with ``full`` on the
same questions (paired): ``d_i = correct_method_i - correct_full_i``; its mean is the accuracy difference and its
clustered SE is far smaller than either accuracy's, because both answers share the question's difficulty. The
interval is mean +- 1.96 SE (normal; with fewer than ~30 videos it is optimistic).

    clustered_se([1, 0, 1, 1], ["v1", "v1", "v2", "v3"])
    paired_delta([1, 0, 1], [1, 1, 1], ["v1", "v1", "v2"])   # -> Delta(mean=-0.333, se=..., low=..., high=..., n=3)
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

Z95 = 1.959963984540054


def clustered_se(values, clusters) -> float:
    """Standard error of the mean of ``values`` clustered by ``clusters`` (same length); nan with < 2 clusters."""
    values = [float(v) for v in values]
    if len(values) != len(clusters):
        raise ValueError(f"values and clusters differ in length ({len(values)} vs {len(clusters)})")
    if not values:
        return float("nan")
    mean = sum(values) / len(values)
    groups = defaultdict(float)
    for value, cluster in zip(values, clusters):
        groups[cluster] += value - mean
    g = len(groups)
    if g < 2:
        return float("nan")
    return math.sqrt(g / (g - 1) * sum(v * v for v in groups.values())) / len(values)


@dataclass
class Delta:
    """Paired accuracy difference (method - reference) on the same questions, with its 95% interval."""

    mean: float
    se: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return f"{100 * self.mean:+.1f} [{100 * self.low:+.1f}, {100 * self.high:+.1f}]"


def paired_delta(correct, reference, clusters) -> Delta:
    """``correct`` and ``reference``: 0/1 per question, the same questions in the same order; ``clusters``: each
    question's video."""
    if not len(correct) == len(reference) == len(clusters):
        raise ValueError(f"paired lists differ in length ({len(correct)}, {len(reference)}, {len(clusters)})")
    diffs = [float(a) - float(b) for a, b in zip(correct, reference)]
    if not diffs:
        return Delta(float("nan"), float("nan"), float("nan"), float("nan"), 0)
    mean = sum(diffs) / len(diffs)
    se = clustered_se(diffs, clusters)
    return Delta(mean, se, mean - Z95 * se, mean + Z95 * se, len(diffs))
