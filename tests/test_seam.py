"""The model seam holds: nothing under engine/ or methods/ names a model family or a transformers model class (in
code: docstrings and comments may give examples), and every registered family has an adapter with the interface.

    pytest tests/test_seam.py -q
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from longvid.models import ADAPTERS, adapter_class
from longvid.models.base import ModelAdapter

PACKAGE = Path(__file__).resolve().parents[1] / "longvid"
FAMILY_WORDS = re.compile(r"qwen|llava|siglip|onevision|ForConditionalGeneration|modeling_", re.I)


def code_words(path: Path) -> list[str]:
    """Identifiers, attribute names, imported modules and string constants of a module, docstrings excluded."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    words = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            words.append(node.id)
        elif isinstance(node, ast.Attribute):
            words.append(node.attr)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            words += [getattr(node, "module", None) or ""] + [a.name for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words.append(node.value)
    return words


@pytest.mark.parametrize("path", sorted(p.relative_to(PACKAGE).as_posix() for folder in ("engine", "methods")
                                        for p in (PACKAGE / folder).rglob("*.py")))
def test_engine_and_methods_name_no_family(path):
    named = [w for w in code_words(PACKAGE / path) if FAMILY_WORDS.search(w)]
    assert not named, f"{path} names {named}"


@pytest.mark.parametrize("family", sorted(ADAPTERS))
def test_every_family_has_an_adapter(family):
    cls = adapter_class(family)
    assert issubclass(cls, ModelAdapter) and family in cls.families and not cls.__abstractmethods__
