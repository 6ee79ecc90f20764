"""Time to first token (TTFT) of the longvid engine with ``full`` vs plain transformers ``generate``, on CPU.

Issue targets: "the engine with ``full`` adds at most 5 % to time-to-first-token over plain transformers
``generate`` on the tiny model at 4k visual tokens", on each family (``--family``). The model is a random-weight
tiny checkpoint built in code (``longvid.tiny``) at a larger size than the tests use, so the LLM dominates: text
hidden 256, 4 layers, 4 heads, 2 KV heads (head_dim 64), vision depth 2; float32, SDPA, 2 torch threads. The video
is a synthetic square H.264 clip of about 4096 visual tokens: Qwen2/2.5-VL 448 px x 32 frames (16 steps of 16x16),
Qwen3-VL 512 px x 32 frames (16 steps of 16x16 at 32 px a token), LLaVA-OneVision 384 px x 21 frames (14x14 pooled
tokens a frame, 4116 + the newline).

TTFT is measured from already decoded frames to the first generated token (``max_new_tokens=1``), both sides:

* transformers: ``model.generate`` on precomputed ``pixel_values_videos`` (vision encoder + LLM prefill + token);
* longvid: ``lm.ask(frames, q, method="full", max_new_tokens=1)`` on a ``Frames`` object (no file decoding). It
  includes longvid's own preprocessing (resize, normalise, patchify), which transformers had done beforehand, so
  ``a.preprocess`` is timed in the same round and subtracted: "excl. preprocess" is the fair number for the target.

Also timed: the default ``chunk_size`` (8192: the 4179-token prompt in one forward) vs ``chunk_size=4096`` (a
second, masked chunk), and two diagnostics:
transformers' vision encoder alone, and longvid's ``answer_with_query`` path (one forward over prefix + video +
question, as query-aware methods use). One warmup round, then ``--runs`` rounds that run every case once, in
alternating order (forward, then reversed) so drifting load hits all cases alike. Reported: median and min of each
case, and the ratio longvid / transformers by median, by min, and as the median of per-round ratios. CPU ops are
synchronous, so no device synchronize is needed; peak memory on CPU cannot be reset, so the process's peak RSS is
reported once, next to the KV-cache bytes. A contention probe (median latency of a tiny matmul at the start and the
end) shows whether other processes were stalling torch's thread pool. Checks that both sides pick the same first
token. Prints a table, then one JSON object as the last line.

Run (about 3 minutes on 2 cores; ``--threads 1`` is a check that is immune to thread-pool stalls)::

    python benchmarks/bench_engine.py [--family qwen2_vl] [--threads 2] [--runs 9]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import git_state, small_op_ms  # benchmarks/ is on sys.path when run as a script
import transformers

import longvid
from longvid.engine.session import answer_with_query
from longvid.engine.session import DEFAULT_CHUNK
from longvid.tiny import save_tiny_model
from longvid.video import read_video, write_test_video

MODEL = dict(hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2, vision_depth=2)
VIDEO_FPS = 8
FAMILIES = {  # family -> frame side, frames, extra tiny-config and load settings: about 4096 visual tokens each
    "qwen2_vl": dict(side=448, frames=32, pixels=448 * 448),  # 16 x 16 merged tokens a step, 16 steps
    "qwen2_5_vl": dict(side=448, frames=32, pixels=448 * 448),
    "qwen3_vl": dict(side=512, frames=32, pixels=512 * 512),  # 32 px a token: 16 x 16 a step, 16 steps
    "llava_onevision": dict(side=384, frames=21, config=dict(image_size=384)),  # 14 x 14 pooled tokens a frame
}
QUESTION = "What moves in the video?"
SMALL_CHUNK = 4096  # splits the 4179-token prompt: the second chunk attends to a past through a mask
CASES = {  # name -> what the table calls it
    "transformers": "transformers generate (pixel_values ready)",
    "longvid": f"longvid ask, chunk {DEFAULT_CHUNK} (default)",
    "longvid_chunk_4096": "longvid ask, chunk 4096",
    "longvid_single_forward": "longvid encode + answer_with_query",
    "preprocess": "longvid preprocess alone",
    "transformers_vision": "transformers vision encoder alone",
}
ASKS = ("longvid", "longvid_chunk_4096", "longvid_single_forward")


def build(workdir: Path, family: str):
    """The tiny checkpoint, loaded with frames pinned to side x side, and the decoded frames."""
    spec = FAMILIES[family]
    path = save_tiny_model(workdir / "model", family, seed=0, **MODEL, **spec.get("config", {}))
    video = write_test_video(workdir / "clip.mp4", seconds=spec["frames"] / VIDEO_FPS, fps=VIDEO_FPS,
                             width=spec["side"], height=spec["side"])
    pixels = dict(min_pixels=spec["pixels"], max_pixels=spec["pixels"]) if "pixels" in spec else {}
    lm = longvid.load(path, dtype="float32", attn_implementation="sdpa", **pixels)
    return lm, read_video(video, num_frames=spec["frames"])


def transformers_inputs(lm, frames) -> dict:
    """The prompt longvid builds, as ``generate`` kwargs in the family's own layout."""
    return lm.adapter.generate_inputs(frames.frames, frames.timestamps, QUESTION)


