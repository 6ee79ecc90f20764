"""Adapter for Qwen2-VL and Qwen2.5-VL through transformers' own classes (no forked modeling code).

The adapter owns what is model-specific: pixel preprocessing and patchify, the chat prompt, vision encoding in
frame windows, and the full-layout 3-D M-RoPE positions. Everything else (methods, engine) is model-agnostic.

Positions follow the layout the Qwen2-VL / Qwen2.5-VL checkpoints were trained with: a video starting after text
position ``s - 1`` gets ``(s + t_pos, s + row, s + col)`` with ``t_pos = floor(t * interval)`` (interval 1 for
Qwen2-VL; ``tokens_per_second * seconds_per_temporal_step`` for Qwen2.5-VL), and the text after the video starts at
``max(video positions) + 1``. transformers 5.23's ``get_rope_index`` instead starts it at ``s + max(H, W)``, which
ignores the temporal extent of a long video; the two agree when ``T <= max(H, W)`` (tests check both facts).

    from longvid.models import load_adapter; adapter = load_adapter("/models/Qwen2.5-VL-7B-Instruct")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from longvid.engine.forward import LanguageModel
from longvid.errors import check_positive, option
from longvid.models.attention import AttentionOps
from longvid.models.base import EncodedVision, ModelAdapter, VideoBlock
from longvid.tokens import VisualTokens
from longvid.video import smart_resize, resize_frames

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_MIN_PIXELS = 128 * 28 * 28  # Qwen2VLVideoProcessor's size["shortest_edge"]
DEFAULT_MAX_PIXELS = 768 * 28 * 28  # Qwen2VLVideoProcessor's size["longest_edge"]


@dataclass
class VideoInputs:
    """A video ready for the vision encoder.

    Attributes
    ----------
    pixel_values : torch.Tensor
        (T_grid * H_patch * W_patch, C * temporal_patch * patch * patch) normalised patches, as Qwen2VLVideoProcessor.
    grid_thw : tuple[int, int, int]
        (T_grid, H_patch, W_patch) in patch units (``video_grid_thw`` of transformers).
    step_times : torch.Tensor
        (T_grid,) float64 timestamp in seconds of each temporal step's first frame.
    seconds_per_step : float
        Seconds covered by one temporal step (``second_per_grid_ts`` of Qwen2.5-VL).
    """

    pixel_values: torch.Tensor
    grid_thw: tuple[int, int, int]
    step_times: torch.Tensor
    seconds_per_step: float


@dataclass(frozen=True)
class PixelPlan:
    """Frame geometry of a Qwen-VL vision encoder: resize rule and token count per temporal step."""

    patch_size: int = 14
    merge: int = 2
    temporal_patch: int = 2
    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS

    @classmethod
    def create(cls, patch_size=14, merge=2, temporal_patch=2, min_pixels=None, max_pixels=None) -> PixelPlan:
        """Defaults as Qwen2VLVideoProcessor; a max below the default min lowers the min with it."""
        check_positive("min_pixels", min_pixels, integer=True)
        check_positive("max_pixels", max_pixels, integer=True)
        max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
        min_pixels = min(DEFAULT_MIN_PIXELS, max_pixels) if min_pixels is None else min_pixels
        if min_pixels > max_pixels:
            raise ValueError(f"{option('min_pixels', min_pixels)} must not exceed {option('max_pixels', max_pixels)}")
        return cls(patch_size, merge, temporal_patch, min_pixels, max_pixels)

    def frame_size(self, height: int, width: int, num_frames: int | None = None) -> tuple[int, int]:
        """Resized (height, width): multiples of patch * merge within [min_pixels, max_pixels] (per frame, whatever
        the frame count)."""
        return smart_resize(height, width, factor=self.patch_size * self.merge,
                            min_pixels=self.min_pixels, max_pixels=self.max_pixels)

    def tokens_per_step(self, height: int, width: int, num_frames: int | None = None) -> int:
        h, w = self.frame_size(height, width, num_frames)
        return (h // self.patch_size // self.merge) * (w // self.patch_size // self.merge)


def pixel_plan_from_checkpoint(path: Path, min_pixels: int | None = None, max_pixels: int | None = None) -> PixelPlan:
    """The geometry from config.json and the preprocessor config, without loading weights."""
    from longvid.models import read_json, read_preprocessor_config

    vc = read_json(path / "config.json").get("vision_config", {})
    pre = read_preprocessor_config(path)
    return PixelPlan.create(vc.get("patch_size", 14), vc.get("spatial_merge_size", 2), vc.get("temporal_patch_size", 2),
                            pre.get("min_pixels") if min_pixels is None else min_pixels,
                            pre.get("max_pixels") if max_pixels is None else max_pixels)


class Qwen2VLAdapter(ModelAdapter):
    """Qwen2-VL / Qwen2.5-VL: preprocessing, prompt, windowed vision encoding and M-RoPE layout.

    The video block is the visual tokens alone (the chat template's ``<|vision_start|>`` and ``<|vision_end|>``
    are the prefix's last and the tail's first token); 3 position rows, time on row 0.
    """

    families = ("qwen2_vl", "qwen2_5_vl")
    position_rows, time_row = 3, 0

    def __init__(self, model, tokenizer, *, min_pixels: int | None = None, max_pixels: int | None = None,
                 image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD):
        self.model, self.tokenizer = model, tokenizer
        vc = model.config.vision_config
        self.patch_size, self.merge, self.temporal_patch = vc.patch_size, vc.spatial_merge_size, vc.temporal_patch_size
        self.tokens_per_second = getattr(vc, "tokens_per_second", None) if self.family == "qwen2_5_vl" else None
        self.pixels = PixelPlan.create(self.patch_size, self.merge, self.temporal_patch, min_pixels, max_pixels)
        self.mean = torch.tensor(image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(image_std, dtype=torch.float32).view(1, 3, 1, 1)
        self.video_token_id = model.config.video_token_id
        inner = model.model.language_model
        self.lm = LanguageModel(model.config.text_config, inner.embed_tokens, inner.layers, inner.norm,
                                inner.rotary_emb, model.lm_head, AttentionOps())

    # ----- pixels ---------------------------------------------------------------------------------------------
    def preprocess(self, frames: np.ndarray, timestamps, size: tuple[int, int] | None = None) -> VideoInputs:
        """Resize (to ``size``, or ``frame_size`` of the frames), pad to a multiple of the temporal patch (repeating
        the last frame), normalise and patchify.

        ``frames`` is uint8 (T, H, W, 3); ``timestamps`` (T,) seconds.
        """
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
            raise ValueError(f"frames must be a non-empty uint8 array (T, H, W, 3), got shape {frames.shape}")
        height, width = size or self.frame_size(frames.shape[1], frames.shape[2], len(frames))
        x = resize_frames(frames, height, width)  # (T, 3, h, w) float32 in [0, 255]
        pad = -x.shape[0] % self.temporal_patch
        if pad:
            x = torch.cat([x, x[-1:].expand(pad, -1, -1, -1)])
        x = (x / 255.0 - self.mean) / self.std
        ps, tp, m = self.patch_size, self.temporal_patch, self.merge
        t, c = x.shape[0] // tp, x.shape[1]
        gh, gw = height // ps, width // ps
        x = x.reshape(t, tp, c, gh // m, m, ps, gw // m, m, ps).permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
        pixel_values = x.reshape(t * gh * gw, c * tp * ps * ps)
        times = torch.as_tensor(np.asarray(timestamps, dtype=np.float64))
        return VideoInputs(pixel_values, (t, gh, gw), times[::tp].clone(), _seconds_per_step(times, tp))

    # ----- vision encoder ------------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_video(self, frames: np.ndarray, timestamps, max_window_patches: int = 16384,
                     size: tuple[int, int] | None = None) -> tuple[torch.Tensor, VideoInputs]:
        """(N, D) visual tokens of uint8 frames (T, H, W, 3), preprocessing and encoding a window of temporal steps
        at a time, so the float pixels never exist for the whole video (at 1 fps an hour of 560 x 1008 frames is
        24 GiB of float32). Returns the tokens and the video's grid, step times and seconds per step
        (``pixel_values`` is None). Equal to ``encode(preprocess(frames, timestamps))``.
        """
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
            raise ValueError(f"frames must be a non-empty uint8 array (T, H, W, 3), got shape {frames.shape}")
        height, width = size or self.frame_size(frames.shape[1], frames.shape[2], len(frames))
        tp = self.temporal_patch
        gh, gw = height // self.patch_size, width // self.patch_size
        per_window = max(1, max_window_patches // (gh * gw)) * tp  # frames, whole temporal steps
        out = [self.encode_inputs(self.preprocess(frames[a:a + per_window], timestamps[a:a + per_window],
                                                  (height, width)), max_window_patches)
               for a in range(0, len(frames), per_window)]
        times = torch.as_tensor(np.asarray(timestamps, dtype=np.float64))
        grid = (-(-len(frames) // tp), gh, gw)
        return torch.cat(out), VideoInputs(None, grid, times[::tp].clone(), _seconds_per_step(times, tp))

    @torch.inference_mode()
    def encode_inputs(self, video: VideoInputs, max_window_patches: int = 16384) -> torch.Tensor:
        """(N, D) LLM-space visual tokens, encoding a few temporal steps at a time.

        Exact: the Qwen2-VL / Qwen2.5-VL ViT attends only within a temporal step (``cu_seqlens`` per step).
        """
        t, gh, gw = video.grid_thw
        patches_per_step = gh * gw
        steps = max(1, max_window_patches // patches_per_step)
        visual = self.model.model.visual
        out = []
        for start in range(0, t, steps):
            n = min(steps, t - start)
            pv = video.pixel_values[start * patches_per_step:(start + n) * patches_per_step]
            grid = torch.tensor([[n, gh, gw]], device=self.device)
            out.append(self.window_tokens(visual(pv.to(self.device, visual.dtype), grid_thw=grid)))
        return torch.cat(out)

    def window_tokens(self, output) -> torch.Tensor:
        """The (n, D) tokens of one window's vision-tower output."""
        return output.pooler_output

    # ----- positions -----------------------------------------------------------------------------------------
    def time_interval(self, seconds_per_step: float):
        """Temporal position step per grid step: 1 (Qwen2-VL) or tokens_per_second * seconds (Qwen2.5-VL)."""
        if self.tokens_per_second is None:
            return 1
        # float32 0-d tensor, as the processor's second_per_grid_ts, so rounding matches transformers exactly
        return self.tokens_per_second * torch.tensor(seconds_per_step, dtype=torch.float32)

    def visual_positions(self, start: int, grid_thw: tuple[int, int, int], seconds_per_step: float) -> torch.Tensor:
        """(3, T * H/m * W/m) M-RoPE ids of a video block whose first token follows text position ``start - 1``."""
        return self.model.model.get_vision_position_ids(
            start, torch.tensor(grid_thw), 1, self.merge, self.time_interval(seconds_per_step))

    def merged_grid(self, grid_thw: tuple[int, int, int]) -> tuple[int, int, int]:
        t, gh, gw = grid_thw
        return t, gh // self.merge, gw // self.merge

    def encode(self, frames: np.ndarray, timestamps, *, start: int, first_step: int = 0,
               seconds_per_step: float | None = None, after: int | None = None,
               size: tuple[int, int] | None = None) -> EncodedVision:
        embeds, inputs = self.encode_video(frames, timestamps, size=size)
        step_seconds = inputs.seconds_per_step if seconds_per_step is None else seconds_per_step
        t, h, w = self.merged_grid(inputs.grid_thw)
        steps, gh, gw = inputs.grid_thw
        thw = torch.stack(torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij"), -1)
        thw = thw.reshape(-1, 3)
        # positions of the whole video so far, then the columns of these steps: later steps continue the time axis
        positions = self.visual_positions(start, (first_step + steps, gh, gw), step_seconds)[:, first_step * h * w:]
        tokens = VisualTokens(embeds=embeds, thw=thw + torch.tensor([first_step, 0, 0]), positions=positions,
                              time=inputs.step_times[thw[:, 0]], merged=torch.ones(len(thw), dtype=torch.long),
                              grid_thw=(t, h, w), num_original=len(thw))
        return EncodedVision(tokens, steps, step_seconds, int(positions.max()) + 1)

    def generate_inputs(self, frames: np.ndarray, timestamps, question: str, system: str | None = None) -> dict:
        prefix, tail_template = self.prompt_parts(system)
        inputs = self.preprocess(frames, timestamps)
        t, h, w = self.merged_grid(inputs.grid_thw)
        ids = torch.tensor([prefix + self.video_ids(inputs, timestamps) + self.tail_ids(tail_template, question)])
        kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values_videos=inputs.pixel_values,
                      video_grid_thw=torch.tensor([inputs.grid_thw]),
                      mm_token_type_ids=(ids == self.video_token_id).int() * 2)
        if self.tokens_per_second is not None:  # Qwen2.5-VL
            kwargs["second_per_grid_ts"] = torch.tensor([inputs.seconds_per_step])
        return kwargs

    def video_ids(self, inputs: VideoInputs, timestamps) -> list[int]:
        """The video's token ids in transformers' layout: one video pad per visual token."""
        t, h, w = self.merged_grid(inputs.grid_thw)
        return [self.video_token_id] * (t * h * w)

    def video_block(self, tokens: VisualTokens, start: int, end: int) -> VideoBlock:
        """The visual tokens as they are: Qwen2-VL writes nothing between frames."""
        n = len(tokens)
        return VideoBlock(tokens.embeds, tokens.positions, torch.ones(n, dtype=torch.bool), torch.arange(n),
                          end if tokens.end_position is None else tokens.end_position)



def _seconds_per_step(times: torch.Tensor, temporal_patch: int) -> float:
    """Seconds per temporal step from the frame spacing (1 s per frame when there is a single frame)."""
    if times.numel() < 2:
        return float(temporal_patch)
    spacing = float(times[-1] - times[0]) / (times.numel() - 1)
    return temporal_patch * (spacing if spacing > 0 else 1.0)
