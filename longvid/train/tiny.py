"""Train longvid-tiny 2: a Qwen2-VL (transformers' own class) from scratch on suite v2, without attention supervision.

``longvid train tiny --out DIR`` (or ``python -m longvid.train.tiny``). Seeded and resumable: ``checkpoint.pt`` in
``DIR`` every ``--checkpoint-every`` steps holds the model, the probe, the optimiser, the step and the history; the
same command continues from it, bit for bit (a step's videos depend only on the seed and the step index). The
loadable model (safetensors, tokenizer, preprocessor config, ``longvid.json`` training card) is written at every
validation and at the end.

Why Qwen2-VL and not Qwen2.5-VL: its temporal M-RoPE position is the step index, so a 10-minute video at 1 fps spans
300 temporal positions (Qwen2.5-VL's absolute time spans 4 per step at the same sampling) and the tiny rotary
frequencies stay distinguishable; its vision tower has no window attention, which costs nothing to skip at 140 px.
v1 was the same class, so the v1-v2 comparison is about the data and the training, not the architecture.

What the model reads is what the pipeline shows it: frames rendered at the timestamps ``read_video`` decodes from a
suite mp4 (1 fps over a 4 fps file), preprocessed and placed by the adapter, the real chat template; and the
forward is the engine's own (`longvid.engine.forward.forward`): the prompt and the video go through it as one
causal chunk into a KV cache, then every question's tail as a second chunk over that cache, each tail seeing the
video and itself only (an explicit mask), at the positions it would have alone. That is how the library answers
several questions about one encode, so training and inference share one differentiable forward.

Losses (every one is in the training card; none supervises attention):

- ``answer``: cross-entropy on the answer letter and the ``<|im_end|>`` after it (weight 1);
- ``text``: next-token cross-entropy on the question's own tokens (0.5);
- ``visual``: a linear probe on each visual token as the LLM receives it (the vision merger's output): the colour
  and the shape of the object it shows (none, an event's, or a mover's), from `cell_coverage` (an object counts for
  a token holding >= 25 % of its drawn area in either frame of the step; tokens with less are left out), plus the
  same on the object tokens alone (``--event-weight``, as they are ~1 % of the tokens);
- ``options``: the same probe on each option line's token: its value, its letter, whether it is the answer;
- ``final``: the probe at the position that predicts the letter: the answer's value (colour, shape, region,
  quarter, count, or the named event's colour and shape);
- ``name``: the probe at the question's stem token (for kinds whose stem names an event): the answer's value;
- ``position``: the probe on each visual token as the LLM receives it: its row and column in the frame; and
  log2(1 + its temporal step) regressed from its hidden state after decoder layer `TIME_LAYER`. Why: Qwen2-VL's
  ViT has no absolute position embedding and M-RoPE rotates queries and keys only, so where and when a token is
  is not in what attention reads from it; "where", "when", "order" and "after" need it there. Large VLMs learn it
  from their data; this probe states it (it teaches where and when a token is, never where to look).

The ``options``, ``final`` and ``name`` probes read the output of decoder layer ``--probe-layer`` (default -1, the
last). Read at the last layer they are learned where no attention can use them: the model then knows the answer's
value and which option holds it, but not the letter (docs/tiny2.md); ``--probe-layer 3`` leaves two layers above
them to map value -> option -> letter, and is what the documented runs use.

All probe terms are summed with weight ``--aux-weight``. v1 also had an attention-guidance loss (a head told where
to look); v2 has none, so where attention-scored methods find the evidence is the model's own doing.

Each training video is asked ``--question-rounds`` draws of the suite's questions (one per kind each; the first
is the suite's own draw): the video's forward costs far more than a question's, so more questions per encode is
more signal per second.

Lengths follow a curriculum (``--start-lengths`` to ``--lengths``, log-uniform, ramped geometrically over
``--ramp`` steps): the suite's short videos teach what the shapes and questions are at ~1 % of the cost of a
10-minute one, the final distribution is the issue's 1-10 minutes. The documented model trains in two stages
(``--init``): 12-24 s until it answers, then the ramp to 1-10 minutes; the commands are in docs/tiny2.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from longvid.errors import option
from longvid.synth.questions import KINDS_V2, LETTERS, PROMPT_TEMPLATE, STEMS_V2, VALUES_V2, make_questions
from longvid.synth.render import cell_coverage, render_frames
from longvid.synth.seeds import train_seed
from longvid.synth.spec import COLORS, MOVER_COLORS, MOVER_SHAPES, QUARTERS, REGIONS, SHAPES, make_video_spec

__all__ = ["MODEL_CONFIG", "SIDE", "Recipe", "synth_lines_v2", "build_tokenizer", "make_example", "video_losses",
           "accuracy", "Trainer", "main"]

MODEL_CONFIG = dict(hidden_size=128, num_layers=6, num_heads=4, num_kv_heads=2, intermediate_size=384,
                    vision_depth=2, vision_embed_dim=64, mrope_section=[8, 4, 4])
SIDE = 140
"""Frame side in pixels: 10 x 10 patches, merged 2 x 2 into 5 x 5 = 25 visual tokens per temporal step."""
COVER = 0.25
"""A visual token shows an object when it holds at least this share of the object's drawn area."""
VALIDATION_OFFSET = 900_000_000
"""Training-split seeds from here on are held out for validation (never trained on); eval seeds are never used."""

