"""PivotKV (ReTaKe): compress each video chunk's own KV entries during chunked prefill, squeezing its time axis.

After a video chunk's forward (its own attention used the full chunk), each layer scores the chunk's tokens by the
attention they receive inside the chunk: softmax over the chunk's keys without a causal mask (bidirectional), summed
over queries, averaged over heads. The queries and keys are the ones the model's attention projected in that forward,
captured from its ``q_proj`` / ``k_proj`` (not recomputed), un-rotated (pre-RoPE) when ``reforge`` is on and rotated
with the chunk's positions when it is off, as ReTaKe's code does. Key patches ("pivots", from DPSelect) are favoured.
Each layer keeps ``max(1, int(ratio * n))`` of the chunk's n tokens (the reference count; the same entries for all its
KV heads; different layers may keep different tokens; equal scores keep the earlier token), with ``ratio =
max_input_length / prompt length`` (1 when the prompt fits: nothing is scored or evicted).

Chunks: ReTaKe's formula, ``min(chunked_prefill_frames, T) * tokens_per_step // temporal_patch`` tokens for a video of
T temporal steps, i.e. ``min(32, T) / 2`` steps: 4, 8, 12 steps for 8-, 16-, 24-step videos and 16 from 32 steps on
(the reference compares a frame count with grid steps; we keep its numbers). ``chunk_steps`` fixes a chunk length.

Positions (``reforge``): the kept keys are re-rotated to a squeezed temporal id
``t0 + floor((t - t0) * keep / n)`` (h and w unchanged), where ``t0`` is the chunk's first temporal id, and every
later token (next chunks, question, answer) moves back by the time removed, so the timeline stays contiguous.
``t0`` is the chunk's (not, as in ReTaKe's code, each layer's smallest kept id) so all layers agree on the shift.

``faithful`` picks between ReTaKe's code and its paper where they differ:
- pivots: code scores them 1.0 (the mean score, a weak preference); the paper keeps them (default);
- text after a squeezed chunk: code shifts only the temporal row; the default shifts all three rows, so text
  tokens keep t = h = w.

The time row is the model's (``PrefillChunk.time_row``): M-RoPE's temporal row, or the only row of 1-D RoPE (as
ReTaKe's LLaVA-Video code squeezes 1-D positions). A model that writes time as text (Qwen3-VL) has none, so
``reforge`` refuses it; ``reforge=false`` (keep positions) runs everywhere.

``yarn_factor`` reproduces the recipe's YaRN RoPE scaling of the LLM (factor 4, beta_fast 32, beta_slow 1); the
``retake`` preset sets it, as every released ReTaKe config does.

Precision: scores are computed in float32 (the reference uses the model's dtype, bf16 in practice, where near-equal
scores tie and kept sets differ while both are "right"); float32 is the more precise of the two.

Based on: https://arxiv.org/abs/2412.20504 (ReTaKe), section 3; defaults: chunked_prefill_frames = 32,
max_input_length = 32000.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch

from longvid.errors import setting
from longvid.methods.attention import attention_received
from longvid.methods.base import KVPress, PrefillChunk, TimeShift, num_to_keep_floor, top_k_indices


@dataclass
class PivotKV(KVPress):
    max_input_length: int = 32000
    faithful: bool = False
    reforge: bool = True
    yarn_factor: float | None = None
    chunked_prefill_frames: int = 32
    chunk_steps: int | None = None
    observes = True

    def __post_init__(self):
        super().__post_init__()
        for name in ("max_input_length", "chunked_prefill_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{setting(name, getattr(self, name))} is invalid: it must be >= 1")
        if self.chunk_steps is not None and self.chunk_steps < 1:
            raise ValueError(f"{setting('chunk_steps', self.chunk_steps)} is invalid: it must be >= 1 temporal step")
        if self.yarn_factor is not None and not self.yarn_factor >= 1:
            raise ValueError(f"{setting('yarn_factor', self.yarn_factor)} is invalid: YaRN scales RoPE by a factor "
                             ">= 1 (the recipe's 4)")

    def moves_time(self) -> bool:
        return self.reforge

    def ratio(self, total_tokens: int) -> float:
        """Share of each chunk to keep: ``keep`` if given, else ``max_input_length`` (or ``budget``) / prompt."""
        if self.keep is not None:
            return self.keep
        limit = self.budget if self.budget is not None else self.max_input_length
        return min(1.0, limit / max(1, total_tokens))

    def will_compress(self, total_tokens: int) -> bool:
        return self.ratio(total_tokens) < 1  # at ratio 1 the scores would be computed for nothing

    def chunk_tokens(self, num_steps: int, tokens_per_step: int, temporal_patch: int) -> int:
        if self.chunk_steps is not None:
            return self.chunk_steps * tokens_per_step
        return max(1, min(self.chunked_prefill_frames, num_steps) * tokens_per_step // temporal_patch)

    def observe(self, layer_idx, q, k, rope, scaling) -> torch.Tensor:
        """(n_visual,) float32 attention each visual token of the chunk receives from the chunk, mean over heads."""
        if not self.reforge:  # the reference scores with the rotated q and k when it does not re-index positions
            q, k = rope(q), rope(k)
        return attention_received(q, k, scaling, reduce="sum")[0].mean(0)

    def compress(self, cache, chunk: PrefillChunk) -> TimeShift | None:
        n = chunk.n_new_visual
        ratio = self.ratio(chunk.total_tokens)
        if ratio >= 1 or n == 0:
            return None
        n_keep = num_to_keep_floor(n, ratio)
        old, row = chunk.positions, chunk.time_row
        if self.reforge:
            t0, t_last = int(old[row].min()), int(old[row].max())
        for layer_idx, layer in enumerate(cache.layers):
            kept = self._kept(chunk.observed[layer_idx], chunk.pivot, n_keep)
            chunk.kept[layer_idx] = kept
            keys = layer.keys[:, :, -n:][:, :, kept]
            if self.reforge:
                before = old[:, kept]
                keys = chunk.rerotate(keys, before, self.squeeze(before, t0, n_keep, n, row))
            layer.keys = torch.cat([layer.keys[:, :, :-n], keys], dim=2)
            layer.values = torch.cat([layer.values[:, :, :-n], layer.values[:, :, -n:][:, :, kept]], dim=2)
        if not self.reforge:
            return None
        return TimeShift((t0 + (t_last - t0) * n_keep // n) - t_last, (row,) if self.faithful else None)

    def _kept(self, scores: torch.Tensor, pivot: torch.Tensor | None, n_keep: int) -> torch.Tensor:
        """Sorted indices of the ``n_keep`` chunk tokens to keep, pivots favoured as ``faithful`` says."""
        if pivot is not None and pivot.any():
            pivot = pivot.to(scores.device)
            if self.faithful:  # ReTaKe's code: pivots get the mean score of a softmax column sum, 1.0
                scores = scores.masked_fill(pivot, 1.0)
            else:  # the paper: pivots are kept (ordered among themselves by their score)
                scores = scores + pivot * (scores.max() + 1)
        return top_k_indices(scores, n_keep)

    @staticmethod
    def squeeze(positions: torch.Tensor, t0: int, n_keep: int, n: int, row: int = 0) -> torch.Tensor:
        """(R, K) ids with the time row mapped to ``t0 + floor((t - t0) * n_keep / n)`` (the other rows unchanged)."""
        out = positions.clone()
        out[row] = t0 + (positions[row] - t0) * n_keep // n
        return out

    def language_model(self, lm):
        """The language model as this press needs it: with YaRN RoPE when ``yarn_factor`` is set."""
        if not self.yarn_factor:
            return lm
        config = copy.deepcopy(lm.config)
        config.rope_parameters = dict(config.rope_parameters, rope_type="yarn", factor=self.yarn_factor,
                                      beta_fast=32.0, beta_slow=1.0)
        rotary = type(lm.rotary_emb)(config=config).to(lm.lm_head.weight.device)
        return replace(lm, rotary_emb=rotary)
