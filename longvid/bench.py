"""``longvid bench``: what each method costs and saves in time and memory at given visual-token counts, on your device.

For a model (a checkpoint directory, ``longvid-tiny``, or a config JSON built with random weights: speed and memory
do not depend on the weight values) and each requested number of visual tokens, a synthetic video is written whose
sampled frames give that many tokens (planned with the model's own frame geometry); then for every (method, keep),
after ``--warmup`` untimed runs, ``--runs`` timed runs each decode the frames from the file and answer one question:

    decode      reading and resizing the sampled frames (PyAV)
    vision      the vision encoder
    reduce      frame selection and token reduction before the LLM
    prefill     the LLM prefill (with layer pruning and KV presses inside it)
    per token   the generate time divided by the generated tokens
    TTFT        vision + reduce + prefill (+ the first token's logits), as ``Answer.stats.ttft``
    peak        the extra memory of the run: the CUDA allocator's peak on a GPU, the sampled resident set on a CPU
    KV          the cache's bytes after the prompt

Medians over the timed runs. For methods that reduce tokens before the LLM, the table sets the measured prefill
speedup over ``full`` beside the FLOP-ideal one (dense prefill FLOPs of the LLM at the full prompt over those at the
kept prompt: the linear layers' ``2 * T * params`` plus causal attention's ``2 * T^2 * hidden`` per layer). Writes
``table.md``, ``results.json`` and two plots (TTFT, peak memory against visual tokens; dashed: each reducer's TTFT
with its prefill at the FLOP-ideal time) and prints the table and a JSON last line.

    longvid bench --model longvid-tiny --tokens 1024,4096 --methods full,evs,knorm --keep 0.25
    longvid bench --config benchmarks/configs/qwen2_5_vl_7b.json --device cuda --dtype bfloat16 \\
        --tokens 16384,65536,131072
"""

from __future__ import annotations

import inspect
import json
import math
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from longvid.errors import check_positive, option

QUESTION = "What happens in the video? Answer in one sentence."


@dataclass
class BenchPlan:
    tokens: list[int]
    methods: list[str] = field(default_factory=lambda: ["full"])
    keeps: list[float | None] = field(default_factory=lambda: [0.25])  # None: each preset's own operating point
    runs: int = 3
    warmup: int = 1
    new_tokens: int = 16
    chunk_size: int = 8192
    vs_generate: bool = False  # also time transformers' own generate on the same prompt (the full row)

    def __post_init__(self):
        from longvid.methods.registry import check_keep_ratios, check_method_names, get_method

        for n in self.tokens:
            check_positive("tokens", n, integer=True)
        check_method_names(self.methods)
        check_keep_ratios(self.keeps, default=True)
        check_positive("runs", self.runs, integer=True)
        check_positive("new_tokens", self.new_tokens, integer=True)
        check_positive("chunk_size", self.chunk_size, integer=True)
        if not (isinstance(self.warmup, int) and self.warmup >= 0):
            raise ValueError(f"{option('warmup', self.warmup)} is invalid: it must be 0 or more runs")
        for m, keep in self.cases():
            get_method(m, keep=keep)

    def cases(self) -> list[tuple[str, float | None]]:
        from longvid.methods.registry import takes_keep

        names = list(dict.fromkeys(["full", *self.methods]))
        return [(m, k) for m in names for k in (self.keeps if takes_keep(m) else [None])]


# ----- models -----------------------------------------------------------------------------------------------------
REAL_PROCESSORS = {  # the released checkpoints' video processor sizes (pixels per frame), for random-weight models
    "qwen2_vl": dict(size=dict(shortest_edge=128 * 28 * 28, longest_edge=768 * 28 * 28)),
    "qwen2_5_vl": dict(size=dict(shortest_edge=128 * 28 * 28, longest_edge=768 * 28 * 28)),
    "qwen3_vl": dict(size=dict(shortest_edge=4096, longest_edge=25165824)),
    "qwen3_vl_moe": dict(size=dict(shortest_edge=4096, longest_edge=25165824)),
    "llava_onevision": dict(size=dict(height=384, width=384)),
}


