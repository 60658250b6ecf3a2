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


class DetectionsError(ValueError):
    """A detections file breaks its contract; the message names the file and the rule."""


def check_detections(detections: list[dict[str, Any]], path: str | Path) -> list[dict[str, Any]]:
    """The detections contract: every detection has image_id, category_id, score and a bbox of four
    numbers; boxes and scores are finite, scores in [0, 1], box sides >= 0."""
    if not all(isinstance(d, dict) and {"image_id", "category_id", "score", "bbox"} <= d.keys() for d in detections):
        raise DetectionsError(f"{path}: every detection needs image_id, category_id, score and bbox")
    try:
        scores = np.asarray([d["score"] for d in detections], dtype=np.float64)
        boxes = np.asarray([d["bbox"] for d in detections], dtype=np.float64).reshape(len(detections), 4)
    except (TypeError, ValueError) as exc:
        raise DetectionsError(f"{path}: scores must be numbers and boxes four numbers ({exc})") from exc
    bad = np.flatnonzero(~np.isfinite(scores) | (scores < 0) | (scores > 1))
    if bad.size:
        raise DetectionsError(f"{path}: {bad.size} detection(s) with a score that is not a probability in [0, 1], "
                              f"e.g. #{bad[0]} (image {detections[bad[0]]['image_id']}): {float(scores[bad[0]])!r}")
    bad = np.flatnonzero(~np.isfinite(boxes).all(axis=1) | (boxes[:, 2] < 0) | (boxes[:, 3] < 0))
    if bad.size:
        raise DetectionsError(f"{path}: {bad.size} detection(s) with a non-finite or negative-sized box, e.g. #{bad[0]} "
                              f"(image {detections[bad[0]]['image_id']}): {boxes[bad[0]].tolist()}")
    return detections


def read_detections(path: str | Path) -> list[dict[str, Any]]:
    """Detections from an LVIS results json or from the parquet table of :func:`results_frame`,
    checked against the contract (:func:`check_detections`)."""
    path = Path(path)
    if path.suffix != ".parquet":
        with open(path) as fh:
            data = json.load(fh)
        if not isinstance(data, list):
            raise DetectionsError(f"{path}: expected a list of LVIS results")
        return check_detections(data, path)
    frame = pd.read_parquet(path)
    out = []
    for row in frame.itertuples(index=False):
        det = {"image_id": int(row.image_id), "category_id": int(row.category_id), "score": float(row.score),
               "bbox": [row.x, row.y, row.w, row.h]}
        if isinstance(row.rle_counts, str):
            det["segmentation"] = {"size": [int(row.rle_height), int(row.rle_width)], "counts": row.rle_counts}
        out.append(det)
    return check_detections(out, path)
