"""The model seam: what the engine and the methods use of a model family, declared once.

A family adapter (one file under ``models/``) owns everything model-specific: pixel preprocessing and the vision
encoder, the full-layout positions of the video (``position_rows`` rows: 3 for M-RoPE, 1 for plain RoPE), the prompt
around the video and the structural tokens a family writes inside the video block (timestamps, frame separators, a
newline embedding), and the attention internals methods score with (the layer's own norms, projections and rotary).
The engine and the methods only see this interface, ``VisualTokens`` and ``VideoBlock``; no module under
``engine/`` or ``methods/`` names a family or a transformers class.

Adding a family: subclass `ModelAdapter` in ``models/<family>.py``, add a line to ``models.ADAPTERS`` and a tiny
config to the tests (``docs/architecture.md``, "What a family provides").

    from longvid.models.base import ModelAdapter, VideoBlock
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from longvid.tokens import VisualTokens

QUESTION_MARKER = "\x00longvid-question\x00"  # stands in for the question when the chat template is rendered


@dataclass
class VideoBlock:
    """The video's part of the prompt, as the LLM reads it, built from the tokens every pre-LLM stage kept.

    Attributes
    ----------
    embeds : torch.Tensor
        (L, D) input embeddings: the visual tokens' and those of the structural tokens the family writes between
        them (Qwen3-VL's ``<t seconds><|vision_start|> ... <|vision_end|>`` per frame, LLaVA-OneVision's newline).
    positions : torch.LongTensor
        (R, L) position ids from the full (unreduced) layout.
    visual : torch.BoolTensor
        (L,) True at visual tokens (evictable by a KV press), False at structural ones (always kept).
    index : torch.LongTensor
        (L,) the row of the ``VisualTokens`` each visual entry is, -1 at structural entries.
    next_position : int
        First text position after the block (the full layout's, or a squeezed one when a reducer re-indexed time).
    residuals : torch.Tensor or None
        (K, n_visual, D) features added to the hidden states of the visual entries (in block order) after decoder
        layers 0..K-1 (Qwen3-VL's DeepStack); None for families without them.
    """

    embeds: torch.Tensor
    positions: torch.Tensor
    visual: torch.Tensor
    index: torch.Tensor
    next_position: int
    residuals: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.embeds.shape[0]


@dataclass
class EncodedVision:
    """The output of a family's vision encoder for some frames, laid out in the full prompt.

    ``tokens`` carry full-layout positions and any per-token extras (e.g. DeepStack features); ``steps`` temporal
    steps were encoded, each covering ``seconds_per_step``; ``next_position`` is the first text position after the
    unreduced block.
    """

    tokens: VisualTokens
    steps: int
    seconds_per_step: float
    next_position: int


class ModelAdapter(ABC):
    """A loaded model of one family, with everything the engine and the methods need from it.

    Attributes
    ----------
    model, tokenizer
        The transformers model and tokenizer.
    lm : longvid.engine.forward.LanguageModel
        The text half: the model's own embedding, decoder layers, norm, rotary and head, plus the family's attention
        internals (``attention``) and per-layer additions (``after_layer``, e.g. DeepStack).
    position_rows : int
        Rows of a position id: 3 (M-RoPE) or 1 (1-D RoPE).
    time_row : int or None
        The position row that carries a visual token's time, which a method that squeezes time (PivotKV, DPSelect)
        moves; None where time is written as text (Qwen3-VL), and such methods refuse the family.
    temporal_patch : int
        Frames per temporal step of the vision encoder (2 for Qwen-VL, 1 for frame-wise encoders).
    pixels
        The family's frame geometry, also built from config.json alone (``pixel_plan_from_checkpoint`` in its
        module): ``frame_size(height, width, num_frames)``, ``tokens_per_step(...)``, ``temporal_patch``.
    """

    families: ClassVar[tuple[str, ...]] = ()
    position_rows: int = 3
    time_row: int | None = 0
    temporal_patch: int = 1

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.lm_head.weight.dtype

    @property
    def num_layers(self) -> int:
        return len(self.lm.layers)

    @property
    def family(self) -> str:
        return self.model.config.model_type

    # ----- pixels and vision ------------------------------------------------------------------------------------
    def frame_size(self, height: int, width: int, num_frames: int | None = None) -> tuple[int, int]:
        """Size (H, W) the vision encoder takes frames of a (height, width) video at, when ``num_frames`` are sampled
        (a family with a whole-video pixel budget, Qwen3-VL, sizes frames by their count; others ignore it). It is
        applied to the source size once: a rule need not be idempotent (Qwen2-VL's is not)."""
        return self.pixels.frame_size(height, width, num_frames)

    def tokens_per_step(self, height: int, width: int, num_frames: int | None = None) -> int:
        """LLM tokens per temporal step for frames of that size (before any reduction)."""
        return self.pixels.tokens_per_step(height, width, num_frames)

    @abstractmethod
    def encode(self, frames: np.ndarray, timestamps, *, start: int, first_step: int = 0,
               seconds_per_step: float | None = None, after: int | None = None,
               size: tuple[int, int] | None = None) -> EncodedVision:
        """Visual tokens of uint8 frames (T, H, W, 3) at ``timestamps`` (T,) s, whose video block starts after text
        position ``start - 1``; ``first_step`` and ``seconds_per_step`` continue an earlier encoding (streaming),
        and ``after`` is then the first position after everything prefilled so far (a family whose layout does not
        follow from the step alone, e.g. 1-D positions with a newline per segment, places the segment there).
        Frames are resized to ``size`` (H, W) (None: ``frame_size`` of the frames, by their count).
        Bounded memory: frames are preprocessed and encoded a window of temporal steps at a time."""

    @abstractmethod
    def video_block(self, tokens: VisualTokens, start: int, end: int) -> VideoBlock:
        """The block the LLM reads for ``tokens`` (after every reducer), with the family's structural tokens; the
        unreduced block spanned positions ``start`` to ``end - 1`` (``tokens.end_position`` overrides ``end`` when a
        reducer squeezed time)."""

    def check_tokens(self, tokens: VisualTokens) -> None:
        """Raise a one-line ValueError if a reducer left ``tokens`` in a state this family cannot lay out."""

    # ----- prompt ----------------------------------------------------------------------------------------------
    def prompt_parts(self, system: str | None = None) -> tuple[list[int], str]:
        """Token ids of the chat before the video block, and the text template after it (with the question marker).

        The model's own chat template renders one user turn holding a video and the question; it is split at the
        video pad token (``video_token_id``) the template writes, which the family's ``video_block`` replaces.
        """
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION_MARKER}]}]
        if system is not None:
            messages.insert(0, {"role": "system", "content": system})
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        pad = self.tokenizer.convert_ids_to_tokens(self.video_token_id)
        head, sep, tail = text.partition(pad)
        if not sep or QUESTION_MARKER not in tail:
            raise ValueError(f"the chat template of this model did not place a {pad} before the question: {text!r}")
        return self.tokenizer(head, add_special_tokens=False)["input_ids"], tail

    def tail_ids(self, tail_template: str, question: str) -> list[int]:
        """Token ids after the video block for ``question``."""
        if not isinstance(question, str) or not question.strip():
            raise ValueError("the question is empty: ask something about the video")
        return self.tokenizer(tail_template.replace(QUESTION_MARKER, question), add_special_tokens=False)["input_ids"]

    @abstractmethod
    def generate_inputs(self, frames: np.ndarray, timestamps, question: str, system: str | None = None) -> dict:
        """The prompt longvid builds for ``full``, as keyword arguments of transformers' own ``model.generate``
        (``input_ids`` in the family's layout, pixel values from ``preprocess``): for comparing with plain
        transformers (tests, ``benchmarks/bench_engine.py``)."""

    def text_positions(self, start: int, n: int, device=None) -> torch.Tensor:
        """(R, n) position ids of n text tokens from ``start``: every row the same, as both layouts write text."""
        return (start + torch.arange(n, device=device)).expand(self.position_rows, -1).clone()

    def stop_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def decode_text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()
