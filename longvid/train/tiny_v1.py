"""Train longvid-tiny v1: a Qwen2-VL (transformers' own class) trained from scratch on suite v1.

Kept as it was so v1 stays reproducible (it moved here from ``longvid/synth/train.py``, which still runs it): its
packed forward is its own and it trains with an attention-guidance loss; longvid-tiny 2 (`longvid.train.tiny`) has
neither and trains through the engine's forward. Reproducible from a seed on a CPU. What ships in ``longvid/assets/longvid-tiny`` was made by four runs, each
continuing from the one before (``--init-from``; a new ``--seed`` draws new training videos), 19 500 steps in all::

    python -m longvid.train.tiny_v1 --out runs/1 --seed 0 --steps 6000 --event-weight 0
    python -m longvid.train.tiny_v1 --out runs/2 --init-from runs/1 --seed 1 --steps 3000 --stop-after 1500 \
        --lr 1e-3 --event-weight 0
    python -m longvid.train.tiny_v1 --out runs/3 --init-from runs/2 --seed 2 --steps 10000 --stop-after 3000 \
        --lr 1e-3 --event-weight 0 --kinds color,shape,shape,where,when,count,order
    python -m longvid.train.tiny_v1 --out runs/4 --init-from runs/3 --seed 3 --steps 9000 \
        --lr 1e-3 --kinds color,shape,shape,where,when,count,order

Its ``longvid.json`` holds each run's card (command, seeds, validation history) nested under ``init_from``. Runs 1-3
predate the event-token loss (``--event-weight 0`` leaves the losses as they were); runs 2-4 were made with the code
of commits 167f574, 9dfe803 and 0569819, before the auxiliary probe was seeded when continuing, so at this code they
differ in that probe's random init (the probe is not part of the model). Training is bit-reproducible at a fixed
commit. Runs 3-4 ask the shape question twice per video (twice its weight) and run 4 adds the event-token loss,
because shape was the kind the model learnt last: 51 % after run 1, 97 % after run 4 (held-out mp4 questions).

Every training example goes through the same code as inference, so the model learns exactly what the pipeline
shows it: frames are rendered in memory at the timestamps that ``read_video`` would decode from the suite's mp4
(``plan_indices`` at `SAMPLE_FPS` over a `FILE_FPS` file), resized, normalised and patchified by the adapter,
placed with the adapter's M-RoPE layout (text after the video at ``max + 1``) in the model's real chat template.
The loss is cross-entropy on the answer letter and the ``<|im_end|>`` after it.

Design choices (docs/architecture.md has the why):

- 56 x 56 pixels per frame: 4 x 4 patches, merged 2 x 2, so each of the 4 visual tokens of a temporal step is
  exactly one quadrant of the frame (a shape never leaves its quadrant). 4 tokens per 2 frames.
- A byte-level BPE tokenizer over the suite's closed set of lines (`build_synth_tokenizer`, deterministic): each
  question stem and each option line is one token; the special tokens and the chat template are Qwen2-VL's.
- ``mrope_section = [8, 4, 4]``: half of the rotary frequencies for time (the tiny grid needs few spatial ones),
  so temporal positions stay distinguishable over hundreds of steps.
- Training seeds come from `TRAIN_SEEDS`; a validation slice of it (`VALIDATION_OFFSET`) is never trained on; the
  evaluation seeds (`EVAL_SEEDS`) are never touched here.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from longvid.synth.questions import KINDS, LETTERS, make_questions
from longvid.synth.render import render_frames
from longvid.synth.seeds import train_seed
from longvid.synth.spec import COLORS, QUADRANTS, QUARTERS, SECONDS_RANGE, SHAPES, make_video_spec
from longvid.synth.suite import FILE_FPS, SAMPLE_FPS, sample_times
from longvid.tiny import EOS_ID, tiny_config
from longvid.train.common import code_version as _code_version
from longvid.train.tokenizer import build_synth_tokenizer, line_id, train_bpe, vocab_size

__all__ = ["MODEL_CONFIG", "PIXELS", "SAMPLE_FPS", "FILE_FPS", "train_bpe", "build_synth_tokenizer",
           "build_untrained_model", "sample_times", "Example", "make_examples", "answer_loss", "train", "main"]

MODEL_CONFIG = dict(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=384,
                    vision_depth=2, vision_embed_dim=64, mrope_section=[8, 4, 4])
PIXELS = 56 * 56
VALIDATION_OFFSET = 900_000_000
"""Training-split seeds from here on are held out for validation during training (never trained on)."""


# the tokenizer: longvid.train.tokenizer

def build_untrained_model(tokenizer, seed: int = 0):
    """The longvid-tiny architecture with fresh weights (float32), vocab sized to ``tokenizer``."""
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(tiny_config("qwen2_vl", vocab_size=vocab_size(tokenizer),
                                                                **MODEL_CONFIG),
                                                    dtype=torch.float32)
    model.generation_config.eos_token_id = EOS_ID
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def make_adapter(model, tokenizer):
    from longvid.models.qwen2_vl import Qwen2VLAdapter

    return Qwen2VLAdapter(model, tokenizer, min_pixels=PIXELS, max_pixels=PIXELS)


# ----- examples ---------------------------------------------------------------------------------------------------
class Example:
    """One video's model inputs and its questions: pixels, M-RoPE layout, and per question ids and targets."""

    def __init__(self, adapter, spec, questions, blank: bool = False):
        times = sample_times(spec.seconds)
        frames = render_frames(spec, times, blank=blank)
        inputs = adapter.preprocess(frames, times)
        prefix, template = adapter.prompt_parts()
        self.pixel_values, self.grid_thw = inputs.pixel_values, inputs.grid_thw
        self.visual_positions = adapter.visual_positions(len(prefix), inputs.grid_thw, inputs.seconds_per_step)
        self.prefix = prefix
        self.kinds = [q.kind for q in questions]
        letter_ids = [adapter.tokenizer.convert_tokens_to_ids(letter) for letter in LETTERS]
        self.tails = [adapter.tail_ids(template, q.text) + [letter_ids[q.answer_index], EOS_ID] for q in questions]
        tok = adapter.tokenizer
        self.option_ends = [[tail.index(line_id(tok, f"{letter}. {value}")) for letter, value in zip(LETTERS, q.options)]
                            for q, tail in zip(questions, self.tails)]
        self.correct = [q.answer_index for q in questions]
        self.final_values = [value_targets(q.kind, q.answer_text) for q in questions]
        # the question's stem (one token) names the event for four kinds: the first look-up
        self.named_color = [_named_color(q) for q in questions]
        self.name_at = [tail.index(line_id(tok, q.question)) if q.kind in ("color", "shape", "where", "when") else None
                        for q, tail in zip(questions, self.tails)]
        self.option_values = [[value_targets(q.kind, option) for option in q.options] for q in questions]
        self.labels = token_labels(spec, times, inputs.grid_thw, blank)

    @property
    def num_visual(self) -> int:
        return self.visual_positions.shape[1]


