"""Deterministic synthetic media for tests, demos and benchmarks (PyAV + libx264, no downloads).

`write_test_video` draws a texture that scrolls a few pixels per frame plus an optional moving square, so
neighbouring frames differ (a frame read at the wrong index is caught by a pixel comparison) while libx264 still
predicts them well. `write_test_audio` writes an audio-only file, for the "no video stream" error path.

Example::

    python -c "from longvid.video.synthetic import write_test_video; write_test_video('/tmp/v.mp4', seconds=5)"
"""

from __future__ import annotations

import os
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = ["PATTERNS", "cache_dir", "write_test_video", "write_test_audio", "set_mp4_rotation"]

PATTERNS = ("texture", "texture+square", "gradient")
"""``texture``: scrolling random texture; ``+square`` adds a bouncing square; ``gradient``: smooth, cheap to encode."""

_ENCODERS = {"h264": "libx264"}


def cache_dir() -> Path:
    """Where generated media is kept between runs: ``$LONGVID_CACHE_DIR``, default ``~/.cache/longvid``."""
    return Path(os.environ.get("LONGVID_CACHE_DIR", Path.home() / ".cache" / "longvid"))


def _texture(height: int, width: int, pattern: str, rng: np.random.Generator) -> np.ndarray:
    """uint8 (2H, 2W, 3) source image that frames are cut from."""
    if pattern == "gradient":
        y, x = np.mgrid[0 : 2 * height, 0 : 2 * width]
        phases = rng.uniform(0, 2 * np.pi, size=3)
        channels = [127.5 + 127.5 * np.sin(x / 23.0 + y / 37.0 + p) for p in phases]
        return np.stack(channels, axis=-1).astype(np.uint8)
    # Blocky noise (8x8 cells, smoothed by averaging shifted copies): textured, yet still compressible.
    cells = rng.integers(0, 256, size=(2 * height // 8 + 2, 2 * width // 8 + 2, 3)).astype(np.float32)
    image = np.repeat(np.repeat(cells, 8, axis=0), 8, axis=1)[: 2 * height + 4, : 2 * width + 4]
    image = sum(image[dy : dy + 2 * height, dx : dx + 2 * width] for dy in range(0, 5, 2) for dx in range(0, 5, 2))
    return (image / 9).astype(np.uint8)


def _frame(texture: np.ndarray, index: int, height: int, width: int, square: bool) -> np.ndarray:
    """uint8 (H, W, 3) frame ``index``: the texture window moves 2 px down and 3 px right per frame."""
    y, x = (2 * index) % height, (3 * index) % width
    image = np.ascontiguousarray(texture[y : y + height, x : x + width])
    if square:
        side = max(4, min(height, width) // 6)
        top = abs((5 * index) % (2 * (height - side)) - (height - side))
        left = abs((7 * index) % (2 * (width - side)) - (width - side))
        image[top : top + side, left : left + side] = (255, 32, 32)
    return image


def write_test_video(
    path: str | os.PathLike,
    *,
    seconds: float,
    fps: int = 30,
    width: int = 160,
    height: int = 96,
    gop: int | None = None,
    seed: int = 0,
    codec: str = "h264",
    pattern: str = "texture+square",
    preset: str = "ultrafast",
    bframes: int | None = None,
    faststart: bool = False,
    crf: int | None = None,
    rotation: int = 0,
) -> str:
    """Encode ``round(seconds * fps)`` synthetic frames to ``path`` (container from the extension, e.g. .mp4).

    Parameters
    ----------
    seconds : float
        Length; the file has exactly ``round(seconds * fps)`` frames.
    fps : int
        Constant frame rate.
    width, height : int
        Frame size in pixels; even, as yuv420p needs.
    gop : int, optional
        Keyframe every ``gop`` frames exactly (scene-cut keyframes off). None keeps x264's default (keyint 250
        plus scene cuts).
    seed : int
        Seeds the texture; the same arguments give the same pixels.
    codec : str
        ``"h264"`` (libx264, yuv420p) or another PyAV encoder name.
    pattern : str
        One of `PATTERNS`.
    preset : str
        x264 preset; ``"ultrafast"`` has no B-frames, ``"veryfast"`` has 3 (with b-pyramid).
    bframes : int, optional
        Overrides the preset's number of B-frames (x264 only).
    faststart : bool
        Put the MP4 index first, so a file cut in the middle still opens and breaks mid-stream.
    crf : int, optional
        x264 constant rate factor (default 23); 35-45 gives small files for long benchmark inputs.
    rotation : int
        0, 90, 180 or 270: the degrees a player turns the picture clockwise, written into the MP4 track header's
        display matrix as a phone does (`set_mp4_rotation`); the pixels stay as drawn.

    Returns
    -------
    str
        ``path``.
    """
    path = os.fspath(path)
    if pattern not in PATTERNS:
        raise ValueError(f"pattern={pattern!r} is not supported. Pass one of {PATTERNS}.")
    if width % 2 or height % 2 or width < 16 or height < 16:
        raise ValueError(f"width={width}, height={height} is invalid: both must be even and >= 16 (yuv420p).")
    encoder = _ENCODERS.get(codec, codec)
    texture = _texture(height, width, pattern.split("+")[0], np.random.default_rng(seed))
    container_options = {"movflags": "+faststart"} if faststart else {}
    with av.open(path, mode="w", options=container_options) as container:
        stream = container.add_stream(encoder, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if encoder == "libx264":
            x264_params = [] if bframes is None else [f"bframes={bframes}"]
            options = {"preset": preset} | ({} if crf is None else {"crf": str(crf)})
            if gop is not None:
                x264_params += [f"keyint={gop}", f"min-keyint={gop}", "scenecut=0"]
            if x264_params:
                options["x264-params"] = ":".join(x264_params)
            stream.options = options
        elif gop is not None:
            stream.codec_context.gop_size = gop
        for index in range(round(seconds * fps)):
            image = _frame(texture, index, height, width, square=pattern.endswith("+square"))
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    if rotation:
        set_mp4_rotation(path, rotation)
    return path


def set_mp4_rotation(path: str | os.PathLike, degrees: int) -> None:
    """Write a display matrix that turns the picture ``degrees`` clockwise (0, 90, 180, 270) into the first track
    header (``tkhd``) of an MP4/MOV file, in place, as phones record portrait video (FFmpeg reports it as a frame's
    ``rotation`` of ``-degrees``). PyAV cannot set it when muxing, so the bytes are patched."""
    if degrees not in (0, 90, 180, 270):
        raise ValueError(f"degrees={degrees!r} is invalid: pass 0, 90, 180 or 270")
    one, w = 0x10000, 0x40000000  # 16.16 and 2.30 fixed point
    cos, sin = {0: (1, 0), 90: (0, 1), 180: (-1, 0), 270: (0, -1)}[degrees]
    matrix = (cos * one, sin * one, 0, -sin * one, cos * one, 0, 0, 0, w)
    data = bytearray(Path(path).read_bytes())
    at = data.find(b"tkhd")
    if at < 0:
        raise ValueError(f"{path} has no MP4 track header (tkhd): only MP4/MOV files carry this display matrix")
    version = data[at + 4]
    offset = at + 4 + (40 if version == 0 else 52)  # after version/flags, times, track id, duration, layer, volume
    data[offset:offset + 36] = struct.pack(">9i", *matrix)
    Path(path).write_bytes(bytes(data))


def write_test_audio(path: str | os.PathLike, *, seconds: float, sample_rate: int = 16000) -> str:
    """Write an audio-only file (a 440 Hz tone): PCM for .wav, AAC for .m4a/.mp4, MP2 otherwise. Returns ``path``."""
    path = os.fspath(path)
    extension = os.path.splitext(path)[1].lower()
    codec = {".wav": "pcm_s16le", ".m4a": "aac", ".mp4": "aac"}.get(extension, "mp2")
    with av.open(path, mode="w") as container:
        stream = container.add_stream(codec, rate=sample_rate, layout="mono")
        samples = np.arange(round(seconds * sample_rate)) / sample_rate
        tone = (0.2 * np.sin(2 * np.pi * 440 * samples) * 32767).astype(np.int16)
        chunk = 1024 if codec != "pcm_s16le" else sample_rate
        for begin in range(0, len(tone), chunk):
            frame = av.AudioFrame.from_ndarray(tone[None, begin : begin + chunk], format="s16", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = begin
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path
