"""Write a synthetic suite to disk: one H.264 mp4 per video and a ``questions.jsonl``, for end-to-end evaluation.

Layout of ``out_dir`` (never overwritten; the suite is built in a temporary sibling and renamed at the end, so a
crash leaves no half-written suite under the final name)::

    suite.json          arguments, seeds and every VideoSpec (the ground truth)
    questions.jsonl     one row per question: video, kind, length, question (full prompt), options, answer, seed, ...
    synth_<seed>.mp4    libx264, yuv420p, constant ``fps``; frame i shows time i / fps

Writing costs about render + encode time: at 224x224, 4 fps and preset ultrafast a 30-minute video (7200 frames)
takes seconds, not minutes. A 2 s event spans >= 2 * fps frames of the file.

Example::

    python -c "from longvid.synth import write_suite, eval_seed; \
write_suite('/tmp/synth_eval', split='eval', n_videos=4, seconds=60, seed=eval_seed(0))"
"""

from __future__ import annotations

import json
import os
import shutil
from fractions import Fraction

import av
import numpy as np

from .questions import kinds_of, make_questions
from .render import render_frames
from .seeds import check_seed
from .spec import VideoSpec, make_video_spec

__all__ = ["write_video", "write_suite", "sample_times", "SAMPLE_FPS", "FILE_FPS"]

SAMPLE_FPS = 1.0
"""Frames per second the longvid-tiny models were trained with (the pipeline's default sampling)."""
FILE_FPS = 4
"""Frame rate of the suite's mp4 files (`write_suite`'s default): training renders the frames a reader decodes."""

_CHUNK_FRAMES = 256  # frames rendered at a time: bounds memory (256 x 224 x 224 x 3 = 38 MB) for 30-minute videos


def write_video(spec: VideoSpec, path: str | os.PathLike, *, fps: int = 4, blank: bool = False,
                preset: str = "ultrafast", crf: int = 18) -> str:
    """Encode ``floor(spec.seconds * fps)`` frames of ``spec`` (frame i at ``i / fps`` s) to an H.264 file.

    Parameters
    ----------
    spec : VideoSpec
    path : str or os.PathLike
        Output file; the container follows the extension (``.mp4``).
    fps : int
        Constant frame rate; 2-4 keeps 30-minute videos quick to write and small.
    blank : bool
        Background and distractors only (see `render_frames`).
    preset, crf : str, int
        x264 speed preset and quality (18: shape edges and colours survive compression).

    Returns
    -------
    str
        ``path``.
    """
    if isinstance(fps, bool) or not isinstance(fps, int) or fps < 1:
        raise ValueError(f"fps={fps!r} is invalid: it must be a positive int. Pass e.g. fps=4.")
    path = os.fspath(path)
    times = np.arange(int(spec.seconds * fps)) / fps
    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        stream.options = {"preset": preset, "crf": str(crf)}
        for begin in range(0, len(times), _CHUNK_FRAMES):
            for image in render_frames(spec, times[begin : begin + _CHUNK_FRAMES], blank=blank):
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def _rows(spec: VideoSpec, kinds, fps: int) -> list[dict]:
    video = spec.video_id + ".mp4"
    return [
        dict(video=video, video_id=spec.video_id, kind=q.kind, length=spec.seconds, question=q.text,
             stem=q.question, options=list(q.options), answer=q.answer, seed=spec.seed, fps=fps)
        for q in make_questions(spec, kinds=kinds)
    ]


def write_suite(
    out_dir: str | os.PathLike,
    *,
    split: str,
    n_videos: int,
    seconds: float,
    seed: int,
    fps: int = 4,
    width: int | None = None,
    height: int | None = None,
    kinds=None,
    blank: bool = False,
    preset: str = "ultrafast",
    version: int = 1,
) -> str:
    """Write videos with seeds ``seed, seed + 1, ..., seed + n_videos - 1`` and their questions to ``out_dir``.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Must not exist yet (FileExistsError otherwise: pick a new name or delete the old suite).
    split : {"train", "eval"}
        Every seed must belong to this split (`check_seed`), so an eval suite never reuses training videos.
    n_videos : int
    seconds : float
        Length of every video.
    seed : int
        First seed, e.g. ``eval_seed(0)``.
    fps, width, height, kinds, blank, preset, version
        As in `write_video`, `make_video_spec` and `make_questions` (``version``: the suite version, 1 or 2; the
        frame size defaults to the version's). ``blank=True`` writes background-only videos with the questions of
        the real ones.

    Returns
    -------
    str
        ``out_dir``.
    """
    out_dir = os.path.abspath(os.fspath(out_dir))
    if os.path.exists(out_dir):
        raise FileExistsError(f"{out_dir} already exists; write_suite never overwrites. Pick a new out_dir, or "
                              "delete the old suite first.")
    if isinstance(n_videos, bool) or not isinstance(n_videos, int) or n_videos < 1:
        raise ValueError(f"n_videos={n_videos!r} is invalid: it must be a positive int. Pass e.g. n_videos=100.")
    check_seed(seed, split)
    check_seed(seed + n_videos - 1, split)
    specs = [make_video_spec(seed + i, seconds, width, height, version=version) for i in range(n_videos)]
    rows = [row for spec in specs for row in _rows(spec, kinds, fps)]  # validates kinds before any encoding
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = f"{out_dir}.partial-{os.getpid()}"
    os.makedirs(tmp)  # FileExistsError if a crashed run with this pid left one: delete it
    try:
        for spec in specs:
            write_video(spec, os.path.join(tmp, spec.video_id + ".mp4"), fps=fps, blank=blank, preset=preset)
        with open(os.path.join(tmp, "questions.jsonl"), "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
        config = dict(split=split, n_videos=n_videos, seconds=seconds, seed=seed, fps=fps, width=specs[0].width,
                      height=specs[0].height, kinds=list(kinds or kinds_of(version)), blank=blank, preset=preset,
                      version=version)
        with open(os.path.join(tmp, "suite.json"), "w") as f:
            json.dump(dict(config=config, videos=[spec.to_dict() for spec in specs]), f, indent=1)
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def sample_times(seconds: float, fps: float = SAMPLE_FPS, file_fps: int = FILE_FPS) -> np.ndarray:
    """Timestamps ``read_video(path, fps=fps)`` decodes from a suite mp4 of ``seconds`` written at ``file_fps``."""
    from longvid.video import plan_indices
    from longvid.video.decode import VideoInfo

    n = int(seconds * file_fps)
    info = VideoInfo("synth", n / file_fps, float(file_fps), n, 0, 0, "h264", 0.0, None)
    return plan_indices(info, fps=fps) / file_fps
