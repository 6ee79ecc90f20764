"""Errors and warnings raised by `longvid.video`.

Every error is a `ValueError` subclass whose message names the file, what is wrong with it and how to fix it,
so callers can catch `VideoError` (or plain `ValueError`) for any bad-input case.

Example::

    python -c "from longvid.video import read_video; read_video('missing.mp4')"   # VideoNotFoundError
"""

from __future__ import annotations

__all__ = [
    "VideoError",
    "VideoNotFoundError",
    "NotAVideoError",
    "NoVideoStreamError",
    "NoFramesError",
    "SamplingError",
    "TruncatedVideoWarning",
]


class VideoError(ValueError):
    """Base class for every bad-video error in `longvid.video`."""


class VideoNotFoundError(VideoError):
    """The path does not exist or is not a regular file."""


class NotAVideoError(VideoError):
    """PyAV (FFmpeg) cannot open the file as a media container (e.g. a text file or a truncated header)."""


class NoVideoStreamError(VideoError):
    """The container opens but holds no video stream (e.g. an audio-only file)."""


class NoFramesError(VideoError):
    """Zero frames could be decoded in the requested range."""


class SamplingError(VideoError):
    """The sampling asks for more than this video holds: more frames than it has, a time outside it."""


class TruncatedVideoWarning(UserWarning):
    """The stream broke or ended early; the frames decoded before that point are kept."""
