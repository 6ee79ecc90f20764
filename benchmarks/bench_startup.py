"""Start-up time of the ``longvid`` command: ``--help``, ``--version`` and ``methods`` must answer in well under a
second, so they may not import torch, transformers or PyAV.

Issue: "``longvid --help`` and ``longvid methods`` start in well under a second: import torch and transformers only
where a command needs them (measure it in a benchmark: today 3.3-4.3 s, of which ~2 s is not even torch)."

Each command runs ``--runs`` times in a fresh interpreter (``python -P -c "from longvid.__main__ import main; main()"
ARGS``, what the console script does; ``longvid.cli.main`` in checkouts that predate ``__main__``), alternating
commands; the table gives the median and min wall time, beside an empty
interpreter and ``import torch`` for scale, and which heavy modules the command imported (``sys.modules`` at exit).

Run::

    python benchmarks/bench_startup.py                     # this checkout
    python benchmarks/bench_startup.py --src /tmp/before   # an older checkout (git worktree add /tmp/before COMMIT)
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

HEAVY = ("torch", "transformers", "av", "numpy", "matplotlib")
CLI = ("import atexit, sys; sys.argv[0] = 'longvid'; "
       "atexit.register(lambda: sys.stderr.write('HEAVY ' + ','.join(m for m in {heavy!r} if m in sys.modules) + '\\n'));"
       "\ntry:\n    from longvid.__main__ import main\nexcept ImportError:\n    from longvid.cli import main\nmain()")
COMMANDS = {
    "python (empty)": ["-c", "pass"],
    "import torch": ["-c", "import torch"],
    "longvid --help": ["-c", CLI.format(heavy=HEAVY), "--help"],
    "longvid --version": ["-c", CLI.format(heavy=HEAVY), "--version"],
    "longvid methods": ["-c", CLI.format(heavy=HEAVY), "methods"],
    "longvid methods --json": ["-c", CLI.format(heavy=HEAVY), "methods", "--json"],
}


def once(args: list[str], env: dict) -> tuple[float, str]:
    """Wall seconds of one run and the heavy modules it imported (or why it failed: an older CLI lacks --version)."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-P", *args], env=env, capture_output=True, text=True)  # -P: not the cwd
    seconds = time.perf_counter() - t0
    heavy = next((line[6:] for line in out.stderr.splitlines() if line.startswith("HEAVY ")), "")
    if out.returncode:
        heavy += f" (exit {out.returncode})"
    return seconds, heavy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--src", help="PYTHONPATH of the longvid to measure (default: the installed one)")
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=args.src) if args.src else dict(os.environ)
    times, heavy = {name: [] for name in COMMANDS}, {}
    for name, argv in COMMANDS.items():  # warm the page cache
        once(argv, env)
    for _ in range(args.runs):
        for name, argv in COMMANDS.items():
            seconds, heavy[name] = once(argv, env)
            times[name].append(seconds)
    rows = [dict(command=name, median_s=round(statistics.median(t), 3), min_s=round(min(t), 3), runs=len(t),
                 heavy_imports=heavy.get(name, "")) for name, t in times.items()]
    print(f"{'command':<24} {'median s':>9} {'min s':>7}  heavy modules imported")
    for r in rows:
        print(f"{r['command']:<24} {r['median_s']:>9.3f} {r['min_s']:>7.3f}  {r['heavy_imports'] or '-'}")
    print(json.dumps(dict(benchmark="startup", src=args.src or "installed", machine=platform.machine(),
                          cpus=os.cpu_count(), python=platform.python_version(), git=git_state(), rows=rows)))


if __name__ == "__main__":
    main()
