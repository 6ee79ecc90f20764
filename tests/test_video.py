"""Tests for `longvid.video`: index planning, decoding strategies, errors and resizing, on real files via PyAV.

Videos are tiny (160x96, a few seconds) and encoded once per module. Run::

    pytest tests/test_video.py -q
"""

from __future__ import annotations

import math
import warnings

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers.video_utils import VideoMetadata, default_sample_indices_fn, load_video

from longvid.video import (
    Frames,
    NoFramesError,
    NotAVideoError,
    NoVideoStreamError,
    TruncatedVideoWarning,
    VideoInfo,
    VideoNotFoundError,
    plan_indices,
    probe,
    read_video,
    resize_frames,
    smart_resize,
    write_test_audio,
    write_test_video,
)
from longvid.video.sample import choose_strategy


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """name -> path. veryfast gives B-frames with b-pyramid, so decode order differs from presentation order."""
    root = tmp_path_factory.mktemp("videos")
    specs = {
        "short_gop.mp4": dict(seconds=4, gop=8),
        "long_gop.mp4": dict(seconds=6, gop=90),
        "default_gop.mkv": dict(seconds=4),  # Matroska stores no frame count: num_frames is estimated
        "short_gop.ts": dict(seconds=3, gop=10),  # MPEG-TS: no index, start pts > 0, seeks can land late
    }
    return {name: write_test_video(root / name, preset="veryfast", **kw) for name, kw in specs.items()}


