"""Model adapters, one per family, and the loader that picks one from a local checkpoint directory.

    from longvid.models import load_adapter
    adapter = load_adapter("/models/Qwen2.5-VL-7B-Instruct", dtype="bfloat16", device="cuda")

Every check that can fail on a user's checkpoint or device runs before the weights load, and fails with one line
naming the file or the value (a missing or broken config.json, no weights, a device this torch cannot use).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from longvid.errors import check_positive, option

ADAPTERS = {  # model_type -> "module:class" of its adapter (imported when a model of that family loads)
    "qwen2_vl": "longvid.models.qwen2_vl:Qwen2VLAdapter",
    "qwen2_5_vl": "longvid.models.qwen2_vl:Qwen2VLAdapter",
    "llava_onevision": "longvid.models.llava_onevision:LlavaOnevisionAdapter",
    "qwen3_vl": "longvid.models.qwen3_vl:Qwen3VLAdapter",
    "qwen3_vl_moe": "longvid.models.qwen3_vl:Qwen3VLAdapter",
}
SUPPORTED_MODELS = tuple(ADAPTERS)
BUNDLED_MODELS = {name: Path(__file__).resolve().parent.parent / "assets" / name
                  for name in ("longvid-tiny", "longvid-tiny-v1")}
"""Models inside the package, loadable by name: ``longvid.load("longvid-tiny")``, ``--model longvid-tiny``.
``longvid-tiny`` is longvid-tiny 2 (suite v2, `longvid.train.tiny`); ``longvid-tiny-v1`` the first one (suite
v1, `longvid.train.tiny_v1`), kept so every v1 result stays reproducible without its 2 h 45 min of training."""
DTYPES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def resolve_dtype(dtype):
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16, "auto": "auto"}
    if dtype not in names:
        raise ValueError(f"{option('dtype', dtype)} is not a dtype; pass one of {', '.join(DTYPES)}")
    return names[dtype]


def resolve_device(device):
    """A ``torch.device`` this torch can use, or a one-line ValueError (unknown name, no CUDA build, no such GPU)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{option('device', device)} is not a torch device; pass cpu, cuda, cuda:1 or mps") from None
    if dev.type == "cuda":
        if torch.version.cuda is None and torch.version.hip is None:
            raise ValueError(f"{option('device', device)} is not available: this torch ({torch.__version__}) was built "
                             f"without CUDA; pass {option('device', 'cpu')} or install a CUDA build of torch")
        count = torch.cuda.device_count()
        if count == 0:
            raise ValueError(f"{option('device', device)} is not available: torch sees no GPU (check the driver and "
                             f"CUDA_VISIBLE_DEVICES); pass {option('device', 'cpu')}")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"{option('device', device)} is not available: torch sees {count} GPU(s), "
                             f"cuda:0..cuda:{count - 1}")
    elif dev.type in ("mps", "xpu"):
        backend = getattr(torch.backends, "mps") if dev.type == "mps" else getattr(torch, "xpu", None)
        if backend is None or not backend.is_available():
            raise ValueError(f"{option('device', device)} is not available on this machine; pass "
                             f"{option('device', 'cpu')}")
    elif dev.type != "cpu":
        raise ValueError(f"{option('device', device)} is not a device longvid runs on; pass cpu, cuda, mps or xpu")
    return dev


def resolve_model(path: str | Path) -> Path:
    """The checkpoint directory for ``path``: a local directory, or the name of a bundled model."""
    text = str(path)
    if text in BUNDLED_MODELS and not Path(text).is_dir():
        return BUNDLED_MODELS[text]
    return Path(path).expanduser()


