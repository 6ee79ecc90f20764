"""Video input for longvid: probe, plan frame indices, decode with PyAV, resize for Qwen2-VL.

Example::

    python -c "from longvid.video import read_video; print(read_video('v.mp4', num_frames=16).frames.shape)"
"""

from .decode import Frames, VideoInfo, probe, read_video
from .errors import (
    NoFramesError,
    NotAVideoError,
    NoVideoStreamError,
    SamplingError,
    TruncatedVideoWarning,
    VideoError,
    VideoNotFoundError,
)
from .resize import resize_frame, resize_frames, smart_resize
from .sample import plan_indices
from .synthetic import cache_dir, write_test_audio, write_test_video

__all__ = [
    "Frames",
    "VideoInfo",
    "probe",
    "read_video",
    "plan_indices",
    "smart_resize",
    "resize_frame",
    "resize_frames",
    "write_test_video",
    "write_test_audio",
    "cache_dir",
    "VideoError",
    "VideoNotFoundError",
    "NotAVideoError",
    "NoVideoStreamError",
    "NoFramesError",
    "SamplingError",
    "TruncatedVideoWarning",
]
