"""How frames are taken from a video file: ``fps`` xor ``frames``, a cap, and a time range, checked on creation.

    from longvid.video.options import SamplingOptions; SamplingOptions(fps=2, max_frames=64)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

from longvid.errors import check_positive, option


@dataclass
class SamplingOptions:
    """How frames are taken from the video file (``fps`` xor ``frames``; default 1 fps)."""

    fps: float | None = None
    frames: int | None = None
    max_frames: int | None = None
    start: float | None = None
    end: float | None = None

    def __post_init__(self):
        check_sampling(self.fps, self.frames, self.max_frames, self.start, self.end, frames_name="frames")


def check_sampling(fps, frames, max_frames, start, end, *, frames_name: str = "num_frames") -> None:
    """Raise a one-line ValueError for sampling options that no video can satisfy (before any file is opened):
    ``fps`` and a frame count together, non-positive or non-finite values, a range that ends before it starts.
    ``frames_name`` is the frame count's keyword in the caller (``frames`` in ``LongVid.ask``, ``num_frames`` in
    ``read_video``)."""
    if fps is not None and frames is not None:
        raise ValueError(f"pass {option('fps')} (got {fps}) or {option(frames_name)} (got {frames}), not both: one "
                         "samples by rate, the other a fixed count")
    check_positive("fps", fps)
    check_positive(frames_name, frames, integer=True)
    check_positive("max_frames", max_frames, integer=True)
    for name, value in (("start", start), ("end", end)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, Real) or not value >= 0
                                  or not math.isfinite(value)):
            raise ValueError(f"{option(name, value)} is invalid: it must be a time in seconds >= 0")
    if start is not None and end is not None and not start < end:
        raise ValueError(f"{option('start', start)} must be before {option('end', end)}")
