"""Benchmark `longvid.video.read_video` against `transformers.video_utils.load_video(backend="pyav")`.

On a synthetic 10-minute 640x360 30 fps H.264 video (libx264 preset veryfast, x264's default GOP: keyint 250 plus
scene cuts, B-frames; cached in ``$LONGVID_CACHE_DIR``, default ``~/.cache/longvid``; encoding takes ~1 min once)
it times, as the median of 3 runs after one warmup:

* 64 uniform frames and fps=1 (600 frames): longvid ``read_video`` (``strategy="auto"``) vs transformers;
* the strategy auto did not pick, for reference: 64 frames ``"sequential"``, fps=1 ``"seek"``;

checks that both libraries return the same indices and equal pixels, and measures peak RSS while sampling 64 frames
in a fresh subprocess (``ru_maxrss``): interpreter baseline after imports, the sampled frames' bytes, and the peak.
Prints a table, then one JSON object as the last line.

Run (about 4 minutes on 2 cores)::

    python benchmarks/bench_video.py
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np

from longvid.video import cache_dir, plan_indices, probe, read_video, write_test_video
from longvid.video.sample import choose_strategy

SECONDS, FPS, WIDTH, HEIGHT, PRESET = 600, 30, 640, 360, "veryfast"
NUM_FRAMES, RUNS = 64, 3
SAMPLINGS = {f"{NUM_FRAMES} uniform": dict(num_frames=NUM_FRAMES), "fps=1": dict(fps=1.0)}

_MEMORY_SCRIPT = """
import resource, sys
{imports}
def peaks():  # ru_maxrss (KiB) and the kernel's VmHWM (KiB) as a cross-check
    hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, int(hwm.split()[1]) * 1024
baseline = peaks()
frames = {call}
print(*baseline, frames.nbytes, *peaks())
"""
_MEMORY_CASES = {
    "longvid": ("from longvid.video import read_video", "read_video(sys.argv[1], num_frames={n}).frames"),
    "transformers": (
        "from transformers.video_utils import load_video",
        "load_video(sys.argv[1], backend='pyav', num_frames={n})[0]",
    ),
}


def bench_video_path() -> Path:
    """The cached benchmark video; encoded on first use (written to a temp name, then renamed)."""
    path = cache_dir() / f"bench_{WIDTH}x{HEIGHT}_{FPS}fps_{SECONDS}s_{PRESET}.mp4"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.mp4")
        start = time.perf_counter()
        write_test_video(partial, seconds=SECONDS, fps=FPS, width=WIDTH, height=HEIGHT, preset=PRESET)
        partial.rename(path)
        print(f"encoded {path} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return path


def median_sec(fn) -> tuple[float, object]:
    """Median wall time of `RUNS` calls after one warmup call, and the warmup's result."""
    result = fn()
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def transformers_load(path: Path, **kwargs):
    from transformers.video_utils import load_video

    return load_video(str(path), backend="pyav", **kwargs)


def compare(name: str, path: Path, **kwargs) -> dict:
    """Time longvid vs transformers for one sampling and check they agree."""
    ours_sec, ours = median_sec(lambda: read_video(path, **kwargs))
    theirs_sec, (video, metadata) = median_sec(lambda: transformers_load(path, **kwargs))
    same_indices = bool(np.array_equal(ours.indices, metadata.frames_indices))
    equal_pixels = bool(video.shape == ours.frames.shape and np.array_equal(video, ours.frames))
    return {
        "case": name,
        "num_frames": len(ours),
        "longvid_sec": round(ours_sec, 3),
        "transformers_sec": round(theirs_sec, 3),
        "speedup": round(theirs_sec / ours_sec, 2),
        "same_indices": same_indices,
        "equal_pixels": equal_pixels,
    }