def decode_all(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Every frame, in `container.decode(video=0)` order: uint8 (N, H, W, 3) and float64 (N,) pts seconds."""
    with av.open(path) as container:
        frames = list(container.decode(video=0))
        return (np.stack([f.to_ndarray(format="rgb24") for f in frames]),
                np.array([float(f.pts * f.time_base) for f in frames]))


def fake_info(total: int, fps: float) -> VideoInfo:
    return VideoInfo("fake.mp4", total / fps, fps, total, 64, 48, "h264", 0.0, 2.0)


@pytest.mark.parametrize("total, video_fps", [(120, 30.0), (18000, 30.0), (299, 29.97), (7, 25.0), (1001, 24.0)])
@pytest.mark.parametrize("kwargs", [dict(num_frames=1), dict(num_frames=7), dict(fps=1.0), dict(fps=0.3), dict(fps=2)])
def test_plan_matches_transformers(total, video_fps, kwargs):
    if kwargs.get("num_frames", 0) > total:
        pytest.skip("more frames than the video has")
    expected = default_sample_indices_fn(VideoMetadata(total_num_frames=total, fps=video_fps), **kwargs)
    planned = plan_indices(fake_info(total, video_fps), **kwargs)
    assert planned.dtype == np.int64
    np.testing.assert_array_equal(planned, expected)


def test_plan_default_is_one_fps_and_max_frames_respaces():
    info = fake_info(300, 30.0)
    np.testing.assert_array_equal(plan_indices(info), np.arange(10) * 30)
    np.testing.assert_array_equal(plan_indices(info, fps=2, max_frames=4), [0, 75, 150, 225])
    np.testing.assert_array_equal(plan_indices(info, num_frames=3, max_frames=8), [0, 100, 200])


def test_plan_start_end():
    info = fake_info(300, 30.0)  # 10 s
    np.testing.assert_array_equal(plan_indices(info, fps=0.5, start=2, end=4), [60])
    np.testing.assert_array_equal(plan_indices(info, num_frames=4, start=2.5, end=3.5), [75, 82, 90, 97])
    np.testing.assert_array_equal(plan_indices(info, num_frames=2, start=9.0), [270, 285])


@pytest.mark.parametrize("kwargs, match", [
    (dict(fps=1, num_frames=4), r"pass fps \(got 1\) or num_frames \(got 4\), not both"),
    (dict(num_frames=0), r"num_frames=0.*positive integer"),
    (dict(num_frames=2.5), r"num_frames=2.5.*positive integer"),
    (dict(fps=-1.0), r"fps=-1.0.*positive"),
    (dict(max_frames=0), r"max_frames=0"),
    (dict(num_frames=301), r"num_frames=301 is more than the 300 frames in range"),
    (dict(fps=60), r"fps=60 asks for 600 frames but only 300 are in range .*pass a rate up to 30"),
    (dict(start=5, end=5), r"start=5 must be before end=5"),
    (dict(start=-1), r"start=-1"),
    (dict(end=11), r"end=11"),
])
def test_plan_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plan_indices(fake_info(300, 30.0), **kwargs)


def test_plan_empty_range_raises_no_frames():
    with pytest.raises(NoFramesError, match="no frame of .* lies between 0.01 s and 0.02 s at 30 fps; widen start/end"):
        plan_indices(fake_info(300, 30.0), start=0.01, end=0.02)


def test_probe(videos):
    info = probe(videos["short_gop.mp4"])
    assert (info.num_frames, info.fps, info.duration, info.width, info.height) == (120, 30.0, 4.0, 160, 96)
    assert info.codec == "h264" and info.start_time == 0.0
    assert info.keyframe_interval == pytest.approx(8 / 30)
    mkv = probe(videos["default_gop.mkv"])
    assert mkv.num_frames == 120  # estimated from duration * fps
    assert probe(videos["short_gop.ts"]).start_time > 0


@pytest.mark.parametrize("kwargs", [dict(num_frames=8), dict(num_frames=120), dict(fps=2), dict(fps=7.5)])
def test_read_video_matches_transformers(videos, kwargs):
    path = videos["short_gop.mp4"]
    expected, metadata = load_video(path, backend="pyav", **kwargs)
    for strategy in ("auto", "seek", "sequential"):
        ours = read_video(path, strategy=strategy, **kwargs)
        np.testing.assert_array_equal(ours.indices, metadata.frames_indices)
        assert ours.frames.dtype == np.uint8 and ours.frames.shape == expected.shape
        np.testing.assert_array_equal(ours.frames, expected)


@pytest.mark.parametrize("name", ["short_gop.mp4", "long_gop.mp4", "default_gop.mkv", "short_gop.ts"])
@pytest.mark.parametrize("kwargs", [dict(num_frames=5), dict(num_frames=33), dict(fps=3), dict(fps=30, max_frames=10),
                                    dict(num_frames=6, start=1.1, end=2.9)])
def test_seek_equals_sequential_and_timestamps_are_pts(videos, name, kwargs):
    seek = read_video(videos[name], strategy="seek", **kwargs)
    sequential = read_video(videos[name], strategy="sequential", **kwargs)
    np.testing.assert_array_equal(seek.indices, sequential.indices)
    np.testing.assert_array_equal(seek.timestamps, sequential.timestamps)
    np.testing.assert_array_equal(seek.frames, sequential.frames)
    all_frames, all_times = decode_all(videos[name])
    np.testing.assert_array_equal(seek.timestamps, all_times[seek.indices])
    np.testing.assert_array_equal(seek.frames, all_frames[seek.indices])
    if "start" in kwargs:
        relative = seek.timestamps - seek.info.start_time
        assert relative.min() >= kwargs["start"] and relative.max() < kwargs["end"]


def test_choose_strategy():
    info = fake_info(18000, 30.0)  # 10 min, keyframe every 2 s
    assert choose_strategy(info, plan_indices(info, num_frames=64)) == "seek"  # a target every 9.4 s
    assert choose_strategy(info, plan_indices(info, fps=1)) == "sequential"
    sparse = np.array([0, 9000])
    assert choose_strategy(VideoInfo(**{**vars(info), "keyframe_interval": None}), sparse) == "sequential"
    assert choose_strategy(VideoInfo(**{**vars(info), "num_frames": 17000}), sparse) == "sequential"  # not CFR


def test_frames_select_and_len(videos):
    frames = read_video(videos["short_gop.mp4"], num_frames=6)
    subset = frames.select([1, 4])
    assert len(frames) == 6 and len(subset) == 2 and isinstance(subset, Frames)
    np.testing.assert_array_equal(subset.indices, frames.indices[[1, 4]])
    np.testing.assert_array_equal(subset.frames[1], frames.frames[4])
    assert frames.select(3).frames.shape == (1, 96, 160, 3)
    assert len(frames.select(frames.indices > 50)) == len(frames.select(slice(3, None))) == 3


def test_missing_file(tmp_path):
    with pytest.raises(VideoNotFoundError, match=r"video file not found: .*nope\.mp4 \(relative paths resolve"):
        read_video(tmp_path / "nope.mp4")


def test_not_a_video(tmp_path, videos):
    text = tmp_path / "notes.txt"
    text.write_text("not a video\n" * 20)
    with pytest.raises(NotAVideoError, match=r"notes\.txt is not a readable video"):
        probe(text)
    header_only = tmp_path / "cut.mp4"  # the MP4 index (moov) is at the end, so a cut file cannot be opened
    header_only.write_bytes(open(videos["short_gop.mp4"], "rb").read()[:3000])
    with pytest.raises(NotAVideoError, match="cut.mp4"):
        read_video(header_only)


@pytest.mark.parametrize("suffix", [".wav", ".m4a"])
def test_audio_only(tmp_path, suffix):
    path = write_test_audio(tmp_path / f"tone{suffix}", seconds=0.5)
    with pytest.raises(NoVideoStreamError, match=r"has no video stream \(streams: audio\)"):
        read_video(path)


@pytest.mark.parametrize("strategy", ["seek", "sequential"])
def test_truncated_mid_stream_warns_and_keeps_frames(tmp_path, strategy):
    full = write_test_video(tmp_path / "full.mp4", seconds=4, gop=10, faststart=True, preset="veryfast")
    data = open(full, "rb").read()
    cut = tmp_path / "half.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.warns(TruncatedVideoWarning, match=r"half\.mp4: decoding failed .* at t=\d+\.\d+ s; using \d+ of 10"):
        frames = read_video(cut, num_frames=10, strategy=strategy)
    assert 0 < len(frames) < 10
    assert frames.truncated and frames.frames_planned == 10
    assert frames.frames.shape[0] == frames.timestamps.shape[0] == frames.indices.shape[0]
    all_frames, all_times = decode_all(full)
    np.testing.assert_array_equal(frames.indices, plan_indices(probe(full), num_frames=10)[: len(frames)])
    np.testing.assert_array_equal(frames.frames, all_frames[frames.indices])
    np.testing.assert_array_equal(frames.timestamps, all_times[frames.indices])


def test_truncated_before_first_target_raises_no_frames(tmp_path):
    full = write_test_video(tmp_path / "full.mp4", seconds=4, gop=10, faststart=True)
    data = open(full, "rb").read()
    cut = tmp_path / "half.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with warnings.catch_warnings(), pytest.raises(NoFramesError, match="half.mp4: no planned frame"):
        warnings.simplefilter("ignore")
        read_video(cut, num_frames=2, start=3.0)


def test_bad_strategy(videos):
    with pytest.raises(ValueError, match=r"strategy='fast'.*'auto', 'seek', 'sequential'"):
        read_video(videos["short_gop.mp4"], strategy="fast")


@pytest.mark.parametrize("height, width, expected", [
    (360, 640, (364, 644)),  # rounded to multiples of 28, inside the pixel range
    (1080, 1920, (728, 1316)),  # above max_pixels: scaled by 1/1.4375 and floored
    (28, 28, (56, 56)),  # below min_pixels = 56*56: scaled up and ceiled
    (100, 100, (112, 112)),  # round(3.57) = 4
    (42, 42, (56, 56)),  # round(1.5) = 2 (ties to even)
])
def test_smart_resize_examples(height, width, expected):
    assert smart_resize(height, width) == expected


def test_smart_resize_invariants_and_reference():
    qwen = pytest.importorskip("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl")
    for height in (28, 97, 240, 360, 481, 720, 1080, 2160):
        for width in (28, 64, 333, 640, 1280, 1920, 3840):
            h, w = smart_resize(height, width, min_pixels=128 * 28 * 28, max_pixels=768 * 28 * 28)
            assert h % 28 == 0 and w % 28 == 0 and 128 * 28 * 28 <= h * w <= 768 * 28 * 28
            assert (h, w) == qwen.smart_resize(height, width, 28, 128 * 28 * 28, 768 * 28 * 28)
    with pytest.raises(ValueError, match="aspect ratio 201.0"):
        smart_resize(28, 28 * 201)


def interpolate_reference(frames: np.ndarray, height: int, width: int) -> torch.Tensor:
    """torch's uint8 bicubic kernel on the whole clip at once (what torchvision runs for uint8 on the CPU)."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
    return F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False, antialias=True).float()


