"""Render a `VideoSpec` to RGB frames in memory, at any timestamps (no decoding, no disk).

Layers, back to front:

1. a low-contrast grey texture (mean 128, std ~14 levels, per-channel tint <= 6 levels, so its saturation
   ``max - min`` over R, G, B stays below ~20), periodic so it drifts forever without a seam;
2. `Distractor` blobs: soft, neutral grey (R = G = B), always moving, so "something moved" is never the answer;
3. v2 only: `Mover` shapes in `MOVER_COLORS`, anti-aliased, during their visits;
4. events: anti-aliased shapes in saturated `COLORS` (saturation >= 150), drawn on top, so always fully visible.

``blank=True`` drops layer 4: the same video with no event, for checking that a model is near chance without
the visual evidence.

Work per frame is a window copy plus a few small box blends; events are blended for all their frames at once.
The texture and masks are built once per spec and cached.

Example::

    python -c "from longvid.synth import make_video_spec, render_frames; import numpy as np; \
print(render_frames(make_video_spec(0), np.arange(0, 120.0)).shape)"
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .seeds import rng
from .spec import COLORS, MOVER_COLORS, Event, VideoSpec

__all__ = ["render_frames", "saturation", "cell_coverage", "event_tokens"]

_SUPERSAMPLE = 4  # 4x4 samples per pixel for shape edges


def saturation(frames: np.ndarray) -> np.ndarray:
    """``max - min`` over the channels: uint8 (..., 3) -> int16 (...). Background < ~20, events >= 150."""
    frames = frames.astype(np.int16)
    return frames.max(axis=-1) - frames.min(axis=-1)


def _texture(spec: VideoSpec) -> np.ndarray:
    """uint8 (3H, 3W, 3): a (2H, 2W)-periodic blurred-noise texture, padded by wrapping so any window is a slice."""
    height, width = 2 * spec.height, 2 * spec.width
    noise = rng(spec.seed, "texture").standard_normal((height, width))
    blur_px = 5.0 * min(spec.width, spec.height) / 224  # texture grain scales with the frame
    fy, fx = np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :]
    gain = np.exp(-2 * math.pi**2 * blur_px**2 * (fx**2 + fy**2))  # Gaussian blur, periodic by construction
    field = np.fft.irfft2(np.fft.rfft2(noise) * gain, s=(height, width))
    grey = 128 + 14 * field / field.std()
    rgb = np.clip(grey[..., None] + np.array(spec.tint), 0, 255).round().astype(np.uint8)
    return np.pad(rgb, ((0, spec.height), (0, spec.width), (0, 0)), mode="wrap")


def _blob(radius_px: float) -> np.ndarray:
    """float32 (S, S) alpha of a soft disc of radius ``r``: 0.9 up to ``0.6 r``, falling linearly to 0 at ``r``."""
    half = math.ceil(radius_px)
    d = np.hypot(*np.mgrid[-half : half + 1, -half : half + 1]) / radius_px
    return (0.9 * np.clip((1 - d) / 0.4, 0, 1)).astype(np.float32)


def _inside(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """bool, shape of ``dx``: whether offsets ``(dx, dy)`` (pixels, y down) from the centre are inside ``shape``."""
    ax, ay = np.abs(dx), np.abs(dy)
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        return np.maximum(ax, ay) <= 0.8 * r  # area close to the circle's
    if shape == "triangle":  # equilateral, apex up, circumradius r, centroid at the centre
        return (dy <= r / 2) & (ax <= (dy + r) / math.sqrt(3))
    if shape == "cross":
        arm = 0.3 * r
        return ((ax <= arm) & (ay <= r)) | ((ay <= arm) & (ax <= r))
    if shape == "diamond":  # a square on its corner
        return ax + ay <= r
    if shape == "ring":
        return (dx**2 + dy**2 <= r**2) & (dx**2 + dy**2 >= (0.55 * r) ** 2)
    raise ValueError(f"shape={shape!r} is not supported.")


def _event_alpha(event: Event, spec: VideoSpec) -> tuple[tuple[slice, slice], np.ndarray]:
    """Bounding box ``(rows, cols)`` and float32 (h, w) coverage of ``event``'s shape, from 4x4 supersampling."""
    r = event.size * min(spec.width, spec.height) / 2
    cx, cy = event.x * spec.width, event.y * spec.height
    x0, x1 = max(0, math.floor(cx - r)), min(spec.width, math.ceil(cx + r))
    y0, y1 = max(0, math.floor(cy - r)), min(spec.height, math.ceil(cy + r))
    sub = (np.arange(_SUPERSAMPLE) + 0.5) / _SUPERSAMPLE
    ys = (np.arange(y0, y1)[:, None] + sub[None, :]).reshape(-1)
    xs = (np.arange(x0, x1)[:, None] + sub[None, :]).reshape(-1)
    hit = _inside(event.shape, xs[None, :] - cx, ys[:, None] - cy, r)
    alpha = hit.reshape(y1 - y0, _SUPERSAMPLE, x1 - x0, _SUPERSAMPLE).mean(axis=(1, 3), dtype=np.float32)
    return (slice(y0, y1), slice(x0, x1)), alpha


