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

Suite versions (``version=``; v1 stays exactly as it was, so its results and longvid-tiny v1 stay reproducible):

- **v1**: 224 x 224 frames, events 18-26 % of the side, each inside one of 4 quadrants; three grey blobs on slow
  paths over a drifting grey texture.
- **v2** (longvid-tiny 2): 140 x 140 frames (25 visual tokens per temporal step at 28 px per token), events
  11-15.5 % of the side (15-22 px), each inside one of 9 `REGIONS` (a 3 x 3 grid: the region is drawn uniformly) and
  there wholly inside one cell of a 5 x 5 grid, which at 140 px is one visual token (the side thirds span two token
  rows or columns, the middle one). Why on the token grid: a shape cut across token boundaries shows each token a
  fragment, and a model trained from scratch does not learn shapes from fragments at a size CPU training affords
  (a 2-layer ViT and a probe reached 30-35 % on 4 shapes after 1,500-3,000 videos, chance 25 %, also with 4 layers
  and 128 dims; notes of 2026-12-02); real ViTs see whole objects across patches only after web-scale
  pretraining. Besides the grey blobs and the panning texture, two coloured `Mover` shapes (magenta
  diamond, cyan ring: colours and shapes no event has) wander on their own paths and come and go (2-5 visits each),
  so neither "the tokens that changed" nor "the saturated tokens" is the answer by itself; they are never asked
  about. Event timing is v1's (one event per quarter, same margins). Drawn from its own random stream: the v2 spec
  of a seed is unrelated to its v1 spec.

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

__all__ = ["COLORS", "SHAPES", "QUADRANTS", "REGIONS", "QUARTERS", "MOVER_COLORS", "MOVER_SHAPES", "VERSIONS",
           "MIN_EVENT_SECONDS", "SECONDS_RANGE", "Event", "Distractor", "Mover", "VideoSpec", "make_video_spec"]

COLORS = {"red": (220, 30, 30), "green": (30, 180, 50), "blue": (30, 70, 230), "yellow": (235, 215, 20)}
"""Event colours, RGB uint8: saturated (max - min channel >= 150), far from the grey background and from each other."""

SHAPES = ("circle", "square", "triangle", "cross")
QUADRANTS = ("top-left", "top-right", "bottom-left", "bottom-right")
QUARTERS = ("first", "second", "third", "last")
REGIONS = ("top-left", "top", "top-right", "left", "centre", "right", "bottom-left", "bottom", "bottom-right")
"""v2's places: the cells of a 3 x 3 grid, row by row (an event lies inside one)."""

MOVER_COLORS = {"magenta": (205, 40, 205), "cyan": (20, 200, 215)}
"""v2's distractor shapes' colours: saturated like the events', far from every event colour."""
MOVER_SHAPES = ("diamond", "ring")
VERSIONS = (1, 2)
DEFAULT_SIZE = {1: 224, 2: 140}
"""Default frame side per suite version (v2: the pixels longvid-tiny 2 reads, 5 x 5 tokens of 28 px)."""

MIN_EVENT_SECONDS = 2.0
"""Default shortest event: >= 2 frames at 1 fps sampling (see the module docstring)."""

SECONDS_RANGE = (12.0, 3600.0)
"""Allowed video lengths in seconds; the suite targets 30 s to 30 min. 12 s is four 2 s events with margins."""

_EVENT_SIZE = {1: (0.18, 0.26), 2: (0.11, 0.155)}  # diameter / min(width, height): v1 >= 40 px at 224, v2 15-22 at 140
_EDGE = 0.02  # gap between a shape and its cell's edges, fraction of the frame side
_TOKEN_CELLS = 5
"""v2 places each event inside one cell of a 5 x 5 grid: at 140 px, exactly one visual token's 28 px (see v2 above)."""
_REGION_SPANS = ((0, 1), (2,), (3, 4))
"""The token rows (or columns) of each third of the frame: top / middle / bottom (left / centre / right)."""
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


