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
        if self.fps is not None and self.frames is not None:
            raise ValueError(f"pass {option('fps')} (got {self.fps}) or {option('num_frames')} (got {self.frames}), "
                             "not both")
        check_positive("fps", self.fps)
        check_positive("num_frames", self.frames, integer=True)
        check_positive("max_frames", self.max_frames, integer=True)
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, Real) or not value >= 0
                                      or not math.isfinite(value)):
                raise ValueError(f"{option(name, value)} is invalid: it must be a time in seconds >= 0")
        if self.start is not None and self.end is not None and not self.start < self.end:
            raise ValueError(f"{option('start', self.start)} must be before {option('end', self.end)}")
