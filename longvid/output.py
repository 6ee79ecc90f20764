"""Output folders checked before anything is written: created if missing, refused with one line if unusable.

    from longvid.output import writable_folder; writable_folder("results/run1", option="out")
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from longvid.errors import option as option_name


def writable_folder(path: str | os.PathLike, *, option: str, create: bool = True) -> Path:
    """``path`` as a folder longvid can write into (created with its parents when ``create``), or a ValueError
    naming ``option`` (e.g. ``--out``): an existing file, a read-only filesystem, no permission, an immutable dir."""
    path = Path(path).expanduser()
    flag = option_name(option, str(path))
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} is a file, not a folder; pass a folder (it is created if missing)")
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".longvid-write-check-"):
            pass
    except (FileExistsError, NotADirectoryError):
        raise ValueError(f"{flag}: a parent of it is a file, not a folder; pass another path") from None
    except OSError as err:
        raise ValueError(f"{flag} is not writable ({err.strerror or err}); pass a folder you can write to") from None
    return path
