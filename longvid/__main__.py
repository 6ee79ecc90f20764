"""``python -m longvid`` and the ``longvid`` console script: the CLI, with Ctrl-C at any moment (even while the CLI's
own modules import) ending as one ``interrupted`` line and exit code 130.

    python -m longvid --help
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from longvid.cli import app

        app()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
