"""User-facing errors worded in the interface the user typed: Python keywords, CLI flags or HTTP (JSON) fields.

Every bad input raises a ``ValueError`` (or a subclass) whose one-line message names the value, the constraint and
the fix. The library does not know whether it was called from Python or from the ``longvid`` command, so messages
name options through `option` and method settings through `setting`, which render them for the interface that is
active: ``fps=0`` in Python, ``--fps 0`` under the CLI (``with interface(CLI):``).

    from longvid.errors import option
    raise ValueError(f"{option('max_pixels', 0)} is invalid: it must be a positive number of pixels")
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from numbers import Integral, Real

__all__ = ["Interface", "PYTHON", "interface", "option", "setting", "method_context", "check_positive"]

_UNSET = object()


@dataclass(frozen=True)
class Interface:
    """How an interface writes option names in messages.

    Attributes
    ----------
    name : str
        ``"python"`` writes keywords (``fps=2``); ``"http"`` writes JSON fields (``"fps": 2``); any other name
        writes flags (``--fps 2``).
    flags : dict
        Python keyword -> the interface's name for it, where it is not ``--`` plus the keyword with dashes (or, for
        ``"http"``, the keyword itself).
    settings : str
        How a method setting is written, with ``{method}``, ``{key}`` and ``{value}`` fields.
    """

    name: str
    flags: dict = field(default_factory=dict)
    settings: str = "{key}={value}"

    def option(self, name: str, value=_UNSET) -> str:
        if self.name == "python":
            return name if value is _UNSET else f"{name}={value!r}"
        if self.name == "http":
            key = self.flags.get(name, name)
            return f'"{key}"' if value is _UNSET else f'"{key}": {_json(value)}'
        flag = self.flags.get(name, "--" + name.replace("_", "-"))
        return flag if value is _UNSET else f"{flag} {_plain(value)}"

    def setting(self, key: str, value=_UNSET, method: str | None = None) -> str:
        if self.name == "python":
            return self.option(key, value)
        if self.name == "http":
            return f'"settings": {{"{key}": {"VALUE" if value is _UNSET else _json(value)}}}'
        return self.settings.format(method=method or _METHOD.get() or "METHOD", key=key,
                                    value="VALUE" if value is _UNSET else _plain(value))


PYTHON = Interface("python")
_ACTIVE: ContextVar[Interface] = ContextVar("longvid_interface", default=PYTHON)
_METHOD: ContextVar[str | None] = ContextVar("longvid_method", default=None)


def _json(value) -> str:
    """A value as it reads in a JSON request body (non-finite floats as Python writes them)."""
    import json

    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)


def _plain(value) -> str:
    """A value as a user would type it on a command line: ``0.5``, ``true``, ``cuda``, ``''`` for the empty string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value and not any(c.isspace() for c in value) else repr(value)
    return str(value)


@contextmanager
def interface(active: Interface):
    """Word every message raised inside the block for ``active`` (the CLI wraps each command in this)."""
    token = _ACTIVE.set(active)
    try:
        yield active
    finally:
        _ACTIVE.reset(token)


@contextmanager
def method_context(name: str):
    """Messages about method settings raised inside the block name method ``name`` where the interface needs it."""
    token = _METHOD.set(name)
    try:
        yield
    finally:
        _METHOD.reset(token)


def active_interface() -> Interface:
    """The interface messages are worded for now (handed to other processes, e.g. Ray actors, to word theirs)."""
    return _ACTIVE.get()


def option(name: str, value=_UNSET) -> str:
    """The option ``name`` (and its value) as the active interface writes it: ``fps=0`` or ``--fps 0``."""
    return _ACTIVE.get().option(name, value)


def setting(key: str, value=_UNSET) -> str:
    """A method setting as the active interface writes it: ``layer=99``, ``--set layer=99``, ..."""
    return _ACTIVE.get().setting(key, value)


def check_positive(name: str, value, *, integer: bool = False, allow_none: bool = True) -> None:
    """Raise a one-line ``ValueError`` unless ``value`` is a positive finite number (an int if ``integer``)."""
    if value is None and allow_none:
        return
    kind = Integral if integer else Real
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value) or not value > 0:
        what = "a positive integer" if integer else "a positive number"
        raise ValueError(f"{option(name, value)} is invalid: it must be {what}")
