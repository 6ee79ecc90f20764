"""Frames -> VisualTokens: frame selection, vision encoding in windows, full-layout positions, token reducers.

Shared by one-shot questions, sessions and streaming ``extend`` (which encodes later frames at a step offset so
their temporal positions continue the video's).

    from longvid.engine.encode import encode_frames
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from longvid.methods.base import TokenPlan
from longvid.tokens import VisualTokens


@dataclass
class EncodedFrames:
    """Visual tokens of some frames after every pre-LLM stage, and the video block the LLM reads for them.

    ``visual_tokens`` counts the tokens of all the given frames before any stage; ``next_position`` is the first
    text position after the block (the unreduced layout's, or a squeezed one); ``seconds_per_step`` is the time one
    temporal step covers (it sets Qwen2.5-VL's temporal position step).
    """

    tokens: VisualTokens
    block: object
    size: tuple[int, int]
    visual_tokens: int
    next_position: int
    steps: int
    seconds_per_step: float
    seconds: dict


@torch.inference_mode()
def encode_frames(adapter, frames, method, *, start: int, first_step: int = 0, seconds_per_step: float | None = None,
                  frame_shape: tuple[int, int] | None = None, query_embeds: torch.Tensor | None = None,
                  question: str | None = None, after: int | None = None,
                  step_tokens: int | None = None) -> EncodedFrames:
    """Encode ``frames`` (a ``longvid.video.Frames``) whose video block starts after text position ``start - 1``.

    Frames are sized for the model by the number of frames the sampling planned (before a frame selector drops any)
    and, when they are at the source's size or already at the size the source plans to (as the reader sizes them),
    from the source's size (``frames.info``): the source is resized once, as the family's processor does, not again
    from already-resized frames (a resize rule need not be idempotent: Qwen2-VL's is not when ``min_pixels`` is close
    to ``max_pixels``); frames a caller read at another size are sized from that size. ``first_step`` and
    ``seconds_per_step`` continue an earlier encoding (streaming); ``frame_shape`` (H, W) is then the stream's
    model-side frame size, which later frames are resized to so every step has the same token grid of
    ``step_tokens`` tokens. The model sees times from the stream's start (``frames.info.start_time``), as the
    processors count them (frame index / fps).
    """
    method.check_model(adapter)
    seconds = {"reduce": 0.0, "vision": 0.0}
    info, shape, planned = frames.info, tuple(frames.frames.shape[1:3]), frames.frames_planned
    h, w = shape
    if info.height and info.width and shape in ((info.height, info.width),
                                                adapter.frame_size(info.height, info.width, planned)):
        h, w = info.height, info.width
    size = adapter.frame_size(h, w, planned)
    if frame_shape is not None:  # every step of a stream has the same token grid: later frames take its size
        size = tuple(frame_shape)
    per_step = adapter.tokens_per_step(h, w, planned) if step_tokens is None else step_tokens
    plan = TokenPlan(adapter.temporal_patch, per_step, len(frames))
    t0 = time.perf_counter()
    if method.frame_selector is not None:
        frames = frames.select(method.frame_selector.select(torch.as_tensor(frames.timestamps), plan, question))
    seconds["reduce"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    times = frames.timestamps - (info.start_time or 0.0)
    vision = adapter.encode(frames.frames, times, start=start, first_step=first_step,
                            seconds_per_step=seconds_per_step, after=after, size=size)
    seconds["vision"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tokens = vision.tokens
    for reducer in method.token_reducers:
        if reducer.query_aware and query_embeds is None:
            raise ValueError(f"method {method.name!r} reduces tokens by the question, so it needs one: ask it a question "
                             "(one-shot ask, not a session)")
        tokens = reducer.reduce(tokens, query_embeds)
    block = adapter.video_block(tokens, start, vision.next_position)
    seconds["reduce"] += time.perf_counter() - t0
    return EncodedFrames(tokens, block, size, plan.total_tokens, block.next_position, vision.steps, vision.seconds_per_step,
                         seconds)
