"""What each longvid method costs and what it saves: its own work at 7B sizes on CPU.

Prints a table and then one JSON object as the last line.

``cost`` -- issue: "each method's own cost (clustering, scoring, gathering) at 4k, 16k and 64k visual tokens with
hidden size 3584 on this 2-core CPU, next to the LLM prefill FLOPs it saves on a 7B model; PruneVid stage 1 stays per
segment (no whole-video N x N) and under 1 s at 16k tokens". Inputs are random: VisualTokens with D=3584 on grids
(16|64|256, 16, 16) for the token reducers; ONE real Qwen2-VL-7B decoder layer (config
``/work/shared/configs/qwen2_vl_7b.json``, random weights, float32) with its M-RoPE for the layer pruners and
PivotKV; one layer of random keys/values for the KV presses. The prompt is 40 text tokens, N visual, 30 question
tokens. What is timed is the method's own work only:

* token reducers and the frame selector: ``reduce`` / ``select``;
* layer pruners: ``select(ctx)`` (scores + top-k), plus the gathers the engine then does for them (hidden states,
  cos/sin, and the KV entries of layers ``0..K``), shown separately;
* KnormPress: ``compress`` after every 8192-token prefill chunk on one layer's growing cache, times 28 layers;
* PivotKV: ``observe`` for one layer and one 4096-token chunk (N-independent, timed once) times 28 layers times the
  chunks of the video, plus ``compress`` (top-k, gather, key re-rotation) after every chunk on one layer's cache,
  times 28 layers (the JSON rows' ``scale`` and ``note`` say which numbers are scaled).

Next to each: the prefill FLOPs the method saves on Qwen2-VL-7B (formula in ``layer_flops``; ideal causal
attention, no chunking overheads), that saving as H100 seconds at an assumed 400 TFLOP/s effective bf16, the ratio
CPU cost / H100 seconds saved, and the method's own dominant FLOPs as a share of what it saves (device-independent).
One warmup each, then rounds that run every case once, in alternating order, until ``--runs`` rounds were quiet
(tiny-matmul probe before and after the round under 1 ms; at most 2 x ``--runs`` rounds): "own cost" is the median
over the quiet rounds, "min" the minimum over all, "runs" quiet/all. A case whose warmup takes > 60 s runs once more
only. PivotKV's observe unit is timed in the first size's rounds. Peak extra memory: in a fresh subprocess per case
(``--memory``), the peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs`` once the inputs are built) minus the
RSS just before one call (tracemalloc does not see torch).

The tiny-model TTFT per preset this file also measured (``ttft``) is now ``longvid bench`` (issue 15:
``results/method_ttft_tiny.md`` has the command).

Run (2 torch threads)::

    python benchmarks/bench_methods.py cost [--runs 3] [--sizes 4096 16384 65536] [--no-memory]   # ~7 min
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from common import git_state, small_op_ms  # benchmarks/ is on sys.path when run as a script
import transformers

ROOT = Path(__file__).resolve().parents[1]
CONFIG_7B = ROOT.parent / "shared" / "configs" / "qwen2_vl_7b.json"  # ../shared beside the repository

# Qwen2-VL-7B language model
D, INTER, LAYERS, HEADS, KV_HEADS, HEAD_DIM = 3584, 18944, 28, 28, 4, 128
PREFIX, QUESTION_TOKENS = 40, 30  # text before the video, question + assistant prefix after it
SIDE = 16  # merged tokens per side of a 448x448 frame: 256 tokens per temporal step
H100_FLOPS = 400e12  # assumed effective bf16 throughput of one H100 on prefill matmuls
KV_BYTES_PER_TOKEN_BF16 = 2 * LAYERS * KV_HEADS * HEAD_DIM * 2
KEEP = 0.25  # keep ratio of the token reducers / presses in the cost table
SLOW_SEC = 60.0  # a case whose warmup takes longer runs once more only
STALL_MS = 1.0  # tiny-matmul probe above this: another process is stalling torch's thread pool (idle: ~0.05 ms)
KNORM_CHUNK = 8192  # the engine's default prefill chunk (KnormPress compresses after each)
PIVOT_CHUNK_STEPS = 16  # PivotKV's chunk from 32 temporal steps on (ReTaKe: min(32, T) / 2 steps): 4096 tokens


# ----- shared helpers -------------------------------------------------------------------------------------------



def matmul_gflops(n: int = 2048, calls: int = 5) -> float:
    """fp32 GFLOP/s of an n x n matmul (median of ``calls``): what this CPU does on dense work right now."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return round(2 * n ** 3 / statistics.median(times) / 1e9, 1)


