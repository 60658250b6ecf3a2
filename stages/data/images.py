"""The one image reader of the pipeline: bytes, a decode with the EXIF orientation applied as
detectron2 applies it, the oriented size, a resized tensor.

Every phone photo carries an EXIF Orientation tag: the pixels are stored sideways and the tag says
how to turn them. detectron2's ``read_image`` (training, through its DatasetMapper) turns them
(``detection_utils._apply_exif_orientation``), so every other reader must too, or a 64x48 photo is
64x48 to validation and 48x64 to the detector, and the boxes of a square one sit on the wrong
pixels. Validation (the size check), the pool listing, the crop and image embeddings, inference,
the prototypes' features and the student's unlabeled stream all read through this module, which
calls detectron2's own function; tests/data/test_images.py checks every orientation against
``detection_utils.read_image``.

Every failure is an :class:`ImageReadError` that names the file.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

EXIF_ORIENTATION = 274  # the EXIF 'Orientation' tag (detectron2's _EXIF_ORIENT)
SWAPS_SIDES = frozenset({5, 6, 7, 8})  # transpose, rotate 270, transverse, rotate 90: width <-> height


class ImageReadError(RuntimeError):
    """An image file is missing or cannot be decoded; the message names the file."""


@functools.cache
def _apply_exif_orientation():
    from detectron2.data.detection_utils import _apply_exif_orientation

    return _apply_exif_orientation


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation detectron2 applies to ``image`` (1-8; 1 when there is none or the EXIF
    block cannot be read, as detectron2 then leaves the image as it is). Reads the header only."""
    if not hasattr(image, "getexif"):
        return 1
    try:
        exif = image.getexif()
    except Exception:  # detectron2 issue 1885: a broken EXIF block is ignored, not an error
        return 1
    orientation = exif.get(EXIF_ORIENTATION) if exif is not None else None
    return orientation if orientation in range(2, 9) else 1


def oriented_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of ``image`` as the pipeline reads it: after its EXIF orientation."""
    width, height = image.size
    return (height, width) if exif_orientation(image) in SWAPS_SIDES else (width, height)


def read_image_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise ImageReadError(f"{path}: image file not found") from exc
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read image file ({exc})") from exc


def decode_rgb(data: bytes, path: Path) -> Image.Image:
    """Decode image bytes to RGB with the EXIF orientation applied (detectron2's read_image with
    format "RGB", step for step); ``path`` only names the file in the error."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            # convert() forces the full decode, so truncation fails here
            return _apply_exif_orientation()(img).convert("RGB")
    except Exception as exc:  # PIL raises several types for corrupt data
        raise ImageReadError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from exc


def read_rgb(path: str | Path) -> Image.Image:
    """The RGB image at ``path``, oriented (:func:`decode_rgb`)."""
    path = Path(path)
    return decode_rgb(read_image_bytes(path), path)


def read_rgb_array(path: str | Path) -> np.ndarray:
    """uint8 (H, W, 3) RGB of the oriented image: what ``detection_utils.read_image(path, "RGB")``
    returns, for the detector's own readers (inference, prototype features, unlabeled batches)."""
    return np.asarray(read_rgb(path))


def to_tensor(img: Image.Image, size: int) -> torch.Tensor:
    """PIL RGB -> float [3, size, size] in [0, 1] (bilinear, antialiased when shrinking)."""
    resized = img.resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(resized, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()
