"""A hand-made LVIS-format data set of a few 64 x 64 images for the picture tests: rectangles as
objects, so every mask IoU is worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

SIZE = 64
CATEGORIES = [{"id": 1, "name": "teapot", "frequency": "r", "image_count": 2, "instance_count": 2},
              {"id": 2, "name": "kettle", "frequency": "c", "image_count": 20, "instance_count": 30},
              {"id": 5, "name": "chair", "frequency": "f", "image_count": 200, "instance_count": 400}]  # fmt: skip


def rectangle_polygon(x: int, y: int, w: int, h: int) -> list[list[float]]:
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def rectangle_rle(x: int, y: int, w: int, h: int, size: int = SIZE) -> dict[str, Any]:
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[y : y + h, x : x + w] = 1
    rle = mask_util.encode(np.asfortranarray(mask))
    return {"size": [size, size], "counts": rle["counts"].decode("ascii")}


def annotation(ann_id: int, image_id: int, category_id: int, box: tuple[int, int, int, int]) -> dict[str, Any]:
    x, y, w, h = box
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": [x, y, w, h], "area": w * h,
            "segmentation": rectangle_polygon(x, y, w, h)}


def detection(image_id: int, category_id: int, box: tuple[int, int, int, int], score: float) -> dict[str, Any]:
    x, y, w, h = box
    return {"image_id": image_id, "category_id": category_id, "bbox": [x, y, w, h], "score": score,
            "segmentation": rectangle_rle(x, y, w, h)}


def write_dataset(root: Path, name: str, image_ids: list[int], annotations: list[dict[str, Any]]) -> Path:
    """``root/name.json`` and its images ``root/images/<name>/<id>.png`` (a distinct grey level each)."""
    folder = root / "images" / name
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for k, image_id in enumerate(image_ids):
        pixels = np.full((SIZE, SIZE, 3), 40 + 10 * k, dtype=np.uint8)
        pixels[8:24, 8:24] = (200, 60, 60)
        Image.fromarray(pixels).save(folder / f"{image_id}.png")
        images.append({"id": image_id, "file_name": f"{name}/{image_id}.png", "height": SIZE, "width": SIZE,
                       "neg_category_ids": [], "not_exhaustive_category_ids": []})
    path = root / f"{name}.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return path