def _named_color(q) -> int | None:
    """Colour class (1-4) of the event a question names, or None (count, order name no event)."""
    if q.kind == "color":
        color = q.answer_text
    elif q.kind == "shape":
        color = q.question.rstrip("?").split()[-1]
    elif q.kind in ("where", "when"):
        color = q.question.split(" the ")[-1].split()[0]
    else:
        return None
    return list(COLORS).index(color) + 1


PROBE_HEADS = {"color": (0, 5), "shape": (5, 10), "quadrant": (10, 14), "quarter": (14, 18), "count": (18, 22),
               "is_answer": (22, 23), "letter": (23, 27)}
"""Slices of the auxiliary probe's 27 outputs (colour and shape have a class 0 = none, for visual tokens)."""


def value_targets(kind: str, value: str) -> list[tuple[str, int]]:
    """(probe head, class) pairs naming an answer value: "red" -> colour 1; "red circle" -> colour 1, shape 1."""
    if kind == "color":
        return [("color", list(COLORS).index(value) + 1)]
    if kind == "shape":
        return [("shape", SHAPES.index(value) + 1)]
    if kind == "where":
        return [("quadrant", QUADRANTS.index(value))]
    if kind == "when":
        return [("quarter", QUARTERS.index(value.split()[0]))]
    if kind == "count":
        return [("count", int(value) - 1)]
    color, shape = value.split()
    return [("color", list(COLORS).index(color) + 1), ("shape", SHAPES.index(shape) + 1)]


