"""Training CITR's retaining heads on a frozen model: ``longvid train citr``.

Each step takes one (video, question, answer) example, runs the frozen model once over the teacher-forced sequence
(`longvid.train.citr_labels.labels_and_inputs`: the engine's own forward, at the engine's positions) to get both the
labels (the answer's largest pre-softmax attention logit onto each visual token, per layer and KV head) and what the
heads read (each visual token's pre-RoPE q, k, v, captured from the attention as the press captures them at
inference), and regresses the heads' scores on the labels: SmoothL1 (beta 1) over the visual tokens, averaged over
layers and KV heads (CITR's loss; Locret's smoothness term is off in CITR and here). Only the heads train.
``--labels prompt`` (not the paper's) takes the labels from the prompt's rows after the video instead of the
answer's: on a model that reads the evidence at the question (longvid-tiny 2) the answer's attention does not find it
(`longvid.train.citr_labels`). ``--loss kl`` (not the paper's) fits the labels' softmax over the visual tokens (the
attention they stand for) instead of the labels themselves: SmoothL1 averaged over every token is fitted by the
background, and the evidence can be under 1 % of the tokens (results/citr_tiny2.md).

The recipe's defaults are the paper's optimiser (AdamW, lr 5e-4, betas (0.9, 0.95), weight decay 0.01, linear
warm-up over the first eighth of the steps then linear decay to 0, gradient clipped by value at 0.5, batch 1);
steps and the heads' width scale with the model (the released heads: 8000 steps, width 1024, for a 7B model).
Data: the synthetic suite out of the box (training seeds; the held-out examples use evaluation seeds), or a JSONL of
``{"video": PATH, "question": TEXT, "answer": TEXT}`` lines for your own data, checked line by line before training
(its first ``--held-out`` lines are held out when it has more lines than that; otherwise every line serves both).
Seeded and resumable: ``checkpoint.pt`` in the output folder after every ``--checkpoint-every`` steps; the same
command continues from it. Held-out metrics every ``--eval-every`` steps: the loss and the top-10 % / top-25 % overlap
of predicted and true rankings per head. The output folder ends with the heads (`RetainingHeads.save`) and
``citr_card.json`` (recipe, data, base model, metrics, time).

    longvid train citr --model longvid-tiny --out heads/ --steps 1500 --hidden 64

Several processes: ``accelerate launch --num_processes N -m longvid train citr ...`` (`DataParallel`: each process
takes its own examples, gradients are averaged, so a step sees N examples); the tests run the single-process path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from longvid.errors import check_positive, option
from longvid.train.common import PartsTrainer


@dataclass
class CITRRecipe:
    steps: int = 2000
    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.01
    clip: float = 0.5
    hidden: int = 1024
    seed: int = 0
    lengths: tuple[float, float] = (30.0, 60.0)  # synthetic video lengths, seconds
    fps: float = 1.0
    held_out: int = 24
    eval_every: int = 250
    checkpoint_every: int = 100
    labels: str = "answer"  # the query rows of the labels: answer (the paper's) or prompt (`citr_labels`)
    loss: str = "smoothl1"  # smoothl1 (the paper's) or kl: the labels' softmax over the visual tokens as the target

    def __post_init__(self):
        from longvid.train.citr_labels import LABEL_ROWS

        if self.labels not in LABEL_ROWS:
            raise ValueError(f"{option('labels', self.labels)} is invalid: pass answer (the paper's labels: the "
                             "answer's attention) or prompt (the question's attention, after the video)")
        if self.loss not in ("smoothl1", "kl"):
            raise ValueError(f"{option('loss', self.loss)} is invalid: pass smoothl1 (the paper's) or kl (match the "
                             "labels' softmax over the visual tokens, which weights the tokens attended most)")
        for name in ("steps", "hidden", "held_out", "eval_every", "checkpoint_every"):
            check_positive(name, getattr(self, name), integer=True, allow_none=False)
        check_positive("lr", self.lr, allow_none=False)
        check_positive("fps", self.fps, allow_none=False)
        lo, hi = self.lengths
        if not 12 <= lo <= hi <= 3600:
            raise ValueError(f"{option('lengths', f'{lo:g},{hi:g}')} is invalid: pass MIN,MAX seconds within "
                             "12-3600, e.g. 30,60")

    def lr_at(self, step: int) -> float:
        warmup = max(1, self.steps // 8)
        if step < warmup:
            return self.lr * (step + 1) / warmup
        return self.lr * max(0.0, (self.steps - step) / max(1, self.steps - warmup))


@dataclass
class Example:
    frames: object
    question: str
    answer: str
    where: str  # for messages: a synthetic seed or a JSONL file:line


def synth_example(adapter_fps: float, i: int, split: str, seed: int, lengths, version: int = 1) -> Example:
    """The ``i``-th example of a seeded stream: a synthetic video of suite ``version`` (train or eval seeds) and one
    of its questions, answered with its letter (the answer the bundled model gives)."""
    from longvid.synth import eval_seed, make_questions, make_video_spec, train_seed

    gen = np.random.default_rng([seed, i, 0 if split == "train" else 1])
    video_seed = (train_seed if split == "train" else eval_seed)(int(gen.integers(1_000_000)))
    spec = make_video_spec(video_seed, seconds=float(gen.uniform(*lengths)), version=version)
    questions = make_questions(spec)
    q = questions[int(gen.integers(len(questions)))]
    return Example(spec_frames(spec, adapter_fps), q.text, q.answer, f"seed {video_seed}")


def spec_frames(spec, fps: float):
    """A synthetic video's frames sampled at ``fps``, rendered from its spec (no mp4 in between), as `LongVid.read`
    would give them."""
    from longvid.synth.render import render_frames
    from longvid.synth.suite import sample_times
    from longvid.video.decode import Frames, VideoInfo

    times = sample_times(spec.seconds, fps=fps)
    frames = render_frames(spec, times)
    info = VideoInfo(spec.video_id, spec.seconds, 4.0, int(spec.seconds * 4), frames.shape[2], frames.shape[1],
                     "h264", 0.0, None)
    return Frames(frames, times, np.arange(len(times)), info)


def model_suite_of(lm) -> int:
    """The synthetic suite version ``lm``'s checkpoint was trained on (its card's ``suite``; 1 if it does not say):
    the learned parts of a model train on the videos it knows."""
    from longvid.eval.synth import model_suite

    return model_suite(Path(lm.adapter.model.name_or_path or "."))


def read_jsonl(path: str | Path) -> list[dict]:
    """Rows of a user's data file, every line checked first: one-line ValueError naming file:line."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise ValueError(f"{option('data', str(path))} cannot be read: {err.strerror or err}") from None
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{n}: not JSON ({err.msg}); each line is {{\"video\": ..., \"question\": ..., "
                             "\"answer\": ...}") from None
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) and row[k].strip()
                                                for k in ("video", "question", "answer")):
            raise ValueError(f"{path}:{n}: needs non-empty string fields video, question and answer")
        video = Path(row["video"]) if Path(row["video"]).is_absolute() else path.parent / row["video"]
        if not video.is_file():
            raise ValueError(f"{path}:{n}: video {row['video']!r} does not exist (relative paths resolve against "
                             f"{path.parent})")
        rows.append(dict(row, video=str(video), line=n))
    if not rows:
        raise ValueError(f"{path} holds no examples")
    return rows