def runners(lm, frames, hf_kwargs: dict) -> dict:
    """name -> callable returning longvid's per-stage seconds (or None); every case is one TTFT-sized call."""
    a, full = lm.adapter, longvid.get_method("full")

    def ask(chunk_size):
        return lambda: lm.ask(frames, QUESTION, method=full, max_new_tokens=1, chunk_size=chunk_size).stats.seconds

    def single_forward():
        encoded = lm.encode(frames, full)
        return answer_with_query(a, encoded, full, QUESTION, max_new_tokens=1).stats.seconds

    def generate():
        a.model.generate(**hf_kwargs, max_new_tokens=1, do_sample=False)

    @torch.inference_mode()
    def vision():
        if "video_grid_thw" in hf_kwargs:
            a.model.model.get_video_features(hf_kwargs["pixel_values_videos"], hf_kwargs["video_grid_thw"])
        else:  # LLaVA-OneVision: fixed-size frames
            a.model.model.get_video_features(hf_kwargs["pixel_values_videos"],
                                             vision_feature_layer=a.feature_layer,
                                             vision_feature_select_strategy=a.select_strategy)

    def preprocess():
        if "video_grid_thw" in hf_kwargs:
            a.preprocess(frames.frames, frames.timestamps)
        else:
            a.preprocess(frames.frames)

    return {
        "transformers": generate,
        "longvid": ask(DEFAULT_CHUNK),
        "longvid_chunk_4096": ask(SMALL_CHUNK),
        "longvid_single_forward": single_forward,
        "preprocess": preprocess,
        "transformers_vision": vision,
    }


def measure(cases: dict, runs: int) -> tuple[dict, dict]:
    """Wall seconds per case per round, and longvid's stage seconds; one warmup round first, order alternating."""
    for fn in cases.values():
        fn()
    sec = {name: [] for name in cases}
    stages = {name: [] for name in cases}
    order = list(cases)
    for r in range(runs):
        for name in order if r % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            seconds = cases[name]()
            sec[name].append(time.perf_counter() - t0)
            if seconds is not None:
                stages[name].append(seconds)
    return sec, stages


def first_tokens(lm, frames, hf_kwargs: dict) -> dict:
    """Both sides' first token and the largest logit difference (same greedy prompt, fp32)."""
    ours = lm.ask(frames, QUESTION, method="full", max_new_tokens=1, record_logits=True)
    out = lm.adapter.model.generate(**hf_kwargs, max_new_tokens=1, do_sample=False, output_logits=True,
                                    return_dict_in_generate=True)
    theirs = out.logits[0][0].float()
    return {"longvid": int(ours.logits[0].argmax()), "transformers": int(out.sequences[0, -1]),
            "same": int(ours.logits[0].argmax()) == int(out.sequences[0, -1]),
            "max_abs_logit_diff": float((ours.logits[0] - theirs).abs().max()),
            "llm_tokens": ours.stats.llm_tokens, "visual_tokens": ours.stats.visual_tokens,
            "kv_bytes": ours.stats.kv_bytes}


def summary(values: list[float]) -> dict:
    return {"median_sec": round(statistics.median(values), 4), "min_sec": round(min(values), 4),
            "runs_sec": [round(v, 4) for v in values]}


def derive(sec: dict, stages: dict) -> tuple[dict, dict]:
    """Per-round series: longvid asks minus that round's preprocess; transformers generate minus its vision."""
    series = {name: summary(values) for name, values in sec.items()}
    for name in ASKS:
        series[f"{name}_excl_preprocess"] = summary([x - p for x, p in zip(sec[name], sec["preprocess"])])
    series["transformers_llm"] = summary([g - v for g, v in zip(sec["transformers"], sec["transformers_vision"])])
    stage_medians = {}
    for name in ASKS:
        med = {k: round(statistics.median(s[k] for s in stages[name]), 4) for k in ("vision", "prefill", "generate")}
        med["vision_excl_preprocess"] = round(med["vision"] - series["preprocess"]["median_sec"], 4)
        stage_medians[name] = med
    return series, stage_medians


def ratios(series: dict) -> dict:
    """longvid / transformers for every ask variant, with and without preprocessing: ratio of medians, ratio of
    mins, and the median of per-round ratios (each round's cases ran back to back, under the same load)."""
    hf = series["transformers"]
    out = {}
    for name in ASKS:
        for suffix in ("_excl_preprocess", ""):
            s = series[name + suffix]
            paired = [x / y for x, y in zip(s["runs_sec"], hf["runs_sec"])]
            out[name + suffix] = {"median": round(s["median_sec"] / hf["median_sec"], 3),
                                  "min": round(s["min_sec"] / hf["min_sec"], 3),
                                  "paired_median": round(statistics.median(paired), 3)}
    return out




