"""Do CITR's labels and heads find the evidence? On held-out synthetic videos, the probability that a visual token
showing an event (`longvid.synth.render.event_tokens`) scores above a background token (the AUC; 0.5 is chance),
for the labels from the answer's rows (the paper's) and from the prompt's rows after the video, and for retaining
heads (trained ones, and untrained ones of the same shape as the floor).

    python benchmarks/citr_event_ranking.py --heads runs/citr-answer,runs/citr-prompt --videos 12 --seconds 60

Mean over videos, layers and KV heads, with the standard error over videos, and per layer. One question per video
(the kinds in turn); labels need the question and its answer, heads do not. Prints a table and a JSON last line.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

import longvid
from longvid.methods.kv.citr import RetainingHeads
from longvid.synth import eval_seed, make_questions, make_video_spec
from longvid.synth.render import event_tokens
from longvid.train.citr import model_suite_of, spec_frames
from longvid.train.citr_labels import labels_and_inputs


def auc(scores: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """(layers,) P(score of an event token > score of a background token), mean over each layer's KV heads."""
    return np.array([np.mean([float((s[mask][:, None] > s[~mask][None, :]).float().mean()) for s in layer])
                     for layer in scores])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="longvid-tiny")
    parser.add_argument("--heads", default="", help="comma-separated folders of retaining heads")
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    lm = longvid.load(args.model)
    heads = {"untrained": RetainingHeads.for_model(lm.adapter, hidden=64, seed=0)}
    heads |= {folder: RetainingHeads.load(folder) for folder in args.heads.split(",") if folder}
    for h in heads.values():
        h.check_base(lm.adapter)
    rows = {"labels: answer rows": [], "labels: prompt rows": []} | {f"heads: {k}": [] for k in heads}
    shares = []
    for k in range(args.videos):
        spec = make_video_spec(eval_seed(10_000 + k), seconds=args.seconds, version=model_suite_of(lm))
        frames = spec_frames(spec, fps=1.0)
        questions = make_questions(spec)
        q = questions[k % len(questions)]
        mask = torch.as_tensor(event_tokens(spec, lm.encode(frames, longvid.get_method("full")).tokens))
        shares.append(float(mask.float().mean()))
        for which in ("answer", "prompt"):
            labels, inputs = labels_and_inputs(lm, frames, q.text, q.answer, rows=which)
            rows[f"labels: {which} rows"].append(auc(labels, mask))
        with torch.no_grad():
            for name, h in heads.items():
                rows[f"heads: {name}"].append(auc(torch.stack([h(i, *qkv)[0] for i, qkv in enumerate(inputs)]), mask))
    print(f"{args.videos} held-out videos of {args.seconds:g} s, {args.model}; event tokens are "
          f"{100 * np.mean(shares):.1f} % of the visual tokens\n")
    layers = len(lm.adapter.lm.layers)
    print("| scores | event-token AUC | " + " | ".join(f"layer {i}" for i in range(layers)) + " |")
    print("|---|---:|" + "---:|" * layers)
    out = {}
    for name, values in rows.items():
        per_video = np.stack(values)  # (videos, layers)
        means = per_video.mean(1)
        mean, se = float(means.mean()), float(means.std(ddof=1) / np.sqrt(len(means)))
        out[name] = dict(auc=round(mean, 3), se=round(se, 3), layers=[round(float(x), 3) for x in per_video.mean(0)])
        print(f"| {name} | {mean:.3f} +- {se:.3f} | " + " | ".join(f"{x:.2f}" for x in per_video.mean(0)) + " |")
    print(json.dumps(dict(benchmark="citr_event_ranking", model=args.model, videos=args.videos, seconds=args.seconds,
                          event_share=round(float(np.mean(shares)), 4), auc=out)))


if __name__ == "__main__":
    main()
