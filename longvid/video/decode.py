"""Probe and decode videos with PyAV, keeping only the sampled frames in memory.

Frame ``i`` is the ``i``-th frame that ``container.decode(video=0)`` yields, as transformers counts it, so
``read_video(path, num_frames=n).indices`` equals the indices `transformers.video_utils.load_video` uses, and the
pixels are equal too (both convert with ``frame.to_ndarray(format="rgb24")``).

Example::

    python -c "from longvid.video import read_video; f = read_video('v.mp4', num_frames=8); print(f.frames.shape)"
"""

from __future__ import annotations

import itertools
import os
import re
import warnings
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from longvid.errors import option

from .errors import (
    NoFramesError,
    NotAVideoError,
    NoVideoStreamError,
    TruncatedVideoWarning,
    VideoError,
    VideoNotFoundError,
)
from .resize import resize_frame
from .sample import choose_strategy, plan_indices

__all__ = ["STRATEGIES", "VideoInfo", "Frames", "probe", "read_video"]

STRATEGIES = ("auto", "seek", "sequential")
_KEYFRAME_SCAN = 6  # keyframes to find for the keyframe-interval estimate ...
_PACKET_SCAN = 3000  # ... reading at most this many packets (~3 MB at 2 Mbps), so probe stays cheap


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` learns about a video's first video stream. Times are in seconds."""

    path: str
    duration: float
    fps: float  # average frame rate
    num_frames: int  # from the container, or round(duration * fps) when it does not say
    width: int
    height: int
    codec: str
    start_time: float  # presentation time of the first decoded frame
    keyframe_interval: float | None  # median gap of the first keyframes; None when fewer than two were found
    rotation: int = 0  # degrees players turn the decoded picture clockwise (a phone's display matrix); width and
    # height above are as displayed, i.e. swapped from the coded size at 90 and 270


@dataclass
class Frames:
    """Sampled frames and where they come from.

    Attributes
    ----------
    frames : np.ndarray
        uint8 (T, H, W, 3), RGB.
    timestamps : np.ndarray
        float64 (T,), presentation time ``pts * time_base`` of each frame, in seconds (not shifted by start_time).
    indices : np.ndarray
        int64 (T,), frame index in decode order (0-based).
    info : VideoInfo
    planned : int or None
        Frames the sampling planned; more than T when the stream broke early (``truncated``). None: T.
    """

    frames: np.ndarray
    timestamps: np.ndarray
    indices: np.ndarray
    info: VideoInfo
    planned: int | None = None

    def __post_init__(self):
        if not len(self.frames) == len(self.timestamps) == len(self.indices):
            raise ValueError(
                f"frames, timestamps and indices must have the same length, got {len(self.frames)}, "
                f"{len(self.timestamps)} and {len(self.indices)}. Build Frames from arrays of one sampling."
            )

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def frames_planned(self) -> int:
        return len(self) if self.planned is None else self.planned

    @property
    def truncated(self) -> bool:
        """The stream broke or ended before every planned frame was decoded."""
        return self.frames_planned > len(self)

    def select(self, idx) -> Frames:
        """Subset by positions (int array/list, bool mask of length T, or slice); always keeps the T axis.

        ``planned`` follows the selection: a selected subset of a complete read is complete."""
        idx = idx if isinstance(idx, slice) else np.atleast_1d(np.asarray(idx))
        return Frames(self.frames[idx], self.timestamps[idx], self.indices[idx], self.info,
                      None if self.planned is None else len(self.indices[idx]) + self.planned - len(self))


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_IMAGE_DEMUXERS = ("image2", "image2pipe")  # and every "*_pipe" demuxer: FFmpeg's single-image readers


def check_path(path: str) -> None:
    """Raise `VideoNotFoundError` unless ``path`` names an existing regular file (URLs and folders are refused)."""
    if not path.strip():
        raise VideoNotFoundError("the video path is empty: pass a video file, e.g. talk.mp4")
    if _URL.match(path):
        raise VideoNotFoundError(f"{path} is a URL; longvid reads local files only: download it first (e.g. curl -LO "
                                 f"'{path}') and pass the downloaded file")
    if os.path.isdir(path):
        raise VideoNotFoundError(f"{path} is a directory, not a video file: pass one video inside it")
    if not os.path.exists(path):
        raise VideoNotFoundError(f"video file not found: {path} (relative paths resolve against {os.getcwd()})")
    if not os.path.isfile(path):
        raise VideoNotFoundError(f"{path} is not a regular file (a device, pipe or socket): pass a video file")


def _open(path: str) -> av.container.InputContainer:
    check_path(path)
    try:
        container = av.open(path, mode="r")
    except (av.FFmpegError, UnicodeDecodeError) as err:
        raise NotAVideoError(
            f"{path} is not a readable video: FFmpeg cannot open it ({err}). Pass a video file such as .mp4, .mkv "
            "or .webm; if this is one, it is damaged (e.g. cut short while copying): download or re-encode it."
        ) from err
    demuxer = container.format.name
    if demuxer in _IMAGE_DEMUXERS or demuxer.endswith("_pipe"):
        streams = container.streams.video
        codec = streams[0].codec_context.name if streams else demuxer.removesuffix("_pipe")
        container.close()
        kind = {"mjpeg": "jpeg"}.get(codec, codec)
        raise NotAVideoError(f"{path} is an image ({kind}), not a video: pass a video file (a still image has no "
                             "time axis to sample)")
    return container


def _video_stream(container, path: str) -> av.VideoStream:
    if not container.streams.video:
        kinds = ", ".join(s.type for s in container.streams) or "none"
        raise NoVideoStreamError(f"{path} has no video stream (streams: {kinds}). Pass a file that contains video.")
    return container.streams.video[0]


def _frame_rate(stream, path: str) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate
    if not rate:
        raise VideoError(f"{path}: FFmpeg reports no frame rate for its video stream. Re-encode it, e.g. at 30 fps.")
    return Fraction(rate)


def _scan(container, stream, path: str) -> tuple[int, int, list[int]]:
    """Demux the first packets: pts and display rotation of the first decoded frame, and pts of the first
    `_KEYFRAME_SCAN` keyframes."""
    first, keyframes, error = None, [], None
    try:
        for count, packet in enumerate(container.demux(stream)):
            if packet.is_keyframe and packet.pts is not None:
                keyframes.append(packet.pts)
            if first is None:
                first = next((f for f in packet.decode() if f.pts is not None), None)
            if first is not None and (len(keyframes) >= _KEYFRAME_SCAN or count >= _PACKET_SCAN):
                break
    except (av.FFmpegError, ValueError) as err:  # damaged: read_video warns where it breaks, if anything decodes
        error = err
    if first is None:
        raise NoFramesError(
            f"{path}: its video stream has no decodable frame ({error or 'no frame with a timestamp'}). "
            "Re-encode or replace the file."
        )
    return first.pts, display_rotation(first), keyframes


def display_rotation(frame: av.VideoFrame) -> int:
    """Degrees (0, 90, 180 or 270) a player turns ``frame`` clockwise, from its display matrix (FFmpeg's convention:
    ``frame.rotation`` is counter-clockwise). Angles between multiples of 90 round to the nearest one, as players do
    not shear pictures either."""
    try:
        angle = frame.rotation or 0
    except (AttributeError, ValueError):  # PyAV < 14, or a malformed matrix
        return 0
    return int(round(-float(angle) / 90.0)) % 4 * 90


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read a video's metadata: demuxes at most a few thousand packets and decodes only the first frame.

    Raises `VideoNotFoundError`, `NotAVideoError`, `NoVideoStreamError`, or `NoFramesError` if nothing decodes.
    """
    path = os.fspath(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        time_base, fps = stream.time_base, float(_frame_rate(stream, path))
        first_pts, rotation, keyframes = _scan(container, stream, path)
        gaps = np.diff(sorted(keyframes))
        if stream.duration and stream.duration > 0:
            duration = float(stream.duration * time_base)
        elif container.duration and container.duration > 0:
            duration = container.duration / av.time_base
        else:
            duration = max(stream.frames, 1) / fps
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width > 0 < height:
            raise NotAVideoError(f"{path}: its video stream reports a {width}x{height} picture. Re-encode the file.")
        return VideoInfo(
            path=path,
            duration=duration,
            fps=fps,
            num_frames=int(stream.frames) or max(1, round(duration * fps)),
            width=height if rotation in (90, 270) else width,
            height=width if rotation in (90, 270) else height,
            codec=stream.codec_context.name,
            start_time=float(first_pts * time_base),
            keyframe_interval=float(np.median(gaps) * time_base) if len(gaps) else None,
            rotation=rotation,
        )


class _SeekMismatch(Exception):
    """Timestamps after a seek do not follow ``start + index / fps``: fall back to sequential decoding."""


class _Reader:
    """Decodes planned frame indices from one open container, by seeking or in one forward pass."""

    def __init__(self, container, info: VideoInfo):
        self.container, self.info = container, info
        self.stream = _video_stream(container, info.path)
        self.time_base = self.stream.time_base
        self.frame_ticks = 1 / (_frame_rate(self.stream, info.path) * self.time_base)
        self.start_pts = round(Fraction(info.start_time) / self.time_base)
        self.keyint_ticks = Fraction(info.keyframe_interval or 0) / self.time_base
        self.last_time: float | None = None  # of the last decoded frame, for the truncation warning
        self.skip_before = Fraction(-1)  # pts below which the decoder may drop non-reference frames

    def _decode(self, skip: bool = False):
        """Decode forward from the demuxer's position.

        With ``skip``, the decoder drops non-reference frames whose pts is below ``self.skip_before`` (the next
        target minus half a frame). No other frame depends on them, so every other frame decodes identically; with
        x264's B-frames this made seeking to 64 frames 1.3x and decoding forward at 1 fps 1.7x faster.
        """
        context = self.stream.codec_context
        for packet in self.container.demux(self.stream):
            drop = skip and packet.pts is not None and packet.pts < self.skip_before
            context.skip_frame = "NONREF" if drop else "DEFAULT"
            for frame in packet.decode():
                if frame.pts is not None:
                    self.last_time = float(frame.pts * self.time_base)
                yield frame

    def sequential(self, indices: np.ndarray):
        """Yield ``(index, frame)`` for ``indices`` by decoding forward once, stopping after the last one."""
        self.container.seek(0)  # as transformers' read_video_pyav does, so decode-order counts agree
        self.last_time = None
        targets = iter(indices.tolist())
        target = next(targets, None)
        for i, frame in enumerate(self._decode(skip=False)):  # count every frame, as transformers does
            if i == target:
                yield i, frame
                target = next(targets, None)
                if target is None:
                    return

    def _seek_to(self, target: int):
        """Seek so the decoder starts at or before pts ``target``; retry further back if the container lands late."""
        back = max(self.keyint_ticks, 1 / self.time_base)  # at least one second
        for attempt in range(4):
            try:
                offset = max(self.start_pts, int(target - back * (2**attempt - 1)))
                self.container.seek(offset, stream=self.stream, backward=True)
            except av.FFmpegError as err:
                raise _SeekMismatch from err
            frames = self._decode(skip=True)
            first = next(frames, None)
            if first is not None and first.pts is not None and first.pts <= target + self.frame_ticks / 2:
                return itertools.chain([first], frames)
        raise _SeekMismatch  # e.g. MPEG-TS, whose seeks can land a GOP late

    def seek(self, indices: np.ndarray):
        """Yield ``(index, frame)`` for ``indices``: seek to targets over a keyframe interval ahead, decode forward
        to nearer ones, skipping non-reference frames shown before the next target.

        Frame ``index`` is the frame at pts ``start + index / fps``; a frame more than half a frame off that raises
        `_SeekMismatch`, so a stream whose timestamps do not follow its decode order is read sequentially instead.
        """
        half = self.frame_ticks / 2
        frames, pos = None, None
        for index in indices.tolist():
            target = self.start_pts + round(index * self.frame_ticks)
            self.skip_before = target - half  # never a remaining target: those are all >= target
            if frames is None or target - pos > self.keyint_ticks:
                frames = self._seek_to(target)
            for frame in frames:
                if frame.pts is None:
                    raise _SeekMismatch
                if frame.pts >= target - half:
                    break
            else:
                return  # the stream ended before this target
            pos = frame.pts
            if frame.pts > target + half:  # variable frame rate or dropped frames: pts no longer maps to index
                raise _SeekMismatch
            yield index, frame

    def collect(self, indices: np.ndarray, pairs, size: tuple[int, int] | None = None, progress=None) -> Frames:
        """Put each yielded frame, upright and resized to ``size`` (H, W), into a preallocated (T, H, W, 3) array;
        keep what decoded if the stream breaks. Peak memory: the output array plus one source frame."""
        info, planned = self.info, len(indices)
        height, width = size or (info.height, info.width)
        turned = info.rotation in (90, 270)
        coded = dict(width=info.height, height=info.width) if turned else dict(width=info.width, height=info.height)
        frames = np.empty((planned, height, width, 3), dtype=np.uint8)
        timestamps, kept = np.empty(planned, dtype=np.float64), np.empty(planned, dtype=np.int64)
        count, broke = 0, None
        try:
            for index, frame in pairs:
                same_size = (frame.width, frame.height) == (coded["width"], coded["height"])  # else it changed size
                image = frame.to_ndarray(format="rgb24", **({} if same_size else coded))
                frames[count] = upright(image, height, width, info.rotation)
                pts = frame.pts
                timestamps[count] = info.start_time + index / info.fps if pts is None else float(pts * self.time_base)
                kept[count] = index
                count += 1
                if progress is not None:
                    progress(count, planned)
        except (av.FFmpegError, ValueError) as err:
            broke = f"decoding failed ({err})"
        where = "the start" if self.last_time is None else f"t={self.last_time:.3f} s"
        if count == 0:
            raise NoFramesError(
                f"{info.path}: no planned frame could be decoded ({broke or 'the stream ended'} at {where}). "
                f"Re-encode or re-download the file, or sample an earlier range with {option('start')}/{option('end')}."
            )
        if count < planned:
            warnings.warn(TruncatedVideoWarning(
                f"{info.path}: {broke or 'the stream ended early'} at {where}; using {count} of {planned} planned "
                f"frames (up to {timestamps[count - 1]:.1f} s). Re-encode or re-download the file to get the rest."
            ), stacklevel=3)
        return Frames(frames[:count], timestamps[:count], kept[:count], info, planned)


def upright(image: np.ndarray, height: int, width: int, rotation: int) -> np.ndarray:
    """A decoded (coded-orientation) uint8 (h, w, 3) picture turned ``rotation`` degrees clockwise, then resized to
    (height, width). Turning first gives the pixels of an upright source resized later (the uint8 kernel is not
    symmetric in its two axes: resizing first differs by up to 6 grey levels)."""
    if rotation:
        image = np.ascontiguousarray(np.rot90(image, k=-(rotation // 90)))
    return resize_frame(image, height, width)


def read_video(
    path: str | os.PathLike,
    *,
    fps: float | None = None,
    num_frames: int | None = None,
    max_frames: int | None = None,
    start: float | None = None,
    end: float | None = None,
    strategy: str = "auto",
    size=None,
    progress=None,
) -> Frames:
    """Decode the frames `plan_indices` picks (1 fps when neither ``fps`` nor ``num_frames`` is given), upright.

    Frames are turned as players show them (the display matrix of phone videos, `VideoInfo.rotation`) and, with
    ``size``, resized as they are decoded, so memory holds the sampled frames at that size plus one source frame,
    whatever the source resolution (an hour of 4K at 1 fps is 89 GiB at source size, 5.7 GiB at Qwen2-VL's).

    Parameters
    ----------
    path : str or os.PathLike
    fps, num_frames, max_frames, start, end
        As in `plan_indices`.
    size : (int, int) or callable, optional
        Output (height, width), or a function of the displayed (height, width) and the number of sampled frames
        returning it, e.g. a model's ``frame_size``. Bicubic with antialiasing, rounded to uint8 (`resize_frame`, the resize
        Qwen2-VL's processor applies), so resizing here or later gives the same pixels. None keeps the source size.
    progress : callable, optional
        ``progress(done, total)`` after each decoded frame.
    strategy : {"auto", "seek", "sequential"}
        ``"seek"`` seeks to the keyframe before each target over a keyframe interval ahead and decodes forward to
        nearer ones, skipping non-reference frames; ``"sequential"`` decodes every frame forward once, counting
        them as transformers does; ``"auto"`` uses `choose_strategy`. Both give the same frames on constant-rate
        streams. ``"seek"`` falls back to sequential decoding when a frame's timestamp is off
        ``start + index / fps`` by over half a frame (variable frame rate, or MPEG-TS seeks landing late).

    Returns
    -------
    Frames
        ``frames`` uint8 (T, H, W, 3); T is smaller than planned (``Frames.truncated``) only if the stream breaks,
        which warns `TruncatedVideoWarning`.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r} is not supported. Pass one of {STRATEGIES}.")
    info = probe(path)
    indices = plan_indices(info, fps=fps, num_frames=num_frames, max_frames=max_frames, start=start, end=end)
    if callable(size):
        size = size(info.height, info.width, len(indices))
    if strategy == "auto":
        strategy = choose_strategy(info, indices)
    with _open(info.path) as container:
        reader = _Reader(container, info)
        if strategy == "seek":
            try:
                return reader.collect(indices, reader.seek(indices), size, progress)
            except _SeekMismatch:
                pass
        return reader.collect(indices, reader.sequential(indices), size, progress)
