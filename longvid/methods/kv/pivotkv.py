"""PivotKV (ReTaKe): compress each video chunk's own KV entries during chunked prefill, squeezing its time axis.

After a video chunk's forward (its own attention used the full chunk), each layer scores the chunk's tokens by the
attention they receive inside the chunk: un-rotated q and k recomputed from the layer's input, bidirectional
softmax over the chunk's keys, summed over queries, averaged over heads. Key patches ("pivots", from DPSelect) are
favoured. Each layer keeps ``round(ratio * n)`` of the chunk (the same entries for all its KV heads; different
layers may keep different tokens), ``ratio = max_input_length / prompt length`` (1 when the prompt fits).

Positions (``reforge``): the kept keys are re-rotated to a squeezed temporal id
``t0 + floor((t - t0) * keep / n)`` (h and w unchanged), where ``t0`` is the chunk's first temporal id, and every
later token (next chunks, question, answer) moves back by the time removed, so the timeline stays contiguous.
``t0`` is the chunk's (not, as in ReTaKe's code, each layer's smallest kept id) so all layers agree on the shift.

``faithful`` picks between ReTaKe's code and its paper where they differ:
- pivots: code scores them 1.0 (the mean score, a weak preference); the paper keeps them (default);
- text after a squeezed chunk: code shifts only the temporal row; the default shifts all three rows, so text
  tokens keep t = h = w.

``yarn_factor`` reproduces the recipe's YaRN RoPE scaling of the LLM (factor 4, beta_fast 32, beta_slow 1).

Based on: https://arxiv.org/abs/2412.20504 (ReTaKe), section 3; defaults: chunk = 32 frames (16 temporal steps),
max_input_length = 32000.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

import torch

from longvid.methods.attention import attention_received, project_qk, rerotate
from longvid.methods.base import KVPress, PrefillChunk, num_to_keep


@dataclass
class PivotKV(KVPress):
    max_input_length: int = 32000
    faithful: bool = False
    reforge: bool = True
    yarn_factor: float | None = None
    chunk_steps: int = 16
    observes = True
    _scores: dict = field(default_factory=dict, repr=False)
    last_kept: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        super().__post_init__()
        if self.max_input_length < 1:
            raise ValueError(f"max_input_length must be >= 1 token, got {self.max_input_length}")
        self.text_shift_rows = (0,) if self.faithful else (0, 1, 2)

    def ratio(self, total_tokens: int) -> float:
        """Share of each chunk to keep: ``keep`` if given, else ``max_input_length`` (or ``budget``) / prompt."""
        if self.keep is not None:
            return self.keep
        limit = self.budget if self.budget is not None else self.max_input_length
        return min(1.0, limit / max(1, total_tokens))

    def will_compress(self, total_tokens: int) -> bool:
        return self.ratio(total_tokens) < 1  # at ratio 1 the scores would be computed for nothing

    def observe(self, layer_idx, attn, hidden, position_embeddings, n_visual) -> None:
        if n_visual == 0:
            return
        q, k = project_qk(attn, hidden[:, -n_visual:])  # un-rotated: computed before RoPE
        self._scores[layer_idx] = attention_received(q, k, attn.scaling, reduce="sum")[0].mean(0)

    def compress(self, cache, chunk: PrefillChunk) -> int:
        n = chunk.n_new_visual
        ratio = self.ratio(chunk.total_tokens)
        scores, self._scores = self._scores, {}
        if ratio >= 1 or n == 0:
            return 0
        n_keep = num_to_keep(n, ratio, None)
        old = chunk.positions[:, -n:]
        t0, t_last = int(old[0].min()), int(old[0].max())
        for layer_idx, layer in enumerate(cache.layers):
            kept = self._kept(scores[layer_idx], chunk.pivot, n_keep)
            self.last_kept[layer_idx] = kept
            keys = layer.keys[:, :, -n:][:, :, kept]
            if self.reforge:
                before = old[:, kept]
                after = self.squeeze(before, t0, n_keep, n)
                keys = rerotate(keys, chunk.rotary(before.unsqueeze(1)), chunk.rotary(after.unsqueeze(1)))
            layer.keys = torch.cat([layer.keys[:, :, :-n], keys], dim=2)
            layer.values = torch.cat([layer.values[:, :, :-n], layer.values[:, :, -n:][:, :, kept]], dim=2)
        if not self.reforge:
            return 0
        return (t0 + (t_last - t0) * n_keep // n) - t_last

    def _kept(self, scores: torch.Tensor, pivot: torch.Tensor | None, n_keep: int) -> torch.Tensor:
        """Sorted indices of the ``n_keep`` chunk tokens to keep, pivots favoured as ``faithful`` says."""
        if pivot is not None and pivot.any():
            pivot = pivot.to(scores.device)
            if self.faithful:  # ReTaKe's code: pivots get the mean score of a softmax column sum, 1.0
                scores = scores.masked_fill(pivot, 1.0)
            else:  # the paper: pivots are kept (ordered among themselves by their score)
                scores = scores + pivot * (scores.max() + 1)
        return torch.topk(scores, n_keep).indices.sort().values

    @staticmethod
    def squeeze(positions: torch.Tensor, t0: int, n_keep: int, n: int) -> torch.Tensor:
        """(3, K) ids with the temporal row mapped to ``t0 + floor((t - t0) * n_keep / n)``."""
        out = positions.clone()
        out[0] = t0 + (positions[0] - t0) * n_keep // n
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
