"""QTSplus's own cost at 7B sizes (Qwen2-VL-7B: hidden 3584, 28 heads / 4 KV heads) against the prefill FLOPs it saves.
Prints a table and a JSON last line.

    python benchmarks/bench_qtsplus.py [--visual 16384,65536] [--question 40] [--rho 0.1] [--repeats 2]

Per video of M visual tokens and a question of L tokens: the scoring block (k/v projections of every video token,
L x M attention, the FFN on the question), the budget head, and 2 re-encoder blocks on the n = min(ceil(rho M),
n_max = 512) kept tokens; against the 28-layer prefill of the M - n tokens it removes (projections, MLP and attention
over the shorter sequence). Analytic matmul FLOPs, and the selector's measured time on this CPU (fresh modules at the
7B config, float32, median of ``--repeats``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_citr import CONFIG, layer_flops  # noqa: E402
from common import git_state, small_op_ms  # noqa: E402


def selector_flops(c: dict, m: int, q_len: int, n: int, reencode: int = 2) -> float:
    d, h, g = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    hd = d // h
    scoring = (2 * q_len * d * (h * hd) + 2 * m * d * 2 * g * hd + 4 * q_len * m * h * hd + 2 * q_len * h * hd * d
               + 2 * q_len * d * 4 * d * 2)
    block = 2 * n * d * (2 * h * hd + 2 * g * hd) + 4 * n * n * h * hd + 2 * n * d * 4 * d * 2
    return scoring + reencode * block


def prefill_flops(c: dict, tokens: int) -> float:
    return c["num_hidden_layers"] * layer_flops(c, tokens, 0)


def main(argv=None) -> None:
    from longvid.methods.tokens.qtsplus import QTSPlus, count_for

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--visual", default="16384,65536")
    p.add_argument("--question", type=int, default=40)
    p.add_argument("--rho", type=float, default=0.1)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args(argv)
    c = json.loads(CONFIG.read_text())["text_config"]
    d, h, g = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    base = dict(family="qwen2_vl", num_layers=c["num_hidden_layers"], hidden_size=d, num_attention_heads=h,
                num_key_value_heads=g, head_dim=d // h, fingerprint="-")
    torch.manual_seed(0)
    modules = QTSPlus(base).eval()
    params = sum(x.numel() for x in modules.parameters())
    noise, rows = small_op_ms(), []
    for m in (int(x) for x in a.visual.split(",")):
        n = count_for(a.rho, m, 512)
        sel = selector_flops(c, m, a.question, n)
        saved = prefill_flops(c, m + a.question) - prefill_flops(c, n + a.question)
        video, question = torch.randn(m, d), torch.randn(a.question, d)
        times = []
        with torch.inference_mode():
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                r = modules.relevance(video, question)
                modules.retention(r, question)
                modules.reencoded(video[r.topk(n).indices.sort().values])
                times.append(time.perf_counter() - t0)
        rows.append(dict(visual=m, kept=n, selector_gflop=sel / 1e9, saved_tflop=saved / 1e12, share=sel / saved,
                         cpu_s=statistics.median(times)))
    print(f"QTSplus modules at the Qwen2-VL-7B config: {params / 1e6:.0f} M parameters (1 scoring + 2 re-encoder blocks)")
    print("| visual tokens | kept (n_max 512) | selector GFLOP | prefill saved TFLOP | selector / saved | selector s (CPU) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['visual']} | {r['kept']} | {r['selector_gflop']:.0f} | {r['saved_tflop']:.1f} | "
              f"{100 * r['share']:.2f} % | {r['cpu_s']:.2f} |")
    print(json.dumps(dict(rows=rows, params=params, rho=a.rho, question=a.question, small_op_ms=noise,
                          torch=torch.__version__, **git_state())))


if __name__ == "__main__":
    main()