@pytest.mark.parametrize("height, width", [(56, 84), (140, 252), (96, 160)])
def test_resize_frames_matches_reference(videos, height, width):
    frames = read_video(videos["short_gop.mp4"], num_frames=20).frames
    out = resize_frames(frames, height, width, batch_size=7)
    assert out.dtype == torch.float32 and out.shape == (20, 3, height, width)
    torch.testing.assert_close(out, interpolate_reference(frames, height, width), rtol=0, atol=0)
    assert torch.equal(out, out.round()) and out.min() >= 0 and out.max() <= 255


def test_resize_frames_matches_torchvision(videos):
    tv = pytest.importorskip("torchvision.transforms.v2.functional")
    frames = read_video(videos["short_gop.mp4"], num_frames=4).frames
    expected = tv.resize(torch.from_numpy(frames).permute(0, 3, 1, 2), [56, 84],
                         interpolation=tv.InterpolationMode.BICUBIC, antialias=True)
    torch.testing.assert_close(resize_frames(frames, 56, 84), expected.float(), rtol=0, atol=0)


def test_resize_frames_rejects_bad_input():
    with pytest.raises(ValueError, match=r"uint8 numpy array of shape \(T, H, W, 3\)"):
        resize_frames(np.zeros((2, 8, 8, 3), dtype=np.float32), 4, 4)
    with pytest.raises(ValueError, match="height=0"):
        resize_frames(np.zeros((2, 8, 8, 3), dtype=np.uint8), 0, 4)