def probe() -> dict:
    return {"load_avg_1m": round(os.getloadavg()[0], 2), "small_op_ms": small_op_ms(), "gflops": matmul_gflops()}


def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def max_rss_bytes() -> int:
    """``ru_maxrss``: the peak RSS of this process (after fork it starts at the parent's, and survives exec)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> bool:
    """Reset this address space's peak RSS (``VmHWM``) to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int:
    """``VmHWM``: the peak RSS of this address space since exec or the last ``reset_peak_rss``."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")



def versions() -> dict:
    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "longvid": git_state()}


def machine() -> dict:
    return {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "mem_total_gib": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2 ** 30, 1)}


def run_child(args: list[str]) -> dict:
    """Run this file in a fresh interpreter; its last stdout line is a JSON object (or an error is returned)."""
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=ROOT, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1], "returncode": proc.returncode}
    return json.loads(lines[-1])


# ----- 7B FLOPs ---------------------------------------------------------------------------------------------------

def linear_flops(n: int) -> float:
    """Matmul FLOPs of ``n`` tokens through one Qwen2-VL-7B layer: 2 x (q, k, v, o projections + 3 MLP matmuls)."""
    kv = KV_HEADS * HEAD_DIM
    return n * 2 * (D * D + 2 * D * kv + D * D + 3 * D * INTER)


def attention_flops(n: int, past: int) -> float:
    """QK^T and PV FLOPs of ``n`` new tokens attending to ``past`` cached ones and causally to each other."""
    return 4 * HEADS * HEAD_DIM * (n * past + n * (n + 1) / 2)


def layer_flops(n: int, past: int = 0) -> float:
    """One layer's prefill FLOPs: ``n * 2 * (2 D^2 + 2 D kv + 3 D I) + 4 D (n * past + n (n + 1) / 2)``."""
    return linear_flops(n) + attention_flops(n, past)


def prompt_len(n_visual: int) -> int:
    return PREFIX + n_visual + QUESTION_TOKENS


def prefill_flops(n_visual: int) -> float:
    """Whole-prompt prefill of the 7B model (28 layers), one causal forward; norms, RoPE, softmax, lm_head left out."""
    return LAYERS * layer_flops(prompt_len(n_visual))


def saved_by_reducer(n: int, kept: int) -> float:
    """Fewer visual tokens in every layer."""
    return prefill_flops(n) - prefill_flops(kept)


def saved_by_pruner(n: int, kept: int, layer: int) -> float:
    """Layers ``layer + 1 .. 27`` run on ``kept`` visual tokens instead of ``n``."""
    return (LAYERS - 1 - layer) * (layer_flops(prompt_len(n)) - layer_flops(prompt_len(kept)))


def press_savings(chunks: list[tuple[int, int]], kept_after: Callable[[int, int, int], int]) -> dict:
    """Attention FLOPs and KV bytes a press saves in a chunked prefill (the chunks' own matmuls are unchanged).

    ``chunks`` is ``(n_new, n_new_visual)`` per prefill chunk; ``kept_after(cached_visual, n_new_visual,
    visual_seen)`` is the visual entries cached after the press ran on that chunk. Chunk c attends to the cached
    entries before it; the question (30 tokens) attends to the final cache.
    """
    full_past, text, visual, seen, saved = 0, 0, 0, 0, 0.0
    for n_new, n_vis in chunks:
        saved += attention_flops(n_new, full_past) - attention_flops(n_new, text + visual)
        full_past, text, seen = full_past + n_new, text + n_new - n_vis, seen + n_vis
        visual = kept_after(visual + n_vis, n_vis, seen)
    saved += attention_flops(QUESTION_TOKENS, full_past) - attention_flops(QUESTION_TOKENS, text + visual)
    return {"saved_flops": LAYERS * saved, "kept": visual}


def engine_chunks(n_visual: int, size: int, step_aligned: bool) -> list[tuple[int, int]]:
    """(n_new, n_new_visual) of the engine's prefill chunks over [40 text, n visual] (``VideoSession._chunks``)."""
    total = PREFIX + n_visual
    ends = list(range(PREFIX + size if step_aligned else size, total, size)) + [total]
    return [(end - start, end - max(start, PREFIX)) for start, end in zip([0] + ends[:-1], ends)]