def read_json(path: Path) -> dict:
    """A checkpoint's JSON file; a broken one fails with one line naming the file and where it breaks."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); restore "
                         "the file from the checkpoint's source") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}, not an object; restore the file from the "
                         "checkpoint's source")
    return data


def model_family(path: str | Path) -> str:
    """The ``model_type`` of a local checkpoint directory; raises if it is missing or unsupported."""
    names = (f"a local checkpoint directory ({', '.join(SUPPORTED_MODELS)}), or {' or '.join(BUNDLED_MODELS)} (the "
             "bundled models)")
    if not str(path).strip():
        raise ValueError(f"no model given: pass {option('path')} with {names}")
    path = resolve_model(path)
    if not path.is_dir():
        what = "is a file, not a directory" if path.exists() else "does not exist"
        raise ValueError(f"no model checkpoint at {str(path)!r}: it {what}; pass {option('path')} with {names} "
                         "(model hubs are not used)")
    config = path / "config.json"
    if not config.is_file():
        raise ValueError(f"no model checkpoint at {str(path)!r}: it has no config.json; pass {option('path')} with "
                         f"{names}")
    family = read_json(config).get("model_type")
    if family not in ADAPTERS:
        raise ValueError(
            f"unsupported model family {family!r} in {config}; supported families: {', '.join(SUPPORTED_MODELS)}"
        )
    return family


def check_checkpoint(path: Path) -> None:
    """Weights, tokenizer and preprocessor files are there and readable, before anything loads."""
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        have = ", ".join(sorted(p.name for p in path.iterdir())[:8]) or "nothing"
        raise ValueError(f"no weights in {path}: expected model.safetensors (or a sharded model.safetensors.index.json"
                         f" with its shards) next to config.json; it holds {have}. Copy the weights there")
    for name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = path / name
        if index.is_file() and not (path / name.replace(".index.json", "")).is_file():
            shards = sorted(set(read_json(index).get("weight_map", {}).values()))
            missing = [s for s in shards if not (path / s).is_file()]
            if missing:
                raise ValueError(f"{index} lists {len(shards)} weight shards, {len(missing)} of them missing (e.g. "
                                 f"{missing[0]}); copy every shard into {path}")
    for name in ("tokenizer_config.json", "tokenizer.json", "preprocessor_config.json",
                 "video_preprocessor_config.json", "processor_config.json", "chat_template.json",
                 "generation_config.json"):
        if (path / name).is_file():
            read_json(path / name)
    if not any((path / name).is_file() for name in ("tokenizer.json", "vocab.json", "tokenizer.model")):
        raise ValueError(f"no tokenizer in {path}: expected tokenizer.json (or vocab.json and merges.txt) next to "
                         "config.json; copy the checkpoint's tokenizer files there")


def load_adapter(path: str | Path, *, device: str = "cpu", dtype="auto", attn_implementation: str = "sdpa",
                 min_pixels: int | None = None, max_pixels: int | None = None, progress: bool = False):
    """Load model + tokenizer from a local directory with ``from_pretrained`` and wrap them in their adapter.

    ``path`` may name a bundled model (``"longvid-tiny"``). ``progress`` shows transformers' weight-loading bar.
    """
    check_positive("min_pixels", min_pixels, integer=True)
    check_positive("max_pixels", max_pixels, integer=True)
    if attn_implementation not in ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention"):
        raise ValueError(f"{option('attn_implementation', attn_implementation)} is not an attention implementation; "
                         "pass sdpa, eager or flash_attention_2")
    family = model_family(path)
    path = resolve_model(path)
    check_checkpoint(path)
    module = importlib.import_module(ADAPTERS[family].partition(":")[0])
    module.pixel_plan_from_checkpoint(path, min_pixels, max_pixels)  # the user's pixel settings, before weights
    torch_dtype, torch_device = resolve_dtype(dtype), resolve_device(device)
    pre = getattr(module, "preprocessor_kwargs", read_preprocessor_config)(path)
    if min_pixels is not None:
        pre["min_pixels"] = min_pixels
    if max_pixels is not None:
        pre["max_pixels"] = max_pixels

    from transformers import AutoModelForImageTextToText, AutoTokenizer
    from transformers.utils import logging as hf_logging

    bar_was_on = hf_logging.is_progress_bar_enabled()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch_dtype,
                                                            attn_implementation=attn_implementation)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, ImportError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot load the checkpoint at {path}: {first}") from None
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = chat_template(path)
    try:
        model = model.to(torch_device).eval()
    except RuntimeError as err:  # e.g. out of device memory
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot put the model on {option('device', device)}: {first}") from None
    return adapter_class(family)(model, tokenizer, **pre)


def chat_template(path: Path) -> str:
    """The chat template a checkpoint keeps beside its tokenizer: ``chat_template.jinja``, or ``chat_template.json``
    (the processor's file in many released repos, which the tokenizer does not read)."""
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text()
    if (path / "chat_template.json").is_file():
        template = read_json(path / "chat_template.json").get("chat_template")
        if isinstance(template, str) and template.strip():
            return template
    raise ValueError(f"no chat template in {path}: expected one in tokenizer_config.json, chat_template.jinja or "
                     "chat_template.json; copy the checkpoint's template files there")


def adapter_class(family: str):
    """The adapter class of a supported ``model_type``."""
    module, _, name = ADAPTERS[family].partition(":")
    return getattr(importlib.import_module(module), name)


def pixel_plan(path: str | Path | None = None, *, min_pixels: int | None = None, max_pixels: int | None = None):
    """Frame geometry of a checkpoint (config only, no weights), or Qwen2-VL's defaults when ``path`` is None."""
    from longvid.models.qwen2_vl import PixelPlan

    check_positive("min_pixels", min_pixels, integer=True)
    check_positive("max_pixels", max_pixels, integer=True)
    if path is None:
        return PixelPlan.create(min_pixels=min_pixels, max_pixels=max_pixels)
    family = model_family(path)
    module = importlib.import_module(ADAPTERS[family].partition(":")[0])
    return module.pixel_plan_from_checkpoint(resolve_model(path), min_pixels, max_pixels)


def processor_settings(path: Path, *, images: bool = True) -> dict:
    """The checkpoint's video processor settings: ``video_preprocessor_config.json``, or the ``video_processor`` entry
    of ``processor_config.json`` (how transformers 5 saves a processor); with ``images``, the image processor's
    (``preprocessor_config.json``, then ``processor_config.json``'s ``image_processor``) where there is no video one,
    as transformers' video processors load them. {} when there is none."""
    nested = read_json(path / "processor_config.json") if (path / "processor_config.json").is_file() else {}
    if (path / "video_preprocessor_config.json").is_file():
        return read_json(path / "video_preprocessor_config.json")
    if isinstance(nested.get("video_processor"), dict):
        return nested["video_processor"]
    if images and (path / "preprocessor_config.json").is_file():
        return read_json(path / "preprocessor_config.json")
    if images and isinstance(nested.get("image_processor"), dict):
        return nested["image_processor"]
    return {}


def read_preprocessor_config(path: Path) -> dict:
    """min/max pixels and mean/std from the checkpoint's video (or image) processor settings, when present."""
    cfg = processor_settings(path)
    size = cfg.get("size") or {}
    out = {
        "min_pixels": _first(cfg.get("min_pixels"), size.get("shortest_edge")),
        "max_pixels": _first(cfg.get("max_pixels"), size.get("longest_edge")),
        "image_mean": cfg.get("image_mean"),
        "image_std": cfg.get("image_std"),
    }
    return {k: v for k, v in out.items() if v is not None}


def _first(*values):
    return next((v for v in values if v is not None), None)


def __getattr__(name: str):  # the adapter classes import torch; load them on first use
    if name in ("PixelPlan", "Qwen2VLAdapter"):
        from longvid.models import qwen2_vl

        return getattr(qwen2_vl, name)
    raise AttributeError(f"module 'longvid.models' has no attribute {name!r}")


__all__ = ["BUNDLED_MODELS", "SUPPORTED_MODELS", "PixelPlan", "Qwen2VLAdapter", "load_adapter", "model_family",
           "pixel_plan", "read_preprocessor_config", "resolve_dtype", "resolve_device", "resolve_model"]
