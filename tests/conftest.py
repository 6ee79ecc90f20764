"""Shared fixtures: tiny random checkpoints of every family built in code, and small generated videos.

    pytest tests/ -q
"""

from __future__ import annotations

import pytest
import torch

import longvid
from longvid.tiny import FAMILIES as TINY_FAMILIES, VARIANTS, save_tiny_model
from longvid.video import read_video, write_test_video

FAMILIES = tuple(f for f in TINY_FAMILIES if f not in VARIANTS)  # every family the package builds a tiny model of
QWEN_FAMILIES = ("qwen2_vl", "qwen2_5_vl")  # M-RoPE with time on its row, per-frame pixel budgets


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {family: save_tiny_model(root / family, family, seed=0) for family in FAMILIES}


@pytest.fixture(scope="session", params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture(scope="session")
def lms(tiny_dirs):
    torch.manual_seed(0)
    return {family: longvid.load(path) for family, path in tiny_dirs.items()}  # pixels from their processor configs


@pytest.fixture(scope="session")
def lm(lms, family):
    return lms[family]


@pytest.fixture(scope="session", params=QWEN_FAMILIES)
def qwen_lm(lms, request):
    """The Qwen-VL families only, for facts of their layout (patchify, M-RoPE rows, the vision markers)."""
    return lms[request.param]


@pytest.fixture(scope="session")
def bundled():
    """longvid-tiny (longvid-tiny 2, suite v2), the trained model inside the package, loaded by name."""
    return longvid.load("longvid-tiny")


@pytest.fixture(scope="session")
def bundled_v1():
    """longvid-tiny-v1 (suite v1), kept in the package with its own CITR heads and QTSplus modules."""
    return longvid.load("longvid-tiny-v1")


@pytest.fixture(scope="session")
def video_path(tmp_path_factory):
    """A real H.264 file: 6 s, 10 fps, 112x84, moving texture and a moving square."""
    return write_test_video(tmp_path_factory.mktemp("videos") / "clip.mp4", seconds=6, fps=10, width=112, height=84)


@pytest.fixture(scope="session")
def frames(video_path):
    """8 frames at 2 fps -> 4 temporal steps x 3x3 merged tokens = 36 visual tokens."""
    return read_video(video_path, fps=2, max_frames=8)


@pytest.fixture(scope="session")
def long_frames(video_path):
    """24 frames -> 12 temporal steps: a video longer (in steps) than it is wide, where layouts differ."""
    return read_video(video_path, num_frames=24)


@pytest.fixture(scope="session")
def untrained_tiny(tmp_path_factory):
    """An untrained longvid-tiny checkpoint (its architecture, tokenizer and pixels) written by the training code."""
    from longvid.train.tiny_v1 import train

    path = tmp_path_factory.mktemp("tiny") / "untrained"
    train(path, steps=2, videos_per_step=2, n_validation=2, validate_every=1000, log=lambda _: None)
    return path