def _sprite(shape: str, diameter_px: float) -> np.ndarray:
    """float32 (S, S) coverage of ``shape`` centred in an odd-sided box (4 x 4 supersampling), for movers."""
    r = diameter_px / 2
    half = math.ceil(r)
    sub = (np.arange(_SUPERSAMPLE) + 0.5) / _SUPERSAMPLE - 0.5
    offs = (np.arange(-half, half + 1)[:, None] + sub[None, :]).reshape(-1)
    hit = _inside(shape, offs[None, :], offs[:, None], r)
    side = 2 * half + 1
    return hit.reshape(side, _SUPERSAMPLE, side, _SUPERSAMPLE).mean(axis=(1, 3), dtype=np.float32)


class _Scene:
    """Everything about a spec that does not depend on time: texture, blob sprites, event masks."""

    def __init__(self, spec: VideoSpec):
        self.spec = spec
        self.texture = _texture(spec)
        self.blobs = [_blob(d.radius * min(spec.width, spec.height)) for d in spec.distractors]
        self.events = [_event_alpha(event, spec) for event in spec.events]
        self.movers = [_sprite(m.shape, m.size * min(spec.width, spec.height)) for m in spec.movers]

    def background(self, times: np.ndarray, out: np.ndarray) -> None:
        """Write the drifting texture and the blobs at ``times`` (T,) into ``out`` uint8 (T, H, W, 3)."""
        spec = self.spec
        height, width = spec.height, spec.width
        dx = np.floor(spec.drift[0] * times).astype(np.int64) % (2 * width)
        dy = np.floor(spec.drift[1] * times).astype(np.int64) % (2 * height)
        centres = [(np.rint(x * width).astype(int), np.rint(y * height).astype(int))
                   for x, y in (d.centre(times) for d in spec.distractors)]
        for i in range(len(times)):
            frame = out[i]
            frame[:] = self.texture[dy[i] : dy[i] + height, dx[i] : dx[i] + width]
            for (xs, ys), alpha, d in zip(centres, self.blobs, spec.distractors):
                half = alpha.shape[0] // 2
                box = frame[ys[i] - half : ys[i] + half + 1, xs[i] - half : xs[i] + half + 1]
                box[:] = (box + alpha[..., None] * (d.grey - box.astype(np.float32))).round().astype(np.uint8)

    def movers_over(self, times: np.ndarray, out: np.ndarray) -> None:
        """Blend each `Mover` into the frames of ``out`` whose time lies in one of its visits (clipped at edges)."""
        spec = self.spec
        for mover, alpha in zip(spec.movers, self.movers):
            shown = np.zeros(len(times), dtype=bool)
            for start, end in mover.visits:
                shown |= (times >= start) & (times < end)
            if not shown.any():
                continue
            cx, cy = mover.centre(times)
            half = alpha.shape[0] // 2
            color = np.array(MOVER_COLORS[mover.color], dtype=np.float32)
            for i in np.flatnonzero(shown):
                x, y = int(round(cx[i] * spec.width)), int(round(cy[i] * spec.height))
                x0, y0 = max(0, x - half), max(0, y - half)
                x1, y1 = min(spec.width, x + half + 1), min(spec.height, y + half + 1)
                a = alpha[y0 - (y - half) : y1 - (y - half), x0 - (x - half) : x1 - (x - half), None]
                box = out[i, y0:y1, x0:x1]
                box[:] = (box + a * (color - box.astype(np.float32))).round().astype(np.uint8)

    def events_over(self, times: np.ndarray, out: np.ndarray) -> None:
        """Blend each event into the frames of ``out`` whose time lies in ``[start, end)``."""
        for event, ((rows, cols), alpha) in zip(self.spec.events, self.events):
            shown = np.flatnonzero((times >= event.start) & (times < event.end))
            if len(shown) == 0:
                continue
            box = out[shown, rows, cols].astype(np.float32)  # (n, h, w, 3)
            color = np.array(COLORS[event.color], dtype=np.float32)
            out[shown, rows, cols] = (box + alpha[..., None] * (color - box)).round().astype(np.uint8)