# ----- cost: inputs -------------------------------------------------------------------------------------------

def random_tokens(n: int):
    from longvid.tokens import VisualTokens

    grid = (n // (SIDE * SIDE), SIDE, SIDE)
    thw = torch.stack(torch.meshgrid(*(torch.arange(s) for s in grid), indexing="ij"), -1).view(-1, 3)
    embeds = torch.randn(len(thw), D, generator=torch.Generator().manual_seed(0))
    positions = thw.T.clone() + PREFIX  # the full layout: video ids start after the 40-token prefix
    return VisualTokens(embeds, thw, positions, thw[:, 0].double(), torch.ones(len(thw), dtype=torch.long), grid,
                        len(thw))


def text_config_7b():
    from transformers import Qwen2VLConfig

    config = Qwen2VLConfig(**json.loads(CONFIG_7B.read_text())).text_config
    config._attn_implementation = "sdpa"
    return config


def decoder_layer(config):
    """ONE real Qwen2-VL-7B decoder layer, random weights (torch's default init), float32, and its rotary embedding."""
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLDecoderLayer, Qwen2VLRotaryEmbedding

    torch.manual_seed(0)
    return Qwen2VLDecoderLayer(config, 0).eval(), Qwen2VLRotaryEmbedding(config)


def prune_context(n: int, layer, rotary, layer_idx: int):
    """PruneContext for [40 text, n visual, 30 question] (L = n + 70): random hidden, M-RoPE of the real layout."""
    from longvid.methods.base import PruneContext

    tokens_t = n // (SIDE * SIDE)
    thw = torch.stack(torch.meshgrid(torch.arange(tokens_t), torch.arange(SIDE), torch.arange(SIDE),
                                     indexing="ij"), -1).view(-1, 3)
    after = PREFIX + max(tokens_t, SIDE)
    positions = torch.cat([torch.arange(PREFIX).expand(3, -1), thw.T + PREFIX,
                           (after + torch.arange(QUESTION_TOKENS)).expand(3, -1)], dim=1)
    length = positions.shape[1]
    hidden = torch.randn(1, length, D, generator=torch.Generator().manual_seed(1))
    cos_sin = rotary(hidden[:, :1], positions.unsqueeze(1))
    visual = torch.zeros(length, dtype=torch.bool)
    visual[PREFIX:PREFIX + n] = True
    query = torch.zeros_like(visual)
    query[PREFIX + n:] = True
    groups = torch.full((length,), -1, dtype=torch.long)
    groups[visual] = thw[:, 0]
    return PruneContext(layer_idx, layer, hidden, hidden, cos_sin, visual, query, groups)


def engine_gather(ctx, kept: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], n_layers: int) -> None:
    """What ``longvid.engine.forward`` does after a pruner: gather hidden, cos/sin and ``n_layers`` layers' KV."""
    ctx.hidden_in[:, kept]
    ctx.position_embeddings[0][:, kept], ctx.position_embeddings[1][:, kept]
    for _ in range(n_layers):
        for x in kv:
            torch.cat([x[:, :, :0], x[:, :, 0:][:, :, kept]], dim=2)


def random_kv(length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, KV_HEADS, length, HEAD_DIM, generator=g),
            torch.randn(1, KV_HEADS, length, HEAD_DIM, generator=g))


# ----- cost: cases ----------------------------------------------------------------------------------------------

@dataclass
class Run:
    """One prepared measurement: ``fn()`` does the method's work once and returns own-seconds parts (or None, then
    the wall time of the call is the cost); ``scale`` multiplies the measured seconds (one layer -> 28 layers)."""

    fn: Callable[[], dict | None]
    scale: float = 1.0
    kept: int | None = None
    saved_flops: float = 0.0
    method_flops: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)


class Inputs:
    """Inputs shared by the cases at one N, built on first use (so a memory child builds only what it needs)."""

    def __init__(self, n: int, model=None):
        self.n, self._model, self._cache = n, model, {}

    def get(self, key: str, build: Callable):
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    @property
    def model(self):  # (text config, layer, rotary), built once per process
        if self._model is None:
            config = text_config_7b()
            self._model = (config, *decoder_layer(config))
        return self._model

    @property
    def tokens(self):
        return self.get("tokens", lambda: random_tokens(self.n))

    def ctx(self, layer_idx: int):
        _, layer, rotary = self.model
        ctx = self.get("ctx", lambda: prune_context(self.n, layer, rotary, layer_idx))
        ctx.layer_idx = layer_idx
        return ctx

    @property
    def kv(self):
        return self.get("kv", lambda: random_kv(prompt_len(self.n), seed=2))


