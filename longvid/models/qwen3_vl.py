"""Adapter for Qwen3-VL (``Qwen3VLForConditionalGeneration``) and its MoE variant (``Qwen3VLMoe...``), through
transformers' own classes.

What differs from Qwen2.5-VL, and what it means for the methods:

- **Frames**: patch 16, merge 2 (32 x 32 pixels per LLM token), temporal patch 2, mean/std 0.5. The resize rule is
  the video processor's: one size for the whole clip, from a pixel budget over all its frames (``t * h * w <=
  size["longest_edge"]``), with the per-frame cap the reference implementation (qwen-vl-utils) applies and
  transformers' ``cap_pixels_per_frame=True`` reproduces: ``max(min(768 * 32^2, longest_edge // T), 1.05 *
  shortest_edge)`` pixels per frame (a processor config with ``cap_pixels_per_frame: false`` gets transformers'
  uncapped rule). So the frame size depends on the number of frames sampled: long videos get smaller frames.
  ``max_pixels`` given by the user replaces the per-frame ceiling; ``min_pixels`` is a per-frame floor.
- **Layout**: time is written as text. Each temporal step (two frames) is ``<t seconds><|vision_start|>`` + its
  tokens + ``<|vision_end|>``, with ``t`` the mean timestamp of its two frames, ``f"{t:.1f}"``. These are
  structural entries of the video block (always kept, never evicted); a step whose every token a reducer dropped
  loses its markers too. The chat template's own ``<|vision_start|><|video_pad|><|vision_end|>`` is replaced whole,
  as Qwen's processor (transformers 4.57, qwen-vl-utils) and vLLM write it; transformers 5's generic replacement
  keeps that outer pair around the per-step blocks (a layout the model was not released with).
- **Positions**: M-RoPE (interleaved), three rows; text is sequential; a step's tokens sit at ``(p, p + row,
  p + col)`` where ``p`` is the position after its ``<|vision_start|>``, and the next text starts at ``p +
  max(H, W)``: the temporal row carries no time (``time_row = None``), so methods that squeeze time (PivotKV's
  reforge, DPSelect below keep 1) refuse this family; everything else runs. Kept tokens keep their full-layout ids.
- **DeepStack**: the vision tower's intermediate features (one per ``deepstack_visual_indexes``) are added to the
  hidden states of the visual tokens after the first K decoder layers. They travel as the per-token extra
  ``"deepstack"`` (N, K, D), so every reducer subsets or pools them with their tokens, and reach the engine as
  ``VideoBlock.residuals``.
- **Attention**: ``q_norm`` / ``k_norm`` after the projections (``AttentionOps(qk_norm=True)``), so every score
  (FastV, PruneVid stage 2, PivotKV) uses the q and k the attention uses.

Deviations, each for a stated reason: timestamps are the frames' presentation times from the stream's start
(transformers computes ``index / fps``, which differs only where the frame rate varies), rounded to the microsecond
before they are written so float noise cannot flip a ``.x5`` to the next tenth; a 1-frame clip is sized as 2 frames
(transformers refuses it).

    from longvid.models import load_adapter; adapter = load_adapter("/models/Qwen3-VL-8B-Instruct")
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from longvid.engine.forward import LanguageModel
from longvid.errors import check_positive, option
from longvid.models.attention import AttentionOps
from longvid.models.base import EncodedVision, VideoBlock
from longvid.models.qwen2_vl import Qwen2VLAdapter, _seconds_per_step
from longvid.tokens import VisualTokens

STANDARD_MEAN = STANDARD_STD = (0.5, 0.5, 0.5)
DEFAULT_SHORTEST_EDGE = 128 * 32 * 32  # Qwen3VLVideoProcessor's size["shortest_edge"]
DEFAULT_LONGEST_EDGE = 768 * 32 * 32  # Qwen3VLVideoProcessor's size["longest_edge"]
DEFAULT_FRAME_TOKENS = 768  # max_video_tokens: the per-frame ceiling of the cap, in LLM tokens
MAX_ASPECT_RATIO = 200


def clip_size(num_frames: int, height: int, width: int, *, temporal_factor: int, factor: int, min_pixels: int,
              max_pixels: int) -> tuple[int, int]:
    """Qwen3-VL's resize rule for a clip of ``num_frames`` (height, width) frames: sides rounded to multiples of
    ``factor``, then scaled so ``t * h * w`` (t rounded to the temporal factor) lies in [min_pixels, max_pixels]."""
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(f"{height}x{width} frames have an aspect ratio above Qwen3-VL's limit of {MAX_ASPECT_RATIO}; "
                         "crop or pad them to a less extreme shape first")
    h, w = round(height / factor) * factor, round(width / factor) * factor
    t = round(num_frames / temporal_factor) * temporal_factor
    if t * h * w > max_pixels:
        beta = math.sqrt(num_frames * height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif t * h * w < min_pixels:
        beta = math.sqrt(min_pixels / (num_frames * height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


@dataclass(frozen=True)
class ClipPlan:
    """Frame geometry of Qwen3-VL: one frame size per clip, from a pixel budget over its frames.

    ``shortest_edge`` / ``longest_edge`` are the video processor's ``size`` (pixels over the whole clip). With
    ``cap`` (qwen-vl-utils' sizing, transformers' ``cap_pixels_per_frame=True``; the default, unless a checkpoint's
    processor config turns it off) the budget is ``max(min(frame_max, longest_edge // T), frame_min)`` pixels a frame;
    without, ``longest_edge`` for the clip. A user's ``max_pixels`` is ``frame_max`` (and implies the cap), a user's
    ``min_pixels`` is ``floor``: no frame smaller (smaller frames are enlarged, as Qwen2-VL's ``min_pixels``).
    """

    patch_size: int = 16
    merge: int = 2
    temporal_patch: int = 2
    shortest_edge: int = DEFAULT_SHORTEST_EDGE
    longest_edge: int = DEFAULT_LONGEST_EDGE
    frame_max: int = DEFAULT_FRAME_TOKENS * 32 * 32
    frame_min: int = int(DEFAULT_SHORTEST_EDGE * 1.05)
    cap: bool = True
    floor: int = 0

    @classmethod
    def create(cls, patch_size=16, merge=2, temporal_patch=2, shortest_edge=None, longest_edge=None,
               max_video_tokens=None, min_pixels=None, max_pixels=None, cap_pixels_per_frame=None) -> ClipPlan:
        check_positive("min_pixels", min_pixels, integer=True)
        check_positive("max_pixels", max_pixels, integer=True)
        factor = patch_size * merge
        shortest = DEFAULT_SHORTEST_EDGE if shortest_edge is None else int(shortest_edge)
        longest = DEFAULT_LONGEST_EDGE if longest_edge is None else int(longest_edge)
        frame_max = (max_video_tokens or DEFAULT_FRAME_TOKENS) * factor * factor if max_pixels is None else max_pixels
        if min_pixels is None:  # the cap's floor, lowered with a ceiling the user set below it
            frame_min = min(int(shortest * 1.05), frame_max)
        elif min_pixels > frame_max:
            raise ValueError(f"{option('min_pixels', min_pixels)} must not exceed {option('max_pixels', frame_max)}")
        else:
            frame_min = min_pixels
        cap = cap_pixels_per_frame is not False or max_pixels is not None or min_pixels is not None
        return cls(patch_size, merge, temporal_patch, shortest, longest, frame_max, frame_min, cap, min_pixels or 0)

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge

    def clip_pixels(self, num_frames: int) -> int:
        """The pixel budget of a clip of ``num_frames`` frames."""
        if not self.cap:
            return self.longest_edge
        return max(min(self.frame_max, self.longest_edge // num_frames), self.frame_min) * num_frames

    def frame_size(self, height: int, width: int, num_frames: int | None = None) -> tuple[int, int]:
        """Resized (height, width) of the frames of a clip of ``num_frames`` (None: one temporal step)."""
        t = max(num_frames or self.temporal_patch, self.temporal_patch)
        budget, f = self.clip_pixels(t), self.factor
        least = max(self.shortest_edge, self.floor * round(t / self.temporal_patch) * self.temporal_patch)
        return clip_size(t, height, width, temporal_factor=self.temporal_patch, factor=f, min_pixels=least,
                         max_pixels=budget)

    def tokens_per_step(self, height: int, width: int, num_frames: int | None = None) -> int:
        h, w = self.frame_size(height, width, num_frames)
        return (h // self.factor) * (w // self.factor)


def pixel_plan_from_checkpoint(path: Path, min_pixels: int | None = None, max_pixels: int | None = None) -> ClipPlan:
    """The geometry from config.json and the video processor config, without loading weights."""
    from longvid.models import read_json

    vc = read_json(path / "config.json").get("vision_config", {})
    pre = preprocessor_kwargs(path)
    return ClipPlan.create(vc.get("patch_size", 16), vc.get("spatial_merge_size", 2), vc.get("temporal_patch_size", 2),
                           pre.get("shortest_edge"), pre.get("longest_edge"), pre.get("max_video_tokens"),
                           min_pixels, max_pixels, pre.get("cap_pixels_per_frame"))


def preprocessor_kwargs(path: Path) -> dict:
    """size, max_video_tokens, cap_pixels_per_frame and mean/std from the checkpoint's video processor settings (not
    the image processor's: its ``size`` is a per-image budget, not a per-clip one)."""
    from longvid.models import processor_settings

    cfg = processor_settings(path, images=False)
    size = cfg.get("size") or {}
    out = dict(shortest_edge=size.get("shortest_edge"), longest_edge=size.get("longest_edge"),
               max_video_tokens=cfg.get("max_video_tokens"), cap_pixels_per_frame=cfg.get("cap_pixels_per_frame"),
               image_mean=cfg.get("image_mean"), image_std=cfg.get("image_std"))
    return {k: v for k, v in out.items() if v is not None}


class Qwen3VLAdapter(Qwen2VLAdapter):
    """Qwen3-VL: clip-budget frames, per-step timestamps as text, interleaved M-RoPE, DeepStack, QK-norm."""

    families = ("qwen3_vl", "qwen3_vl_moe")
    position_rows, time_row = 3, None

    def __init__(self, model, tokenizer, *, min_pixels: int | None = None, max_pixels: int | None = None,
                 shortest_edge: int | None = None, longest_edge: int | None = None,
                 max_video_tokens: int | None = None, cap_pixels_per_frame: bool | None = None,
                 image_mean=STANDARD_MEAN, image_std=STANDARD_STD):
        self.model, self.tokenizer = model, tokenizer
        config = model.config
        vc = config.vision_config
        self.patch_size, self.merge, self.temporal_patch = vc.patch_size, vc.spatial_merge_size, vc.temporal_patch_size
        self.pixels = ClipPlan.create(self.patch_size, self.merge, self.temporal_patch, shortest_edge, longest_edge,
                                      max_video_tokens, min_pixels, max_pixels, cap_pixels_per_frame)
        self.tokens_per_second = None
        self.video_token_id = config.video_token_id
        self.vision_start_id, self.vision_end_id = config.vision_start_token_id, config.vision_end_token_id
        self.mean = torch.tensor(image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(image_std, dtype=torch.float32).view(1, 3, 1, 1)
        inner = model.model.language_model
        self.lm = LanguageModel(config.text_config, inner.embed_tokens, inner.layers, inner.norm, inner.rotary_emb,
                                model.lm_head, AttentionOps(qk_norm=True))
        self.deepstack_layers = len(vc.deepstack_visual_indexes)

    # ----- vision encoder ------------------------------------------------------------------------------------
    def window_tokens(self, output) -> torch.Tensor:
        """LLM-space visual tokens with their DeepStack features (n, K, D) concatenated on the last axis. Windows of
        temporal steps (`Qwen2VLAdapter.encode_inputs`) stay exact: the tower attends within a step, and its learned
        position embedding is interpolated per (H, W) grid, whatever the step count."""
        return torch.cat([output.pooler_output, *output.deepstack_features], dim=-1)

    def step_times(self, timestamps) -> torch.Tensor:
        """(steps,) float64 time of each temporal step: the mean of its frames' first and last timestamp (an odd
        last frame pairs with itself, as the processor pads it)."""
        times = torch.as_tensor(np.asarray(timestamps, dtype=np.float64))
        pad = -len(times) % self.temporal_patch
        if pad:
            times = torch.cat([times, times[-1:].expand(pad)])
        pairs = times.view(-1, self.temporal_patch)
        return (pairs[:, 0] + pairs[:, -1]) / 2

    def timestamp_ids(self, seconds: float) -> list[int]:
        """Token ids of ``<{seconds:.1f} seconds>``, the text the processor writes before a step."""
        return self.tokenizer(f"<{round(float(seconds), 6):.1f} seconds>", add_special_tokens=False)["input_ids"]

    def encode(self, frames: np.ndarray, timestamps, *, start: int, first_step: int = 0,
               seconds_per_step: float | None = None, after: int | None = None,
               size: tuple[int, int] | None = None) -> EncodedVision:
        size = size or self.frame_size(frames.shape[1], frames.shape[2], len(frames))
        out, inputs = self.encode_video(frames, timestamps, size=size)
        dim = self.lm.embed_tokens.embedding_dim
        embeds = out[:, :dim].contiguous()  # copies: a column slice is not contiguous
        deepstack = out[:, dim:].reshape(len(out), self.deepstack_layers, dim).contiguous()
        del out  # the (N, (K + 1) D) scratch
        steps, gh, gw = inputs.grid_thw
        h, w = gh // self.merge, gw // self.merge
        times = self.step_times(timestamps)
        p = start if first_step == 0 or after is None else after  # a streamed segment follows what came before
        rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        positions = []
        for s in range(steps):  # <t seconds><|vision_start|> tokens <|vision_end|>
            p += len(self.timestamp_ids(times[s])) + 1
            positions.append(torch.stack([torch.full((h * w,), p), p + rows.flatten(), p + cols.flatten()]))
            p += max(h, w) + 1
        thw = torch.stack(torch.meshgrid(torch.arange(steps), torch.arange(h), torch.arange(w), indexing="ij"), -1)
        thw = thw.reshape(-1, 3)
        tokens = VisualTokens(embeds=embeds, thw=thw + torch.tensor([first_step, 0, 0]), positions=torch.cat(positions, 1),
                              time=times[thw[:, 0]], merged=torch.ones(len(thw), dtype=torch.long),
                              grid_thw=(steps, h, w), num_original=len(thw), extras={"deepstack": deepstack})
        step_seconds = _seconds_per_step(torch.as_tensor(np.asarray(timestamps, dtype=np.float64)),
                                         self.temporal_patch) if seconds_per_step is None else seconds_per_step
        return EncodedVision(tokens, steps, step_seconds, p)

    # ----- layout ------------------------------------------------------------------------------------------------
    def video_block(self, tokens: VisualTokens, start: int, end: int) -> VideoBlock:
        """Per temporal step with kept tokens: its timestamp text and ``<|vision_start|>`` just before the step's first
        position, its tokens (in their order), ``<|vision_end|>`` at ``p + max(H, W)``; all at full-layout ids."""
        _, h, w = tokens.grid_thw
        p = tokens.positions[0].cpu()
        order = torch.sort(p, stable=True).indices
        steps, counts = torch.unique_consecutive(p[order], return_counts=True)
        device = tokens.embeds.device
        ids, id_pos, entries = [], [], []  # structural ids and positions; (kind, payload) in block order
        at = 0
        for step_p, n in zip(steps.tolist(), counts.tolist()):
            members = order[at:at + n]
            at += n
            head = self.timestamp_ids(tokens.time[members[0]]) + [self.vision_start_id]
            entries += [("text", len(ids), len(head))]
            ids += head
            id_pos += list(range(step_p - len(head), step_p))
            entries += [("visual", members, None), ("text", len(ids), 1)]
            ids.append(self.vision_end_id)
            id_pos.append(step_p + max(h, w))
        text = self.lm.embed_tokens(torch.tensor(ids, device=device)).to(tokens.embeds.dtype)
        text_pos = torch.tensor(id_pos).expand(3, -1)
        embeds, positions, visual, index = [], [], [], []
        for kind, a, b in entries:
            if kind == "text":
                embeds.append(text[a:a + b])
                positions.append(text_pos[:, a:a + b])
                visual.append(torch.zeros(b, dtype=torch.bool))
                index.append(torch.full((b,), -1))
            else:
                embeds.append(tokens.embeds[a.to(device)])
                positions.append(tokens.positions[:, a])
                visual.append(torch.ones(len(a), dtype=torch.bool))
                index.append(a)
        index = torch.cat(index)
        deepstack, rows = tokens.extras["deepstack"], index[index >= 0]
        if torch.equal(rows, torch.arange(len(tokens))):  # tokens in block order: a view, not a second copy
            residuals = deepstack.transpose(0, 1)
        else:
            residuals = deepstack[rows.to(deepstack.device)].transpose(0, 1)
        return VideoBlock(torch.cat(embeds), torch.cat(positions, 1), torch.cat(visual), index, end, residuals)

    def video_ids(self, inputs, timestamps) -> list[int]:
        """Per temporal step ``<t seconds><|vision_start|>`` + one video pad per token + ``<|vision_end|>``."""
        _, h, w = self.merged_grid(inputs.grid_thw)
        ids = []
        for seconds in self.step_times(timestamps):
            ids += self.timestamp_ids(seconds) + [self.vision_start_id] + [self.video_token_id] * (h * w)
            ids.append(self.vision_end_id)
        return ids

    # ----- prompt ----------------------------------------------------------------------------------------------
    def prompt_parts(self, system: str | None = None) -> tuple[list[int], str]:
        """The chat template split at the video, with its ``<|vision_start|>`` / ``<|vision_end|>`` pair around the
        pad dropped: every temporal step writes its own (Qwen's processor replaces the three tokens whole)."""
        prefix, tail = super().prompt_parts(system)
        end = self.tokenizer.convert_ids_to_tokens(self.vision_end_id)
        if prefix and prefix[-1] == self.vision_start_id and tail.startswith(end):
            return prefix[:-1], tail[len(end):]
        return prefix, tail
