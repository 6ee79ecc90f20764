"""The evaluation runner's own overhead: wall time of ``longvid eval NAME`` around the time spent inside the model's
calls (video decode, encode, answers). Issue 15's target: the runner adds <= 2% over its runs' work.

A Video-MME-layout fixture is written from synthetic videos (the suite's evaluation seeds: 60 s, 224 x 224, 4 fps;
their questions as Video-MME rows), then the runner evaluates it with longvid-tiny, as ``longvid eval videomme``
does; ``timing.json`` in the results folder has both sums.

    python benchmarks/bench_eval_overhead.py [--videos 20] [--methods evs,knorm]

Prints a table and a JSON last line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import git_state  # noqa: E402


def videomme_fixture(root: Path, n_videos: int, length: float) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from longvid.eval.lmms_task import write_synth_task

    write_synth_task(root / "synth", n_videos=n_videos, length=length, seed=11)
    (root / "data").mkdir()
    rows = []
    for i, line in enumerate(open(root / "synth" / "videos" / "questions.jsonl")):
        q = json.loads(line)
        video = Path(q["video"]).stem
        if not (root / "data" / f"{video}.mp4").exists():
            (root / "data" / f"{video}.mp4").symlink_to(root / "synth" / "videos" / q["video"])
        rows.append(dict(video_id=video, duration="short", domain="synthetic", sub_category=q["kind"], url="-",
                         videoID=video, question_id=f"{video}-{i}", task_type=q["kind"], question=q["stem"],
                         options=[f"{letter}. {o}" for letter, o in zip("ABCD", q["options"])], answer=q["answer"]))
    (root / "videomme").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), root / "videomme" / "test-00000-of-00001.parquet")
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=20)
    parser.add_argument("--length", type=float, default=60.0)
    parser.add_argument("--methods", default="evs,knorm")
    parser.add_argument("--keep", type=float, default=0.5)
    args = parser.parse_args()
    from longvid.eval.runner import BenchSettings, prepare_bench, run_bench

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        n = videomme_fixture(root, args.videos, args.length)
        settings = BenchSettings(name="videomme", data=str(root), methods=args.methods.split(","), keeps=[args.keep],
                                 fps=1.0, max_new_tokens=4, out=str(root / "out"))
        prepared = prepare_bench(settings, command="benchmarks/bench_eval_overhead.py", log=lambda m: None)
        t0 = time.perf_counter()
        folder = run_bench(prepared, log=lambda m: None)
        outer = time.perf_counter() - t0
        timing = json.loads((folder / "timing.json").read_text())
        summary = json.loads((folder / "summary.json").read_text())
    overhead = (timing["wall"] - timing["work"]) / timing["work"]
    tail = (outer - timing["wall"]) / timing["work"]  # the summary, table and plot after the last unit
    print(f"{n} questions, {args.videos} videos x {len(settings.runs())} (method, keep) runs")
    print(f"{'inside model calls s':>22} {'runner wall s':>14} {'overhead %':>11} {'+ summary/plot %':>17}")
    print(f"{timing['work']:22.2f} {timing['wall']:14.2f} {100 * overhead:11.2f} {100 * tail:17.2f}")
    for r in summary["runs"]:
        print(f"  {r['method']:8} {r['keep'] if r['keep'] is not None else '-':>5} accuracy "
              f"{100 * r['accuracy']:5.1f}  retention {r['retention']:.3f}")
    print(json.dumps(dict(benchmark="eval_overhead", **git_state(), questions=n, videos=args.videos,
                          runs=len(settings.runs()), work_s=timing["work"], wall_s=timing["wall"],
                          overhead=overhead, summary_s=outer - timing["wall"],
                          accuracy={f"{r['method']}:{r['keep']}": r["accuracy"] for r in summary["runs"]})))


if __name__ == "__main__":
    main()
