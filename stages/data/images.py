"""Reading image files for the embedding stages: bytes, a full decode, a resized tensor.

Every failure is an :class:`ImageReadError` that names the file.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image


class ImageReadError(RuntimeError):
    """An image file is missing or cannot be decoded; the message names the file."""


def read_image_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise ImageReadError(f"{path}: image file not found") from exc
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read image file ({exc})") from exc


def decode_rgb(data: bytes, path: Path) -> Image.Image:
    """Decode image bytes to RGB; ``path`` only names the file in the error."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.convert("RGB")  # convert() forces the full decode, so truncation fails here
    except Exception as exc:  # PIL raises several types for corrupt data
        raise ImageReadError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from exc


def to_tensor(img: Image.Image, size: int) -> torch.Tensor:
    """PIL RGB -> float [3, size, size] in [0, 1] (bilinear, antialiased when shrinking)."""
    resized = img.resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(resized, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()
