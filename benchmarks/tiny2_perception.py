"""Can longvid-tiny 2's vision tower learn what an event is from the tokens it gets? The ViT and a linear probe alone
(no LLM), trained on suite v2 videos, per event layout.

    python benchmarks/tiny2_perception.py --layout free,cell --steps 1500

``cell``: suite v2 as it is (each event wholly inside one 28 px token cell of its region). ``free``: the same videos
with each event moved to a uniform position anywhere inside its region (a third of the frame), as v2 first drew them:
a shape then usually straddles token boundaries and each token sees a fragment. The probe is trained, as the recipe's
``visual`` loss, on every token's object colour and shape (coverage >= 25 %), with the event tokens' shape weighted
x2, plus each token's row and column. Reports the shape accuracy on event tokens over the last 250 steps (chance:
25 %, 4 shapes), also on tokens holding >= 60 % of their event, and row/column accuracy. One 24 s video per step,
one CPU thread. Prints a table and a JSON last line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from longvid.synth.render import cell_coverage, render_frames
from longvid.synth.seeds import train_seed
from longvid.synth.spec import REGIONS, make_video_spec
from longvid.synth.suite import sample_times
from longvid.train import tiny


def free_layout(spec, gen: np.random.Generator):
    """``spec`` with each event at a uniform position inside its region (the third of the frame it names)."""
    events = []
    for e in spec.events:
        place = REGIONS.index(e.quadrant)
        half = e.size / 2 + 0.02
        x = (place % 3) / 3 + gen.uniform(half, 1 / 3 - half)
        y = (place // 3) / 3 + gen.uniform(half, 1 / 3 - half)
        events.append(dataclasses.replace(e, x=float(x), y=float(y)))
    return dataclasses.replace(spec, events=tuple(events))


def run(layout: str, steps: int, seconds: float, seed: int) -> dict:
    torch.manual_seed(seed)
    tok = tiny.build_tokenizer()
    model = tiny.build_untrained_model(tok, seed)
    adapter = tiny.make_adapter(model, tok)
    vis = model.model.visual
    probe = torch.nn.Linear(model.config.text_config.hidden_size, 24)
    opt = torch.optim.AdamW(list(vis.parameters()) + list(probe.parameters()), lr=2e-3)
    gen = np.random.default_rng(seed)
    shape_hits, whole_hits, cell_hits = [], [], []
    t0 = time.perf_counter()
    for step in range(steps):
        spec = make_video_spec(train_seed(12345 + step), seconds=seconds, version=2)
        if layout == "free":
            spec = free_layout(spec, gen)
        times = sample_times(spec.seconds)
        inputs = adapter.preprocess(render_frames(spec, times), times)
        labels = tiny.token_labels(spec, times, inputs.grid_thw)
        t = inputs.grid_thw[0]
        cover = cell_coverage(spec, times, 5, 5)[:, : len(spec.events)]
        per_step = np.zeros((t,) + cover.shape[1:], np.float32)
        np.maximum.at(per_step, np.minimum(np.arange(len(times)) // 2, t - 1), cover)
        share = torch.from_numpy(per_step.max(1).reshape(-1))
        out = probe(vis(inputs.pixel_values, grid_thw=torch.tensor([inputs.grid_thw])).pooler_output)
        event = (labels[:, 0] > 0) & (labels[:, 0] <= 4)
        keep = labels[:, 0] >= 0
        cell = torch.arange(25).repeat(t)
        loss = (F.cross_entropy(out[keep, :7], labels[keep, 0]) + F.cross_entropy(out[keep, 7:14], labels[keep, 1])
                + F.cross_entropy(out[:, 14:19], cell // 5) + F.cross_entropy(out[:, 19:24], cell % 5))
        cell_hits.append(float(((out[:, 14:19].argmax(-1) == cell // 5) & (out[:, 19:24].argmax(-1) == cell % 5))
                               .float().mean()))
        if event.any():
            loss = loss + 2 * F.cross_entropy(out[event, 7:14], labels[event, 1])
            hit = (out[event, 7:14].argmax(-1) == labels[event, 1]).float()
            shape_hits.append(hit.tolist())
            whole_hits.append(hit[share[event] >= 0.6].tolist())
        opt.zero_grad()
        loss.backward()
        opt.step()
    def last(hits):  # the event tokens of the last 250 steps that had any
        flat = [h for step_hits in hits[-250:] for h in step_hits]
        return round(float(np.mean(flat)), 3) if flat else float("nan")

    return dict(layout=layout, steps=steps, shape=last(shape_hits), shape_whole=last(whole_hits),
                row_col=round(float(np.mean(cell_hits[-250:])), 3), seconds=round(time.perf_counter() - t0, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", default="free,cell", help="comma-separated: free, cell")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seconds", type=float, default=24.0)
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args()
    torch.set_num_threads(1)
    rows = [run(layout, a.steps, a.seconds, a.seed) for layout in a.layout.split(",")]
    print(f"{'layout':8} {'steps':>6} {'shape':>7} {'shape>=60%':>11} {'row+col':>8} {'seconds':>8}")
    for r in rows:
        print(f"{r['layout']:8} {r['steps']:>6} {r['shape']:>7.3f} {r['shape_whole']:>11.3f} {r['row_col']:>8.3f} "
              f"{r['seconds']:>8.1f}")
    print(json.dumps(dict(benchmark="tiny2_perception", chance_shape=0.25, rows=rows)))


if __name__ == "__main__":
    main()
