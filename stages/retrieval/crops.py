"""Embeddings of the labeled train set's rare-class object crops (the retrieval queries).

Every annotation whose category frequency is in ``embed.query_frequencies`` (paper: rare) gives one
crop: its box enlarged by ``embed.context`` times the box side on each side, clipped to the image,
resized to ``embed.crop_size`` square, embedded by the configured encoder, L2-normalised.

Outputs: ``crops.npy`` float32 (N, D) and ``crops.parquet`` with columns ``row``, ``annotation_id``,
``image_id``, ``category_id``, ``frequency`` (row i describes vector i).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from stages.data.images import decode_rgb, read_image_bytes, to_tensor
from stages.data.lvis import image_path, load_lvis
from stages.retrieval.encoders import build_encoder, embed_dataset

INDEX_COLUMNS = ("row", "annotation_id", "image_id", "category_id", "frequency")


def context_box(bbox_xywh: list[float], context: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The crop (x0, y0, x1, y1) in integer pixels: the box grown by ``context`` x its side on each side.

    A w x h box becomes (1 + 2 context) w x (1 + 2 context) h around the same centre, is clipped to
    the image, and rounded outwards; it is at least one pixel wide and high.
    """
    x, y, w, h = (float(v) for v in bbox_xywh)
    x0 = max(0, math.floor(x - context * w))
    y0 = max(0, math.floor(y - context * h))
    x1 = min(width, math.ceil(x + w + context * w))
    y1 = min(height, math.ceil(y + h + context * h))
    # a box lying (almost) outside the image still gives a valid one-pixel crop at the border
    x0, y0 = min(x0, width - 1), min(y0, height - 1)
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


class CropDataset(Dataset):
    """One item per query annotation: ``(crop [3, S, S] in [0, 1], annotation_id)``."""

    def __init__(self, crops: list[dict[str, Any]], context: float, size: int):
        self.crops = crops  # dicts with path, bbox, annotation_id; sorted by image
        self.context = context
        self.size = size
        # Annotations of one image are consecutive, and a batch goes to one worker, so caching the
        # last decoded image decodes each image about once.
        self._cached: tuple[Path, Image.Image] | None = None

    def __len__(self) -> int:
        return len(self.crops)

    def _image(self, path: Path) -> Image.Image:
        if self._cached is None or self._cached[0] != path:
            self._cached = (path, decode_rgb(read_image_bytes(path), path))
        return self._cached[1]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        crop = self.crops[i]
        img = self._image(crop["path"])
        box = context_box(crop["bbox"], self.context, img.width, img.height)
        return to_tensor(img.crop(box), self.size), crop["annotation_id"]


def query_crops(
    data: dict[str, Any], image_root: str | Path, frequencies: list[str]
) -> tuple[list[dict], pd.DataFrame]:
    """The query annotations (ordered by image id, then annotation id) and their index table."""
    frequency_of = {c["id"]: c["frequency"] for c in data["categories"]}
    images = {img["id"]: img for img in data["images"]}
    anns = [a for a in data["annotations"] if frequency_of[a["category_id"]] in frequencies]
    anns.sort(key=lambda a: (a["image_id"], a["id"]))
    crops = [
        {"path": image_path(images[a["image_id"]], image_root), "bbox": a["bbox"], "annotation_id": int(a["id"])}
        for a in anns
    ]
    index = pd.DataFrame(
        {
            "row": np.arange(len(anns), dtype=np.int64),
            "annotation_id": np.array([a["id"] for a in anns], dtype=np.int64),
            "image_id": np.array([a["image_id"] for a in anns], dtype=np.int64),
            "category_id": np.array([a["category_id"] for a in anns], dtype=np.int64),
            "frequency": pd.Series([frequency_of[a["category_id"]] for a in anns], dtype=str),
        }
    )
    return crops, index


def embed_crops(
    train_json: str | Path, image_root: str | Path, embed_cfg: dict[str, Any], device: torch.device
) -> tuple[np.ndarray, pd.DataFrame]:
    """(L2-normalised float32 (N, D) crop embeddings, index with INDEX_COLUMNS) for the query annotations."""
    data = load_lvis(train_json)
    frequencies = list(embed_cfg["query_frequencies"])
    crops, index = query_crops(data, image_root, frequencies)
    if not crops:
        raise ValueError(
            f"{train_json}: no annotation of a category with frequency in {frequencies} "
            "(embed.query_frequencies); there is nothing to query the pool with"
        )
    encoder = build_encoder(embed_cfg, device)
    dataset = CropDataset(crops, float(embed_cfg["context"]), encoder.input_size)
    vectors, tags = embed_dataset(dataset, encoder, int(embed_cfg["batch_size"]), int(embed_cfg["workers"]), "crops")
    if tags != index["annotation_id"].tolist():
        raise RuntimeError("embed_crops: embeddings came back in another order than the annotations")
    return vectors, index
