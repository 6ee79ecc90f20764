"""``python -m longvid`` and the ``longvid`` console script: the CLI, with Ctrl-C at any moment (even while the CLI's
own modules import) ending as one ``interrupted`` line and exit code 130.

    python -m longvid --help
"""

from __future__ import annotations

import os
import sys


def main() -> None:
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


def _exit_interrupted() -> None:
    """Exit with code 130, every time. A plain ``sys.exit(130)`` is not enough: when the KeyboardInterrupt went
    through ``eval`` of a string (e.g. inspect evaluating an annotation while a module imports), CPython keeps a flag
    that makes the interpreter kill itself with SIGINT at shutdown even though the interrupt was handled."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


if __name__ == "__main__":
    main()