def path_centre(p, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre ``(x, y)`` at ``times`` (fractions of width and height) of a `Distractor` or `Mover` on its path."""
    return (p.x + p.amp_x * np.sin(2 * math.pi * times / p.period_x + p.phase_x),
            p.y + p.amp_y * np.sin(2 * math.pi * times / p.period_y + p.phase_y))


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

    def centre(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centre ``(x, y)`` at ``times`` as fractions of width and height."""
        return path_centre(self, times)


@dataclass(frozen=True)
class Mover:
    """v2: a coloured shape (never an event, never asked about) on a Lissajous path, shown during ``visits``.

    Path and size as `Distractor` (``size`` is a diameter like `Event.size`); ``visits`` holds ``(start, end)``
    seconds, end excluded, sorted and disjoint.
    """

    shape: str
    color: str
    x: float
    y: float
    amp_x: float
    amp_y: float
    period_x: float
    period_y: float
    phase_x: float
    phase_y: float
    size: float
    visits: tuple[tuple[float, float], ...]

    def centre(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centre ``(x, y)`` at ``times`` as fractions of width and height."""
        return path_centre(self, times)


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
    movers : tuple of Mover
        Empty in v1.
    version : int
        The suite version it was drawn for (`VERSIONS`). In v2, `Event.quadrant` holds one of `REGIONS`.
    """

    seed: int
    seconds: float
    width: int
    height: int
    events: tuple[Event, ...]
    drift: tuple[float, float]
    tint: tuple[int, int, int]
    distractors: tuple[Distractor, ...]
    movers: tuple[Mover, ...] = ()
    version: int = 1

    @property
    def places(self) -> tuple[str, ...]:
        """The values "where" questions draw from: `QUADRANTS` in v1, `REGIONS` in v2."""
        return QUADRANTS if self.version == 1 else REGIONS

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


def _events(gen: np.random.Generator, seconds: float, aspect: float, event_seconds, version: int = 1
            ) -> tuple[Event, ...]:
    """1-4 events in distinct quarters, with distinct colours and shapes. ``aspect`` is height / width.

    v1 places each inside a quadrant (2 x 2 cells), v2 inside a `REGIONS` cell (3 x 3)."""
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
        if version == 1:  # inside one of the 2 x 2 quadrants
            place = int(gen.integers(4))
            left, top, cell = (place % 2) / 2, (place // 2) / 2, 1 / 2
        else:  # a region of the 3 x 3 grid, then one of its token cells (`_TOKEN_CELLS` x `_TOKEN_CELLS`)
            place = int(gen.integers(len(REGIONS)))
            rows, cols = _REGION_SPANS[place // 3], _REGION_SPANS[place % 3]
            row, col = int(gen.choice(rows)), int(gen.choice(cols))
            left, top, cell = col / _TOKEN_CELLS, row / _TOKEN_CELLS, 1 / _TOKEN_CELLS
        size = gen.uniform(*_EVENT_SIZE[version])
        # half-extent in fractions of width / height; the shape fits between its cell's edges with a gap
        half_x, half_y = size / 2 * min(1.0, aspect), size / 2 * min(1.0, 1 / aspect)
        x = left + gen.uniform(half_x + _EDGE, cell - half_x - _EDGE)
        y = top + gen.uniform(half_y + _EDGE, cell - half_y - _EDGE)
        places = QUADRANTS if version == 1 else REGIONS
        events.append(Event(str(shape), str(color), places[place], float(start), float(start + duration),
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


def _movers(gen: np.random.Generator, seconds: float) -> tuple[Mover, ...]:
    """v2: one magenta diamond and one cyan ring, each visiting 2-5 times for 4-20 s (or less in short videos)."""
    movers = []
    for color, shape in zip(MOVER_COLORS, MOVER_SHAPES):
        size = gen.uniform(*_EVENT_SIZE[2])
        amp_x, amp_y = gen.uniform(0.1, 0.3, size=2)
        low_x, low_y = size / 2 + 0.02 + amp_x, size / 2 + 0.02 + amp_y
        x, y = gen.uniform(low_x, 1 - low_x), gen.uniform(low_y, 1 - low_y)
        periods, phases = gen.uniform(10, 40, size=2), gen.uniform(0, 2 * math.pi, size=2)
        visits, count = [], int(gen.integers(2, 6))
        slot = seconds / count  # one visit per slot: disjoint and spread over the video
        for i in range(count):
            length = gen.uniform(min(4.0, slot / 2), min(20.0, slot / 2))
            start = i * slot + gen.uniform(0, slot - length)
            visits.append((float(start), float(start + length)))
        movers.append(Mover(shape, color, float(x), float(y), float(amp_x), float(amp_y), *map(float, periods),
                            *map(float, phases), float(size), tuple(visits)))
    return tuple(movers)


def make_video_spec(
    seed: int,
    seconds: float = 120.0,
    width: int | None = None,
    height: int | None = None,
    event_seconds: tuple[float, float] = (MIN_EVENT_SECONDS, 6.0),
    version: int = 1,
) -> VideoSpec:
    """Draw a video's content from ``seed`` (a train or eval seed, see `TRAIN_SEEDS`, `EVAL_SEEDS`).

    Parameters
    ----------
    seed : int
        ``0 <= seed < 2e9``; the same arguments always give the same spec.
    seconds : float
        Video length, within `SECONDS_RANGE`.
    width, height : int, optional
        Frame size in pixels, even and >= 32; default `DEFAULT_SIZE` of the version (224 in v1, 140 in v2).
    event_seconds : tuple of float
        ``(min, max)`` event duration; the max is capped at a quarter minus its margins.
    version : int
        Suite version, see the module docstring (1 or 2).

    Returns
    -------
    VideoSpec
    """
    split_of(seed)
    if version not in VERSIONS:
        raise ValueError(f"version={version!r} is not a suite version: pass one of {VERSIONS}.")
    width = DEFAULT_SIZE[version] if width is None else width
    height = DEFAULT_SIZE[version] if height is None else height
    _check_args(seconds, width, height, tuple(event_seconds))
    seconds = float(seconds)
    gen = rng(seed, "spec") if version == 1 else rng(seed, "spec", version)
    events = _events(gen, seconds, height / width, tuple(event_seconds), version)
    angle, speed = gen.uniform(0, 2 * math.pi), gen.uniform(3.0, 8.0) * min(width, height) / 224
    drift = (float(speed * math.cos(angle)), float(speed * math.sin(angle)))
    tint = tuple(int(v) for v in gen.integers(-6, 7, size=3))
    distractors = _distractors(gen)
    movers = _movers(gen, seconds) if version == 2 else ()
    return VideoSpec(int(seed), seconds, width, height, events, drift, tint, distractors, movers, version)
