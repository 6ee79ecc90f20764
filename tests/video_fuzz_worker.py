"""Worker of tests/test_video_fuzz.py: seeded byte-level corruptions of real videos through `read_video`.

Runs in its own process (a crash or hang inside FFmpeg must not take pytest down), one JSON line per case:
``{"case": i, "file": ..., "op": ..., "outcome": "frames" | "<VideoError subclass>" | "UNEXPECTED <type>: <msg>",
"seconds": ...}``.

    python tests/video_fuzz_worker.py OUT_DIR CASES SEED SOURCE [SOURCE ...]
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from longvid.video import VideoError, read_video


def corrupt(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """One seeded corruption: truncation, flipped bytes, a random or zeroed block, a dropped or repeated block."""
    n = len(data)
    op = rng.choice(["truncate", "flip", "random_block", "zero_block", "drop_block", "repeat_block", "header"])
    at = int(rng.integers(0, n))
    size = int(rng.integers(1, max(2, n // 20)))
    if op == "truncate":
        return data[:at], f"truncate@{at}"
    if op == "flip":
        buf = bytearray(data)
        for i in rng.integers(0, n, size=int(rng.integers(1, 33))):
            buf[i] ^= 1 << int(rng.integers(0, 8))
        return bytes(buf), "flip"
    if op == "random_block":
        return data[:at] + rng.bytes(size) + data[at + size:], f"random_block@{at}+{size}"
    if op == "zero_block":
        return data[:at] + bytes(size) + data[at + size:], f"zero_block@{at}+{size}"
    if op == "drop_block":
        return data[:at] + data[at + size:], f"drop_block@{at}+{size}"
    if op == "repeat_block":
        return data[:at + size] + data[at:at + size] + data[at + size:], f"repeat_block@{at}+{size}"
    buf = bytearray(data)  # the container header, where sizes, durations and indexes live
    for i in rng.integers(0, min(n, 4096), size=int(rng.integers(1, 9))):
        buf[i] = int(rng.integers(0, 256))
    return bytes(buf), "header"


def main(out_dir: str, cases: int, seed: int, sources: list[str]) -> None:
    rng = np.random.default_rng(seed)
    blobs = {Path(s).name: Path(s).read_bytes() for s in sources}
    names = sorted(blobs)
    warnings.simplefilter("ignore")  # truncation warnings are expected
    for case in range(cases):
        name = names[case % len(names)]
        data, op = corrupt(blobs[name], rng)
        path = Path(out_dir) / f"case{case}{Path(name).suffix}"
        path.write_bytes(data)
        t0 = time.perf_counter()
        sampling = [dict(num_frames=4), dict(fps=2.0)][case % 2]
        try:
            frames = read_video(path, size=(32, 48), **sampling)
            assert len(frames) > 0 and frames.frames.shape[1:] == (32, 48, 3)
            outcome = "frames"
        except VideoError as err:
            outcome = type(err).__name__
        except BaseException as err:  # noqa: BLE001 (what the test reports as a failure)
            outcome = f"UNEXPECTED {type(err).__name__}: {str(err)[:200]}"
        print(json.dumps(dict(case=case, file=name, op=op, sampling=sampling, outcome=outcome,
                              seconds=round(time.perf_counter() - t0, 3))), flush=True)
        path.unlink()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:])