def case_uniform(inp: Inputs) -> Run:
    from longvid.methods.base import TokenPlan
    from longvid.methods.frames.uniform import UniformFrames

    steps = inp.n // (SIDE * SIDE)
    plan, stamps = TokenPlan(2, SIDE * SIDE, 2 * steps), torch.arange(2 * steps) / 2.0
    stage = UniformFrames(keep=KEEP)
    kept = len(stage.select(stamps, plan)) // 2 * SIDE * SIDE
    return Run(lambda: stage.select(stamps, plan), kept=kept, saved_flops=saved_by_reducer(inp.n, kept),
               method_flops=0.0, note="also skips the vision encoder for dropped frames (not counted)")


def scored_reducer(stage_factory: Callable, method_flops: Callable[[int], float], note: str = ""):
    def case(inp: Inputs) -> Run:
        stage, tokens = stage_factory(), inp.tokens
        kept = len(stage.reduce(tokens))
        return Run(lambda: stage.reduce(tokens), kept=kept, saved_flops=saved_by_reducer(inp.n, kept),
                   method_flops=method_flops(inp.n), note=note)

    return case


def case_prunevid_merge(inp: Inputs) -> Run:
    from longvid.methods.tokens.prunevid_merge import PruneVidMerge

    stage, tokens = PruneVidMerge(), inp.tokens
    out = stage.reduce(tokens)
    steps = inp.n // (SIDE * SIDE)
    flops = steps * 2 * (SIDE * SIDE) ** 2 * D + 2 * steps ** 2 * D  # DPC-kNN Gram matrices: per step + segmenting
    return Run(lambda: stage.reduce(tokens), kept=len(out), saved_flops=saved_by_reducer(inp.n, len(out)),
               method_flops=flops, note="realised retention on random tokens (no static slot: worst case)",
               extra={"groups": int(out.group.max()) + 1})


def pruner_case(make: Callable, rows: int, note: str):
    """A layer pruner scoring with ``rows`` query rows: its FLOPs are k over the prompt, q over the rows, QK^T."""
    def case(inp: Inputs) -> Run:
        stage = make()
        ctx, kv = inp.ctx(stage.layer), inp.kv

        def fn() -> dict:
            t0 = time.perf_counter()
            kept = stage.select(ctx)
            t1 = time.perf_counter()
            engine_gather(ctx, kept, kv, stage.layer + 1)
            return {"select": t1 - t0, "gather": time.perf_counter() - t1}

        kept_visual = int(ctx.visual[stage.select(ctx)].sum())
        length = prompt_len(inp.n)
        flops = 2 * length * D * KV_HEADS * HEAD_DIM + 2 * rows * D * D + 2 * HEADS * rows * length * HEAD_DIM
        return Run(fn, kept=kept_visual, saved_flops=saved_by_pruner(inp.n, kept_visual, stage.layer),
                   method_flops=flops, note=note)

    return case


def case_knorm(inp: Inputs) -> Run:
    from transformers import DynamicCache

    from longvid.methods.base import PrefillChunk
    from longvid.methods.kv.knorm import KnormPress

    press, keys, values = KnormPress(keep=KEEP), *inp.get("kv_stream", lambda: random_kv(PREFIX + inp.n, seed=3))
    chunks = engine_chunks(inp.n, KNORM_CHUNK, step_aligned=False)

    def fn() -> dict:
        cache, start, seen, own, state = DynamicCache(), 0, 0, 0.0, {}
        for n_new, n_vis in chunks:
            cache.update(keys[:, :, start:start + n_new], values[:, :, start:start + n_new], 0)
            start, seen = start + n_new, seen + n_vis
            chunk = PrefillChunk(PREFIX, n_new, n_vis, seen, torch.zeros(3, n_new, dtype=torch.long), None,
                                 PREFIX + inp.n, None, state=state)  # the session's state: scores kept per entry
            t0 = time.perf_counter()
            press.compress(cache, chunk)
            own += time.perf_counter() - t0
        return {"compress": own}

    sav = press_savings(chunks, lambda cached, n_vis, seen: min(cached, press.target(seen)))
    return Run(fn, scale=LAYERS, kept=sav["kept"], saved_flops=sav["saved_flops"], method_flops=0.0,
               note=f"one layer's compress after each {KNORM_CHUNK}-token chunk, x28 layers")