OBJ_COLORS = ("none",) + tuple(COLORS) + tuple(MOVER_COLORS)
OBJ_SHAPES = ("none",) + tuple(SHAPES) + tuple(MOVER_SHAPES)
PROBE_HEADS = {"color": (0, 7), "shape": (7, 14), "region": (14, 23), "quarter": (23, 27), "count": (27, 31),
               "is_answer": (31, 32), "letter": (32, 36), "row": (36, 41), "col": (41, 46), "time": (46, 47)}
"""Slices of the probe's 47 outputs."""
PROBE_OUT = max(end for _, end in PROBE_HEADS.values())
TIME_LAYER = 2
"""The ``time`` probe reads the visual tokens' hidden states after this decoder layer (0-based)."""
NAMING_KINDS = ("color", "shape", "where", "when", "after")
"""Kinds whose question stem names one event (the ``name`` probe reads the stem's token)."""


def synth_lines_v2() -> list[str]:
    """Every line longvid-tiny 2 reads: v1's lines, then suite v2's stems and option lines."""
    from longvid.train.tokenizer import synth_lines

    stems = [STEMS_V2[kind].format(shape=s, color=c, name=f"{c} {s}") for kind in KINDS_V2 for c in COLORS
             for s in SHAPES]
    options = [f"{letter}. {value}" for letter in LETTERS for kind in KINDS_V2 for value in VALUES_V2[kind]]
    return list(dict.fromkeys(synth_lines() + stems + options + [PROMPT_TEMPLATE.splitlines()[-1]]))


def build_tokenizer():
    """v1's line-level BPE (`longvid.train.tokenizer.build_synth_tokenizer`) over `synth_lines_v2`: each line one token."""
    from longvid.train.tokenizer import build_synth_tokenizer

    return build_synth_tokenizer(synth_lines_v2())


def build_untrained_model(tokenizer, seed: int):
    from transformers import AutoModelForImageTextToText

    from longvid.train.tokenizer import vocab_size
    from longvid.tiny import EOS_ID, tiny_config

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(
        tiny_config("qwen2_vl", vocab_size=vocab_size(tokenizer), **MODEL_CONFIG), dtype=torch.float32)
    model.generation_config.eos_token_id = EOS_ID
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def make_adapter(model, tokenizer):
    from longvid.models.qwen2_vl import Qwen2VLAdapter

    return Qwen2VLAdapter(model, tokenizer, min_pixels=SIDE * SIDE, max_pixels=SIDE * SIDE)


# ----- examples ---------------------------------------------------------------------------------------------------
def value_targets(kind: str, value: str) -> list[tuple[str, int]]:
    """(probe head, class) pairs naming an answer value: "red" -> colour 1; "red circle" -> colour 1, shape 1."""
    if kind == "color":
        return [("color", OBJ_COLORS.index(value))]
    if kind == "shape":
        return [("shape", OBJ_SHAPES.index(value))]
    if kind == "where":
        return [("region", REGIONS.index(value))]
    if kind == "when":
        return [("quarter", QUARTERS.index(value.split()[0]))]
    if kind == "count":
        return [("count", int(value) - 1)]
    color, shape = value.split()
    return [("color", OBJ_COLORS.index(color)), ("shape", OBJ_SHAPES.index(shape))]