def _probe_loss(out: torch.Tensor, targets: list[list[tuple[str, int]]]) -> torch.Tensor:
    """Mean over heads of the cross-entropy of ``out`` (M, 27) rows against their (head, class) targets."""
    by_head = {}
    for row, pairs in enumerate(targets):
        for head, cls in pairs:
            by_head.setdefault(head, ([], []))
            by_head[head][0].append(row)
            by_head[head][1].append(cls)
    losses = [F.cross_entropy(out[rows, slice(*PROBE_HEADS[head])], torch.tensor(classes))
              for head, (rows, classes) in by_head.items()]
    return torch.stack(losses).mean()


def token_labels(spec, times, grid_thw, blank: bool = False) -> torch.Tensor:
    """(N, 3) long: per visual token, the colour and the shape (1-4; 0 = none) of the event it shows, and its quadrant.

    A token is one quadrant of one temporal step (56 x 56 frames, see the module docstring); it shows an event when
    either frame of the step does, in the event's quadrant. Used only by the auxiliary training loss.
    """
    steps, gh, gw = grid_thw
    if (gh // 2, gw // 2) != (2, 2):
        raise ValueError(f"token labels assume a 2 x 2 merged grid (56 x 56 frames), got {gh // 2} x {gw // 2}")
    labels = torch.zeros(steps, 4, 3, dtype=torch.long)
    labels[:, :, 2] = torch.arange(4)  # every token's quadrant (its place in the 2 x 2 grid)
    if blank:
        return labels.reshape(-1, 3)
    times = np.asarray(times, dtype=np.float64)
    frame_steps = np.minimum(np.arange(len(times)) // 2, steps - 1)
    for event in spec.events:
        shown = np.unique(frame_steps[(times >= event.start) & (times < event.end)])
        quadrant = QUADRANTS.index(event.quadrant)
        labels[shown, quadrant, 0] = list(COLORS).index(event.color) + 1
        labels[shown, quadrant, 1] = SHAPES.index(event.shape) + 1
    return labels.reshape(-1, 3)


def make_examples(adapter, seeds, lengths, blank: bool = False, kinds=KINDS) -> list[Example]:
    return [Example(adapter, spec, make_questions(spec, kinds=kinds), blank)
            for spec in (make_video_spec(s, seconds=float(n)) for s, n in zip(seeds, lengths))]


def answer_logits(model, adapter, examples: list[Example], with_visual: bool = False):
    """Logits (Q, 2, vocab) at the two answer positions (letter, then <|im_end|>) and their targets (Q, 2).

    One packed sequence per video: prefix, video, then every question's tail, each tail seeing the prefix, the
    video and itself only, at the positions it would have alone (all tails start at ``max(video) + 1``). This is
    the same computation as one sequence per question, with the video's tokens processed once.
    """
    visual = model.model.visual
    pixel_values = torch.cat([ex.pixel_values for ex in examples])
    grid = torch.tensor([ex.grid_thw for ex in examples])
    embeds = visual(pixel_values, grid_thw=grid).pooler_output.split([ex.num_visual for ex in examples])
    lm = adapter.lm
    seqs, positions, owners, answer_at, targets, option_at, text_at, name_at = [], [], [], [], [], [], [], []
    attend = []  # (layer, row, query position, key positions) for the attention-guidance loss
    for ex, video in zip(examples, embeds):
        shared = len(ex.prefix) + ex.num_visual
        start = ex.visual_positions.max() + 1
        parts = [lm.embed_tokens(torch.tensor(ex.prefix)), video]
        pos = [torch.arange(len(ex.prefix)).expand(3, -1), ex.visual_positions]
        owner = [torch.zeros(shared, dtype=torch.long)]  # 0: shared by all questions; i + 1: question i's tail
        offset = shared
        for i, (tail, ends) in enumerate(zip(ex.tails, ex.option_ends)):
            option_at.extend((len(seqs), offset + e) for e in ends)
            if ex.name_at[i] is not None:
                name_at.append((len(seqs), offset + ex.name_at[i]))
                event = torch.nonzero(ex.labels[:, 0] == ex.named_color[i]).squeeze(1) + len(ex.prefix)
                if len(event):  # layer 0, head 0: the stem looks at the named event's tokens
                    attend.append((0, len(seqs), offset + ex.name_at[i], event))
            # layer 2, head 0: the answer position looks at the correct option's token
            attend.append((2, len(seqs), offset + len(tail) - 3, torch.tensor([offset + ends[ex.correct[i]]])))
            text_at.extend((len(seqs), offset + j, tail[j + 1]) for j in range(len(tail) - 3))
            parts.append(lm.embed_tokens(torch.tensor(tail)))
            pos.append((start + torch.arange(len(tail))).expand(3, -1))
            owner.append(torch.full((len(tail),), i + 1))
            offset += len(tail)
            answer_at.append((len(seqs), offset - 3))  # the position predicting the letter (then <|im_end|>)
            targets.append(tail[-2:])
        seqs.append(torch.cat(parts))
        positions.append(torch.cat(pos, dim=1))
        owners.append(torch.cat(owner))
    length = max(len(s) for s in seqs)
    hidden = torch.stack([F.pad(s, (0, 0, 0, length - len(s))) for s in seqs])
    pos = torch.stack([F.pad(p, (0, length - p.shape[1])) for p in positions], dim=1)  # (3, B, L)
    owner = torch.stack([F.pad(o, (0, length - len(o)), value=-1) for o in owners])  # -1: padding
    same = (owner[:, :, None] == owner[:, None, :]) | (owner[:, None, :] == 0)  # own tail, or the shared part
    mask = same & (owner[:, None, :] >= 0) & torch.ones(length, length, dtype=torch.bool).tril()
    cos_sin = lm.rotary_emb(hidden, pos)
    layer_inputs = []
    for layer in lm.layers:
        layer_inputs.append(hidden)
        hidden = layer(hidden, attention_mask=mask[:, None], position_embeddings=cos_sin)
    rows, at = torch.tensor(answer_at).T
    at = at[:, None] + torch.tensor([0, 1])[None, :]
    out = lm.norm(hidden[rows[:, None], at])
    if with_visual:
        rows, at = torch.tensor(option_at).T
        text_rows, text_pos, text_targets = torch.tensor(text_at).T
        text_logits = lm.logits(lm.norm(hidden[text_rows, text_pos]))
        guide = _attention_guidance(lm, layer_inputs, cos_sin, mask, attend)
        return (lm.logits(out), torch.tensor(targets), torch.cat(embeds), lm.norm(hidden[rows, at]),
                F.cross_entropy(text_logits, text_targets), out[:, 0], lm.norm(hidden[tuple(torch.tensor(name_at).T)]),
                guide)
    return lm.logits(out), torch.tensor(targets)


def _attention_guidance(lm, layer_inputs, cos_sin, mask, attend) -> torch.Tensor:
    """Mean of ``-log(attention mass on the target keys)`` of head 0 of the given layer, over ``attend`` items."""
    losses = []
    for index in sorted({a[0] for a in attend}):
        layer = lm.layers[index]
        q, k = lm.attention.qk(layer, layer_inputs[index], cos_sin)
        scores = (q[:, 0] @ k[:, 0].transpose(-1, -2)) * layer.self_attn.scaling  # (B, L, L), head 0
        logp = scores.masked_fill(~mask, float("-inf")).log_softmax(-1)
        for _, row, at, keys in (a for a in attend if a[0] == index):
            losses.append(-torch.logsumexp(logp[row, at, keys], 0))
    return torch.stack(losses).mean()


def answer_loss(model, adapter, examples: list[Example], probe: torch.nn.Module | None = None,
                aux_weight: float = 1.0, event_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy on the answer tokens, plus (with ``probe``) auxiliary losses that break the task into steps.

    One linear ``probe`` (hidden -> 27, `PROBE_HEADS`) reads, in shared directions:

    - each visual token: the colour and shape it shows (0 = none), a dense signal for the vision encoder, and the
      same on the event tokens alone (so the rare event tokens' shapes weigh as much as all the background);
    - the last token of each option line: its value (e.g. quadrant 2), its letter, and whether it is the answer;
    - the position that predicts the letter: the answer's value, in the same heads as the options.

    The single answer letter alone is a weak signal for a model trained from scratch (a 4-way choice behind two
    look-ups: find the event the question names, then the option with its value); trained on the letter alone
    the model stayed at chance for 800 steps, as did a text-only control. The probe is not part of the saved
    model. Also a next-token loss (weight 0.5) on the question's own tokens: naming "the square" after the video
    teaches which shapes it showed.

    With one token per line (`build_synth_tokenizer`), "the token naming the event" is the question's stem.
    """
    logits, targets, visual, options, text_loss, final, names, guide = answer_logits(model, adapter, examples,
                                                                                      with_visual=True)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    if probe is None:
        return loss, {}
    parts_text = text_loss.detach()
    loss = loss + 0.5 * text_loss
    labels = torch.cat([ex.labels for ex in examples])
    out = probe(visual)
    parts = {"visual": F.cross_entropy(out[:, :5], labels[:, 0]) + F.cross_entropy(out[:, 5:10], labels[:, 1])
             + F.cross_entropy(out[:, 10:14], labels[:, 2])}
    # the same heads on the event tokens alone: in the mean above they are ~5 % of the tokens, and the shape of a
    # 10-15 px shape (circle vs square) was what the vision encoder had not learnt (61 % from a linear read-out)
    event = labels[:, 0] > 0
    if event_weight and event.any():
        parts["event"] = event_weight * (F.cross_entropy(out[event, 0:5], labels[event, 0])
                                         + F.cross_entropy(out[event, 5:10], labels[event, 1]))
    option_out = probe(options)  # (Q * 4, 27), options of each question in order A-D
    is_answer = torch.tensor([float(i == c) for ex in examples for c in ex.correct for i in range(4)])
    parts["options"] = (F.binary_cross_entropy_with_logits(option_out[:, 22], is_answer)
                        + F.cross_entropy(option_out[:, 23:27], torch.arange(len(option_out)) % 4)
                        + _probe_loss(option_out, [v for ex in examples for q in ex.option_values for v in q]))
    parts["final"] = _probe_loss(probe(final), [v for ex in examples for v in ex.final_values])
    named = [v for ex in examples for v, at in zip(ex.final_values, ex.name_at) if at is not None]
    parts["name"] = _probe_loss(probe(names), named)
    parts["attention"] = guide
    aux = sum(parts.values())
    parts["text"] = parts_text
    return loss + aux_weight * aux, {k: round(float(v.detach()), 3) for k, v in parts.items()}


@torch.no_grad()
def accuracy_by_kind(model, adapter, examples: list[Example], batch: int = 16) -> dict[str, float]:
    """Greedy accuracy of the first answer token, per kind and ``"all"``."""
    hits = {kind: [] for kind in KINDS}
    for i in range(0, len(examples), batch):
        part = examples[i : i + batch]
        logits, targets = answer_logits(model, adapter, part)
        correct = (logits[:, 0].argmax(-1) == targets[:, 0]).tolist()
        for kind, ok in zip((k for ex in part for k in ex.kinds), correct):
            hits[kind].append(ok)
    out = {kind: float(np.mean(v)) for kind, v in hits.items() if v}
    out["all"] = float(np.mean([x for v in hits.values() for x in v]))
    return out


# ----- training ---------------------------------------------------------------------------------------------------
def _lengths(gen: np.random.Generator, n: int, lengths: tuple[float, float]) -> np.ndarray:
    return np.round(gen.uniform(*lengths, size=n))


def save(model, tokenizer, out: Path, card: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    from longvid.models.qwen2_vl import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    pre = dict(min_pixels=PIXELS, max_pixels=PIXELS, image_mean=list(OPENAI_CLIP_MEAN),
               image_std=list(OPENAI_CLIP_STD), patch_size=14, merge_size=2, temporal_patch_size=2)
    (out / "video_preprocessor_config.json").write_text(json.dumps(pre, indent=1) + "\n")
    (out / "longvid.json").write_text(json.dumps(card, indent=1) + "\n")


def _check_args(steps, videos_per_step, lengths, lr, aux_weight, event_weight, kinds) -> None:
    for name, value in (("steps", steps), ("videos_per_step", videos_per_step)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} is invalid: it must be a positive int. Pass e.g. {name}=8.")
    if not SECONDS_RANGE[0] <= lengths[0] <= lengths[1] <= SECONDS_RANGE[1]:
        raise ValueError(f"lengths={tuple(lengths)!r} must be (min, max) seconds with {SECONDS_RANGE[0]:g} <= min <= "
                         f"max <= {SECONDS_RANGE[1]:g}, the suite's range. Pass e.g. (30, 60).")
    for name, value in (("lr", lr), ("aux_weight", aux_weight), ("event_weight", event_weight)):
        if not (math.isfinite(value) and value >= (1e-12 if name == "lr" else 0)):
            raise ValueError(f"{name}={value!r} is invalid: it must be a finite number, "
                             f"{'> 0' if name == 'lr' else '>= 0 (0 turns it off)'}.")
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown or not kinds or isinstance(kinds, str):
        raise ValueError(f"kinds={kinds!r} has unsupported kinds {unknown!r}: pass a list drawn from {list(KINDS)} "
                         "(a kind may repeat, to weigh it more).")


def train(out: str | Path, *, seed: int = 0, steps: int = 6000, videos_per_step: int = 8,
          lengths: tuple[float, float] = (30.0, 60.0), lr: float = 2e-3, warmup: int = 100,
          validate_every: int = 250, n_validation: int = 48, aux_weight: float = 1.0, event_weight: float = 1.0,
          kinds=KINDS, stop_after: int | None = None, snapshots: bool = False, init_from: str | Path | None = None,
          threads: int | None = None, log=print) -> dict:
    """Train from scratch and save a loadable checkpoint to ``out``; returns the training card (also saved).

    ``steps`` sets the learning-rate schedule; ``stop_after`` ends the run early at that step (the schedule is
    unchanged, so a run stopped at step k equals the first k steps of the full one). ``snapshots`` saves a
    checkpoint at every validation to ``<out>-snapshots/step<k>``, each with the command that reproduces it.
    ``init_from`` continues from a checkpoint's weights (e.g. the bundled model) instead of a fresh init; the card
    then records that checkpoint's own card, so the chain of commands reproduces the result.
    """
    _check_args(steps, videos_per_step, lengths, lr, aux_weight, event_weight, kinds)
    if threads:
        torch.set_num_threads(threads)
    out = Path(out)
    tokenizer = build_synth_tokenizer()
    parent = None
    if init_from is None:
        model = build_untrained_model(tokenizer, seed)
    else:
        from transformers import AutoModelForImageTextToText

        model = AutoModelForImageTextToText.from_pretrained(init_from, dtype=torch.float32)
        if model.config.text_config.vocab_size != vocab_size(tokenizer):
            raise ValueError(f"{init_from} has vocab size {model.config.text_config.vocab_size}, not longvid-tiny's; "
                             "pass a checkpoint written by this script")
        card_path = Path(init_from) / "longvid.json"
        parent = json.loads(card_path.read_text()) if card_path.is_file() else str(init_from)
    model.train()
    adapter = make_adapter(model, tokenizer)
    gen = np.random.default_rng([seed, 1])
    val_seeds = [train_seed(VALIDATION_OFFSET + i) for i in range(n_validation)]
    validation = make_examples(adapter, val_seeds, _lengths(np.random.default_rng([seed, 2]), n_validation, lengths),
                               kinds=kinds)
    if init_from is not None:  # from scratch, the model's init seeded torch (and the probe follows from it)
        torch.manual_seed(seed)
    probe = torch.nn.Linear(model.config.text_config.hidden_size, 27)
    params = list(model.parameters()) + (list(probe.parameters()) if aux_weight else [])
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * (
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))))
    history, t0, first = [], time.perf_counter(), seed * 10_000_000
    step_lengths = [_lengths(gen, videos_per_step, lengths) for _ in range(steps)]

    def batch(step: int) -> list[Example]:
        seeds = [train_seed(first + step * videos_per_step + i) for i in range(videos_per_step)]
        return make_examples(adapter, seeds, step_lengths[step], kinds=kinds)

    # examples depend only on the step index, so rendering the next batch in a thread keeps runs reproducible
    pool = ThreadPoolExecutor(1)
    upcoming = pool.submit(batch, 0)
    last = min(steps, stop_after or steps)

    def card(step: int) -> dict:
        return dict(name="longvid-tiny", seed=seed, steps=steps, stopped_after=step, videos_per_step=videos_per_step,
                    lengths=list(lengths), lr=lr, warmup=warmup, aux_weight=aux_weight, event_weight=event_weight,
                    kinds=list(kinds), sample_fps=SAMPLE_FPS, file_fps=FILE_FPS, pixels=PIXELS, config=MODEL_CONFIG,
                    train_seeds=[train_seed(first), train_seed(first + step * videos_per_step - 1)],
                    validation_seeds=[val_seeds[0], val_seeds[-1]], history=history,
                    train_seconds=round(time.perf_counter() - t0, 1), torch=torch.__version__, code=_code_version(),
                    init_from=parent,
                    command=f"python -m longvid.train.tiny_v1 --out {out} --seed {seed} --steps {steps} "
                            f"--stop-after {step} --videos-per-step {videos_per_step} --min-seconds {lengths[0]:g} "
                            f"--max-seconds {lengths[1]:g} --lr {lr:g} --aux-weight {aux_weight:g} "
                            f"--event-weight {event_weight:g} "
                            f"--kinds {','.join(kinds)}" + (f" --init-from {init_from}" if init_from else ""))

    for step in range(last):
        examples = upcoming.result()
        if step + 1 < last:
            upcoming = pool.submit(batch, step + 1)
        loss, aux = answer_loss(model, adapter, examples, probe if aux_weight else None, aux_weight, event_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        schedule.step()
        if (step + 1) % validate_every == 0 or step + 1 == steps:
            model.eval()
            acc = accuracy_by_kind(model, adapter, validation)
            model.train()
            history.append(dict(step=step + 1, loss=round(float(loss.detach()), 4), aux=aux,
                                seconds=round(time.perf_counter() - t0, 1), **acc))
            log(json.dumps(history[-1]))
            if snapshots:
                save(model, tokenizer, Path(f"{out}-snapshots") / f"step{step + 1}", card(step + 1))
    pool.shutdown()
    final = card(last)
    save(model.eval(), tokenizer, out, final)
    return final


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--videos-per-step", type=int, default=8)
    p.add_argument("--min-seconds", type=float, default=30.0)
    p.add_argument("--max-seconds", type=float, default=60.0)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--validate-every", type=int, default=250)
    p.add_argument("--aux-weight", type=float, default=1.0, help="weight of the auxiliary losses (0: answer only)")
    p.add_argument("--event-weight", type=float, default=1.0, help="weight of the colour and shape loss on the "
                   "event tokens alone, within the auxiliary losses (0: off, as in the first runs of longvid-tiny)")
    p.add_argument("--kinds", default=",".join(KINDS), help="comma-separated question kinds to train on; a kind "
                   "listed twice is asked twice per video (twice the weight)")
    p.add_argument("--stop-after", type=int, default=None, help="end at this step (the schedule follows --steps)")
    p.add_argument("--snapshots", action="store_true", help="save a checkpoint at every validation")
    p.add_argument("--init-from", default=None, help="continue from this checkpoint's weights (pass another --seed "
                   "to draw new training videos)")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    train(a.out, seed=a.seed, steps=a.steps, videos_per_step=a.videos_per_step, lengths=(a.min_seconds, a.max_seconds),
          lr=a.lr, validate_every=a.validate_every, aux_weight=a.aux_weight, event_weight=a.event_weight,
          kinds=a.kinds.split(","), stop_after=a.stop_after, snapshots=a.snapshots,
          init_from=a.init_from, threads=a.threads)


if __name__ == "__main__":
    main()