def pivot_chunk_tokens(n: int) -> int:
    """PivotKV's chunk for a video of n visual tokens: ReTaKe's min(32, T) / 2 steps (2048 tokens at 4k, then 4096)."""
    from longvid.methods.kv.pivotkv import PivotKV

    return PivotKV().chunk_tokens(n // (SIDE * SIDE), SIDE * SIDE, 2)


def pivot_chunks(n: int) -> list[tuple[int, int]]:
    return engine_chunks(n, pivot_chunk_tokens(n), step_aligned=True)


def observe_flops(n: int) -> float:
    """One layer's PivotKV observe on an n-token chunk: QK^T over 28 heads (q and k are captured from the attention's
    own projections, not recomputed: before, 2 n D (D + kv) more, as much again at n = 4096)."""
    return 2 * HEADS * n * n * HEAD_DIM


def case_pivotkv_observe(inp: Inputs) -> Run:
    """Unit: one layer's ``observe`` on one chunk of this N's chunk size (scaled by layers x chunks in the table)."""
    from longvid.methods.kv.pivotkv import PivotKV

    n = pivot_chunk_tokens(inp.n)
    gen = torch.Generator().manual_seed(4)
    q = inp.get(f"chunk_q{n}", lambda: torch.randn(1, HEADS, n, HEAD_DIM, generator=gen))
    k = inp.get(f"chunk_k{n}", lambda: torch.randn(1, KV_HEADS, n, HEAD_DIM, generator=gen))
    attn = type("Attn", (), {"scaling": HEAD_DIM ** -0.5})()
    press = PivotKV()
    return Run(lambda: press.observe(0, attn, q, k, None, n), method_flops=observe_flops(n),
               note=f"one layer, one {n}-token chunk", extra={"chunk_tokens": n})


def pivotkv_compress_case(keep: float | None):
    def case(inp: Inputs) -> Run:
        from transformers import DynamicCache

        from longvid.methods.base import PrefillChunk, num_to_keep_floor
        from longvid.methods.kv.pivotkv import PivotKV

        _, _, rotary = inp.model
        press = PivotKV(keep=keep)
        keys, values = inp.get("kv_stream", lambda: random_kv(PREFIX + inp.n, seed=3))
        tokens_t = inp.n // (SIDE * SIDE)
        thw = torch.stack(torch.meshgrid(torch.arange(tokens_t), torch.arange(SIDE), torch.arange(SIDE),
                                         indexing="ij"), -1).view(-1, 3)
        positions = torch.cat([torch.arange(PREFIX).expand(3, -1), thw.T + PREFIX], dim=1)
        chunks, x = pivot_chunks(inp.n), torch.zeros(1, 1, D)
        scores = torch.rand(pivot_chunk_tokens(inp.n), generator=torch.Generator().manual_seed(5))

        def fn() -> dict:
            cache, start, seen, own = DynamicCache(), 0, 0, 0.0
            for n_new, n_vis in chunks:
                cache.update(keys[:, :, start:start + n_new], values[:, :, start:start + n_new], 0)
                chunk = PrefillChunk(PREFIX, n_new, n_vis, seen + n_vis, positions[:, start:start + n_new], None,
                                     PREFIX + inp.n, lambda p: rotary(x, p), observed={0: scores[:n_vis]})
                start, seen = start + n_new, seen + n_vis
                t0 = time.perf_counter()
                press.compress(cache, chunk)
                own += time.perf_counter() - t0
            return {"compress": own}

        ratio = press.ratio(PREFIX + inp.n)
        sav = press_savings(chunks, lambda cached, n_vis, seen: cached - n_vis + (
            num_to_keep_floor(n_vis, ratio) if ratio < 1 else n_vis))
        return Run(fn, scale=LAYERS, kept=sav["kept"], saved_flops=sav["saved_flops"],
                   method_flops=LAYERS * sum(observe_flops(n_vis) for _, n_vis in chunks) if ratio < 1 else 0.0,
                   note=f"chunk ratio {ratio:.3f}; compress x28 layers + observe x28 x {len(chunks)} chunks",
                   extra={"chunk_ratio": ratio, "chunks": len(chunks)})

    return case


def cosine_flops(n: int) -> float:
    return 6.0 * n * D  # dot product and two norms per token pair of consecutive steps


def build_cases() -> dict[str, tuple[str, str, Callable[[Inputs], Run]]]:
    """name -> (stage, keep label, case builder); names are unique keys used by the memory children too."""
    from longvid.methods.layers.fastv import FastV
    from longvid.methods.layers.prunevid_prune import PruneVidPrune
    from longvid.methods.tokens.dpselect import DPSelect
    from longvid.methods.tokens.evs import EVS
    from longvid.methods.tokens.random_drop import RandomDrop

    return {
        "uniform": ("frame selector", f"{KEEP}", case_uniform),
        "random": ("token reducer", f"{KEEP}", scored_reducer(lambda: RandomDrop(keep=KEEP), lambda n: 0.0)),
        "evs": ("token reducer", f"{KEEP}", scored_reducer(lambda: EVS(keep=KEEP), cosine_flops)),
        "dpselect": ("token reducer", f"{KEEP}", scored_reducer(lambda: DPSelect(keep=KEEP), cosine_flops)),
        "dpselect-pivots": ("token reducer", "1.0 (default)", scored_reducer(
            DPSelect, cosine_flops, note="retake's stage 1: marks pivots, drops nothing")),
        "prunevid-merge": ("token reducer", "follows video", case_prunevid_merge),
        "prunevid-stage2": ("layer pruner", "alpha 0.4 @ K=10", pruner_case(
            lambda: PruneVidPrune(layer=10, alpha=0.4), QUESTION_TOKENS,
            "select + gather of hidden, cos/sin and KV of layers 0..10; timed at N (no stage 1 before it)")),
        "fastv": ("layer pruner", "0.5 @ layer 1 (K=2)", pruner_case(
            lambda: FastV(keep=0.5, layer=1), 1,
            "select + gather of hidden, cos/sin and KV of layers 0..1")),
        "knorm": ("KV press", f"{KEEP}", case_knorm),
        "pivotkv-observe": ("KV press (unit)", "-", case_pivotkv_observe),
        "pivotkv": ("KV press", "default (32000)", pivotkv_compress_case(None)),
        "pivotkv-0.25": ("KV press", f"{KEEP} per chunk", pivotkv_compress_case(KEEP)),
    }


def measure_case_memory(name: str, n: int) -> dict:
    """In this (fresh) process: build the inputs of one case, then the peak-RSS growth of one call."""
    torch.set_num_threads(2)
    run = build_cases()[name][2](Inputs(n))
    gc.collect()
    if not reset_peak_rss():
        return {"case": name, "n": n, "error": "cannot reset the peak RSS (/proc/self/clear_refs)"}
    before = rss_bytes()
    run.fn()
    return {"case": name, "n": n, "rss_before": before, "peak_extra_bytes": peak_rss_bytes() - before}


def time_cases(runs_by_name: dict[str, Run], runs: int) -> tuple[dict[str, dict], list[dict]]:
    """One warmup each, then alternating rounds until ``runs`` quiet ones (at most ``2 * runs`` rounds).

    A round is quiet when the tiny-matmul probe just before and just after it stays under ``STALL_MS``: on this shared
    2-core machine another process makes torch's thread pool wait for a descheduled thread, and every op then pays
    milliseconds, which multiplies the cost of op-heavy code (compress, gathers) by 10-50x. A case whose warmup
    takes more than 60 s runs once more only.
    """
    out = {}
    for name, run in runs_by_name.items():
        t0 = time.perf_counter()
        run.fn()
        out[name] = {"warmup_sec": time.perf_counter() - t0, "sec": [], "parts": [], "quiet": []}
    order, rounds = list(runs_by_name), []
    while sum(r["quiet"] for r in rounds) < runs and len(rounds) < 2 * runs:
        before = small_op_ms(20)
        for name in order if len(rounds) % 2 == 0 else order[::-1]:
            if out[name]["warmup_sec"] > SLOW_SEC and out[name]["sec"]:
                continue
            t0 = time.perf_counter()
            parts = runs_by_name[name].fn()
            wall = time.perf_counter() - t0
            parts = parts if isinstance(parts, dict) else None  # a plain stage call returns its output
            own = sum(parts.values()) if parts else wall
            out[name]["sec"].append(own * runs_by_name[name].scale)
            out[name]["parts"].append({k: v * runs_by_name[name].scale for k, v in (parts or {}).items()})
            out[name]["quiet"].append(len(rounds))  # round index, flagged below
        after = small_op_ms(20)
        rounds.append({"probe_ms": [before, after], "quiet": max(before, after) < STALL_MS})
    for t in out.values():
        t["quiet"] = [rounds[i]["quiet"] for i in t["quiet"]]
    return out, rounds


def summarise(t: dict) -> tuple[list[float], list[dict]]:
    """The runs of quiet rounds (all runs if none was quiet)."""
    keep = [i for i, q in enumerate(t["quiet"]) if q] or list(range(len(t["sec"])))
    return [t["sec"][i] for i in keep], [t["parts"][i] for i in keep]


def cost_main(sizes: list[int], runs: int, memory: bool, threads: int, only: list[str] | None = None) -> dict:
    torch.set_num_threads(threads)
    cases = {k: v for k, v in build_cases().items() if not only or k in only}
    probes = {"start": probe()}
    config = text_config_7b()
    model = (config, *decoder_layer(config))
    rows, errors, observe, rounds = [], {}, {}, {}
    t_start = time.perf_counter()
    for n in sizes:
        inp = Inputs(n, model)
        prepared = {}
        for name, (_, _, build) in cases.items():
            if name == "pivotkv-observe" and pivot_chunk_tokens(n) in observe:
                continue  # depends on the chunk size only: timed once per size
            try:
                prepared[name] = build(inp)
            except Exception as err:  # noqa: BLE001 -- a failing method is reported (table, JSON); the rest run
                errors[f"{name}@{n}"] = f"{type(err).__name__}: {err}"
        timed, rounds[str(n)] = time_cases(prepared, runs)
        probes[str(n)] = probe()
        if "pivotkv-observe" in timed:
            unit = summarise(timed["pivotkv-observe"])[0]
            observe[pivot_chunk_tokens(n)] = {"sec": statistics.median(unit), "min": min(timed["pivotkv-observe"]["sec"]),
                                              "runs": unit}
        for name, run in prepared.items():
            t = timed[name]
            sec, parts = summarise(t)
            own = statistics.median(sec)
            row = {"method": name, "stage": cases[name][0], "keep": cases[name][1], "n": n, "kept": run.kept,
                   "own_sec": own, "min_sec": min(t["sec"]), "runs_sec": [round(s, 5) for s in t["sec"]],
                   "quiet": t["quiet"], "warmup_sec": round(t["warmup_sec"], 5), "runs": len(sec),
                   "rounds": len(t["sec"]), "scale": run.scale,
                   "parts_sec": {k: round(statistics.median(p[k] for p in parts), 5) for k in parts[0]},
                   "saved_flops": run.saved_flops,
                   "kv_bytes_saved_bf16": (n - run.kept) * KV_BYTES_PER_TOKEN_BF16 if run.kept is not None else 0,
                   "method_flops": run.method_flops, "note": run.note, **run.extra}
            unit = observe.get(pivot_chunk_tokens(n))
            if name.startswith("pivotkv") and name != "pivotkv-observe" and unit is not None:
                times = LAYERS * run.extra["chunks"] if run.extra["chunk_ratio"] < 1 else 0  # ratio 1: no scoring
                row["parts_sec"] = {"observe": round(unit["sec"] * times, 5), "compress": round(own, 5)}
                row["own_sec"] += unit["sec"] * times
                row["min_sec"] += unit["min"] * times
            rows.append(row)
        del inp, prepared
        gc.collect()
    elapsed = time.perf_counter() - t_start
    if memory:
        for row in rows:
            got = run_child(["_cost-memory", row["method"], str(row["n"])])
            row["memory"] = got
    probes["end"] = probe()
    for row in rows:
        h100 = row["saved_flops"] / H100_FLOPS
        row["saved_h100_sec"] = h100
        row["cost_over_saved_h100"] = row["own_sec"] / h100 if h100 > 0 else None
        row["method_over_saved_flops"] = (row["method_flops"] / row["saved_flops"]
                                          if row["method_flops"] is not None and row["saved_flops"] > 0 else None)
        row["method_over_prefill_flops"] = (row["method_flops"] / prefill_flops(row["n"])
                                            if row["method_flops"] is not None else None)
    print_cost_table(rows, errors, observe)
    return {
        "benchmark": "method_cost",
        "config": {"sizes": sizes, "hidden": D, "grid_side": SIDE, "prompt": {"prefix": PREFIX,
                   "question": QUESTION_TOKENS}, "dtype": "float32", "threads": threads, "runs": runs,
                   "keep": KEEP, "h100_flops_assumed": H100_FLOPS, "kv_bytes_per_token_bf16": KV_BYTES_PER_TOKEN_BF16,
                   "model": "Qwen2-VL-7B text: 28 layers, hidden 3584, intermediate 18944, 28 heads, 4 KV heads"},
        "rows": rows,
        "pivotkv_observe_unit_sec": {str(k): v["sec"] for k, v in observe.items()},
        "errors": errors,
        "probes": probes,
        "rounds": rounds,
        "measure_wall_sec": round(elapsed, 1),
        "versions": versions(),
        "machine": machine(),
        "command": " ".join(["python", *sys.argv]),
    }


def fmt_sec(s: float) -> str:
    return f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def fmt_mem(mem: dict | None) -> str:
    if not mem:
        return "-"
    if "error" in mem:
        return "error"
    return f"{mem['peak_extra_bytes'] / 2 ** 20:.0f}"


def print_cost_table(rows: list[dict], errors: dict, observe: dict | None) -> None:
    head = (f"{'method':<16} {'stage':<16} {'keep':<19} {'N':>6} {'kept':>6} {'own cost':>10} {'min':>10} {'runs':>5} "
            f"{'parts':<34} {'extra MiB':>9} {'saved TFLOP':>11} {'H100 ms saved':>13} {'cost/saved':>10} "
            f"{'own/saved FLOP':>14} {'own/prefill':>11} {'KV MiB saved':>12}")
    print(head)
    for r in rows:
        if r["method"] == "pivotkv-observe":
            continue
        parts = ", ".join(f"{k} {fmt_sec(v)}" for k, v in r["parts_sec"].items())
        ratio = f"{r['cost_over_saved_h100']:.3g}" if r["cost_over_saved_h100"] is not None else "-"
        frac = f"{r['method_over_saved_flops']:.2%}" if r["method_over_saved_flops"] is not None else "-"
        pre = f"{r['method_over_prefill_flops']:.2%}" if r["method_over_prefill_flops"] is not None else "-"
        kept = r["kept"] if r["kept"] is not None else "-"
        runs = f"{r['runs']}/{r['rounds']}"
        print(f"{r['method']:<16} {r['stage']:<16} {r['keep']:<19} {r['n']:>6} {kept:>6} {fmt_sec(r['own_sec']):>10} "
              f"{fmt_sec(r['min_sec']):>10} {runs:>5} {parts:<34} {fmt_mem(r.get('memory')):>9} "
              f"{r['saved_flops'] / 1e12:>11.1f} {r['saved_h100_sec'] * 1e3:>13.1f} {ratio:>10} {frac:>14} {pre:>11} "
              f"{r['kv_bytes_saved_bf16'] / 2 ** 20:>12.0f}")
    for size, o in observe.items():
        unit = next(r for r in rows if r["method"] == "pivotkv-observe" and r.get("chunk_tokens") == size)
        print(f"\nPivotKV observe, one layer x one {size}-token chunk: {fmt_sec(o['sec'])} (median of "
              f"{len(o['runs'])} runs, min {fmt_sec(o['min'])}; peak extra {fmt_mem(unit.get('memory'))} MiB); the "
              "pivotkv rows scale it by 28 layers x chunks")
    for key, err in errors.items():
        print(f"FAILED {key}: {err}")


# ----- entry points ---------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_cost-memory":  # internal: one memory measurement in a fresh interpreter
        print(json.dumps(measure_case_memory(argv[1], int(argv[2]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="bench", required=True)
    cost = sub.add_parser("cost", help="each method's own cost vs the 7B prefill FLOPs it saves")
    cost.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384, 65536], help="visual tokens")
    cost.add_argument("--runs", type=int, default=3, help="timed rounds after the warmup")
    cost.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-RSS subprocesses")
    cost.add_argument("--threads", type=int, default=2)
    cost.add_argument("--only", nargs="+", help="only these cases (e.g. knorm pivotkv-observe pivotkv-0.25)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.threads < 1:
        parser.error("--runs and --threads must be >= 1")
    chunk = PIVOT_CHUNK_STEPS * SIDE * SIDE
    if any(n < 1 or n % chunk for n in args.sizes):  # PivotKV's observe unit is one whole chunk
        parser.error(f"--sizes must be positive multiples of {chunk} (whole PivotKV chunks)")
    result = cost_main(args.sizes, args.runs, args.memory, args.threads, args.only)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
