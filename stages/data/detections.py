"""Detections on disk: LVIS results json (the evaluation contract) or an equivalent parquet table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def results_frame(results: list[dict[str, Any]]) -> pd.DataFrame:
    """LVIS results as a table: one row per detection, box as x/y/w/h columns, mask RLE as strings."""
    boxes = np.asarray([r["bbox"] for r in results], dtype=np.float64).reshape(-1, 4)
    return pd.DataFrame({
        "image_id": np.asarray([r["image_id"] for r in results], dtype=np.int64),
        "category_id": np.asarray([r["category_id"] for r in results], dtype=np.int64),
        "score": np.asarray([r["score"] for r in results], dtype=np.float64),
        "x": boxes[:, 0], "y": boxes[:, 1], "w": boxes[:, 2], "h": boxes[:, 3],
        "rle_counts": [r["segmentation"]["counts"] if "segmentation" in r else None for r in results],
        "rle_height": [r["segmentation"]["size"][0] if "segmentation" in r else 0 for r in results],
        "rle_width": [r["segmentation"]["size"][1] if "segmentation" in r else 0 for r in results],
    })


def read_detections(path: str | Path) -> list[dict[str, Any]]:
    """Detections from an LVIS results json or from the parquet table of :func:`results_frame`."""
    path = Path(path)
    if path.suffix != ".parquet":
        with open(path) as fh:
            data = json.load(fh)
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a list of LVIS results")
        return data
    frame = pd.read_parquet(path)
    out = []
    for row in frame.itertuples(index=False):
        det = {"image_id": int(row.image_id), "category_id": int(row.category_id), "score": float(row.score),
               "bbox": [row.x, row.y, row.w, row.h]}
        if isinstance(row.rle_counts, str):
            det["segmentation"] = {"size": [int(row.rle_height), int(row.rle_width)], "counts": row.rle_counts}
        out.append(det)
    return out
