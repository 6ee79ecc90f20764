"""Which frames to decode: frame-index planning and the seek-vs-sequential choice.

`plan_indices` reproduces `transformers.video_utils.default_sample_indices_fn` exactly when no `start`, `end` or
`max_frames` is given, so a model sees the same frames whether longvid or transformers loaded the video.

Example::

    python -c "from longvid.video import probe, plan_indices; print(plan_indices(probe('v.mp4'), num_frames=8))"
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from longvid.errors import option

from .errors import NoFramesError, SamplingError
from .options import check_sampling

if TYPE_CHECKING:
    from .decode import VideoInfo

__all__ = ["DEFAULT_FPS", "SEEK_GAP_KEYFRAMES", "plan_indices", "choose_strategy"]

DEFAULT_FPS = 1.0
"""Sampling rate (frames per second) used when neither `fps` nor `num_frames` is given."""

SEEK_GAP_KEYFRAMES = 1.0
"""Use the seek strategy when targets are on average more than this many keyframe intervals apart.

The seek strategy seeks only to targets over a keyframe interval ahead, decodes forward to nearer ones, and lets
the decoder skip non-reference frames before each target, so it costs about half a GOP per far target against
``gap`` frames for sequential decoding. feasibility.md (section 4) suggests 2-3 intervals for seeking to every
target; this one measured faster from one interval on (benchmarks/bench_video.py, results/video_decode.md).
Dense sampling stays sequential, whose frame count is transformers' definition of a frame index.
"""

_EPS = 1e-9  # guards ceil() against float noise, e.g. 0.1 * 30 = 3.0000000000000004


def _index_range(info: VideoInfo, start: float | None, end: float | None) -> tuple[int, int]:
    """Frame-index range ``[lo, hi)`` of the frames whose time since the first frame lies in ``[start, end)``."""
    start_sec = 0.0 if start is None else float(start)
    end_sec = info.duration if end is None else float(end)
    for name, value in (("start", start), ("end", end)):
        if value is not None and not 0.0 <= value <= info.duration + 1e-6:
            raise SamplingError(f"{option(name, value)} is outside {info.path}, which lasts {info.duration:.3f} s; pass "
                             f"a time from 0 to {info.duration:.3f} (seconds from the first frame)")
    if not start_sec < end_sec:
        raise SamplingError(f"{option('start', start_sec)} must be before the end of the range ({end_sec:g} s) in "
                         f"{info.path}")
    lo = 0 if start is None else math.ceil(start_sec * info.fps - _EPS)
    hi = info.num_frames if end is None else min(info.num_frames, math.ceil(end_sec * info.fps - _EPS))
    if hi <= lo:
        raise NoFramesError(
            f"no frame of {info.path} lies between {start_sec:g} s and {end_sec:g} s at {info.fps:g} fps; widen "
            f"{option('start')}/{option('end')} to cover at least one frame"
        )
    return lo, hi


def plan_indices(
    info: VideoInfo,
    *,
    fps: float | None = None,
    num_frames: int | None = None,
    max_frames: int | None = None,
    start: float | None = None,
    end: float | None = None,
) -> np.ndarray:
    """Plan which frames to sample, with transformers' uniform formula.

    With ``total`` frames in range, ``num_frames=n`` gives ``np.arange(n) * total // n``; ``fps=f`` first sets
    ``n = max(1, int(total / info.fps * f))``. With neither, ``fps=DEFAULT_FPS`` (1.0). ``max_frames`` caps ``n``
    (the kept frames are re-spaced uniformly over the range); ``start``/``end`` apply the formula to the sub-range.

    Worked example: 10 s at 30 fps (300 frames), ``fps=0.5`` -> ``n = int(300 / 30 * 0.5) = 5`` ->
    ``[0, 60, 120, 180, 240]``; with ``start=2, end=4`` the range is frames ``[60, 120)``, ``n = 1`` -> ``[60]``.

    Parameters
    ----------
    info : VideoInfo
        From `probe`; uses ``num_frames``, ``fps``, ``duration`` and ``path``.
    fps, num_frames : float or int, optional
        Sampling rate in frames per second, or a fixed frame count. Mutually exclusive.
    max_frames : int, optional
        Upper bound on the number of sampled frames.
    start, end : float, optional
        Range in seconds since the first frame, ``0 <= start < end <= info.duration``.

    Returns
    -------
    np.ndarray
        int64 (T,), strictly increasing frame indices in decode order, all ``< info.num_frames``.
    """
    check_sampling(fps, num_frames, max_frames, start, end)
    lo, hi = _index_range(info, start, end)
    total = hi - lo
    if num_frames is None:
        rate = DEFAULT_FPS if fps is None else fps
        num_frames = max(1, int(total / info.fps * rate))
        if num_frames > total:
            raise SamplingError(f"{option('fps', rate)} asks for {num_frames} frames but only {total} are in range in "
                             f"{info.path} (a {info.fps:g} fps video); pass a rate up to {info.fps:g}")
    elif num_frames > total:
        raise SamplingError(f"{option('num_frames', num_frames)} is more than the {total} frames in range in "
                         f"{info.path}; pass at most {total}, or sample by rate with {option('fps')}")
    if max_frames is not None:
        num_frames = min(num_frames, int(max_frames))
    return lo + np.arange(num_frames, dtype=np.int64) * total // num_frames


def choose_strategy(info: VideoInfo, indices: np.ndarray) -> str:
    """Pick ``"seek"`` or ``"sequential"`` for decoding ``indices`` (int64 (T,)) from the video in ``info``.

    Seeks when the mean gap between targets exceeds `SEEK_GAP_KEYFRAMES` keyframe intervals. Decodes
    sequentially when the keyframe interval is unknown (fewer than two keyframes found by `probe`), or when the
    frame count disagrees with ``duration * fps`` by more than a frame: seeking maps index to time as
    ``index / fps``, which needs a constant frame rate.
    """
    constant_rate = abs(info.num_frames - info.duration * info.fps) <= 1
    if info.keyframe_interval is None or len(indices) == 0 or not constant_rate:
        return "sequential"
    # The stretch before the first target counts as a gap too: seeking skips it.
    span_frames = int(indices[-1]) + 1
    mean_gap_sec = span_frames / len(indices) / info.fps
    return "seek" if mean_gap_sec > SEEK_GAP_KEYFRAMES * info.keyframe_interval else "sequential"
