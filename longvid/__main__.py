"""``python -m longvid`` and the ``longvid`` console script: the CLI, with Ctrl-C at any moment (even while the CLI's
own modules import) ending as one ``interrupted`` line and exit code 130.

    python -m longvid --help
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    sys.argv[1:] = bare_ray(sys.argv[1:])
    try:
        from longvid.cli import app

        app()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        _exit_interrupted()
    except SystemExit as done:
        if done.code == 130:  # the CLI reported an interrupt
            _exit_interrupted()
        raise


def bare_ray(args: list[str]) -> list[str]:
    """``--ray`` takes an optional value (``--ray``, ``--ray local``, ``--ray HOST:PORT``); click options cannot, so a
    bare one gets the value ``default`` (join a running cluster, else start a local one)."""
    out = []
    for i, arg in enumerate(args):
        out.append(arg)
        if arg == "--ray" and (i + 1 == len(args) or args[i + 1].startswith("-")):
            out.append("default")
    return out


def _exit_interrupted() -> None:
    """Exit with code 130, every time. A plain ``sys.exit(130)`` is not enough: when the KeyboardInterrupt went
    through ``eval`` of a string (e.g. inspect evaluating an annotation while a module imports), CPython keeps a flag
    that makes the interpreter kill itself with SIGINT at shutdown even though the interrupt was handled."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


if __name__ == "__main__":
    main()
