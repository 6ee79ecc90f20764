"""What the training recipes share: the code version recorded in their cards."""

from __future__ import annotations

from pathlib import Path


def code_version() -> str | None:
    """The git commit of this code (``+dirty`` with uncommitted changes), or None outside a git checkout."""
    import subprocess

    here = Path(__file__).resolve().parents[1]  # the longvid package
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=here, capture_output=True, text=True,
                               timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode != 0:
        return None
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