def token_labels(spec, times, grid_thw, blank: bool = False) -> torch.Tensor:
    """(N, 2) long: per visual token, the colour and shape class (`OBJ_COLORS`, `OBJ_SHAPES`) of the object it shows,
    0 for none, -100 (left out of the loss) where an object shows only a sliver (< `COVER` of its area)."""
    steps, gh, gw = grid_thw
    rows, cols = gh // 2, gw // 2
    cover = cell_coverage(spec, times, rows, cols)  # (T, objects, rows, cols)
    objects = list(spec.movers) + ([] if blank else list(spec.events))  # events last: drawn on top, they win
    order = list(range(len(spec.events), len(spec.events) + len(spec.movers))) + ([] if blank else
                                                                                   list(range(len(spec.events))))
    frame_step = np.minimum(np.arange(len(times)) // 2, steps - 1)
    per_step = np.zeros((steps, cover.shape[1], rows, cols), dtype=np.float32)
    np.maximum.at(per_step, frame_step, cover)
    labels = np.zeros((steps, rows, cols, 2), dtype=np.int64)
    sliver = np.zeros((steps, rows, cols), dtype=bool)
    shown = np.zeros((steps, rows, cols), dtype=bool)
    for obj, j in zip(objects, order):
        share = per_step[:, j]
        full = share >= COVER
        labels[full] = (OBJ_COLORS.index(obj.color), OBJ_SHAPES.index(obj.shape))
        shown |= full
        sliver |= (share > 0.02) & ~full
    labels[sliver & ~shown] = -100
    return torch.from_numpy(labels.reshape(-1, 2))


@dataclass
class Example:
    """One video's model inputs and its questions."""

    pixel_values: torch.Tensor
    grid_thw: tuple
    prefix: list
    visual_positions: torch.Tensor  # (3, N)
    kinds: list
    tails: list  # per question: token ids of the tail, ending with the answer letter and <|im_end|>
    option_ends: list  # per question: index in its tail of each option line's token
    correct: list
    option_values: list
    final_values: list
    name_at: list  # per question: index in its tail of the stem token, or None
    labels: torch.Tensor  # (N, 2)
    seconds: float = 0.0
    cells: tuple = (5, 5)  # token rows, columns per temporal step

    @property
    def num_visual(self) -> int:
        return self.visual_positions.shape[1]

    def to(self, device) -> Example:
        """This example with its tensors on ``device``."""
        from dataclasses import replace

        return replace(self, pixel_values=self.pixel_values.to(device),
                       visual_positions=self.visual_positions.to(device), labels=self.labels.to(device))


def make_example(adapter, spec, questions, blank: bool = False) -> Example:
    from longvid.synth.suite import sample_times
    from longvid.train.tokenizer import line_id
    from longvid.tiny import EOS_ID

    times = sample_times(spec.seconds)
    inputs = adapter.preprocess(render_frames(spec, times, blank=blank), times)
    prefix, template = adapter.prompt_parts()
    tok = adapter.tokenizer
    letter_ids = [tok.convert_tokens_to_ids(letter) for letter in LETTERS]
    tails = [adapter.tail_ids(template, q.text) + [letter_ids[q.answer_index], EOS_ID] for q in questions]
    return Example(
        inputs.pixel_values, inputs.grid_thw, prefix,
        adapter.visual_positions(len(prefix), inputs.grid_thw, inputs.seconds_per_step),
        [q.kind for q in questions], tails,
        [[tail.index(line_id(tok, f"{letter}. {value}")) for letter, value in zip(LETTERS, q.options)]
         for q, tail in zip(questions, tails)],
        [q.answer_index for q in questions],
        [[value_targets(q.kind, value) for value in q.options] for q in questions],
        [value_targets(q.kind, q.answer_text) for q in questions],
        [tail.index(line_id(tok, q.question)) if q.kind in NAMING_KINDS else None for q, tail in zip(questions, tails)],
        token_labels(spec, times, inputs.grid_thw, blank), spec.seconds,
        (inputs.grid_thw[1] // 2, inputs.grid_thw[2] // 2))


def training_questions(spec, kinds, rounds: int = 1) -> list:
    """``rounds`` draws of `make_questions` for one video (round 0 is the suite's own question seed): more questions
    per encode, as the video's forward costs far more than a question's."""
    out = []
    for k in range(rounds):
        out += make_questions(spec, seed=None if k == 0 else spec.seed + 1_000_003 * k, kinds=kinds)
    return out


# ----- the forward and the losses -----------------------------------------------------------------------------------
def tails_mask(lengths: list[int], past: int, impl: str, dtype, device=None) -> torch.Tensor:
    """(1, 1, T, past + T) mask for question tails packed after a shared past: each tail sees the past and its own
    earlier tokens. Boolean for SDPA, additive for eager (as `causal_mask`)."""
    owner = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    total = len(owner)
    own = (owner[:, None] == owner[None, :]) & torch.ones(total, total, dtype=torch.bool).tril()
    allowed = torch.cat([torch.ones(total, past, dtype=torch.bool), own], dim=1)[None, None].to(device)
    if impl == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)


def video_forward(model, adapter, ex: Example, layer_out: dict | None = None, text_layer: int = -1):
    """The engine's forward over one example: ``(visual tokens (N, D), video hidden (N, D), tails hidden (T, D))``,
    normed final hidden states, the tails packed in question order. ``layer_out``, when given, receives
    ``"video"``: the visual tokens' hidden states after decoder layer `TIME_LAYER` (N, D), and ``"tails"``: the tails'
    after decoder layer ``text_layer`` (T, D), through the final norm (the last layer's: the returned tails)."""
    from longvid.engine.cache import new_cache
    from longvid.engine.forward import forward

    lm = adapter.lm
    device = ex.pixel_values.device
    visual = model.model.visual(ex.pixel_values, grid_thw=torch.tensor([ex.grid_thw], device=device)).pooler_output
    shared = torch.cat([lm.embed_tokens(torch.tensor(ex.prefix, device=device)), visual])[None]
    positions = torch.cat([torch.arange(len(ex.prefix), device=device).expand(3, -1), ex.visual_positions],
                          dim=1)[:, None]
    cache = new_cache(lm.config)

    def capture(layer: int, name: str, skip: int = 0):
        def keep(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            layer_out[name] = hidden[0, skip:]
        return lm.layers[layer].register_forward_hook(keep)

    hook = capture(TIME_LAYER, "video", len(ex.prefix)) if layer_out is not None else None
    try:
        hidden_shared, _ = forward(lm, shared, positions, cache)
    finally:
        if hook is not None:
            hook.remove()
    start = int(ex.visual_positions.max()) + 1
    tails = torch.cat([torch.tensor(t, device=device) for t in ex.tails])
    tail_pos = torch.cat([adapter.text_positions(start, len(t), device) for t in ex.tails], dim=-1)[:, None]
    mask = tails_mask([len(t) for t in ex.tails], shared.shape[1], lm.config._attn_implementation, shared.dtype,
                      device)
    last = len(lm.layers) - 1
    hook = capture(text_layer, "tails") if layer_out is not None and text_layer % len(lm.layers) != last else None
    try:
        hidden_tails, _ = forward(lm, lm.embed_tokens(tails)[None], tail_pos, cache, attention_mask=mask)
    finally:
        if hook is not None:
            hook.remove()
    if layer_out is not None:
        layer_out["tails"] = lm.norm(layer_out["tails"]) if hook is not None else hidden_tails[0]
    return visual, hidden_shared[0, len(ex.prefix):], hidden_tails[0]


def _probe_loss(out: torch.Tensor, targets: list[list[tuple[str, int]]]) -> torch.Tensor:
    by_head = {}
    for row, pairs in enumerate(targets):
        for head, cls in pairs:
            by_head.setdefault(head, ([], []))
            by_head[head][0].append(row)
            by_head[head][1].append(cls)
    return torch.stack([F.cross_entropy(out[rows, slice(*PROBE_HEADS[head])], torch.tensor(classes, device=out.device))
                        for head, (rows, classes) in by_head.items()]).mean()


def video_losses(model, adapter, probe, ex: Example, event_weight: float = 1.0, probe_layer: int = -1
                 ) -> tuple[torch.Tensor, dict, list]:
    """``(answer loss, {probe and text terms}, [correct? per question])`` for one example. The option, final and
    name probes read the question tokens after decoder layer ``probe_layer`` (-1: the last)."""
    lm = adapter.lm
    mid = {} if probe is not None else None
    visual, _, tails = video_forward(model, adapter, ex, mid, probe_layer)
    offsets = np.cumsum([0] + [len(t) for t in ex.tails])
    answer_at = torch.tensor([o + len(t) - 3 for o, t in zip(offsets, ex.tails)])  # predicts the letter
    at = torch.stack([answer_at, answer_at + 1], dim=1)
    logits = lm.logits(tails[at])  # (Q, 2, vocab)
    targets = torch.tensor([t[-2:] for t in ex.tails], device=tails.device)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    correct = (logits[:, 0].argmax(-1) == targets[:, 0]).tolist()
    if probe is None:
        return loss, {}, correct
    text_rows = [(o + j, t[j + 1]) for o, t in zip(offsets, ex.tails) for j in range(len(t) - 3)]
    rows, nxt = torch.tensor(text_rows, device=tails.device).T
    parts = {"text": 0.5 * F.cross_entropy(lm.logits(tails[rows]), nxt)}
    out = probe(visual)
    keep = ex.labels[:, 0] >= 0
    terms = F.cross_entropy(out[keep, 0:7], ex.labels[keep, 0]) + F.cross_entropy(out[keep, 7:14], ex.labels[keep, 1])
    obj = ex.labels[:, 0] > 0
    if event_weight and obj.any():
        terms = terms + event_weight * (F.cross_entropy(out[obj, 0:7], ex.labels[obj, 0])
                                        + F.cross_entropy(out[obj, 7:14], ex.labels[obj, 1]))
    parts["visual"] = terms
    per_step = ex.cells[0] * ex.cells[1]
    index = torch.arange(ex.num_visual, device=visual.device)
    cell = index % per_step
    parts["position"] = (F.cross_entropy(out[:, 36:41], cell // ex.cells[1])
                         + F.cross_entropy(out[:, 41:46], cell % ex.cells[1])
                         + F.mse_loss(probe(mid["video"])[:, 46], torch.log2(1.0 + (index // per_step).float())))
    option_at = torch.tensor([o + e for o, ends in zip(offsets, ex.option_ends) for e in ends])
    read = mid["tails"]
    option_out = probe(read[option_at])
    is_answer = torch.tensor([float(i == c) for c in ex.correct for i in range(4)], device=tails.device)
    parts["options"] = (F.binary_cross_entropy_with_logits(option_out[:, 31], is_answer)
                        + F.cross_entropy(option_out[:, 32:36], torch.arange(len(option_out), device=tails.device) % 4)
                        + _probe_loss(option_out, [v for q in ex.option_values for v in q]))
    parts["final"] = _probe_loss(probe(read[answer_at]), ex.final_values)
    named = [(o + n, v) for o, n, v in zip(offsets, ex.name_at, ex.final_values) if n is not None]
    if named:
        parts["name"] = _probe_loss(probe(read[torch.tensor([n for n, _ in named])]), [v for _, v in named])
    return loss, parts, correct


@torch.no_grad()
def accuracy(model, adapter, examples: list[Example]) -> dict[str, float]:
    """Greedy accuracy of the answer letter per kind and ``"all"`` (teacher-forced prompt, no probe)."""
    hits = {kind: [] for kind in KINDS_V2}
    for ex in examples:
        _, _, correct = video_losses(model, adapter, None, ex)
        for kind, ok in zip(ex.kinds, correct):
            hits[kind].append(ok)
    out = {kind: round(float(np.mean(v)), 4) for kind, v in hits.items() if v}
    out["all"] = round(float(np.mean([x for v in hits.values() for x in v])), 4)
    return out


# ----- the recipe and the trainer ---------------------------------------------------------------------------------
RECIPE_BEFORE_FIELD = dict(question_rounds=1, init=None, probe_layer=-1)
"""Recipe fields added after runs were written, with the behaviour those runs had (not today's defaults)."""


@dataclass
class Recipe:
    steps: int = 8000
    videos_per_step: int = 4
    lr: float = 2e-3
    warmup: int = 100
    start_lengths: tuple[float, float] = (12.0, 60.0)
    lengths: tuple[float, float] = (60.0, 600.0)
    ramp: int = 4000
    aux_weight: float = 1.0
    event_weight: float = 1.0
    seed: int = 0
    question_rounds: int = 3
    n_validation: int = 24
    validation_lengths: tuple[float, float] = (60.0, 180.0)
    validate_every: int = 100
    checkpoint_every: int = 20
    threads: int | None = None
    kinds: list = field(default_factory=lambda: list(KINDS_V2))
    init: str | None = None
    """A run folder (or its ``checkpoint.pt``) whose model and probe weights this run starts from (a fresh optimiser
    and schedule): a later phase of a recipe in stages."""
    probe_layer: int = -1
    """The decoder layer whose output the option, final and name probes read (-1: the last, normed as always)."""

    def __post_init__(self):
        for name in ("steps", "videos_per_step", "warmup", "question_rounds", "n_validation", "validate_every",
                     "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{option(name, value)} is invalid: it must be a positive integer")
        if isinstance(self.ramp, bool) or not isinstance(self.ramp, int) or self.ramp < 0:
            raise ValueError(f"{option('ramp', self.ramp)} is invalid: it must be an integer >= 0 (0: no curriculum)")
        for name in ("start_lengths", "lengths", "validation_lengths"):
            lo, hi = getattr(self, name)
            if not 12 <= lo <= hi <= 3600:
                raise ValueError(f"{option(name.replace('_', '-'), f'{lo:g},{hi:g}')} is invalid: pass MIN,MAX "
                                 "seconds with 12 <= MIN <= MAX <= 3600, e.g. 60,600")
        for name in ("lr", "aux_weight", "event_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= (1e-12 if name == "lr" else 0)):
                raise ValueError(f"{option(name.replace('_', '-'), value)} is invalid: it must be a finite number "
                                 f"{'> 0' if name == 'lr' else '>= 0 (0 turns it off)'}")
        layers = MODEL_CONFIG["num_layers"]
        if isinstance(self.probe_layer, bool) or not isinstance(self.probe_layer, int) or not (
                -layers <= self.probe_layer < layers):
            raise ValueError(f"{option('probe_layer', self.probe_layer)} is invalid: pass a decoder layer index from "
                             f"0 to {layers - 1} (or -1, the last)")
        unknown = [k for k in self.kinds if k not in KINDS_V2]
        if unknown or not self.kinds:
            raise ValueError(f"{option('kinds', ','.join(self.kinds))} is invalid: pass kinds from "
                             f"{','.join(KINDS_V2)} (a kind may repeat, to weigh it more)")

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then cosine from ``lr`` to ``lr / 10`` at the last step."""
        warm = min(1.0, (step + 1) / self.warmup)
        return self.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / self.steps))))

    def lengths_at(self, step: int) -> tuple[float, float]:
        """The range video lengths are drawn from at ``step`` (log-uniform): `start_lengths` ramped geometrically to
        `lengths` over `ramp` steps."""
        f = 1.0 if self.ramp == 0 else min(1.0, step / self.ramp)
        return tuple(math.exp((1 - f) * math.log(a) + f * math.log(b)) for a, b in zip(self.start_lengths, self.lengths))


class Trainer:
    """Seeded, resumable training of longvid-tiny 2 into ``out``."""

    def __init__(self, out: str | Path, recipe: Recipe, log=print, device: str = "cpu"):
        self.out, self.recipe, self.log, self.device = Path(out), recipe, log, torch.device(device)
        if recipe.threads:
            torch.set_num_threads(recipe.threads)
        self.tokenizer = build_tokenizer()
        self.model = build_untrained_model(self.tokenizer, recipe.seed)
        self.model.config.text_config._attn_implementation = "sdpa"
        self.model.to(self.device).train()
        self.adapter = make_adapter(self.model, self.tokenizer)
        torch.manual_seed(recipe.seed + 1)
        self.probe = torch.nn.Linear(self.model.config.text_config.hidden_size, PROBE_OUT).to(self.device)
        self.params = list(self.model.parameters()) + list(self.probe.parameters())
        self.optimizer = torch.optim.AdamW(self.params, lr=recipe.lr, betas=(0.9, 0.98), weight_decay=0.01)
        self.step, self.history, self.seconds = 0, [], 0.0
        self.init_from = None
        checkpoint = self.out / "checkpoint.pt"
        if recipe.init and not checkpoint.is_file():
            source = Path(recipe.init)
            source = source / "checkpoint.pt" if source.is_dir() else source
            if not source.is_file():
                raise ValueError(f"{option('init', recipe.init)} is invalid: no checkpoint.pt there; pass the --out "
                                 "folder of an earlier run of this recipe")
            state = torch.load(source, weights_only=False, map_location=self.device)
            self.model.load_state_dict(state["model"])
            self.probe.load_state_dict(state["probe"])
            self.init_from = dict(path=str(recipe.init), step=state["step"], recipe=state["recipe"],
                                  seconds=round(state["seconds"], 1), init_from=state.get("init_from"))
            log(f"starting from {source} (step {state['step']})")
        if checkpoint.is_file():
            state = torch.load(checkpoint, weights_only=False, map_location=self.device)
            free = ("threads", "validate_every", "checkpoint_every")  # change the log, not the result
            stored = RECIPE_BEFORE_FIELD | state["recipe"]  # fields added since: what the run did without them
            if {k: v for k, v in stored.items() if k not in free} != {
                    k: v for k, v in asdict(recipe).items() if k not in free}:
                raise ValueError(f"{checkpoint} was written by another recipe: {state['recipe']}; pass the same options "
                                 "to continue it, or a new --out")
            self.model.load_state_dict(state["model"])
            self.probe.load_state_dict(state["probe"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.step, self.history, self.seconds = state["step"], state["history"], state["seconds"]
            self.init_from = state.get("init_from")
            log(f"resuming {self.out} at step {self.step}")
        self._validation = None

    # ----- data -----------------------------------------------------------------------------------------------
    def batch(self, step: int) -> list[Example]:
        r = self.recipe
        gen = np.random.default_rng([r.seed, step, 7])
        lo, hi = r.lengths_at(step)
        out = []
        for i in range(r.videos_per_step):
            seconds = float(np.round(np.exp(gen.uniform(math.log(lo), math.log(hi)))))
            spec = make_video_spec(train_seed(r.seed * 10_000_000 + step * r.videos_per_step + i), seconds=seconds,
                                   version=2)
            out.append(make_example(self.adapter, spec, training_questions(spec, r.kinds, r.question_rounds)
                                    ).to(self.device))
        return out

    def validation(self) -> list[Example]:
        if self._validation is None:
            r = self.recipe
            gen = np.random.default_rng([r.seed, 2])
            lo, hi = r.validation_lengths
            specs = [make_video_spec(train_seed(VALIDATION_OFFSET + i), seconds=float(round(gen.uniform(lo, hi))),
                                     version=2) for i in range(r.n_validation)]
            self._validation = [make_example(self.adapter, s, make_questions(s)).to(self.device) for s in specs]
        return self._validation

    # ----- steps ----------------------------------------------------------------------------------------------
    def train_step(self, examples: list[Example]) -> dict:
        r = self.recipe
        for group in self.optimizer.param_groups:
            group["lr"] = r.lr_at(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        totals, answer = {}, 0.0
        for ex in examples:  # one video at a time: gradients accumulate, memory stays one video's
            loss, parts, _ = video_losses(self.model, self.adapter, self.probe if r.aux_weight else None, ex,
                                          r.event_weight, r.probe_layer)
            aux = sum(v for k, v in parts.items() if k != "text")
            total = loss + parts.get("text", 0.0) + r.aux_weight * aux
            (total / len(examples)).backward()
            answer += float(loss.detach()) / len(examples)
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach()) / len(examples)
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.step += 1
        return {"answer": round(answer, 4)} | {k: round(v, 4) for k, v in totals.items()}

    def save_checkpoint(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        state = dict(model=self.model.state_dict(), probe=self.probe.state_dict(),
                     optimizer=self.optimizer.state_dict(), step=self.step, history=self.history,
                     seconds=self.seconds, recipe=asdict(self.recipe), init_from=self.init_from)
        tmp = self.out / "checkpoint.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.out / "checkpoint.pt")  # a crash mid-write never leaves a torn checkpoint

    def card(self) -> dict:
        from longvid.train.common import code_version

        r = self.recipe
        return dict(name="longvid-tiny-2", suite=2, family="qwen2_vl", config=MODEL_CONFIG, side=SIDE,
                    sample_fps=1.0, file_fps=4, recipe=asdict(r), step=self.step, train_seconds=round(self.seconds, 1),
                    losses=dict(answer="cross-entropy on the letter and <|im_end|>, weight 1",
                                text="next-token cross-entropy on the question's tokens, weight 0.5",
                                visual=f"probe: colour and shape of the object each visual token shows (>= {COVER:g} "
                                       "of its area), all tokens + object tokens alone (event_weight), aux_weight",
                                options="probe: each option line's value, letter and is-answer, aux_weight",
                                final="probe: the answer's value at the letter-predicting position, aux_weight",
                                name="probe: the answer's value at the stem token naming the event, aux_weight",
                                position="probe: each visual token's row and column in its frame (as the LLM "
                                         "receives it), and log2(1 + its temporal step) regressed from its hidden "
                                         f"state after decoder layer {TIME_LAYER}, aux_weight",
                                attention="none: no loss on attention weights"),
                    train_seeds=[train_seed(r.seed * 10_000_000),
                                 train_seed(r.seed * 10_000_000 + self.step * r.videos_per_step - 1)],
                    validation_seeds=[train_seed(VALIDATION_OFFSET), train_seed(VALIDATION_OFFSET + r.n_validation - 1)],
                    history=self.history, init_from=self.init_from, torch=torch.__version__, code=code_version(),
                    command="longvid train tiny " + " ".join(recipe_args(r)) + f" --out {self.out}")

    def save_model(self, where: Path) -> None:
        from longvid.models.qwen2_vl import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

        where.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(where)
        self.tokenizer.save_pretrained(where)
        pre = dict(min_pixels=SIDE * SIDE, max_pixels=SIDE * SIDE, image_mean=list(OPENAI_CLIP_MEAN),
                   image_std=list(OPENAI_CLIP_STD), patch_size=14, merge_size=2, temporal_patch_size=2)
        (where / "video_preprocessor_config.json").write_text(json.dumps(pre, indent=1) + "\n")
        (where / "longvid.json").write_text(json.dumps(self.card(), indent=1) + "\n")

    def validate(self, last: dict) -> dict:
        self.model.eval()
        acc = accuracy(self.model, self.adapter, self.validation())
        self.model.train()
        lo, hi = self.recipe.lengths_at(self.step)
        row = dict(step=self.step, lengths=[round(lo), round(hi)], seconds=round(self.seconds, 1), **last, **acc)
        self.history.append(row)
        return row

    def run(self, stop_after: int | None = None, progress=None) -> dict:
        r = self.recipe
        last_step = min(r.steps, stop_after or r.steps)
        if self.step >= last_step:
            return self.card()
        pool = ThreadPoolExecutor(1)  # the next step's videos render while this one trains (same result either way)
        upcoming = pool.submit(self.batch, self.step)
        try:
            while self.step < last_step:
                t0 = time.perf_counter()
                examples = upcoming.result()
                if self.step + 1 < last_step:
                    upcoming = pool.submit(self.batch, self.step + 1)
                parts = self.train_step(examples)
                self.seconds += time.perf_counter() - t0
                if progress:
                    progress(self.step, last_step, parts)
                if self.step % r.validate_every == 0 or self.step == r.steps:
                    self.log(json.dumps(self.validate(parts)))
                    self.save_model(self.out / "model")
                if self.step % r.checkpoint_every == 0 or self.step == last_step:
                    self.save_checkpoint()
        finally:
            pool.shutdown(cancel_futures=True)
        self.save_model(self.out / "model")
        return self.card()


def recipe_args(r: Recipe) -> list[str]:
    """The command-line options that give ``r``."""
    return [f"--steps {r.steps}", f"--videos-per-step {r.videos_per_step}", f"--lr {r.lr:g}", f"--warmup {r.warmup}",
            f"--start-lengths {r.start_lengths[0]:g},{r.start_lengths[1]:g}",
            f"--lengths {r.lengths[0]:g},{r.lengths[1]:g}", f"--ramp {r.ramp}", f"--aux-weight {r.aux_weight:g}",
            f"--event-weight {r.event_weight:g}", f"--seed {r.seed}", f"--question-rounds {r.question_rounds}",
            f"--validation-lengths {r.validation_lengths[0]:g},{r.validation_lengths[1]:g}",
            f"--probe-layer {r.probe_layer}", f"--kinds {','.join(r.kinds)}"] + ([f"--init {r.init}"] if r.init else [])


def _pair(text: str, name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"{option(name, text)} is invalid: pass MIN,MAX seconds, e.g. 60,600") from None
    return lo, hi


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="longvid train tiny", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for checkpoint.pt and model/ (the same command resumes)")
    d = Recipe()
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--stop-after", type=int, default=None, help="end at this step (the schedule follows --steps)")
    p.add_argument("--videos-per-step", type=int, default=d.videos_per_step)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--start-lengths", default="12,60")
    p.add_argument("--lengths", default="60,600")
    p.add_argument("--ramp", type=int, default=d.ramp)
    p.add_argument("--aux-weight", type=float, default=d.aux_weight)
    p.add_argument("--event-weight", type=float, default=d.event_weight)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--question-rounds", type=int, default=d.question_rounds,
                   help="draws of the suite's questions per training video (each draw: one per kind)")
    p.add_argument("--validation-lengths", default="60,180")
    p.add_argument("--probe-layer", type=int, default=d.probe_layer,
                   help="decoder layer whose output the option, final and name probes read (-1: the last)")
    p.add_argument("--init", default=None, help="start from the weights of an earlier run (its --out folder): a later "
                   "phase of a staged recipe; the optimiser and schedule start fresh")
    p.add_argument("--kinds", default=",".join(KINDS_V2))
    p.add_argument("--validate-every", type=int, default=d.validate_every)
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--n-validation", type=int, default=d.n_validation)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda (the recipe is the same; a run may move)")
    a = p.parse_args(argv)
    try:
        recipe = Recipe(a.steps, a.videos_per_step, a.lr, a.warmup, _pair(a.start_lengths, "start-lengths"),
                        _pair(a.lengths, "lengths"), a.ramp, a.aux_weight, a.event_weight, a.seed,
                        a.question_rounds, a.n_validation, _pair(a.validation_lengths, "validation-lengths"),
                        validate_every=a.validate_every, checkpoint_every=a.checkpoint_every, threads=a.threads,
                        kinds=a.kinds.split(","), init=a.init, probe_layer=a.probe_layer)
        trainer = Trainer(a.out, recipe, device=a.device)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None

    def progress(step, total, parts):
        print(f"step {step}/{total} " + " ".join(f"{k} {v:.3f}" for k, v in parts.items()), flush=True)

    trainer.run(a.stop_after, progress)


if __name__ == "__main__":
    main()