def test_write_test_video_is_deterministic(tmp_path):
    a = decode_all(write_test_video(tmp_path / "a.mp4", seconds=0.5, seed=3))[0]
    b = decode_all(write_test_video(tmp_path / "b.mp4", seconds=0.5, seed=3))[0]
    c = decode_all(write_test_video(tmp_path / "c.mp4", seconds=0.5, seed=4))[0]
    assert a.shape == (15, 96, 160, 3) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert not np.array_equal(a[0], a[1])  # consecutive frames differ, so an off-by-one index is caught
    assert math.isclose(probe(tmp_path / "a.mp4").duration, 0.5)


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_phone_rotation_is_applied_as_players_show_it(tmp_path, rotation):
    """A display matrix (a phone's portrait video) turns the decoded picture clockwise; probe reports the displayed
    size, and resizing while decoding gives the pixels of turning first and resizing later."""
    from longvid.video import resize_frame, write_test_video

    plain = write_test_video(tmp_path / "plain.mp4", seconds=1, fps=4, width=64, height=48, pattern="gradient")
    turned = write_test_video(tmp_path / "turned.mp4", seconds=1, fps=4, width=64, height=48, pattern="gradient",
                              rotation=rotation)
    info = probe(turned)
    assert info.rotation == rotation
    assert (info.height, info.width) == ((64, 48) if rotation in (90, 270) else (48, 64))
    upright = read_video(plain, num_frames=2).frames
    frames = read_video(turned, num_frames=2).frames
    expected = np.stack([np.rot90(f, k=-rotation // 90) for f in upright])  # clockwise
    np.testing.assert_array_equal(frames, expected)
    small = read_video(turned, num_frames=2, size=(28, 42)).frames
    np.testing.assert_array_equal(small, np.stack([resize_frame(np.ascontiguousarray(f), 28, 42) for f in expected]))


def test_rotated_video_token_plan_follows_the_display(qwen_lm, tmp_path):
    """info's plan and the run use the upright size: a portrait phone video is planned as portrait."""
    from longvid.models import pixel_plan
    from longvid.pipeline import video_info
    from longvid.video import write_test_video

    path = write_test_video(tmp_path / "portrait.mp4", seconds=2, fps=4, width=112, height=56, rotation=90)
    d = video_info(path, qwen_lm.adapter.pixels)
    assert (d["width"], d["height"], d["rotation"]) == (56, 112, 90)
    assert d["resized"][0] > d["resized"][1]  # taller than wide
    frames = qwen_lm.read(path)
    assert frames.frames.shape[1:3] == tuple(d["resized"])
    assert qwen_lm.ask(path, "q?", max_new_tokens=1).stats.visual_tokens == d["visual_tokens"]


def test_images_directories_urls_and_empty_paths_are_refused_clearly(tmp_path):
    from PIL import Image

    from longvid.video import NotAVideoError, VideoNotFoundError

    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(tmp_path / "still.png")
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(tmp_path / "still.jpg")
    for name, kind in (("still.png", "png"), ("still.jpg", "jpeg")):
        for call in (probe, read_video):
            with pytest.raises(NotAVideoError, match=rf"is an image \({kind}\), not a video"):
                call(tmp_path / name)
    with pytest.raises(VideoNotFoundError, match="is a directory, not a video file"):
        read_video(tmp_path)
    with pytest.raises(VideoNotFoundError, match="is a URL; longvid reads local files only: download it first"):
        probe("http://example.com/a.mp4")
    with pytest.raises(VideoNotFoundError, match="the video path is empty"):
        read_video("")


def test_decoding_progress_is_reported_per_frame(videos):
    seen = []
    frames = read_video(videos["short_gop.mp4"], num_frames=6, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 6) for i in range(1, 7)] and len(frames) == 6
