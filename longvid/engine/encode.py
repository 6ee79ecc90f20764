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
    """Visual tokens of some frames after every pre-LLM stage.

    ``visual_tokens`` counts the tokens of all the given frames before any stage; ``next_position`` is the max
    position of the unreduced video block + 1; ``seconds_per_step`` is the time one temporal step covers (it sets
    Qwen2.5-VL's temporal position step).
    """

    tokens: VisualTokens
    visual_tokens: int
    next_position: int
    steps: int
    seconds_per_step: float
    seconds: dict


@torch.inference_mode()
def encode_frames(adapter, frames, method, *, start: int, first_step: int = 0, seconds_per_step: float | None = None,
                  frame_shape: tuple[int, int] | None = None, query_embeds: torch.Tensor | None = None,
                  question: str | None = None) -> EncodedFrames:
    """Encode ``frames`` (a ``longvid.video.Frames``) whose video block starts after text position ``start - 1``.

    ``first_step`` and ``seconds_per_step`` continue an earlier encoding (streaming); ``frame_shape`` (H, W) must
    then match the earlier frames so every step has the same token grid.
    """
    seconds = {"reduce": 0.0, "vision": 0.0}
    shape = tuple(frames.frames.shape[1:3])
    if frame_shape is not None and shape != tuple(frame_shape):
        raise ValueError(f"frames of size {shape[0]}x{shape[1]} cannot extend a video of {frame_shape[0]}x"
                         f"{frame_shape[1]}; stream frames of the same size")
    plan = TokenPlan(adapter.temporal_patch, adapter.tokens_per_step(*shape), len(frames))
    t0 = time.perf_counter()
    if method.frame_selector is not None:
        frames = frames.select(method.frame_selector.select(torch.as_tensor(frames.timestamps), plan, question))
    seconds["reduce"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    embeds, inputs = adapter.encode_video(frames.frames, frames.timestamps)
    seconds["vision"] = time.perf_counter() - t0
    step_seconds = inputs.seconds_per_step if seconds_per_step is None else seconds_per_step
    tokens = _visual_tokens(adapter, embeds, inputs, start, first_step, step_seconds)
    next_position = int(tokens.positions.max()) + 1  # from the full layout, before any reducer
    t0 = time.perf_counter()
    for reducer in method.token_reducers:
        if reducer.query_aware and query_embeds is None:
            raise ValueError(f"method {method.name!r} reduces tokens by the question, so it needs one: ask it a question "
                             "(one-shot ask, not a session)")
        tokens = reducer.reduce(tokens, query_embeds)
    if tokens.end_position is not None:  # a reducer re-indexed positions (e.g. squeezed time) and says where text goes
        next_position = tokens.end_position
    seconds["reduce"] += time.perf_counter() - t0
    return EncodedFrames(tokens, plan.total_tokens, next_position, inputs.grid_thw[0], step_seconds, seconds)


def _visual_tokens(adapter, embeds, inputs, start: int, first_step: int, seconds_per_step: float) -> VisualTokens:
    t, h, w = adapter.merged_grid(inputs.grid_thw)
    steps, gh, gw = inputs.grid_thw
    thw = torch.stack(torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij"), -1)
    thw = thw.reshape(-1, 3)
    # positions of the whole video so far, then the columns of these steps: later steps continue the time axis
    positions = adapter.visual_positions(start, (first_step + steps, gh, gw), seconds_per_step)[:, first_step * h * w:]
    return VisualTokens(embeds=embeds, thw=thw + torch.tensor([first_step, 0, 0]), positions=positions,
                        time=inputs.step_times[thw[:, 0]], merged=torch.ones(len(thw), dtype=torch.long),
                        grid_thw=(t, h, w), num_original=len(thw))