def training_rows(lm, data: str) -> list[dict] | None:
    """None for the synthetic suite, else the checked rows of a JSONL file (`read_jsonl`), each answer refused in one
    line if the tokenizer cannot place it: before any training."""
    if data == "synth":
        return None
    rows = read_jsonl(data)
    for row in rows:
        if not lm.adapter.tokenizer(row["answer"], add_special_tokens=False)["input_ids"]:
            raise ValueError(f"{data}:{row['line']}: the answer {row['answer']!r} has no tokens")
    return rows


def training_example(lm, rows: list[dict] | None, data: str, recipe, i: int, split: str = "train") -> Example:
    """The ``i``-th example of a seeded stream (``recipe``: ``seed``, ``fps``, ``lengths``, ``held_out``): synthetic
    (train or eval seeds), or a row of the user's data, whose first ``held_out`` lines are held out when there are
    more lines than that."""
    if rows is None:
        return synth_example(recipe.fps, i, split, recipe.seed, recipe.lengths, model_suite_of(lm))
    from longvid.video.options import SamplingOptions

    if split == "train":
        start = recipe.held_out if len(rows) > recipe.held_out else 0
        gen = np.random.default_rng([recipe.seed, i])
        row = rows[start + int(gen.integers(len(rows) - start))]
    else:
        row = rows[i % len(rows)]
    return Example(lm.read(row["video"], SamplingOptions(recipe.fps)), row["question"], row["answer"],
                   f"{data}:{row['line']}")