def peak_memory(path: Path, library: str) -> dict:
    """Peak RSS of sampling `NUM_FRAMES` frames in a fresh interpreter, in bytes.

    The interpreter is started by ``sh``, not forked from this process: Linux carries a parent's ``ru_maxrss``
    into a child forked from it, and this process holds gigabytes of decoded frames by now.
    """
    imports, call = _MEMORY_CASES[library]
    script = _MEMORY_SCRIPT.format(imports=imports, call=call.format(n=NUM_FRAMES))
    command = ["sh", "-c", '"$0" -c "$1" "$2"; exit $?', sys.executable, script, str(path)]  # sh forks python
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    baseline_bytes, baseline_hwm, frame_bytes, peak_bytes, peak_hwm = map(int, out.stdout.split()[-5:])
    return {
        "library": library,
        "baseline_bytes": baseline_bytes,
        "frame_bytes": frame_bytes,
        "peak_bytes": peak_bytes,
        "overhead_over_frames": round((peak_bytes - baseline_bytes) / frame_bytes, 3),
        "vmhwm_baseline_bytes": baseline_hwm,
        "vmhwm_peak_bytes": peak_hwm,
    }


def forced_strategy(path: Path, strategy: str, **kwargs) -> dict:
    """Time longvid with a fixed strategy and check it returns what ``strategy="auto"`` returns."""
    sec, frames = median_sec(lambda: read_video(path, strategy=strategy, **kwargs))
    auto = read_video(path, **kwargs)
    same = bool(np.array_equal(frames.indices, auto.indices) and np.array_equal(frames.frames, auto.frames))
    return {"sampling": kwargs, "strategy": strategy, "sec": round(sec, 3), "same_as_auto": same}


def main() -> dict:
    path = bench_video_path()
    info = probe(path)
    auto = {name: choose_strategy(info, plan_indices(info, **kw)) for name, kw in SAMPLINGS.items()}
    rows = [compare(name, path, **kw) for name, kw in SAMPLINGS.items()]
    forced = [forced_strategy(path, "sequential", num_frames=NUM_FRAMES), forced_strategy(path, "seek", fps=1.0)]
    memory = [peak_memory(path, "longvid"), peak_memory(path, "transformers")]

    mib = 2**20
    print(f"video: {path.name}  {info.duration:.0f} s, {info.num_frames} frames, keyframe interval "
          f"{info.keyframe_interval:.2f} s (first keyframes), {path.stat().st_size / mib:.0f} MiB")
    print(f"{'sampling':<18} {'frames':>6} {'auto':>10} {'longvid s':>9} {'transformers s':>14} {'speedup':>8} "
          f"{'indices':>7} {'pixels':>6}")
    for r in rows:
        print(f"{r['case']:<18} {r['num_frames']:>6} {auto[r['case']]:>10} {r['longvid_sec']:>9.2f} "
              f"{r['transformers_sec']:>14.2f} {r['speedup']:>7.2f}x {str(r['same_indices']):>7} "
              f"{str(r['equal_pixels']):>6}")
    for f in forced:
        print(f"longvid {f['sampling']} strategy={f['strategy']!r}: {f['sec']:.2f} s, same frames as auto: "
              f"{f['same_as_auto']}")
    print(f"{'peak RSS, 64 frames':<20} {'baseline MiB':>12} {'frames MiB':>11} {'peak MiB':>9} "
          f"{'(peak-base)/frames':>19}")
    for m in memory:
        print(f"{m['library']:<20} {m['baseline_bytes'] / mib:>12.1f} {m['frame_bytes'] / mib:>11.1f} "
              f"{m['peak_bytes'] / mib:>9.1f} {m['overhead_over_frames']:>19.2f}")
    ours = memory[0]
    return {
        "video": {"seconds": SECONDS, "fps": FPS, "width": WIDTH, "height": HEIGHT, "preset": PRESET,
                  "bytes": path.stat().st_size, "keyframe_interval_sec": info.keyframe_interval},
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "av": av.__version__},
        "runs": RUNS,
        "auto_strategy": auto,
        "decode": rows,
        "forced_strategy": forced,
        "memory": memory,
        "speedup_64_target_met": rows[0]["speedup"] >= 3 and rows[0]["same_indices"] and rows[0]["equal_pixels"],
        "memory_target_met": ours["peak_bytes"] <= ours["baseline_bytes"] + 1.5 * ours["frame_bytes"],
    }


if __name__ == "__main__":
    print(json.dumps(main()))
