"""LVIS metrics with the official `lvis` package (LVISResults + LVISEval), on the 0-100 scale."""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stages.compat import ensure_numpy_aliases

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")


def _lvis():
    ensure_numpy_aliases()
    import lvis

    logging.getLogger("lvis").setLevel(logging.WARNING)
    return lvis


def run_lvis_eval(gt_json: str | Path, detections: list[dict[str, Any]], iou_type: str, max_dets: int = 300):
    """The LVISEval object after evaluate/accumulate/summarize; None when there is no detection."""
    if not detections:
        return None
    lvis = _lvis()
    gt = lvis.LVIS(str(gt_json))
    dets = copy.deepcopy(detections)
    if iou_type == "bbox":
        for d in dets:
            d.pop("segmentation", None)
    results = lvis.LVISResults(gt, dets, max_dets=max_dets)
    evaluator = lvis.LVISEval(gt, results, iou_type)
    evaluator.run()
    return evaluator


def lvis_metrics(gt_json: str | Path, detections: list[dict[str, Any]], iou_type: str, max_dets: int = 300) -> dict[str, float]:
    """AP, AP50, AP75, APs/m/l, APr/c/f x 100; NaN where LVIS has no ground truth for a group
    (LVIS reports -1); all 0 when there is no detection at all."""
    return summary_metrics(run_lvis_eval(gt_json, detections, iou_type, max_dets))


def summary_metrics(evaluator) -> dict[str, float]:
    """The METRIC_KEYS of a run LVISEval (None: no detections -> zeros)."""
    if evaluator is None:
        return {k: 0.0 for k in METRIC_KEYS}
    out = {}
    for key in METRIC_KEYS:
        value = float(evaluator.results[key])
        out[key] = math.nan if value < 0 else 100.0 * value
    return out


def per_class_ap(evaluator, gt_categories: list[dict[str, Any]]) -> pd.DataFrame:
    """Per-category AP (0-1): mean precision over IoU thresholds and recall points, area 'all'."""
    cats = {c["id"]: c for c in gt_categories}
    rows = []
    if evaluator is None:
        return pd.DataFrame([{"category_id": cid, "name": c["name"], "frequency": c["frequency"], "ap": 0.0}
                             for cid, c in sorted(cats.items())])
    precision = evaluator.eval["precision"]  # (T, R, K, A)
    for k, cid in enumerate(evaluator.params.cat_ids):
        p = precision[:, :, k, 0]
        p = p[p > -1]
        rows.append({"category_id": cid, "name": cats[cid]["name"], "frequency": cats[cid]["frequency"],
                     "ap": float(np.mean(p)) if p.size else math.nan})
    return pd.DataFrame(rows)
