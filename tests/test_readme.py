"""The README stays true: its test command is what CI runs, its Python snippet runs, its methods table is complete.

    pytest tests/test_readme.py -q
"""

from __future__ import annotations

import re
from pathlib import Path

from longvid.methods.registry import METHODS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command():
    test_command = next(line for line in README.splitlines() if line.endswith("python -m pytest -q"))
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_methods_table_lists_every_registered_method():
    rows = re.findall(r"^\| `([\w-]+)` \|", README, flags=re.M)
    assert rows == list(METHODS)


def test_python_snippet_runs(tiny_dirs, video_path, capsys):
    snippet = re.search(r"```python\n(.*?)```", README, flags=re.S).group(1)
    snippet = snippet.replace("/models/Qwen2.5-VL-7B-Instruct", str(tiny_dirs["qwen2_5_vl"]))
    snippet = snippet.replace('"talk.mp4"', repr(str(video_path)))
    exec(compile(snippet, "README.md", "exec"), {})
    assert len(capsys.readouterr().out.splitlines()) >= 3  # one answer, then two session answers