@functools.lru_cache(maxsize=16)
def _scene(spec: VideoSpec) -> _Scene:
    return _Scene(spec)


def render_frames(spec: VideoSpec, times, blank: bool = False) -> np.ndarray:
    """Frames of ``spec`` at ``times``, bit-exact for the same spec and times.

    Parameters
    ----------
    spec : VideoSpec
    times : array_like
        float (T,) timestamps in seconds, ``0 <= t <= spec.seconds``, any order. An event shows at ``t`` when
        ``start <= t < end``.
    blank : bool
        Leave out the events: background and distractors (and v2's movers) only.

    Returns
    -------
    np.ndarray
        uint8 (T, H, W, 3), RGB.
    """
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1:
        raise ValueError(f"times must be 1-D (T,), got shape {times.shape}. Pass e.g. np.arange(0, seconds, 1.0).")
    if len(times) and not (np.isfinite(times).all() and times.min() >= 0 and times.max() <= spec.seconds):
        raise ValueError(
            f"times must lie in [0, {spec.seconds:g}] s (the video's length), got min={times.min()!r}, "
            f"max={times.max()!r}. Clip them, or make the spec longer."
        )
    scene = _scene(spec)
    out = np.empty((len(times), spec.height, spec.width, 3), dtype=np.uint8)
    scene.background(times, out)
    scene.movers_over(times, out)
    if not blank:
        scene.events_over(times, out)
    return out


def cell_coverage(spec: VideoSpec, times, rows: int, cols: int) -> np.ndarray:
    """float32 (T, E + M, rows, cols): the share of each object's drawn area (events, then movers) that falls in
    each cell of a ``rows`` x ``cols`` grid over the frame, at ``times``; 0 where the object is not shown.

    What a visual token of that grid sees of each object: training labels for longvid-tiny 2's probe, and the
    "event tokens" of tests. Cell edges are at ``round(i * height / rows)`` (exact for 140 px and 5 x 5 tokens).
    """
    times = np.asarray(times, dtype=np.float64)
    scene = _scene(spec)
    ys = np.round(np.arange(rows + 1) * spec.height / rows).astype(int)
    xs = np.round(np.arange(cols + 1) * spec.width / cols).astype(int)

    def per_cell(canvas: np.ndarray) -> np.ndarray:
        sums = np.add.reduceat(np.add.reduceat(canvas, ys[:-1], axis=0), xs[:-1], axis=1)
        return sums / max(float(canvas.sum()), 1e-9)

    out = np.zeros((len(times), len(spec.events) + len(spec.movers), rows, cols), dtype=np.float32)
    for j, (event, ((rs, cs), alpha)) in enumerate(zip(spec.events, scene.events)):
        canvas = np.zeros((spec.height, spec.width), dtype=np.float32)
        canvas[rs, cs] = alpha
        shown = (times >= event.start) & (times < event.end)
        out[shown, j] = per_cell(canvas)
    for j, (mover, alpha) in enumerate(zip(spec.movers, scene.movers), start=len(spec.events)):
        cx, cy = mover.centre(times)
        half = alpha.shape[0] // 2
        for i, t in enumerate(times):
            if not any(start <= t < end for start, end in mover.visits):
                continue
            x, y = int(round(cx[i] * spec.width)), int(round(cy[i] * spec.height))
            canvas = np.zeros((spec.height + 2 * half, spec.width + 2 * half), dtype=np.float32)
            canvas[y : y + 2 * half + 1, x : x + 2 * half + 1] = alpha  # padded: the sprite may leave the frame
            out[i, j] = per_cell(canvas[half : half + spec.height, half : half + spec.width])
    return out


def event_tokens(spec: VideoSpec, tokens, frames_per_step: int = 2, fps: float = 1.0) -> np.ndarray:
    """(N,) bool: which visual tokens (a `longvid.tokens.VisualTokens` of this video, any subset) show part of one of
    its events in a frame of their temporal step (``frames_per_step`` frames ``1 / fps`` apart from the step's time):
    where the evidence is. A method that keeps the evidence keeps these; a scorer that finds it ranks them high."""
    _, rows, cols = tokens.grid_thw
    start = tokens.time.numpy()
    times = np.minimum(np.stack([start + i / fps for i in range(frames_per_step)]), spec.seconds)
    cover = cell_coverage(spec, times.reshape(-1), rows, cols)[:, : len(spec.events)]
    shown = cover.reshape(frames_per_step, len(tokens), -1, rows, cols).max(axis=(0, 2)) > 0  # (N, rows, cols)
    return shown[np.arange(len(tokens)), tokens.thw[:, 1].numpy(), tokens.thw[:, 2].numpy()]
