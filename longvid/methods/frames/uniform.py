"""Uniform frame subsampling: the "fewer frames" baseline at the same visual-token budget.

Keeps ``round(keep * T)`` temporal steps (or ``budget // tokens_per_step``), evenly spread over the sampled frames,
so the LLM sees about as many visual tokens as a token-level method at the same keep ratio. Granularity is one
temporal step (``tokens_per_step`` tokens), so realised retention is within half a step of the request.

Based on: the trivial baselines of UniPruneBench / VTC-Bench (see shared/research/anchors.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longvid.methods.base import Budget, FrameSelector, TokenPlan, num_to_keep


@dataclass
class UniformFrames(FrameSelector, Budget):
    def select(self, timestamps: torch.Tensor, plan: TokenPlan, query: str | None = None) -> torch.Tensor:
        n_frames, tp = plan.num_frames, plan.temporal_patch_size
        budget_steps = None if self.budget is None else max(1, self.budget // plan.tokens_per_step)
        steps = num_to_keep(plan.num_steps, self.keep, budget_steps)
        n = min(n_frames, steps * tp)
        if n >= n_frames:
            return torch.arange(n_frames)
        # evenly spaced frames, the same formula the sampler uses, as if the video were sampled at a lower fps
        return torch.arange(n) * n_frames // n
