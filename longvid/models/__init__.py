"""Model adapters, one per family, and the loader that picks one from a local checkpoint directory.

    from longvid.models import load_adapter
    adapter = load_adapter("/models/Qwen2.5-VL-7B-Instruct", dtype="bfloat16", device="cuda")
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from longvid.models.qwen2_vl import PixelPlan, Qwen2VLAdapter, pixel_plan_from_checkpoint, read_preprocessor_config

ADAPTERS = {"qwen2_vl": Qwen2VLAdapter, "qwen2_5_vl": Qwen2VLAdapter}
SUPPORTED_MODELS = tuple(ADAPTERS)
DTYPES = {"auto": "auto", "float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(dtype):
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)} or a torch.dtype, got {dtype!r}")
    return DTYPES[dtype]


def model_family(path: str | Path) -> str:
    """The ``model_type`` of a local checkpoint directory; raises if it is missing or unsupported."""
    path = Path(path)
    config = path / "config.json"
    if not config.is_file():
        raise FileNotFoundError(
            f"no model checkpoint at {str(path)!r} (expected a directory with config.json); pass --model DIR with a "
            f"local Qwen2-VL or Qwen2.5-VL checkpoint (model hubs are not used)"
        )
    family = json.loads(config.read_text()).get("model_type")
    if family not in ADAPTERS:
        raise ValueError(
            f"unsupported model family {family!r} in {str(path)!r}; supported families: {', '.join(SUPPORTED_MODELS)}"
        )
    return family


def load_adapter(path: str | Path, *, device: str = "cpu", dtype="auto", attn_implementation: str = "sdpa",
                 min_pixels: int | None = None, max_pixels: int | None = None):
    """Load model + tokenizer from a local directory with ``from_pretrained`` and wrap them in their adapter."""
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    family = model_family(path)
    model = AutoModelForImageTextToText.from_pretrained(
        path, dtype=resolve_dtype(dtype), attn_implementation=attn_implementation).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    pre = read_preprocessor_config(Path(path))
    if min_pixels is not None:
        pre["min_pixels"] = min_pixels
    if max_pixels is not None:
        pre["max_pixels"] = max_pixels
    return ADAPTERS[family](model, tokenizer, **pre)


def pixel_plan(path: str | Path | None = None, *, min_pixels: int | None = None,
               max_pixels: int | None = None) -> PixelPlan:
    """Frame geometry of a checkpoint (config only, no weights), or Qwen2-VL's defaults when ``path`` is None."""
    if path is None:
        return PixelPlan.create(min_pixels=min_pixels, max_pixels=max_pixels)
    model_family(path)
    return pixel_plan_from_checkpoint(Path(path), min_pixels, max_pixels)


__all__ = ["SUPPORTED_MODELS", "PixelPlan", "Qwen2VLAdapter", "load_adapter", "model_family", "pixel_plan",
           "resolve_dtype"]
