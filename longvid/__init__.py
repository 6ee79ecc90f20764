"""longvid: video LLMs on long videos, with frame selection, visual-token reduction and KV-cache compression.

    import longvid
    lm = longvid.load("/models/Qwen2.5-VL-7B-Instruct")
    lm.ask("talk.mp4", "What is on the slide?", method="evs", keep=0.25).text

Names are imported on first use (PEP 562), so ``import longvid`` and the ``longvid`` command's help and method list do
not pay for torch and transformers.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Answer": "longvid.engine.session",
    "LongVid": "longvid.pipeline",
    "METHODS": "longvid.methods.registry",
    "Method": "longvid.methods.compose",
    "RunStats": "longvid.engine.session",
    "SUPPORTED_MODELS": "longvid.models",
    "Sampling": "longvid.engine.decode",
    "SamplingOptions": "longvid.pipeline",
    "VideoSession": "longvid.engine.session",
    "VisualTokens": "longvid.tokens",
    "get_method": "longvid.methods.registry",
    "load": "longvid.pipeline",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'longvid' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
