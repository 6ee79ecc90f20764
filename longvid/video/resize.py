"""Frame sizing for Qwen2-VL-style vision towers, without torchvision.

`smart_resize` picks a size whose sides are multiples of ``factor`` (patch size x spatial merge, 14 x 2 = 28 for
Qwen2-VL and Qwen2.5-VL) with an area in ``[min_pixels, max_pixels]``. `resize_frames` resizes like torchvision's
``resize(uint8 tensor, [h, w], InterpolationMode.BICUBIC, antialias=True)`` in Qwen2VLVideoProcessor: bicubic
interpolation in float32, then round and clamp to [0, 255].

Example::

    python -c "from longvid.video import smart_resize; print(smart_resize(360, 640))"   # (364, 644)
"""

from __future__ import annotations

import math
from numbers import Integral

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["smart_resize", "resize_frame", "resize_frames"]

MAX_ASPECT_RATIO = 200  # Qwen2-VL's limit on max(height, width) / min(height, width)


def smart_resize(
    height: int, width: int, *, factor: int = 28, min_pixels: int = 56 * 56, max_pixels: int = 28 * 28 * 1280
) -> tuple[int, int]:
    """Round ``(height, width)`` to multiples of ``factor``, then rescale into ``[min_pixels, max_pixels]``.

    Each side is first rounded to the nearest multiple of ``factor`` (Python's ``round``, ties to even). If the
    area exceeds ``max_pixels``, both sides shrink by ``sqrt(height * width / max_pixels)`` and are floored to a
    multiple (at least ``factor``); if it is below ``min_pixels``, both grow by ``sqrt(min_pixels / area)`` and are
    ceiled to a multiple. The aspect ratio is kept as closely as the rounding allows.

    Worked example: 360 x 640 -> round -> 364 x 644 = 234,416 px, inside [3,136, 1,003,520], so (364, 644).
    1080 x 1920 -> 1092 x 1932 is too large; beta = sqrt(2,073,600 / 1,003,520) = 1.4375 ->
    floor(1080 / 1.4375 / 28) * 28 = 728, floor(1920 / 1.4375 / 28) * 28 = 1316 -> (728, 1316).

    Returns
    -------
    tuple[int, int]
        ``(resized_height, resized_width)``, both multiples of ``factor``.
    """
    for name, value in (("height", height), ("width", width), ("factor", factor)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value <= 0:
            raise ValueError(f"{name}={value!r} is invalid: it must be a positive integer (pixels).")
    if not 0 < min_pixels <= max_pixels:
        raise ValueError(
            f"min_pixels={min_pixels!r}, max_pixels={max_pixels!r} is invalid: need 0 < min_pixels <= max_pixels."
        )
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(
            f"{height}x{width} has aspect ratio {max(height, width) / min(height, width):.1f}, above Qwen2-VL's limit "
            f"of {MAX_ASPECT_RATIO}. Crop or pad the frames to a less extreme shape first."
        )
    resized_height = round(height / factor) * factor
    resized_width = round(width / factor) * factor
    if resized_height * resized_width > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        resized_height = max(factor, math.floor(height / beta / factor) * factor)
        resized_width = max(factor, math.floor(width / beta / factor) * factor)
    elif resized_height * resized_width < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        resized_height = math.ceil(height * beta / factor) * factor
        resized_width = math.ceil(width * beta / factor) * factor
    return resized_height, resized_width


def resize_frame(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """One uint8 (H, W, 3) RGB picture resized to (height, width), bicubic with antialiasing, as uint8.

    The same kernel as `resize_frames` (torch's native uint8 bicubic, which torchvision's uint8 resize calls), so a
    frame resized here while decoding equals the frame resized later by the model's preprocessing. Returns the input
    itself when it already has the size.
    """
    if image.shape[:2] == (height, width):
        return image
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0)
    return _bicubic(x, height, width)[0].permute(1, 2, 0).numpy()


def _bicubic(batch: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> uint8 (B, 3, height, width): torch's native uint8 kernel, which torchvision's uint8
    bicubic resize calls on the CPU; a float resize rounded afterwards differs from it by up to 7 grey levels
    (checked against torchvision 0.29)."""
    return F.interpolate(batch, size=(height, width), mode="bicubic", align_corners=False, antialias=True)


def resize_frames(frames: np.ndarray, height: int, width: int, *, batch_size: int = 16) -> torch.Tensor:
    """Bicubic, antialiased resize of RGB frames, matching torchvision's uint8 bicubic resize.

    Parameters
    ----------
    frames : np.ndarray
        uint8 (T, H, W, 3), RGB, e.g. `Frames.frames`.
    height, width : int
        Output size, e.g. from `smart_resize`.
    batch_size : int
        Frames interpolated at a time; bounds the float32 scratch memory to ``batch_size * 3 * H * W * 4`` bytes.

    Returns
    -------
    torch.Tensor
        float32 (T, 3, height, width) holding integers in [0, 255]; not rescaled or normalised.
    """
    if not (isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[3] == 3):
        got = f"{type(frames).__name__} {getattr(frames, 'dtype', '')} {getattr(frames, 'shape', '')}"
        raise ValueError(f"frames must be a uint8 numpy array of shape (T, H, W, 3), got {got}. Pass Frames.frames.")
    for name, value in (("height", height), ("width", width), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value <= 0:
            raise ValueError(f"{name}={value!r} is invalid: it must be a positive integer.")
    num_frames, in_height, in_width, _ = frames.shape
    out = torch.empty((num_frames, 3, height, width), dtype=torch.float32)
    for begin in range(0, num_frames, batch_size):
        batch = torch.from_numpy(frames[begin : begin + batch_size]).permute(0, 3, 1, 2).contiguous()
        if (in_height, in_width) != (height, width):  # torchvision returns same-size inputs unchanged too
            batch = _bicubic(batch, height, width)
        out[begin : begin + batch_size] = batch
    return out