class Trainer(PartsTrainer):
    """Seeded, resumable training of `RetainingHeads` for ``lm`` (a `LongVid`)."""

    kind, card_name, parts_key = "CITR", "citr_card.json", "heads"

    def __init__(self, lm, out: str | Path, recipe: CITRRecipe, data: str = "synth", log=print, progress=None):
        from longvid.methods.kv.citr import RetainingHeads

        super().__init__(lm, out, recipe, data, log, progress)
        self.heads = self.parts = RetainingHeads.for_model(lm.adapter, hidden=recipe.hidden, seed=recipe.seed).to(
            lm.adapter.device)
        self.optimizer = torch.optim.AdamW(self.heads.parameters(), lr=recipe.lr, betas=recipe.betas,
                                           weight_decay=recipe.weight_decay)

    def captured(self, ex: Example):
        from longvid.train.citr_labels import labels_and_inputs

        labels, inputs = labels_and_inputs(self.lm, ex.frames, ex.question, ex.answer, rows=self.recipe.labels)
        return labels.clone(), [tuple(t.clone() for t in qkv) for qkv in inputs]  # plain tensors, for autograd

    # ----- steps ---------------------------------------------------------------------------------------------
    def loss(self, labels: torch.Tensor, inputs: list) -> torch.Tensor:
        pred = torch.stack([self.heads(layer, *qkv)[0] for layer, qkv in enumerate(inputs)])  # (L, H_kv, n)
        labels = labels.to(pred.device)
        if self.recipe.loss == "kl":  # KL(softmax(labels) || softmax(pred)) per layer and KV head, averaged
            target = labels.log_softmax(-1)
            return (target.exp() * (target - pred.log_softmax(-1))).sum(-1).mean(), pred
        return F.smooth_l1_loss(pred, labels, beta=1.0), pred

    def train_step(self) -> dict:
        labels, inputs = self.captured(self.example(self.dp.index(self.step)))
        for group in self.optimizer.param_groups:
            group["lr"] = self.recipe.lr_at(self.step)
        loss, _ = self.loss(labels, inputs)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.dp.average(self.heads.parameters())
        torch.nn.utils.clip_grad_value_(self.heads.parameters(), self.recipe.clip)
        self.optimizer.step()
        self.step += 1
        return dict(loss=float(loss.detach()))

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Held-out loss and the top-10 % / top-25 % overlap of predicted and true rankings, per head, averaged."""
        losses, overlaps = [], {0.1: [], 0.25: []}
        for labels, inputs in self.held_out(self.captured):
            loss, pred = self.loss(labels, inputs)
            losses.append(float(loss))
            n = labels.shape[-1]
            for share in overlaps:
                k = max(1, int(share * n))
                a, b = pred.topk(k, dim=-1).indices, labels.topk(k, dim=-1).indices
                hits = (a[..., :, None] == b[..., None, :]).any(-1).float().mean()
                overlaps[share].append(float(hits))
        return dict(step=self.step, loss=float(np.mean(losses)), top10=float(np.mean(overlaps[0.1])),
                    top25=float(np.mean(overlaps[0.25])))

    def report(self, recent: list[dict], last: dict | None) -> tuple[str, str | None]:
        info = f"loss {np.mean([x['loss'] for x in recent]):.3f}"
        if last is None:
            return info, None
        return (f"{info}, held-out top-10% {100 * last['top10']:.0f}% top-25% {100 * last['top25']:.0f}%",
                f"step {last['step']}: train loss {last.get('train_loss', float('nan')):.4f}, held-out loss "
                f"{last['loss']:.4f}, top-10% overlap {100 * last['top10']:.1f}%, top-25% {100 * last['top25']:.1f}%")

    def card(self) -> dict:
        if self.recipe.loss == "kl":
            return dict(losses="KL(softmax(labels) || softmax(scores)) over the visual tokens, mean over layers and KV "
                               "heads (not the paper's loss); no other loss")
        return dict(losses="SmoothL1(beta=1) of the heads' scores vs the labels over visual tokens, mean over layers "
                           "and KV heads; no other loss")
