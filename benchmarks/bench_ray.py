"""Ray scale-out on this machine (a local cluster, loopback): sweep throughput and driver overhead, serving latency.

1. **Sweep** (``longvid eval videomme --ray local``): the same Video-MME-layout run (``--videos`` generated clips) at
   three unit sizes, in one process and on 1 and 2 CPU actors. Reported per run: the answering phase's wall time
   (one process: its units back to back; Ray: the driver's loop), answers per second, speedup over one process,
   the process's whole wall time (model loads and Ray's start included), and the driver's own overhead per unit
   (the round trip seen by the driver minus the actor's time inside the unit, median), absolute and as a share of a
   unit. Every run's samples must be the one-process run's (answers, retention, tokens).
2. **Serving** (``longvid serve``): ``--requests`` chat completions at once (bench_serve's mix of methods, streamed
   and not) against one plain server, then Ray Serve with 1 and 2 replicas; p50/p99 latency, throughput, and every
   answer equal to the plain server's one-at-a-time answer.

    python benchmarks/bench_ray.py                 # ~8 min here; results/ray_scale.md
    python benchmarks/bench_ray.py --videos 4 --requests 20

One 2-core machine cannot show cluster speedups: two 1-thread actors compete with one 2-thread process for the same
two cores; the numbers say what Ray costs, and what the split gains over torch's own threading. Prints a table per
part and a JSON line last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bench_serve import KEY, burst, make_media, one_at_a_time, pct, requests_for  # noqa: E402
from common import git_state  # noqa: E402
from serving import start_server  # noqa: E402

STABLE = ("video_path", "method", "keep", "qid", "answer", "reply", "retention", "kept_tokens", "llm_tokens")
SIZES = {  # unit size: questions per video and eval options
    "small": (1, ["--methods", "full", "--fps", "1"]),
    "medium": (4, ["--methods", "evs", "--keep", "0.5", "--fps", "2"]),
    "large": (4, ["--methods", "evs,knorm", "--keep", "0.5,0.25", "--fps", "4"]),
}


def videomme(root: Path, videos: int, questions: int, clip: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "data").mkdir(parents=True)
    rows = []
    for i in range(videos):
        shutil.copy(clip, root / "data" / f"v{i}.mp4")
        for k in range(questions):
            rows.append(dict(video_id=f"v{i}", duration="short", domain="d", sub_category="s", url="u",
                             videoID=f"v{i}", question_id=f"v{i}-{k}", task_type=f"t{k}",
                             question=f"Question {k}: what colour was the square?",
                             options=["A. red", "B. green", "C. blue", "D. yellow"], answer="ABCD"[k % 4]))
    (root / "videomme").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), root / "videomme" / "test-00000-of-00001.parquet")
    return root


def eval_run(data: Path, out: Path, options: list[str], ray_args: list[str], env: dict | None = None) -> dict:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "longvid", "eval", "videomme", "--data", str(data), "--out", str(out),
                        "--max-new-tokens", "8", *options, *ray_args], capture_output=True, text=True, timeout=3600,
                       env=dict(os.environ, **(env or {})))
    process_wall = time.perf_counter() - t0
    if r.returncode:
        raise RuntimeError(r.stderr)
    folder = next(p for p in out.iterdir() if p.is_dir())
    rows = [json.loads(line) for line in open(folder / "samples.jsonl")]
    timing = json.loads((folder / "timing.json").read_text())
    ray = json.loads((folder / "ray.json").read_text()) if (folder / "ray.json").exists() else None
    phase = ray["wall_seconds"] if ray else timing["wall"]
    return dict(rows=sorted(json.dumps({k: x[k] for k in STABLE}, sort_keys=True) for x in rows), answers=len(rows),
                phase_s=phase, process_s=process_wall, ray=ray)


RUNS = {  # label: (--ray arguments, extra environment)
    "one process": ([], {}),
    "ray, 1 actor": (["--ray", "local", "--actors", "1"], {}),
    "ray, 2 actors": (["--ray", "local", "--actors", "2"], {}),
    "ray, 1 actor, nice 0": (["--ray", "local", "--actors", "1"], {"RAY_worker_niceness": "0"}),
    "ray, 2 actors, nice 0": (["--ray", "local", "--actors", "2"], {"RAY_worker_niceness": "0"}),
}


def sweep(videos: int, sizes: list[str], labels: list[str], repeats: int) -> list[dict]:
    """Each size's runs interleaved ``repeats`` times (this machine's speed drifts); medians per run."""
    import statistics

    from longvid.video import write_test_video

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = write_test_video(tmp / "clip.mp4", seconds=8, fps=10, width=224, height=168)
        for size in sizes:
            questions, options = SIZES[size]
            data = videomme(tmp / f"data-{size}", videos, questions, clip)
            runs = {label: [] for label in labels}
            for rep in range(repeats):
                for label in labels:
                    ray_args, env = RUNS[label]
                    runs[label].append(eval_run(data, tmp / f"out-{size}-{label}-{rep}".replace(" ", "_"), options,
                                                ray_args, env))
                    print(f"# {size} / {label} / {rep}: {runs[label][-1]['phase_s']:.2f} s", file=sys.stderr,
                          flush=True)
            base = statistics.median(r["phase_s"] for r in runs[labels[0]])
            for label, rs in runs.items():
                phase = statistics.median(r["phase_s"] for r in rs)
                rays = [r["ray"] for r in rs if r["ray"]]
                med = (lambda key: statistics.median(x[key] for x in rays) if rays else None)
                out.append(dict(size=size, run=label, units=videos, answers=rs[0]["answers"],
                                answers_per_unit=rs[0]["answers"] // videos, phase_s=round(phase, 2),
                                phase_runs_s=[round(r["phase_s"], 2) for r in rs],
                                answers_per_s=round(rs[0]["answers"] / phase, 2), speedup=round(base / phase, 2),
                                process_s=round(statistics.median(r["process_s"] for r in rs), 1),
                                unit_s=rays and round(med("unit_seconds_median"), 3) or None,
                                overhead_ms=rays and round(1000 * med("overhead_seconds_median"), 1) or None,
                                overhead_pct=rays and round(100 * med("overhead_fraction"), 2) or None,
                                same_samples=all(r["rows"] == runs[labels[0]][0]["rows"] for r in rs)))
    return out


def serving(requests: int, videos: int, seconds: float) -> list[dict]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        media_dir = Path(tmp) / "media"
        media_dir.mkdir()
        bodies = requests_for(requests, make_media(media_dir, videos, seconds))
        common = ["--model", "longvid-tiny", "--media-dir", media_dir, "--api-key", KEY, "--max-tokens", 64,
                  "--queue", requests + 8]
        reference = None
        for label, extra in (("plain server", []), ("ray serve, 1 replica", ["--replicas", 1, "--ray", "local"]),
                             ("ray serve, 2 replicas", ["--replicas", 2, "--ray", "local"])):
            server = start_server(*common, *extra, timeout=300)
            try:
                warm = asyncio.run(one_at_a_time(server.url, bodies[:8]))  # every replica loads and warms up
                assert all(r["status"] == 200 for r in warm), warm
                if reference is None:
                    reference = asyncio.run(one_at_a_time(server.url, bodies))
                results, wall = asyncio.run(burst(server.url, bodies))
            finally:
                code = server.stop(timeout=120)
            ok = [r for r in results if r["status"] == 200]
            seconds_ = [r["seconds"] for r in ok]
            out.append(dict(run=label, sent=len(bodies), answered=len(ok),
                            same_answers=sum(r.get("text") == ref.get("text") for r, ref in zip(results, reference)),
                            p50_s=round(pct(seconds_, 0.5), 3), p99_s=round(pct(seconds_, 0.99), 3),
                            answered_per_s=round(len(ok) / wall, 2), exit_code=code))
            print(f"# {label}: {out[-1]['answered_per_s']} req/s", file=sys.stderr, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=8, help="videos (units) per sweep")
    parser.add_argument("--sizes", default="small,medium,large")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--skip", choices=["sweep", "serving"])
    parser.add_argument("--runs", default="one process;ray, 1 actor;ray, 2 actors", help="sweep runs separated by "
                        "semicolons, of: " + "; ".join(RUNS))
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats of each sweep run")
    args = parser.parse_args()
    result = {"benchmark": "ray_scale", **git_state(), "videos": args.videos, "requests": args.requests}
    if args.skip != "sweep":
        labels = [label.strip() for label in args.runs.split(";")]
        if unknown := [label for label in labels if label not in RUNS]:
            parser.error(f"--runs: unknown {unknown}; pick from: {'; '.join(RUNS)}")
        result["sweep"] = sweep(args.videos, args.sizes.split(","), labels, args.repeats)
        print(f"{'unit size':9} {'run':21} {'answers/unit':>12} {'phase s':>8} {'ans/s':>6} {'speedup':>7} "
              f"{'process s':>9} {'unit s':>7} {'overhead ms':>11} {'overhead %':>10} same")
        for r in result["sweep"]:
            print(f"{r['size']:9} {r['run']:21} {r['answers_per_unit']:12} {r['phase_s']:8} {r['answers_per_s']:6} "
                  f"{r['speedup']:7} {r['process_s']:9} {str(r['unit_s'] or '-'):>7} "
                  f"{str(r['overhead_ms'] or '-'):>11} {str(r['overhead_pct'] or '-'):>10} {r['same_samples']}")
    if args.skip != "serving":
        result["serving"] = serving(args.requests, 4, 30)
        print(f"\n{'run':22} {'sent':>5} {'200':>4} {'same':>4} {'p50 s':>7} {'p99 s':>7} {'req/s':>6} exit")
        for r in result["serving"]:
            print(f"{r['run']:22} {r['sent']:5} {r['answered']:4} {r['same_answers']:4} {r['p50_s']:7} "
                  f"{r['p99_s']:7} {r['answered_per_s']:6} {r['exit_code']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
