"""KV-cache helpers: a fresh cache, a copy for one question, and its size in bytes.

    from longvid.engine.cache import new_cache, copy_cache, kv_bytes
"""

from __future__ import annotations

from transformers import DynamicCache


def new_cache(text_config) -> DynamicCache:
    return DynamicCache(config=text_config)


def copy_cache(cache: DynamicCache) -> DynamicCache:
    """An independent copy (tensors cloned), so a question never changes the session's cache."""
    out = DynamicCache()
    for i, layer in enumerate(cache.layers):
        out.update(layer.keys.clone(), layer.values.clone(), i)
    return out


def kv_bytes(cache: DynamicCache) -> int:
    """Bytes held by all keys and values."""
    return sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers if layer.keys is not None)
