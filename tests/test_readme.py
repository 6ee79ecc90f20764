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


def test_methods_table_family_columns_say_what_runs(lms):
    """A ✓ where the preset at its defaults accepts the family's model, anything else where it refuses it."""
    from longvid.methods.registry import get_method

    header = next(line for line in README.splitlines() if line.startswith("| method | stage |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    families = {"Qwen2-VL": "qwen2_vl", "Qwen2.5-VL": "qwen2_5_vl", "Qwen3-VL": "qwen3_vl", "LLaVA-OV": "llava_onevision"}
    for row in re.findall(r"^\| `[\w-]+` \|.*$", README, flags=re.M):
        cells = [c.strip() for c in row.strip("|").split("|")]
        name = cells[0].strip("`")
        for label, family in families.items():
            try:
                get_method(name).check_model(lms[family].adapter)
                runs = True
            except ValueError:
                runs = False
            assert (cells[columns.index(label)] == "✓") == runs, (name, label)
