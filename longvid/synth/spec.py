"""What a synthetic video contains: `VideoSpec` (background, distractors, events), drawn from one seed.

`make_video_spec` is cheap (no pixels), so questions and their balance can be studied on thousands of specs;
`render_frames` turns a spec into pixels.

Timing rules (why each event is visible, and "when" questions are unambiguous):

- 1 to 4 events (uniform), each in its own quarter of the video (a random subset of the quarters), so events
  never overlap and are spread over the video.
- Each event lies inside its quarter with a margin of ``max(0.5 s, 5 % of a quarter)`` at both ends, so it
  never straddles a quarter boundary.
- Durations are uniform in ``event_seconds`` (default 2-6 s). An event lasting ``d`` seconds is shown in at
  least ``floor(d * f)`` frames of any sampling at ``f`` frames per second, so the default minimum of
  `MIN_EVENT_SECONDS` = 2 s puts every event in at least 2 frames at 1 fps. A sampler whose frame gap exceeds
  the event duration can miss an event (a 30-minute video needs >= 900 uniform frames for that guarantee); that
  is the point of long-video frame selection, and ``event_seconds`` can be raised for easier training data.

Each event has a distinct colour and a distinct shape, so "the red circle", "the circle" and "the red shape"
each name exactly one event. Quadrants are drawn independently (two events may share one).

Example::

    python -c "from longvid.synth import make_video_spec; print(make_video_spec(0, seconds=120))"
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from numbers import Real

import numpy as np

from longvid.errors import option

from .seeds import rng, split_of

__all__ = ["COLORS", "SHAPES", "QUADRANTS", "QUARTERS", "MIN_EVENT_SECONDS", "SECONDS_RANGE", "Event",
           "Distractor", "VideoSpec", "make_video_spec"]

COLORS = {"red": (220, 30, 30), "green": (30, 180, 50), "blue": (30, 70, 230), "yellow": (235, 215, 20)}
"""Event colours, RGB uint8: saturated (max - min channel >= 150), far from the grey background and from each other."""

SHAPES = ("circle", "square", "triangle", "cross")
QUADRANTS = ("top-left", "top-right", "bottom-left", "bottom-right")
QUARTERS = ("first", "second", "third", "last")

MIN_EVENT_SECONDS = 2.0
"""Default shortest event: >= 2 frames at 1 fps sampling (see the module docstring)."""

SECONDS_RANGE = (12.0, 3600.0)
"""Allowed video lengths in seconds; the suite targets 30 s to 30 min. 12 s is four 2 s events with margins."""

_EVENT_SIZE = (0.18, 0.26)  # shape diameter, fraction of min(width, height): >= 40 px at 224, ~3 ViT patches
_EDGE = 0.02  # gap between a shape and its quadrant's edges, fraction of the frame side
_NUM_DISTRACTORS = 3


@dataclass(frozen=True)
class Event:
    """A coloured shape shown from ``start`` to ``end`` (seconds, ``end`` excluded) at a fixed place.

    ``x``, ``y`` are the centre as fractions of width and height; ``size`` the diameter as a fraction of
    ``min(width, height)``. The shape lies entirely inside ``quadrant``.
    """

    shape: str
    color: str
    quadrant: str
    start: float
    end: float
    x: float
    y: float
    size: float

    @property
    def name(self) -> str:
        """E.g. ``"red circle"``."""
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class Distractor:
    """A soft grey blob on a smooth Lissajous path; always present, never an event.

    Centre ``(x + amp_x * sin(2 pi t / period_x + phase_x), ...)`` as fractions of width and height; ``radius``
    is a fraction of ``min(width, height)``; ``grey`` its uint8 level (equal R, G, B).
    """

    x: float
    y: float
    amp_x: float
    amp_y: float
    period_x: float
    period_y: float
    phase_x: float
    phase_y: float
    radius: float
    grey: int


@dataclass(frozen=True)
class VideoSpec:
    """Everything `render_frames` needs, deterministic from ``seed``.

    Attributes
    ----------
    seed : int
        Also seeds the background texture (drawn at render time).
    seconds : float
        Length of the video.
    width, height : int
        Frame size in pixels.
    events : tuple of Event
        1 to 4, sorted by start time.
    drift : tuple of float
        Background velocity ``(vx, vy)`` in pixels per second.
    tint : tuple of int
        Per-channel offset added to the grey texture (|tint| <= 6 keeps it desaturated).
    distractors : tuple of Distractor
    """

    seed: int
    seconds: float
    width: int
    height: int
    events: tuple[Event, ...]
    drift: tuple[float, float]
    tint: tuple[int, int, int]
    distractors: tuple[Distractor, ...]

    @property
    def video_id(self) -> str:
        """E.g. ``"synth_0000000042"``; the written file is ``video_id + ".mp4"``."""
        return f"synth_{self.seed:010d}"

    def quarter(self, event: Event) -> int:
        """Index into `QUARTERS` of the quarter holding ``event`` (it never straddles a boundary)."""
        return min(3, int(event.start // (self.seconds / 4)))

    def to_dict(self) -> dict:
        return asdict(self)


def _margin(quarter_seconds: float) -> float:
    return max(0.5, 0.05 * quarter_seconds)


def _check_args(seconds: float, width: int, height: int, event_seconds: tuple[float, float]) -> None:
    lo, hi = SECONDS_RANGE
    if isinstance(seconds, bool) or not (isinstance(seconds, Real) and lo <= seconds <= hi):
        raise ValueError(f"{option('seconds', seconds)} is invalid: it must be in [{lo:g}, {hi:g}]; pass e.g. "
                         f"{option('seconds', 120)}")
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 32 or value % 2:
            raise ValueError(f"{name}={value!r} is invalid: it must be an even int >= 32 (yuv420p). Pass e.g. 224.")
    shortest, longest = event_seconds
    room = seconds / 4 - 2 * _margin(seconds / 4)
    if not 0 < shortest <= longest or shortest > room:
        raise ValueError(
            f"event_seconds={event_seconds!r} is invalid for seconds={seconds:g}: it needs 0 < min <= max and "
            f"min <= {room:.2f} s (a quarter minus its margins). Pass shorter events or a longer video."
        )


def _events(gen: np.random.Generator, seconds: float, aspect: float, event_seconds) -> tuple[Event, ...]:
    """1-4 events in distinct quarters, with distinct colours and shapes. ``aspect`` is height / width."""
    count = int(gen.integers(1, 5))
    quarters = np.sort(gen.choice(4, size=count, replace=False))
    colors = gen.permutation(list(COLORS))[:count]
    shapes = gen.permutation(SHAPES)[:count]
    quarter_s = seconds / 4
    margin = _margin(quarter_s)
    events = []
    for q, color, shape in zip(quarters.tolist(), colors, shapes):
        duration = gen.uniform(event_seconds[0], min(event_seconds[1], quarter_s - 2 * margin))
        start = q * quarter_s + margin + gen.uniform(0, quarter_s - 2 * margin - duration)
        quadrant = int(gen.integers(4))
        size = gen.uniform(*_EVENT_SIZE)
        # half-extent in fractions of width / height; the shape fits between its quadrant's edges with a gap
        half_x, half_y = size / 2 * min(1.0, aspect), size / 2 * min(1.0, 1 / aspect)
        x = 0.5 * (quadrant % 2) + gen.uniform(half_x + _EDGE, 0.5 - half_x - _EDGE)
        y = 0.5 * (quadrant // 2) + gen.uniform(half_y + _EDGE, 0.5 - half_y - _EDGE)
        events.append(Event(str(shape), str(color), QUADRANTS[quadrant], float(start), float(start + duration),
                            float(x), float(y), float(size)))
    return tuple(events)


def _distractors(gen: np.random.Generator) -> tuple[Distractor, ...]:
    """Grey blobs, dark or light, each moving on its own slow path (periods 8-40 s), kept inside the frame."""
    blobs = []
    for _ in range(_NUM_DISTRACTORS):
        radius = gen.uniform(0.05, 0.09)
        amp_x, amp_y = gen.uniform(0.1, 0.3, size=2)
        low_x, low_y = radius + 0.02 + amp_x, radius + 0.02 + amp_y  # the whole path stays inside the frame
        x, y = gen.uniform(low_x, 1 - low_x), gen.uniform(low_y, 1 - low_y)
        grey = int(gen.integers(45, 85)) if gen.random() < 0.5 else int(gen.integers(175, 215))
        periods, phases = gen.uniform(8, 40, size=2), gen.uniform(0, 2 * math.pi, size=2)
        blobs.append(Distractor(float(x), float(y), float(amp_x), float(amp_y), *map(float, periods),
                                *map(float, phases), float(radius), grey))
    return tuple(blobs)


def make_video_spec(
    seed: int,
    seconds: float = 120.0,
    width: int = 224,
    height: int = 224,
    event_seconds: tuple[float, float] = (MIN_EVENT_SECONDS, 6.0),
) -> VideoSpec:
    """Draw a video's content from ``seed`` (a train or eval seed, see `TRAIN_SEEDS`, `EVAL_SEEDS`).

    Parameters
    ----------
    seed : int
        ``0 <= seed < 2e9``; the same arguments always give the same spec.
    seconds : float
        Video length, within `SECONDS_RANGE`.
    width, height : int
        Frame size in pixels, even and >= 32.
    event_seconds : tuple of float
        ``(min, max)`` event duration; the max is capped at a quarter minus its margins.

    Returns
    -------
    VideoSpec
    """
    split_of(seed)
    _check_args(seconds, width, height, tuple(event_seconds))
    seconds = float(seconds)
    gen = rng(seed, "spec")
    events = _events(gen, seconds, height / width, tuple(event_seconds))
    angle, speed = gen.uniform(0, 2 * math.pi), gen.uniform(3.0, 8.0) * min(width, height) / 224
    drift = (float(speed * math.cos(angle)), float(speed * math.sin(angle)))
    tint = tuple(int(v) for v in gen.integers(-6, 7, size=3))
    return VideoSpec(int(seed), seconds, width, height, events, drift, tint, _distractors(gen))
