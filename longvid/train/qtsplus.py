"""Training QTSplus's selector on a frozen model: ``longvid train qtsplus``.

Each step takes one (video, question, answer) example: the frozen vision encoder's tokens (the pipeline's own
`encode`, method ``full``), the question's input embeddings (`longvid.pipeline.question_embeds`), then the modules:
relevance, predicted retention rho, training's gate (`soft_select`: Newton threshold, hard Gumbel, straight-through),
the kept tokens re-encoded and placed in the video block at their positions (``--positions kept``, the default) or
at consecutive 1-D ones (``faithful``), then the frozen LLM through the engine's forward, teacher-forced on the
answer. Loss (QTSplus's): ``CE(answer) + lambda_t (rho M)^2 / n_max^2 + lambda_m rho M / n_max
+ lambda_s (rho - mean rho)^2``, the mean over every rho this run has seen, kept in the checkpoint (the released
code keeps it in a process-global that restarts at zero). Only the modules train.

Defaults are the released example script's: AdamW lr 1e-6 (cosine, 1 % warm-up, weight decay 0), gradient norm
clipped at 1, batch 1 with 2 accumulated steps, lambda_t 0.1, lambda_m 0.17, lambda_s 0.05, tau 0.5, n_max 512,
rho in [0.05, 0.5], 1 scoring block, 2 re-encoder blocks. lr 1e-6 is for modules initialised from a 3B LLM's
layers over 8 epochs of 760k examples; fresh modules on a tiny model need ~1e-3 (the bundled modules' command says
so).

Two phases (not the released recipe; how the bundled modules for longvid-tiny 2 were made): ``--init DIR`` starts
from a finished run's modules, ``--fresh-budget`` re-draws their budget head, ``--budget-only`` trains it alone. A
second phase with ``--gate expected --tau 0.001`` trains the selector at the count inference keeps (the released gate
keeps ~40 % whatever rho; `longvid.methods.tokens.qtsplus.soft_select`): +6 points at equal retention on
longvid-tiny 2 (results/qtsplus_tiny2.md). The same gate trains fresh modules well in one phase there too. The
budget head does not learn a per-question budget from these losses: tokens the gate drops never reach the answer
loss, so only the cost terms move rho.

Data: the synthetic suite out of the box (training seeds; held-out examples use evaluation seeds) or a JSONL of
``{"video", "question", "answer"}`` lines, checked line by line before training (`longvid.train.citr.read_jsonl`).
Held-out metrics every ``--eval-every`` steps: the whole pipeline's greedy accuracy with the inference selector (top
``n``, capped at ``n_max``) and its mean realised retention. Seeded and resumable (``checkpoint.pt``).

    longvid train qtsplus --out modules/ --steps 2000 --lr 1e-3

Several processes: ``accelerate launch --num_processes N -m longvid train qtsplus ...`` (each takes its own
examples, gradients are averaged; `longvid.train.common.DataParallel`); the tests run the single-process path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from longvid.errors import check_positive, option
from longvid.train.common import PartsTrainer


@dataclass
class QTSRecipe:
    steps: int = 2000
    lr: float = 1e-6
    weight_decay: float = 0.0
    warmup: float = 0.01  # share of the steps
    accumulate: int = 2
    lambda_t: float = 0.1
    lambda_m: float = 0.17
    lambda_s: float = 0.05
    tau: float = 0.5
    n_max: int = 512
    rho_min: float = 0.05
    rho_max: float = 0.5
    scoring_layers: int = 1
    reencode_layers: int = 2
    init_from_llm: bool = False
    init: str | None = None  # a folder of trained modules to start from (a second phase)
    fresh_budget: bool = False  # re-initialise the budget head after --init
    budget_only: bool = False  # train the budget head alone
    positions: str = "kept"
    gate: str = "faithful"
    seed: int = 0
    lengths: tuple[float, float] = (30.0, 60.0)
    fps: float = 1.0
    held_out: int = 24
    eval_every: int = 250
    checkpoint_every: int = 50

    def __post_init__(self):
        for name in ("steps", "accumulate", "n_max", "scoring_layers", "held_out", "eval_every", "checkpoint_every"):
            check_positive(name, getattr(self, name), integer=True, allow_none=False)
        check_positive("reencode_layers", self.reencode_layers + 1, integer=True, allow_none=False)
        for name in ("lr", "tau", "fps"):
            check_positive(name, getattr(self, name), allow_none=False)
        for name in ("lambda_t", "lambda_m", "lambda_s", "weight_decay"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{option(name.replace('_', '-'), value)} is invalid: it must be a number >= 0")
        if not 0 < self.rho_min <= self.rho_max <= 1:
            raise ValueError(f"{option('rho', f'{self.rho_min:g},{self.rho_max:g}')} is invalid: pass MIN,MAX with "
                             "0 < MIN <= MAX <= 1, e.g. 0.05,0.5")
        if self.positions not in ("kept", "faithful"):
            raise ValueError(f"{option('positions', self.positions)} is invalid: pass kept or faithful")
        if self.gate not in ("expected", "faithful"):
            raise ValueError(f"{option('gate', self.gate)} is invalid: pass faithful (the released gate, ~40 % kept "
                             "whatever rho) or expected (the count kept in training is rho M on average)")
        if self.init is not None and self.init_from_llm:
            raise ValueError(f"{option('init', self.init)} and {option('init_from_llm')} both set the starting "
                             "weights: pass one of them")
        if self.fresh_budget and self.init is None:
            raise ValueError(f"{option('fresh_budget')} re-initialises the budget head of the modules "
                             f"{option('init')} loads: pass {option('init', 'DIR')} too (fresh modules start with a "
                             "fresh budget head)")
        if self.budget_only and self.init is None:
            raise ValueError(f"{option('budget_only')} trains the budget head of the modules {option('init')} loads: "
                             f"pass {option('init', 'DIR')} too (a fresh scorer frozen would teach it nothing)")
        lo, hi = self.lengths
        if not 12 <= lo <= hi <= 3600:
            raise ValueError(f"{option('lengths', f'{lo:g},{hi:g}')} is invalid: pass MIN,MAX seconds within "
                             "12-3600, e.g. 30,60")

    def lr_at(self, step: int) -> float:
        warm = max(1, round(self.warmup * self.steps))
        if step < warm:
            return self.lr * (step + 1) / warm
        return self.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, self.steps - warm)))


class QTSTrainer(PartsTrainer):
    """Seeded, resumable training of `QTSPlus` modules for ``lm`` (a `LongVid`)."""

    kind, card_name, parts_key = "QTSplus", "qtsplus_card.json", "modules"

    def __init__(self, lm, out: str | Path, recipe: QTSRecipe, data: str = "synth", log=print, progress=None):
        from longvid.methods.tokens.qtsplus import QTSPlus

        super().__init__(lm, out, recipe, data, log, progress)
        r = recipe
        self.modules = self.parts = QTSPlus.for_model(lm.adapter, seed=r.seed, scoring_layers=r.scoring_layers,
                                                      reencode_layers=r.reencode_layers, rho_min=r.rho_min,
                                                      rho_max=r.rho_max)
        if r.init_from_llm:
            self.modules.init_from_llm(lm.adapter.lm)
        if r.init is not None and not (self.out / "checkpoint.pt").exists():  # a resumed run takes the checkpoint's
            start = self.starting_modules(r.init).state_dict()
            if r.fresh_budget:  # re-drawn from the seed, without touching the global random state
                start = {k: v for k, v in start.items() if not k.startswith("budget.")}
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(r.seed)
                    for layer in self.modules.budget:
                        if hasattr(layer, "reset_parameters"):
                            layer.reset_parameters()
            self.modules.load_state_dict(start, strict=not r.fresh_budget)
        if r.budget_only:
            for name, p in self.modules.named_parameters():
                p.requires_grad_(name.startswith("budget."))
        self.modules.to(lm.adapter.device).train()
        for p in lm.adapter.model.parameters():
            p.requires_grad_(False)
        self.trained = [p for p in self.modules.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trained, lr=r.lr, weight_decay=r.weight_decay)
        self.rho_sum, self.rho_count = 0.0, 0

    def starting_modules(self, folder: str):
        """The trained modules ``--init`` names, checked against this base model and the recipe's block counts."""
        from longvid.methods.learned import base_mismatch
        from longvid.methods.tokens.qtsplus import QTSPlus

        try:
            start = QTSPlus.load(folder)
        except ValueError:
            raise ValueError(f"{option('init', folder)} does not hold QTSplus modules: pass the {option('out')} "
                             "folder of a finished `longvid train qtsplus` run") from None
        diff = base_mismatch(start.base, self.lm.adapter)
        if diff:
            raise ValueError(f"{option('init', folder)} holds modules trained for another model ({diff}): pass "
                             f"modules trained for this {option('model')}")
        ours = self.modules.config
        for name in ("scoring_layers", "reencode_layers"):
            if start.config[name] != ours[name]:
                raise ValueError(f"{option('init', folder)} has {name.replace('_', ' ')} {start.config[name]}, this "
                                 f"recipe {ours[name]}: pass {option(name, start.config[name])}")
        theirs_head = (start.config["rho_min"], start.config["rho_max"], start.config["budget_hidden"])
        if not self.recipe.fresh_budget and theirs_head != (ours["rho_min"], ours["rho_max"], ours["budget_hidden"]):
            raise ValueError(f"{option('init', folder)} has a budget head for rho {theirs_head[0]:g},{theirs_head[1]:g} "
                             f"(width {theirs_head[2]}), this recipe {ours['rho_min']:g},{ours['rho_max']:g} (width "
                             f"{ours['budget_hidden']}): pass {option('rho', f'{theirs_head[0]:g},{theirs_head[1]:g}')}, "
                             f"or {option('fresh_budget')} to re-draw the head")
        return start

    # ----- the differentiable path ---------------------------------------------------------------------------
    def example_loss(self, ex, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        from longvid.engine.cache import new_cache
        from longvid.engine.forward import forward
        from longvid.methods.registry import get_method
        from longvid.methods.tokens.qtsplus import soft_select
        from longvid.pipeline import question_embeds

        r, adapter, lm = self.recipe, self.lm.adapter, self.lm.adapter.lm
        enc = self.lm.encode(ex.frames, get_method("full"))
        tokens = enc.tokens
        video = tokens.embeds.clone()  # out of inference mode: a plain tensor autograd can save
        with torch.no_grad():
            question = question_embeds(adapter, ex.question).clone()
        m = len(video)
        relevance = self.modules.relevance(video, question)
        rho = self.modules.retention(relevance, question)
        gate = soft_select(relevance, rho, r.tau, generator, r.gate)
        kept = (gate > 0.5).nonzero().flatten()
        z = self.modules.reencoded((gate[:, None].to(video.dtype) * video)[kept])
        chosen = tokens.select(kept.cpu()).replace(embeds=z)
        start = len(enc.prefix_ids)
        if r.positions == "faithful":
            line = torch.arange(start, start + len(kept))
            chosen = chosen.replace(positions=line.expand(tokens.positions.shape[0], -1).clone(),
                                    end_position=start + len(kept))
        block = adapter.video_block(chosen, start, enc.next_position)
        tail = adapter.tail_ids(enc.tail_template, ex.question)
        answer = adapter.tokenizer(ex.answer, add_special_tokens=False)["input_ids"] + [
            adapter.tokenizer.eos_token_id]
        text = torch.tensor(tail + answer, device=adapter.device)
        hidden = torch.cat([lm.embed_tokens(torch.tensor(enc.prefix_ids, device=adapter.device)),
                            block.embeds.to(adapter.dtype), lm.embed_tokens(text)])[None]
        positions = torch.cat([adapter.text_positions(0, start, adapter.device), block.positions.to(adapter.device),
                               adapter.text_positions(block.next_position, len(text), adapter.device)], dim=1)
        out, _ = forward(lm, hidden, positions[:, None], new_cache(lm.config))
        at = torch.arange(len(answer), device=adapter.device) + (hidden.shape[1] - len(answer) - 1)
        ce = F.cross_entropy(lm.logits(out[0, at]), torch.tensor(answer, device=adapter.device))
        mean_rho = (self.rho_sum + float(rho.detach())) / (self.rho_count + 1)
        kept_expected = rho * m
        loss = (ce + r.lambda_t * kept_expected**2 / r.n_max**2 + r.lambda_m * kept_expected / r.n_max
                + r.lambda_s * (rho - mean_rho) ** 2)
        return loss, dict(ce=float(ce.detach()), rho=float(rho.detach()), kept=len(kept) / m)

    def train_step(self) -> dict:
        r = self.recipe
        for group in self.optimizer.param_groups:
            group["lr"] = r.lr_at(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        parts = []
        for j in range(r.accumulate):
            i = self.dp.index(self.step, j, r.accumulate)
            generator = torch.Generator().manual_seed(r.seed * 1_000_003 + i)
            loss, info = self.example_loss(self.example(i), generator)
            (loss / r.accumulate).backward()
            self.rho_sum, self.rho_count = self.rho_sum + info["rho"], self.rho_count + 1
            parts.append(info | dict(loss=float(loss.detach())))
        self.dp.average(self.trained)
        torch.nn.utils.clip_grad_norm_(self.trained, 1.0)
        self.optimizer.step()
        self.step += 1
        return {k: float(np.mean([p[k] for p in parts])) for k in parts[0]}

    def method(self):
        from longvid.methods.compose import Method
        from longvid.methods.tokens.qtsplus import QTSPlusSelector

        return Method("qtsplus", token_reducers=[QTSPlusSelector(modules=self.modules, positions=self.recipe.positions,
                                                                 n_max=self.recipe.n_max)])

    def evaluate(self) -> dict:
        """The pipeline's greedy accuracy on the held-out examples with the inference selector, and its retention."""
        from longvid.eval.synth import parse_letter

        self.modules.eval()
        hits, kept = [], []
        for ex in self.held_out():
            a = self.lm.ask(ex.frames, ex.question, method=self.method(), max_new_tokens=2)
            hits.append((parse_letter(a.text) or a.text.strip()) == ex.answer.strip())
            kept.append(a.stats.retention)
        self.modules.train()
        return dict(step=self.step, accuracy=float(np.mean(hits)), retention=float(np.mean(kept)))

    def report(self, recent: list[dict], last: dict | None) -> tuple[str, str | None]:
        info = f"loss {np.mean([x['loss'] for x in recent]):.3f}, rho {np.mean([x['rho'] for x in recent]):.2f}"
        if last is None:
            return info, None
        return (f"{info}, held-out {100 * last['accuracy']:.0f}% at retention {last['retention']:.2f}",
                f"step {last['step']}: train loss {last.get('train_loss', float('nan')):.4f} (answer CE "
                f"{last.get('train_ce', float('nan')):.4f}), held-out accuracy {100 * last['accuracy']:.1f}% at mean "
                f"retention {last['retention']:.3f}")

    # ----- checkpoints: the running mean of rho travels with them --------------------------------------------
    def state(self) -> dict:
        return dict(rho=(self.rho_sum, self.rho_count))

    def load_state(self, state: dict) -> None:
        self.rho_sum, self.rho_count = state["rho"]

    def card(self) -> dict:
        return dict(mean_rho=self.rho_sum / max(1, self.rho_count),
                    losses="CE on the answer tokens and <|im_end|> through the frozen model + lambda_t (rho M)^2 / "
                           "n_max^2 + lambda_m rho M / n_max + lambda_s (rho - running mean rho)^2")
