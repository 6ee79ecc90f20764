"""QTSplus: a learned, query-aware token selector that predicts its own budget, then re-encodes what it kept.

Modules (`QTSPlus`), between the vision encoder and the LLM, all in the LLM's width D:

- **scoring** cross-attention block(s): the question's input embeddings (the LLM's embedding table, the question
  text alone, no template) attend to the video tokens with the LLM's head layout (GQA), no RoPE; pre-RMSNorm on each
  stream, q/k/v with bias, o without, a residual on the query path, then ``q += FFN(RMSNorm(q))`` with FFN =
  ``Linear(D, 4D) -> GELU -> Linear(4D, D)``; stacked blocks update the query, keys/values are always the video.
- **relevance** ``r`` (M,): the last scoring block's attention probabilities, max over heads and question tokens.
- **budget head**: ``p = r / sum(r)``, entropy ``H``; ``[mean question embedding, log M, max r, H]`` ->
  ``Linear(D + 3, 256) -> GELU -> Linear(256, 1)`` -> ``rho = rho_min + (rho_max - rho_min) sigmoid(.)``.
- **selection**: at inference the top ``n = min(max(ceil(rho M), 1), n_max)`` by ``r``, in their original order;
  in training (`soft_select`) a threshold ``t`` with ``sum_i sigmoid((r_i - t) / tau) = rho M`` (10 Newton steps from
  the median, differentiable in rho), a hard Gumbel gate over ``[r_i - t, 0]`` with straight-through gradients,
  at least the top token kept. The released gate keeps ~40 % in training whatever rho is (unit Gumbel noise under
  a temperature), the default; a gate that keeps ``rho M`` (``gate="expected"``) trains the selector at inference's
  count when ``tau`` is on the relevances' scale (`soft_select`: measured both ways). As in the released code,
  training does not cap at ``n_max`` while inference does: with the recipe's ``rho_max = 0.5`` the cap only binds
  above ``2 n_max`` video tokens (a test pins where).
- **re-encoder** block(s): the same block as bidirectional self-attention over the kept tokens, no positions.

Positions (`QTSPlusSelector.positions`): ``"kept"`` (default) gives each kept token its own position from the full
layout (longvid's invariant: time stays where it was); ``"faithful"`` gives the kept tokens consecutive 1-D
positions on every row, as the released code (it calls the LLM with ``position_ids=None``), and the text follows at
the next one. The paper speaks of absolute time, which the released code never feeds; ``"kept"`` is our reading.

Deviations: the question is the string the caller asked (for a multiple-choice benchmark, with its options), not
the bare stem QTSplus's dataset separates; the LLM-layer initialisation (`QTSPlus.init_from_llm`) is a choice of
the training command (``--init-from-llm``), off by default, as it is in every fresh run of the released code (it
only runs when resuming).

Based on: QTSplus, https://arxiv.org/abs/2511.11910 (`../shared/research/seed-algorithms.md` section 4).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from longvid.errors import setting
from longvid.methods.base import TokenReducer
from longvid.methods.learned import ASSETS, base_description, check_base, load_setting, settle
from longvid.tokens import VisualTokens

CONFIG_NAME, WEIGHTS_NAME = "qtsplus_config.json", "qtsplus.safetensors"
BUNDLED_MODULES = (ASSETS / "qtsplus-longvid-tiny", ASSETS / "qtsplus-longvid-tiny-v1")  # for the bundled models


class RMSNorm(torch.nn.Module):
    """RMSNorm with float32 statistics (eps 1e-6), as the released block."""

    def __init__(self, width: int, eps: float = 1e-6):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


class Block(torch.nn.Module):
    """Attention of ``x`` onto ``kv`` (no positions, no mask), with residual, then a pre-norm GELU FFN."""

    def __init__(self, width: int, heads: int, kv_heads: int, head_dim: int):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.norm_q, self.norm_kv, self.norm_ffn = RMSNorm(width), RMSNorm(width), RMSNorm(width)
        self.q_proj = torch.nn.Linear(width, heads * head_dim)
        self.k_proj = torch.nn.Linear(width, kv_heads * head_dim)
        self.v_proj = torch.nn.Linear(width, kv_heads * head_dim)
        self.o_proj = torch.nn.Linear(heads * head_dim, width, bias=False)
        self.ffn = torch.nn.Sequential(torch.nn.Linear(width, 4 * width), torch.nn.GELU(),
                                       torch.nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (L, D), ``kv`` (M, D) -> (updated x (L, D), attention probabilities (H, L, M))."""
        h, g, d = self.heads, self.kv_heads, self.head_dim
        q = self.q_proj(self.norm_q(x)).view(-1, h, d).transpose(0, 1)  # (H, L, d)
        kvn = self.norm_kv(kv)
        k = self.k_proj(kvn).view(-1, g, d).transpose(0, 1).repeat_interleave(h // g, dim=0)  # (H, M, d)
        v = self.v_proj(kvn).view(-1, g, d).transpose(0, 1).repeat_interleave(h // g, dim=0)
        probs = torch.softmax((q @ k.transpose(1, 2)).float() / math.sqrt(d), dim=-1)
        out = (probs.to(v.dtype) @ v).transpose(0, 1).reshape(-1, h * d)
        x = x + self.o_proj(out)
        return x + self.ffn(self.norm_ffn(x)), probs


class QTSPlus(torch.nn.Module):
    """Scoring block(s), budget head and re-encoder block(s) for one base model (``base``: `base_description`)."""

    def __init__(self, base: dict, scoring_layers: int = 1, reencode_layers: int = 2, rho_min: float = 0.05,
                 rho_max: float = 0.5, budget_hidden: int = 256):
        super().__init__()
        self.base = dict(base)
        self.config = dict(scoring_layers=scoring_layers, reencode_layers=reencode_layers, rho_min=rho_min,
                           rho_max=rho_max, budget_hidden=budget_hidden)
        width, heads, kv_heads, head_dim = (base["hidden_size"], base["num_attention_heads"],
                                            base["num_key_value_heads"], base["head_dim"])
        self.scoring = torch.nn.ModuleList(Block(width, heads, kv_heads, head_dim) for _ in range(scoring_layers))
        self.reencode = torch.nn.ModuleList(Block(width, heads, kv_heads, head_dim) for _ in range(reencode_layers))
        self.budget = torch.nn.Sequential(torch.nn.Linear(width + 3, budget_hidden), torch.nn.GELU(),
                                          torch.nn.Linear(budget_hidden, 1))

    @classmethod
    def for_model(cls, model, seed: int = 0, **config) -> QTSPlus:
        """Fresh modules for a model adapter, seeded."""
        torch.manual_seed(seed)
        return cls(base_description(model), **config)

    def relevance(self, video: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        """(M,) float32 relevance of each video token (M, D) to the question's embeddings (L, D)."""
        q = question
        for block in self.scoring:
            q, probs = block(q, video)
        return probs.amax(dim=(0, 1))

    def retention(self, relevance: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        """The predicted retention rho (scalar tensor) in ``[rho_min, rho_max]``."""
        p = relevance / relevance.sum().clamp_min(1e-12)
        entropy = -(p * p.clamp_min(1e-12).log()).sum()
        m = torch.tensor(float(len(relevance)), device=relevance.device)
        features = torch.cat([question.float().mean(0), torch.stack([m.log(), relevance.max(), entropy])])
        head = self.budget[0]
        logit = self.budget(features.to(head.weight.dtype)).float().squeeze(-1)
        lo, hi = self.config["rho_min"], self.config["rho_max"]
        return lo + (hi - lo) * torch.sigmoid(logit)

    def reencoded(self, kept: torch.Tensor) -> torch.Tensor:
        """The kept tokens (n, D) after the bidirectional re-encoder blocks."""
        for block in self.reencode:
            kept, _ = block(kept, kept)
        return kept

    @torch.no_grad()
    def init_from_llm(self, lm) -> None:
        """Copy attention weights and norms from the LLM (a `LanguageModel`): scoring blocks from its last layers,
        re-encoder blocks from its first ones (the FFNs differ in shape and stay as initialised)."""
        layers = list(lm.layers)
        pairs = list(zip(self.scoring, layers[-len(self.scoring):])) + list(zip(self.reencode, layers))
        for block, layer in pairs:
            attn = layer.self_attn
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                src, dst = getattr(attn, name), getattr(block, name)
                dst.weight.copy_(src.weight)
                if dst.bias is not None and src.bias is not None:
                    dst.bias.copy_(src.bias)
            for norm in (block.norm_q, block.norm_kv):
                norm.weight.copy_(layer.input_layernorm.weight)
            block.norm_ffn.weight.copy_(layer.post_attention_layernorm.weight)

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, folder / WEIGHTS_NAME)
        (folder / CONFIG_NAME).write_text(json.dumps(dict(base=self.base, **self.config), indent=1) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> QTSPlus:
        from safetensors.torch import load_file

        folder = Path(folder)
        try:
            config = json.loads((folder / CONFIG_NAME).read_text())
            modules = cls(config.pop("base"), **config)
            modules.load_state_dict(load_file(folder / WEIGHTS_NAME))
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
            raise ValueError(f"{setting('modules', str(folder))} does not hold QTSplus modules ({CONFIG_NAME} and "
                             f"{WEIGHTS_NAME}): {str(err).splitlines()[0]}; train them with `longvid train "
                             "qtsplus`") from None
        return modules.eval()

    def check_base(self, model) -> None:
        check_base(self.base, model, "QTSplus modules", "modules", "qtsplus")


def count_for(rho: float, m: int, n_max: int | None) -> int:
    """Inference's kept count: ``min(max(ceil(rho M), 1), n_max)``."""
    n = max(math.ceil(rho * m - 1e-9), 1)
    return min(n, m) if n_max is None else min(n, n_max, m)


def newton_threshold(relevance: torch.Tensor, target: torch.Tensor, tau: float, steps: int = 10) -> torch.Tensor:
    """``t`` with ``sum_i sigmoid((r_i - t) / tau) = target``: Newton from the median, differentiable in ``target``."""
    t = relevance.median().detach()
    for _ in range(steps):
        s = torch.sigmoid((relevance - t) / tau)
        f = s.sum() - target
        slope = -(s * (1 - s)).sum() / tau
        t = t - f / torch.where(slope.abs() < 1e-12, torch.full_like(slope, -1e-12), slope)
    return t


def soft_select(relevance: torch.Tensor, rho: torch.Tensor, tau: float, generator: torch.Generator | None = None,
                gate: str = "faithful") -> torch.Tensor:
    """Training's gate (M,) in {0, 1} with straight-through gradients to ``relevance`` and ``rho``: a hard Gumbel
    choice over ``[r_i - t, 0]`` at temperature ``tau``, ``t`` from `newton_threshold` at ``rho M`` expected kept; the
    most relevant token always kept.

    ``gate="faithful"`` (default) adds unit Gumbel noise, as ``gumbel_softmax(logits, tau, hard=True)`` in the
    released code: a temperature does not move an argmax, so token i is kept with probability ``sigmoid(r_i - t)``,
    not the ``sigmoid((r_i - t) / tau)`` the threshold was solved for; with relevances in [0, 1] that keeps ~40 % of
    the tokens whatever rho is (42 % at rho 0.05 on longvid-tiny). ``"expected"`` scales the noise by ``tau``, so the
    count kept in training is ``rho M`` in expectation, as at inference. From fresh modules at ``tau`` 0.1 it trains
    worse: on longvid-tiny v1, 1500 steps, held-out 73 % (faithful) vs 29-31 % (expected) at the same 5.8 % inference
    retention; the released behaviour stays the default. But the expected gate's keep probability
    ``sigmoid((r_i - t) / tau)`` only follows the ranking when ``tau`` is on the scale of the relevances' spread
    (~1e-3 here: softmax probabilities over 750-3,750 tokens); at 0.1 it keeps a near-random ``rho M``. At ``tau``
    0.001 it trains the selector at the count inference keeps: from fresh modules (longvid-tiny 2, 800 steps: 85.4 %
    held-out at 5.1 % vs 52.1 % with the released gate at 0.1), or as a second phase from modules trained with the
    released gate (``longvid train qtsplus --init DIR``: the bundled modules; results/qtsplus_tiny2.md).
    """
    if gate not in ("expected", "faithful"):
        raise ValueError(f"gate={gate!r} is invalid: pass expected or faithful")
    t = newton_threshold(relevance, rho * len(relevance), tau)
    logits = torch.stack([relevance - t, torch.zeros_like(relevance)], dim=-1)
    u = torch.rand(logits.shape, generator=generator, device=logits.device).clamp(1e-10, 1 - 1e-10)
    noise = -torch.log(-torch.log(u)) * (tau if gate == "expected" else 1.0)
    soft = torch.softmax((logits + noise) / tau, dim=-1)[:, 0]
    hard = (soft > 0.5).float()
    hard[relevance.argmax()] = 1.0
    return hard + (soft - soft.detach())  # exactly 0 or 1 forward (x - x == 0), soft's gradient backward


@dataclass
class QTSPlusSelector(TokenReducer):
    """The inference reducer: keeps the top ``n`` tokens by relevance, re-encoded. ``rho`` forces the retention
    (None: predicted); ``reencode=False`` and ``selection="uniform"`` are the paper's ablations (no re-encoder; evenly
    spaced tokens at the same count)."""

    modules: QTSPlus | str | None = field(default=None, repr=False)
    positions: str = "kept"
    n_max: int | None = 512
    rho: float | None = None
    reencode: bool = True
    selection: str = "learned"

    query_aware = True

    def __post_init__(self):
        if self.positions not in ("kept", "faithful"):
            raise ValueError(f"{setting('positions', self.positions)} is invalid: pass kept (each kept token keeps its "
                             "position, the default) or faithful (consecutive 1-D positions, the released code)")
        if self.selection not in ("learned", "uniform"):
            raise ValueError(f"{setting('selection', self.selection)} is invalid: pass learned or uniform (the "
                             "ablation: evenly spaced tokens, same count)")
        if self.rho is not None and not 0 < float(self.rho) <= 1:
            raise ValueError(f"{setting('rho', self.rho)} is invalid: a retention in (0, 1], or leave it unset to use "
                             "the predicted one")
        if self.n_max is not None and (isinstance(self.n_max, bool) or not isinstance(self.n_max, int)
                                       or self.n_max < 1):
            raise ValueError(f"{setting('n_max', self.n_max)} is invalid: a positive token count (512: the recipe)")
        self.modules, self._bundled = load_setting(self.modules, BUNDLED_MODULES, QTSPlus.load)

    def check_model(self, model) -> None:
        if self.modules is None:
            raise ValueError(f"QTSplus needs trained modules: pass {setting('modules', 'DIR')}")
        self.modules = settle(self.modules, self._bundled, model, "QTSplus modules", "modules", "qtsplus")
        if self.positions == "faithful" and model.time_row is None:
            raise ValueError(f"{setting('positions', 'faithful')} renumbers the video's positions, but this model "
                             "writes time as text between frames; pass positions=kept")

    @torch.no_grad()
    def reduce(self, tokens: VisualTokens, query_embeds: torch.Tensor | None = None) -> VisualTokens:
        m = self.modules
        head = m.budget[0]
        video = tokens.embeds.to(head.weight.device, head.weight.dtype)
        question = query_embeds.to(head.weight.device, head.weight.dtype)
        relevance = m.relevance(video, question)
        rho = float(m.retention(relevance, question)) if self.rho is None else float(self.rho)
        n = count_for(rho, len(tokens), self.n_max)
        if self.selection == "uniform":
            index = torch.linspace(0, len(tokens) - 1, n).round().long().unique()
        else:
            index = relevance.topk(n).indices.sort().values
        kept = tokens.select(index.cpu())
        embeds = m.reencoded(video[index]) if self.reencode else video[index]
        kept = kept.replace(embeds=embeds.to(tokens.embeds.device, tokens.embeds.dtype))
        if self.positions == "faithful":
            start = int(tokens.positions.min())
            line = torch.arange(start, start + len(kept), device=kept.positions.device)
            kept = kept.replace(positions=line.expand(kept.positions.shape[0], -1).clone(),
                                end_position=start + len(kept))
        return kept
