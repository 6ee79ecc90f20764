"""CITR's costs: its heads next to the prefill at 7B sizes, exact KV bytes under the budget, and a session's second
question against encoding again. Prints a table per part and a JSON last line.

    python benchmarks/bench_citr.py heads  [--tokens 1024] [--repeats 3]        # 7B sizes (Qwen2-VL-7B config)
    python benchmarks/bench_citr.py kv     [--visual 16384,65536] [--budget 2048]
    python benchmarks/bench_citr.py second [--visual 16384] [--repeats 3]       # bundled longvid-tiny + its heads

``heads``: FLOPs per token of one layer's retaining head (``(H_q + 2 H_kv) d -> 1024 -> H_kv``, 4608 -> 1024 -> 4 at
7B) against one decoder layer's (projections, MLP, attention over the chunk, for a first 4k chunk and for a 4k chunk
over an 8192-entry cache: CITR's VideoMME budget), and measured: one real Qwen2-VL decoder layer of the 7B config
(random weights, float32, transformers' own class) and one head, on ``--tokens`` tokens, alternating, median of
``--repeats``. The head runs once per layer, so the per-layer ratio is the whole-model ratio (embedding and LM head
left out of the prefill: the ratio is an upper bound).

``kv``: a tiny random Qwen2-VL with fresh heads, random frames giving ``--visual`` visual tokens, a session with
``budget`` entries and 4096-token chunks; the cache bytes after prefill against ``layers x 2 x H_kv x d x bytes x
(budget + protected text)``, which must be equal.

``second``: the bundled longvid-tiny and its heads on random 56 px frames giving ``--visual`` tokens: building the
session (encode + prefill under the press) and its first question, against the second question's wall time to its
first token (``ask(..., max_new_tokens=1)``: the question's prefill over the compressed cache and one decode step).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import git_state, small_op_ms  # noqa: E402

CONFIG = Path(__file__).resolve().parent / "configs" / "qwen2_vl_7b.json"


def layer_flops(c: dict, n: int, past: int) -> float:
    """Matmul FLOPs of one decoder layer over a chunk of n tokens after ``past`` cached entries."""
    d, hq, hkv, inter = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["intermediate_size"]
    hd = d // hq
    proj = 2 * n * d * (hq * hd + 2 * hkv * hd + hq * hd)
    mlp = 2 * n * 3 * d * inter
    attn = 4 * hq * hd * n * (past + (n + 1) / 2)  # QK^T and AV over the causal chunk
    return proj + mlp + attn


def head_flops(c: dict, n: int, hidden: int = 1024) -> float:
    hq, hkv = c["num_attention_heads"], c["num_key_value_heads"]
    width = (hq + 2 * hkv) * (c["hidden_size"] // hq)
    return 2 * n * (width * hidden + hidden * hkv)


def bench_heads(tokens: int, repeats: int) -> dict:
    from transformers import Qwen2VLConfig
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLTextModel

    from longvid.methods.kv.citr import RetainingHeads

    text = json.loads(CONFIG.read_text())["text_config"]
    rows = []
    for past in (0, 8192):
        layer, head = layer_flops(text, 4096, past), head_flops(text, 4096)
        rows.append(dict(chunk=4096, past=past, layer_gflop=layer / 1e9, head_gflop=head / 1e9, ratio=head / layer))
    config = Qwen2VLConfig.from_dict(json.loads(CONFIG.read_text())).text_config
    config.num_hidden_layers = 1
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = Qwen2VLTextModel(config).eval()
    base = dict(family="qwen2_vl", num_layers=1, hidden_size=config.hidden_size,
                num_attention_heads=config.num_attention_heads, num_key_value_heads=config.num_key_value_heads,
                head_dim=config.hidden_size // config.num_attention_heads, fingerprint="-")
    heads = RetainingHeads(base, 1024).eval()
    x = torch.randn(1, tokens, config.hidden_size)
    pos = torch.arange(tokens).expand(3, 1, -1)
    hd, hq, hkv = base["head_dim"], base["num_attention_heads"], base["num_key_value_heads"]
    q, k, v = torch.randn(1, hq, tokens, hd), torch.randn(1, hkv, tokens, hd), torch.randn(1, hkv, tokens, hd)
    layer_t, head_t = [], []
    with torch.inference_mode():
        cos_sin = model.rotary_emb(x, pos)
        for _ in range(repeats + 1):  # the first round warms up
            t0 = time.perf_counter()
            model.layers[0](x, attention_mask=None, position_embeddings=cos_sin)
            t1 = time.perf_counter()
            heads(0, q, k, v)
            t2 = time.perf_counter()
            layer_t.append(t1 - t0)
            head_t.append(t2 - t1)
    measured = dict(tokens=tokens, layer_ms=1e3 * statistics.median(layer_t[1:]),
                    head_ms=1e3 * statistics.median(head_t[1:]))
    measured["ratio"] = measured["head_ms"] / measured["layer_ms"]
    print("| chunk | cached before | decoder layer GFLOP | head GFLOP | head / layer |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['chunk']} | {r['past']} | {r['layer_gflop']:.1f} | {r['head_gflop']:.2f} | {100 * r['ratio']:.2f} % |")
    print(f"\nmeasured on {tokens} tokens (float32, this CPU, median of {repeats}): decoder layer "
          f"{measured['layer_ms']:.0f} ms, head {measured['head_ms']:.1f} ms, {100 * measured['ratio']:.2f} %")
    return dict(analytic=rows, measured=measured)


def random_frames(n_frames: int, side: int, seed: int = 0):
    from longvid.video import Frames
    from longvid.video.decode import VideoInfo

    gen = np.random.default_rng(seed)
    frames = gen.integers(0, 256, (n_frames, side, side, 3), dtype=np.uint8)
    times = np.arange(n_frames, dtype=np.float64)
    info = VideoInfo("random", float(n_frames), 1.0, n_frames, side, side, "raw", 0.0, None)
    return Frames(frames, times, np.arange(n_frames), info)


def bench_kv(visual: list[int], budget: int) -> dict:
    import tempfile

    import longvid
    from longvid.engine.cache import kv_bytes
    from longvid.methods.kv.citr import RetainingHeads
    from longvid.methods.registry import get_method
    from longvid.tiny import save_tiny_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = save_tiny_model(Path(tmp) / "tiny", "qwen2_vl")
        lm = longvid.load(path)
        heads = RetainingHeads.for_model(lm.adapter, hidden=32)
        per_step = lm.adapter.tokens_per_step(56, 56)
        for n in visual:
            frames = random_frames(2 * -(-n // per_step), 56)
            t0 = time.perf_counter()
            s = lm.session(frames, method=get_method("citr", budget=budget, heads=heads), chunk_size=4096)
            seconds = time.perf_counter() - t0
            c = lm.adapter.lm.config
            head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
            entry = len(s.cache.layers) * 2 * c.num_key_value_heads * head_dim * s.cache.layers[0].keys.element_size()
            expected = entry * (budget + s.n_protected)
            got = kv_bytes(s.cache)
            rows.append(dict(visual=s.visual_seen, budget=budget, protected=s.n_protected, kv_bytes=got,
                             expected=expected, equal=got == expected, seconds=round(seconds, 1)))
    print("| visual tokens | budget | protected text | KV bytes | budget + text entries x bytes | equal |")
    print("|---:|---:|---:|---:|---:|:-:|")
    for r in rows:
        print(f"| {r['visual']} | {r['budget']} | {r['protected']} | {r['kv_bytes']} | {r['expected']} | "
              f"{'yes' if r['equal'] else 'NO'} |")
    return dict(rows=rows)


def bench_second(visual: int, repeats: int) -> dict:
    import longvid

    lm = longvid.load("longvid-tiny")
    per_step = lm.adapter.tokens_per_step(56, 56)
    frames = random_frames(2 * -(-visual // per_step), 56)
    build, first, second = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        s = lm.session(frames, method="citr")
        t1 = time.perf_counter()
        s.ask("How many coloured shapes appeared?", max_new_tokens=1)
        t2 = time.perf_counter()
        s.ask("Which coloured shape appeared first?", max_new_tokens=1)
        t3 = time.perf_counter()
        build.append(t1 - t0)
        first.append(t2 - t1)
        second.append(t3 - t2)
    out = dict(visual=s.visual_seen, kept=s.kept_visual(), session_s=statistics.median(build),
               first_ttft_s=statistics.median(first), second_ttft_s=statistics.median(second))
    out["speedup"] = (out["session_s"] + out["first_ttft_s"]) / out["second_ttft_s"]
    print("| visual tokens | kept | encode + prefill s | 1st question TTFT s | 2nd question TTFT s | encode again / 2nd |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {out['visual']} | {out['kept']} | {out['session_s']:.2f} | {out['first_ttft_s']:.3f} | "
          f"{out['second_ttft_s']:.3f} | {out['speedup']:.0f}x |")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=["heads", "kv", "second"])
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--visual", default=None)
    p.add_argument("--budget", type=int, default=2048)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    noise = small_op_ms()
    if a.part == "heads":
        result = bench_heads(a.tokens, a.repeats)
    elif a.part == "kv":
        result = bench_kv([int(x) for x in (a.visual or "16384,65536").split(",")], a.budget)
    else:
        result = bench_second(int(a.visual or 16384), a.repeats)
    print(json.dumps(dict(part=a.part, result=result, small_op_ms=noise, torch=torch.__version__, **git_state())))


if __name__ == "__main__":
    main()
