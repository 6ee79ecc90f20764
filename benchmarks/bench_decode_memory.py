"""Peak memory and time of reading long 1080p / 4K videos at 1 fps: frames kept at source vs at model resolution.

Issue: "Decoded frames are kept at the source's size and resized later [...] Resize each frame to the adapter's
target size as it is decoded [...] Benchmark: peak RSS and time for 1080p and 4K inputs of 5 and 60 minutes at
1 fps, before and after; target: peak above the idle process <= 1.5x the model-resolution frame bytes, and decode
time no worse than today."

Inputs (generated once into ``$LONGVID_CACHE_DIR/bench_decode``, libx264 ultrafast, crf 40, smooth gradient and a
moving square): 1920x1080 and 3840x2160; 5 minutes at 4 fps source (1200 frames) and 60 minutes at 1 fps source
(3600 frames). Encoding 4K on 2 cores runs at ~4.5 frames/s, which is why the sources are not 30 fps. Each case runs
in a fresh interpreter: imports, probe, then one timed read of every frame at 1 fps (300 or 3600 frames); peak RSS is
the kernel's ``VmHWM`` minus the resident set just before the read.

Cases, per input:

* ``source``: ``read_video(path, fps=1)``, frames at the source's size, the behaviour before this change (run with
  ``--src`` pointing at a checkout of the old code: ``git worktree add /tmp/before <commit>``). Skipped where the
  frames alone exceed ``--max-gib`` (60 minutes of 1080p is 22 GiB, of 4K 89 GiB: they cannot run on 24 GiB).
* ``source+resize``: the same, then ``resize_frames`` to Qwen2-VL-7B's frame size, the float32 (T, 3, h, w) the old
  preprocessing built before normalising: what getting model-resolution frames cost before (time and peak).
* ``model``: ``read_video(path, fps=1, size=PixelPlan.frame_size)``: each frame resized as it is decoded, to
  Qwen2-VL-7B's geometry (max 768 x 28 x 28 pixels: 560 x 1008 for both 16:9 inputs).
* ``tiny``: the same at longvid-tiny's geometry (56 x 56).

Run::

    python benchmarks/bench_decode_memory.py                      # this checkout (~15 min, + ~25 min to encode once)
    python benchmarks/bench_decode_memory.py --src /tmp/before --cases source   # the old code, same inputs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import git_state  # noqa: E402

from longvid.video import cache_dir, write_test_video  # noqa: E402

INPUTS = {  # name: (width, height, seconds, source fps)
    "1080p-5min": (1920, 1080, 300, 4),
    "4k-5min": (3840, 2160, 300, 4),
    "1080p-60min": (1920, 1080, 3600, 1),
    "4k-60min": (3840, 2160, 3600, 1),
}
GEOMETRY = {"model": dict(max_pixels=768 * 28 * 28), "tiny": dict(min_pixels=56 * 56, max_pixels=56 * 56)}

_CHILD = r"""
import json, os, sys, time
{setup}
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
def hwm():
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
    return int(line.split()[1]) * 1024
from longvid.video import probe, read_video, resize_frames
info = probe(sys.argv[1])
idle = rss()
open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to the current RSS
t0 = time.perf_counter()
frames = read_video(sys.argv[1], fps=1.0{size})
{after}
seconds = time.perf_counter() - t0
print(json.dumps(dict(seconds=seconds, idle=idle, peak=hwm(), frame_bytes=frames.frames.nbytes,
                      frames=len(frames), shape=list(frames.frames.shape))))
"""


def input_path(name: str) -> Path:
    width, height, seconds, fps = INPUTS[name]
    path = cache_dir() / "bench_decode" / f"{name}_{fps}fps.mp4"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.mp4")
        t0 = time.perf_counter()
        write_test_video(partial, seconds=seconds, fps=fps, width=width, height=height, pattern="gradient",
                         crf=40)
        partial.rename(path)
        print(f"encoded {path} ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.0f} s",
              file=sys.stderr)
    return path


def run_case(path: Path, case: str, src: str | None) -> dict:
    setup, size, after = "", "", ""
    if case == "source+resize":
        setup = f"from longvid.models.qwen2_vl import PixelPlan; plan = PixelPlan.create(**{GEOMETRY['model']!r})"
        after = "resized = resize_frames(frames.frames, *plan.frame_size(info.height, info.width))"
    elif case != "source":
        setup = f"from longvid.models.qwen2_vl import PixelPlan; plan = PixelPlan.create(**{GEOMETRY[case]!r})"
        size = ", size=plan.frame_size"
    env = dict(os.environ, PYTHONPATH=src) if src else dict(os.environ)
    out = subprocess.run([sys.executable, "-P", "-c", _CHILD.format(setup=setup, size=size, after=after), str(path)],
                         env=env,
                         capture_output=True, text=True)
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", nargs="+", default=list(INPUTS), choices=list(INPUTS))
    cases = ["source", "source+resize", "model", "tiny"]
    parser.add_argument("--cases", nargs="+", default=["source", "model", "tiny"], choices=cases)
    parser.add_argument("--repeat", type=int, default=1, help="runs per case (median seconds and peak reported)")
    parser.add_argument("--src", help="PYTHONPATH of the longvid to measure (default: the installed one)")
    parser.add_argument("--max-gib", type=float, default=16.0, help="skip cases whose frames alone exceed this")
    parser.add_argument("--make-only", action="store_true", help="encode the inputs and stop")
    args = parser.parse_args()
    paths = {name: input_path(name) for name in args.inputs}
    if args.make_only:
        return
    rows = []
    for name in args.inputs:
        width, height, seconds, fps = INPUTS[name]
        for case in args.cases:
            row = dict(input=name, case=case, src=args.src or "installed", source_fps=fps,
                       file_mib=round(paths[name].stat().st_size / 2**20, 1))
            if case.startswith("source") and seconds * width * height * 3 > args.max_gib * 2**30:
                row["skipped"] = f"{seconds * width * height * 3 / 2**30:.1f} GiB of frames > --max-gib"
            else:
                runs = [run_case(paths[name], case, args.src) for _ in range(args.repeat)]
                ok = [r for r in runs if "seconds" in r]
                if not ok:
                    row |= runs[0]
                else:
                    row |= ok[0] | dict(seconds=statistics.median(r["seconds"] for r in ok),
                                        peak=int(statistics.median(r["peak"] for r in ok)),
                                        idle=int(statistics.median(r["idle"] for r in ok)),
                                        runs_seconds=[round(r["seconds"], 2) for r in ok])
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    print(f"{'input':<12} {'case':<13} {'frames':>6} {'shape':>10} {'frames MiB':>10} {'peak-idle MiB':>13} "
          f"{'ratio':>6} {'seconds':>8}")
    for r in rows:
        if "seconds" not in r:
            print(f"{r['input']:<12} {r['case']:<13} {r.get('skipped') or r.get('error')}")
            continue
        extra = r["peak"] - r["idle"]
        shape = "x".join(map(str, r["shape"][1:3]))
        print(f"{r['input']:<12} {r['case']:<13} {r['frames']:>6} {shape:>10} {r['frame_bytes'] / 2**20:>10.1f} "
              f"{extra / 2**20:>13.1f} {extra / max(1, r['frame_bytes']):>6.2f} {r['seconds']:>8.1f}")
    print(json.dumps(dict(benchmark="decode_memory", machine=platform.machine(), cpus=os.cpu_count(),
                          git=git_state(), rows=rows)))


if __name__ == "__main__":
    main()