def print_table(series: dict, stage_medians: dict, ratio: dict, check: dict) -> None:
    print(f"{'case':<50} {'median s':>9} {'min s':>7} {'ratio: medians':>14} {'mins':>6} {'per-round':>9}")
    rows = [("transformers", CASES["transformers"]), ("transformers_vision", CASES["transformers_vision"]),
            ("transformers_llm", "transformers generate - vision (LLM part)"), ("preprocess", CASES["preprocess"])]
    for name in ASKS:
        rows += [(name, CASES[name] + ", incl. preprocess"), (f"{name}_excl_preprocess", CASES[name] + ", excl.")]
    for key, label in rows:
        s, r = series[key], ratio.get(key)
        r = f"{r['median']:>14.3f} {r['min']:>6.3f} {r['paired_median']:>9.3f}" if r else ""
        print(f"{label:<50} {s['median_sec']:>9.3f} {s['min_sec']:>7.3f} {r}")
    print(f"\nlongvid stage medians (s)   {'vision(incl prep)':>17} {'vision-prep':>11} {'prefill':>8} {'generate':>8}")
    for name, m in stage_medians.items():
        print(f"{name:<27} {m['vision']:>17.3f} {m['vision_excl_preprocess']:>11.3f} {m['prefill']:>8.3f} "
              f"{m['generate']:>8.3f}")
    print(f"\nfirst token: longvid {check['longvid']}, transformers {check['transformers']} (same: {check['same']}), "
          f"max |logit diff| {check['max_abs_logit_diff']:.2e}; LLM tokens {check['llm_tokens']}, visual tokens "
          f"{check['visual_tokens']}")



def main(threads: int = 2, runs: int = 9, family: str = "qwen2_vl") -> dict:
    if threads < 1 or runs < 1:
        raise ValueError(f"threads and runs must be >= 1, got threads={threads}, runs={runs}")
    torch.set_num_threads(threads)
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        lm, frames = build(Path(tmp), family)
        hf_kwargs = transformers_inputs(lm, frames)
        check = first_tokens(lm, frames, hf_kwargs)
        probe_start = small_op_ms()
        t0 = time.perf_counter()
        sec, stages = measure(runners(lm, frames, hf_kwargs), runs)
        elapsed = time.perf_counter() - t0
        probe_end = small_op_ms()
    series, stage_medians = derive(sec, stages)
    ratio = ratios(series)
    print_table(series, stage_medians, ratio, check)
    grid = [int(x) for x in hf_kwargs["video_grid_thw"][0]] if "video_grid_thw" in hf_kwargs else None
    spec = FAMILIES[family]
    text = lm.adapter.lm.config
    head_dim = text.hidden_size // text.num_attention_heads
    target = ratio["longvid_excl_preprocess"]["median"]
    print(f"\ntarget (longvid excl. preprocess <= 1.05 x transformers, by median): {target:.3f} -> "
          f"{'met' if target <= 1.05 else 'NOT met'}; {elapsed:.0f} s measuring, load avg {load_start:.2f} -> "
          f"{os.getloadavg()[0]:.2f}, tiny-matmul probe {probe_start:.2f} -> {probe_end:.2f} ms")
    return {
        "config": {"family": family, **MODEL, **spec.get("config", {}), "dtype": "float32",
                   "attn_implementation": "sdpa", "threads": threads, "frame_size": [spec["side"]] * 2,
                   "num_frames": spec["frames"], "grid_thw_patches": grid, "question": QUESTION, "runs": runs,
                   "chunk_sizes": {"default": DEFAULT_CHUNK, "small": SMALL_CHUNK}},
        "tokens": {"visual": check["visual_tokens"], "llm_longvid": check["llm_tokens"],
                   "llm_transformers": int(hf_kwargs["input_ids"].shape[1]), "kv_bytes": check["kv_bytes"],
                   "kv_bytes_per_token": 2 * text.num_hidden_layers * text.num_key_value_heads * head_dim * 4},
        "first_token": {k: check[k] for k in ("longvid", "transformers", "same", "max_abs_logit_diff")},
        "series": series,
        "longvid_stage_medians_sec": stage_medians,
        "ratio_vs_transformers": ratio,
        "ttft_sec": {"transformers": series["transformers"]["median_sec"],
                     "longvid_excl_preprocess": series["longvid_excl_preprocess"]["median_sec"],
                     "longvid_incl_preprocess": series["longvid"]["median_sec"]},
        "target_met": target <= 1.05,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "measure_wall_sec": round(elapsed, 1),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version(), "longvid": git_state()},
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "load_avg_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)],
                    "small_op_ms": [probe_start, probe_end]},
        "command": " ".join(["python", *sys.argv]),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--runs", type=int, default=9, help="timed rounds after the warmup round")
    parser.add_argument("--family", choices=list(FAMILIES), default="qwen2_vl", help="tiny model family")
    args = parser.parse_args()
    print(json.dumps(main(args.threads, args.runs, args.family)))
