"""Adapter for LLaVA-OneVision and LLaVA-Video (``LlavaOnevisionForConditionalGeneration``, transformers' own class).

The family PruneVid and ReTaKe were published on. What differs from Qwen-VL, and what it means for the methods:

- **Frames**: each sampled frame is resized to the vision tower's square size (384 x 384 for SigLIP-so400m, aspect
  ratio not kept, as the HF video processor does), rescaled and normalised with the checkpoint's mean/std. The
  tower's hidden states at ``vision_feature_layer`` go through the projector, then a 2 x 2 bilinear pooling
  (27 x 27 -> 14 x 14): 196 tokens per frame. One frame is one temporal step (``temporal_patch = 1``).
- **Layout**: ``[prefix | frame 0 (196) | frame 1 | ... | newline | tail]``: the model's learned ``image_newline``
  once, after the last frame (what ``get_video_features`` appends), written here as a structural token: always
  kept, never evicted.
- **Positions**: plain 1-D RoPE (``position_rows = 1``), the prompt index. Token i of frame t sits at
  ``start + 196 t + i``; the newline after the last frame; text after it. A kept token keeps its position; a merged
  token (PruneVid stage 1) takes its representative's; "squeezing time" (PivotKV, DPSelect) moves the 1-D position
  itself (``time_row = 0``), as ReTaKe's LLaVA-Video code does, and the newline follows the squeezed block.
- **Streaming**: frames appended by ``VideoSession.extend`` are laid out after everything prefilled before them
  (``after``), each segment with its own newline.

    from longvid.models import load_adapter; adapter = load_adapter("/models/llava-onevision-qwen2-7b-ov-hf")
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from longvid.engine.forward import LanguageModel
from longvid.errors import option
from longvid.models.attention import AttentionOps
from longvid.models.base import EncodedVision, ModelAdapter, VideoBlock
from longvid.tokens import VisualTokens
from longvid.video import resize_frames

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class SquarePlan:
    """Frame geometry of a square-input vision tower: every frame becomes ``side`` x ``side`` pixels and
    ``pooled``^2 tokens; one frame per temporal step."""

    side: int
    pooled: int
    temporal_patch: int = 1

    def frame_size(self, height: int, width: int, num_frames: int | None = None) -> tuple[int, int]:
        return self.side, self.side

    def tokens_per_step(self, height: int, width: int, num_frames: int | None = None) -> int:
        return self.pooled * self.pooled


def pixel_plan_from_checkpoint(path: Path, min_pixels: int | None = None, max_pixels: int | None = None) -> SquarePlan:
    """The geometry from config.json, without loading weights."""
    from longvid.models import read_json

    vc = read_json(path / "config.json").get("vision_config", {})
    side, patch = vc.get("image_size", 384), vc.get("patch_size", 14)
    if min_pixels is not None or max_pixels is not None:
        raise ValueError(f"{option('max_pixels')}/{option('min_pixels')} do not apply to LLaVA-OneVision: its vision "
                         f"tower takes frames at a fixed {side}x{side} pixels; leave them unset")
    return SquarePlan(side, math.ceil(side // patch / 2))


class LlavaOnevisionAdapter(ModelAdapter):
    """LLaVA-OneVision / LLaVA-Video: square frames, SigLIP + projector + 2 x 2 pooling, one newline, 1-D RoPE."""

    families = ("llava_onevision",)
    position_rows, time_row, temporal_patch = 1, 0, 1

    def __init__(self, model, tokenizer, *, min_pixels: int | None = None, max_pixels: int | None = None,
                 image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD):
        self.model, self.tokenizer = model, tokenizer
        config = model.config
        vc = config.vision_config
        self.side = vc.image_size
        self.pooled = math.ceil(vc.image_size // vc.patch_size / 2)  # apply_pooling: bilinear to ceil(grid / 2)
        self.pixels = SquarePlan(self.side, self.pooled)
        self.feature_layer = config.vision_feature_layer
        self.select_strategy = config.vision_feature_select_strategy
        self.mean = torch.tensor(image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(image_std, dtype=torch.float32).view(1, 3, 1, 1)
        self.video_token_id = config.video_token_id
        if min_pixels is not None or max_pixels is not None:
            raise ValueError(f"{option('max_pixels')}/{option('min_pixels')} do not apply to LLaVA-OneVision: its "
                             f"vision tower takes frames at a fixed {self.side}x{self.side} pixels; leave them unset")
        inner = model.model.language_model
        self.lm = LanguageModel(config.text_config, inner.embed_tokens, inner.layers, inner.norm, inner.rotary_emb,
                                model.lm_head, AttentionOps())

    # ----- pixels and vision ------------------------------------------------------------------------------------
    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (T, H, W, 3) -> float (1, T, 3, side, side): resized (bicubic, antialiased), rescaled, normalised."""
        x = resize_frames(frames, self.side, self.side)
        return ((x / 255.0 - self.mean) / self.std).unsqueeze(0)

    @torch.inference_mode()
    def encode_frames(self, frames: np.ndarray, window: int = 32) -> torch.Tensor:
        """(T * 196, D) pooled, projected tokens of the frames, ``window`` frames at a time (without the newline)."""
        out = []
        tower = self.model.model
        for a in range(0, len(frames), window):
            pixels = self.preprocess(frames[a:a + window]).to(self.device, tower.vision_tower.dtype)
            features = tower.get_video_features(pixels, vision_feature_layer=self.feature_layer,
                                                vision_feature_select_strategy=self.select_strategy).pooler_output
            out.append(features[0, :-1])  # get_video_features appends the newline: the block adds its own
        return torch.cat(out)

    def encode(self, frames: np.ndarray, timestamps, *, start: int, first_step: int = 0,
               seconds_per_step: float | None = None, after: int | None = None,
               size: tuple[int, int] | None = None) -> EncodedVision:
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
            raise ValueError(f"frames must be a non-empty uint8 array (T, H, W, 3), got shape {frames.shape}")
        embeds = self.encode_frames(frames)
        t, side = len(frames), self.pooled
        n = side * side
        thw = torch.stack(torch.meshgrid(torch.arange(t), torch.arange(side), torch.arange(side), indexing="ij"), -1)
        thw = thw.reshape(-1, 3)
        first = start if first_step == 0 or after is None else after  # a streamed segment follows what came before
        positions = (first + torch.arange(t * n)).unsqueeze(0)
        times = torch.as_tensor(np.asarray(timestamps, dtype=np.float64))
        spacing = float(times[-1] - times[0]) / (t - 1) if t > 1 else 1.0
        tokens = VisualTokens(embeds=embeds, thw=thw + torch.tensor([first_step, 0, 0]), positions=positions,
                              time=times[thw[:, 0]], merged=torch.ones(len(thw), dtype=torch.long),
                              grid_thw=(t, side, side), num_original=len(thw))
        step = seconds_per_step if seconds_per_step is not None else (spacing if spacing > 0 else 1.0)
        return EncodedVision(tokens, t, step, first + t * n + 1)  # + 1: the newline

    def generate_inputs(self, frames: np.ndarray, timestamps, question: str, system: str | None = None) -> dict:
        """``<video>`` x (tokens per frame x frames + the newline), as transformers' processor expands it."""
        prefix, tail_template = self.prompt_parts(system)
        n = self.pooled * self.pooled * len(frames) + 1
        ids = torch.tensor([prefix + [self.video_token_id] * n + self.tail_ids(tail_template, question)])
        return dict(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values_videos=self.preprocess(frames))

    def video_block(self, tokens: VisualTokens, start: int, end: int) -> VideoBlock:
        """The kept tokens at their positions, then the newline just before ``end`` (or right after a squeezed block,
        whose end a reducer set in ``tokens.end_position``)."""
        newline_at = (end - 1) if tokens.end_position is None else tokens.end_position
        newline = self.model.model.image_newline.to(tokens.embeds.device, tokens.embeds.dtype)[None]
        n = len(tokens)
        return VideoBlock(torch.cat([tokens.embeds, newline]),
                          torch.cat([tokens.positions, torch.tensor([[newline_at]])], dim=1),
                          torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(1, dtype=torch.bool)]),
                          torch.cat([torch.arange(n), torch.tensor([-1])]), newline_at + 1)