def read_config(config_path: str | Path) -> dict:
    """The config JSON of a supported family, or a one-line ValueError."""
    from longvid.models import ADAPTERS

    path = Path(config_path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{option('config', str(path))} cannot be read as a model config: "
                         f"{str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict) or raw.get("model_type") not in ADAPTERS:
        family = raw.get("model_type") if isinstance(raw, dict) else None
        raise ValueError(f"{option('config', str(path))} has model_type {family!r}; supported: {', '.join(ADAPTERS)}")
    return raw


def random_model(config_path: str | Path, *, device: str = "cpu", dtype="auto", attn: str = "sdpa",
                 layers: int | None = None, vision_layers: int | None = None, min_pixels: int | None = None,
                 max_pixels: int | None = None):
    """A `LongVid` over the real transformers class built from ``config_path`` with random weights (initialised on
    ``device``), longvid's byte-level tokenizer (its special-token ids written into the config) and the released
    video processor's frame sizes (``min_pixels`` / ``max_pixels`` override them). ``layers`` / ``vision_layers`` cut
    the LLM / vision depth (to fit a CPU)."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    import longvid
    from longvid.models import ADAPTERS, adapter_class, read_preprocessor_config, resolve_device, resolve_dtype
    from longvid.tiny import LLAVA_TOKEN_IDS, TOKEN_IDS, VIDEO_PROCESSORS, build_tokenizer

    raw = read_config(config_path)
    family = raw["model_type"]
    ids = LLAVA_TOKEN_IDS if family == "llava_onevision" else TOKEN_IDS
    raw.update(ids)
    text, vision = raw.setdefault("text_config", {}), raw.setdefault("vision_config", {})
    text.update(eos_token_id=258, pad_token_id=256, bos_token_id=256)
    if layers is not None:
        check_positive("layers", layers, integer=True)
        text["num_hidden_layers"] = layers
        text.pop("layer_types", None)
    if vision_layers is not None:
        check_positive("vision_layers", vision_layers, integer=True)
        key = "num_hidden_layers" if family == "llava_onevision" else "depth"
        vision[key] = vision_layers
        for name in ("fullatt_block_indexes", "deepstack_visual_indexes"):
            if name in vision:
                vision[name] = [i for i in vision[name] if i < vision_layers] or [vision_layers - 1]
    folder = Path(tempfile.mkdtemp(prefix="longvid-bench-model-"))
    (folder / "config.json").write_text(json.dumps(raw))
    (folder / "video_preprocessor_config.json").write_text(json.dumps(VIDEO_PROCESSORS[family]
                                                                      | REAL_PROCESSORS[family]))
    tokenizer = build_tokenizer(family)
    module_name = ADAPTERS[family].partition(":")[0]
    import importlib

    module = importlib.import_module(module_name)
    check_positive("min_pixels", min_pixels, integer=True)
    check_positive("max_pixels", max_pixels, integer=True)
    module.pixel_plan_from_checkpoint(folder, min_pixels, max_pixels)  # the pixel settings checked as load does
    pre = getattr(module, "preprocessor_kwargs", read_preprocessor_config)(folder)
    pre.update({k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v is not None})
    config = AutoConfig.from_pretrained(folder)
    torch_dtype = resolve_dtype(dtype)
    torch_dtype = torch.bfloat16 if torch_dtype == "auto" and resolve_device(device).type == "cuda" else (
        torch.float32 if torch_dtype == "auto" else torch_dtype)
    with torch.device(resolve_device(device)):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch_dtype, attn_implementation=attn)
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = 258, 256
    return longvid.LongVid(adapter_class(family)(model.eval(), tokenizer, **pre))


# ----- inputs -----------------------------------------------------------------------------------------------------
def video_for(lm, n_tokens: int, folder: Path) -> tuple[Path, "object", int]:
    """A synthetic video and the sampling whose frames give about ``n_tokens`` visual tokens on ``lm``: (path,
    SamplingOptions, planned tokens)."""
    from longvid.video.options import SamplingOptions
    from longvid.video.synthetic import write_test_video

    side = 448
    pixels = lm.adapter.pixels
    temporal = pixels.temporal_patch
    per_step = pixels.tokens_per_step(side, side, 2 * temporal)
    frames = max(temporal, temporal * math.ceil(n_tokens / per_step))
    for _ in range(3):  # a clip budget (Qwen3-VL) shrinks frames as their number grows: settle the count
        per_step = pixels.tokens_per_step(side, side, frames)
        frames = max(temporal, temporal * math.ceil(n_tokens / per_step))
    fps = 8
    path = folder / f"bench_{n_tokens}.mp4"
    if not path.exists():
        write_test_video(path, seconds=math.ceil(frames / fps) + 1, fps=fps, width=side, height=side)
    sampling = SamplingOptions(frames=frames)
    return path, sampling, lm.info(path, sampling)["visual_tokens"]


# ----- FLOPs --------------------------------------------------------------------------------------------------------
def prefill_flops(text_config, tokens: int) -> float:
    """Dense prefill FLOPs of the LLM over ``tokens`` (linear layers and causal attention; no embeddings/head)."""
    d = text_config.hidden_size
    heads, kv_heads = text_config.num_attention_heads, getattr(text_config, "num_key_value_heads", None)
    kv_heads = kv_heads or heads
    head_dim = getattr(text_config, "head_dim", None) or d // heads
    inter = getattr(text_config, "intermediate_size", 4 * d)
    linear = d * heads * head_dim * 2 + 2 * d * kv_heads * head_dim + 3 * d * inter  # q, o, k, v, gate/up/down
    per_layer = 2 * tokens * linear + 2 * tokens * tokens * heads * head_dim  # QK^T and AV, causal halves x 2
    return text_config.num_hidden_layers * per_layer


# ----- running --------------------------------------------------------------------------------------------------------
def run_bench(lm, plan: BenchPlan, *, folder: Path | None = None, log=print) -> dict:
    """Measure every (tokens, method, keep); returns ``{"rows": [...], ...}`` (see the module docstring)."""
    import torch

    from longvid.methods.registry import get_method
    from longvid.eval.common import PeakMemory

    folder = Path(folder or tempfile.mkdtemp(prefix="longvid-bench-"))
    device = lm.adapter.device
    text_config = getattr(lm.adapter.model.config, "text_config", None)
    rows = []
    for n in plan.tokens:
        path, sampling, planned = video_for(lm, n, folder)
        for method_name, keep in plan.cases():
            method = get_method(method_name, keep=keep)
            samples = []
            for i in range(plan.warmup + plan.runs):
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                with PeakMemory(device) as mem:
                    t0 = time.perf_counter()
                    frames = lm.read(path, sampling)
                    decode = time.perf_counter() - t0
                    answer = lm.ask(frames, QUESTION, method=method, max_new_tokens=plan.new_tokens,
                                    chunk_size=plan.chunk_size)
                if i >= plan.warmup:
                    s = answer.stats
                    samples.append(dict(decode=decode, vision=s.seconds["vision"], reduce=s.seconds["reduce"],
                                        prefill=s.seconds["prefill"], ttft=s.ttft,
                                        per_token=s.seconds["generate"] / max(1, len(answer.token_ids)),
                                        peak=mem.peak, stats=s, tokens=len(answer.token_ids)))
                del frames, answer
            s = samples[-1]["stats"]
            med = {k: statistics.median(x[k] for x in samples) for k in ("decode", "vision", "reduce", "prefill",
                                                                          "ttft", "per_token", "peak")}
            text = s.llm_tokens - s.kept_tokens
            row = dict(tokens=n, visual_tokens=s.visual_tokens, method=method_name, keep=keep,
                       retention=s.retention, kept_tokens=s.kept_tokens, llm_tokens=s.llm_tokens, kv_bytes=s.kv_bytes,
                       decode_s=med["decode"], vision_s=med["vision"], reduce_s=med["reduce"],
                       prefill_s=med["prefill"], ttft_s=med["ttft"], ms_per_token=1e3 * med["per_token"],
                       peak_bytes=int(med["peak"]), generated=samples[-1]["tokens"], runs=len(samples),
                       pre_llm=method.press is None and method.layer_pruner is None,
                       text_tokens=text)
            if text_config is not None:
                row["prefill_flops"] = prefill_flops(text_config, s.llm_tokens)
            if plan.vs_generate and method_name == "full":
                row.update(reference_generate(lm, path, sampling, plan))
                log(f"{n} tokens, transformers generate: TTFT {row['generate_ttft_s']:.3f} s; longvid full without "
                    f"its preprocessing {row['vs_generate']:.3f}x of it")
            rows.append(row)
            log(f"{n} tokens, {method_name}{'' if keep is None else f' keep {keep:g}'}: TTFT {row['ttft_s']:.3f} s, "
                f"prefill {row['prefill_s']:.3f} s, peak {row['peak_bytes'] / 2**20:.0f} MiB")
    for row in rows:
        full = next(r for r in rows if r["tokens"] == row["tokens"] and r["method"] == "full")
        row["prefill_speedup"] = full["prefill_s"] / row["prefill_s"] if row["prefill_s"] > 0 else None
        ideal = (full["prefill_flops"] / row["prefill_flops"]) if row.get("prefill_flops") and row["pre_llm"] else None
        row["ideal_speedup"] = ideal
        row["of_ideal"] = (row["prefill_speedup"] / ideal) if ideal and row["prefill_speedup"] else None
    return dict(rows=rows, device=str(device), dtype=str(lm.adapter.dtype), family=lm.adapter.family)


def reference_generate(lm, path, sampling, plan: BenchPlan) -> dict:
    """transformers' own ``model.generate`` (``max_new_tokens=1``, greedy) on the prompt longvid builds for ``full``
    (`ModelAdapter.generate_inputs`), its inputs prepared beforehand as a processor would, against longvid's
    ``full`` ask (``max_new_tokens=1``) on the same decoded frames, in alternating order round by round (``plan.warmup``
    rounds, then ``plan.runs`` timed). longvid's TTFT includes its own preprocessing (resize, normalise, patchify),
    which transformers' processor does before ``generate``; it is timed alone in the same rounds and subtracted.
    Returns the medians and the median of per-round ratios (``vs_generate``)."""
    import torch

    from longvid.methods.registry import get_method

    a = lm.adapter
    device = a.device
    frames = lm.read(path, sampling)
    dtype = next(a.model.parameters()).dtype
    kwargs = {k: (v.to(device, dtype) if k.startswith("pixel_values") else v.to(device)) if torch.is_tensor(v) else v
              for k, v in a.generate_inputs(frames.frames, frames.timestamps, QUESTION).items()}
    takes_time = "timestamps" in inspect.signature(a.preprocess).parameters
    full = get_method("full")

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def timed(fn) -> float:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0

    cases = {
        "generate": lambda: a.model.generate(**kwargs, max_new_tokens=1, do_sample=False),
        "ask": lambda: lm.ask(frames, QUESTION, method=full, max_new_tokens=1, chunk_size=plan.chunk_size),
        "preprocess": lambda: a.preprocess(frames.frames, frames.timestamps) if takes_time else
        a.preprocess(frames.frames),
    }
    seconds = {name: [] for name in cases}
    for i in range(plan.warmup + plan.runs):
        for name in (cases if i % 2 == 0 else reversed(list(cases))):
            t = timed(cases[name])
            if i >= plan.warmup:
                seconds[name].append(t)
    paired = [(ask - pre) / gen for gen, ask, pre in zip(seconds["generate"], seconds["ask"], seconds["preprocess"])]
    return dict(generate_ttft_s=statistics.median(seconds["generate"]),
                ask_ttft_s=statistics.median(seconds["ask"]),
                preprocess_s=statistics.median(seconds["preprocess"]), vs_generate=statistics.median(paired))


def table(result: dict) -> str:
    lines = ["| visual tokens | method | keep | retention | decode s | vision s | reduce s | prefill s | ms/token | "
             "TTFT s | peak MiB | KV MiB | prefill speedup x | FLOP-ideal x | of ideal |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        keep = ("-" if r["method"] == "full" else "default") if r["keep"] is None else f"{r['keep']:g}"

        def fmt(x, spec):
            return "-" if x is None else format(x, spec)

        lines.append(f"| {r['visual_tokens']} | {r['method']} | {keep} | {r['retention']:.3f} | {r['decode_s']:.3f} | "
                     f"{r['vision_s']:.3f} | {r['reduce_s']:.3f} | {r['prefill_s']:.3f} | {r['ms_per_token']:.1f} | "
                     f"{r['ttft_s']:.3f} | {r['peak_bytes'] / 2**20:.0f} | {r['kv_bytes'] / 2**20:.1f} | "
                     f"{fmt(r['prefill_speedup'], '.2f')} | {fmt(r['ideal_speedup'], '.2f')} | "
                     f"{fmt(r['of_ideal'], '.2f')} |")
    reference = [r for r in result["rows"] if "vs_generate" in r]
    if reference:
        lines += ["", "`full` against transformers' own `generate` on the same prompt and frames (`max_new_tokens=1`, "
                  "alternating rounds; transformers' inputs are prepared beforehand, so longvid's preprocessing is "
                  "subtracted from its time; ratio: median of the per-round ratios):", "",
                  "| visual tokens | transformers s | longvid s | longvid preprocess s | ratio (excl. preprocess) |",
                  "|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['visual_tokens']} | {r['generate_ttft_s']:.3f} | {r['ask_ttft_s']:.3f} | "
                  f"{r['preprocess_s']:.3f} | {r['vs_generate']:.3f} |" for r in reference]
    return "\n".join(lines) + "\n"


def plot(result: dict, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    out = []
    for key, label, name in (("ttft_s", "time to first token, s", "ttft_vs_tokens.png"),
                             ("peak_bytes", "peak extra memory, MiB", "peak_vs_tokens.png")):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for i, case in enumerate(dict.fromkeys((r["method"], r["keep"]) for r in rows)):
            pts = sorted((r["visual_tokens"], r[key] / (2**20 if key == "peak_bytes" else 1), r) for r in rows
                         if (r["method"], r["keep"]) == case)
            label_case = case[0] if case[1] is None else f"{case[0]} {case[1]:g}"
            line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label_case)
            if key == "ttft_s" and all(p[2]["ideal_speedup"] for p in pts) and case[0] != "full":
                ideal = []
                for x, _, r in pts:
                    full = next(f for f in rows if f["tokens"] == r["tokens"] and f["method"] == "full")
                    ideal.append(r["ttft_s"] - r["prefill_s"] + full["prefill_s"] / r["ideal_speedup"])
                ax.plot([p[0] for p in pts], ideal, linestyle="--", color=line.get_color(), alpha=0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("visual tokens")
        ax.set_ylabel(label)
        ax.set_title(f"{result['family']} on {result['device']}" + (" (dashed: prefill at FLOP-ideal)"
                                                                    if key == "ttft_s" else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
        out.append(folder / name)
    return out
