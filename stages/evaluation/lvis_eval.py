"""LVIS metrics with the official `lvis` package (LVIS, LVISResults, LVISEval), on the 0-100 scale.

Conventions of the returned metrics:

* AP, AP50, AP75, APs, APm, APl, APr, APc, APf: LVIS's 0-1 values times 100.
* LVIS reports -1 for a group with no ground truth (e.g. APr on a split without rare classes);
  that becomes NaN here (``null`` in json).
* No detections at all: LVISResults refuses an empty list, so an empty result set is built by
  hand and LVISEval runs on it: every group with ground truth gets AP 0.0, the others NaN --
  exactly what detections that match nothing would give.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stages.core.registry import Registry
from stages.utils.compat import ensure_numpy_aliases

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")


def _lvis():
    # lvis 0.5.3 uses np.float (gone in numpy 2): the aliases must exist before lvis.eval runs.
    ensure_numpy_aliases()
    import lvis

    logging.getLogger("lvis").setLevel(logging.WARNING)
    # LVISResults warns "Assuming user provided the results in correct format" on every list input.
    logging.getLogger("lvis.results").setLevel(logging.ERROR)
    return lvis


def _empty_results(lvis, gt):
    """An LVISResults with no detection (its constructor indexes ``results[0]``)."""
    results = lvis.LVISResults.__new__(lvis.LVISResults)
    results.logger = logging.getLogger("lvis.results")
    results.dataset = copy.deepcopy(gt.dataset)
    results.dataset["annotations"] = []
    results._create_index()
    return results


def _check_fields(detections: list[dict[str, Any]], iou_type: str) -> None:
    field = "bbox" if iou_type == "bbox" else "segmentation"
    lacking = sum(1 for d in detections if field not in d)
    if lacking:
        # LVISResults would silently turn boxes into polygon masks for segm: refuse instead.
        raise ValueError(f"{lacking} of {len(detections)} detections lack '{field}', needed for {iou_type} evaluation")


def _check_detections(gt, detections: list[dict[str, Any]], iou_type: str) -> None:
    _check_fields(detections, iou_type)
    unknown = {d["image_id"] for d in detections} - set(gt.imgs)
    if unknown:
        raise ValueError(f"detections name {len(unknown)} image ids absent from the ground truth, e.g. {sorted(unknown)[:5]}")


def run_lvis_eval(gt_json: str | Path, detections: list[dict[str, Any]], iou_type: str, max_dets: int = 300):
    """The lvis.LVISEval object after evaluate/accumulate/summarize (the caller's list is not modified)."""
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', found {iou_type!r}")
    lvis = _lvis()
    gt = lvis.LVIS(str(gt_json))
    _check_detections(gt, detections, iou_type)
    if detections:
        # LVISResults writes area/id (and, for bbox, polygons) into the dicts: work on a copy.
        dets = copy.deepcopy(detections)
        if iou_type == "bbox":
            for d in dets:
                d.pop("segmentation", None)  # not needed for box IoU; saves the RLE copies
        results = lvis.LVISResults(gt, dets, max_dets=max_dets)
    else:
        results = _empty_results(lvis, gt)
    evaluator = lvis.LVISEval(gt, results, iou_type)
    evaluator.params.max_dets = max_dets
    evaluator.run()
    return evaluator


# The evaluators of ``evaluation.evaluator``: fn(gt_json, gt, detections, iou_type, max_dets) -> a run
# evaluation with ``.results``, ``.eval["precision"]`` and ``.params``.
EVALUATORS: Registry[Callable[..., Any]] = Registry("evaluation.evaluator")


@EVALUATORS.register("lvis")
def _official(gt_json: str | Path, gt: dict[str, Any] | None, detections: list[dict[str, Any]], iou_type: str,
              max_dets: int):
    """The official LVISEval: the reference."""
    return run_lvis_eval(gt_json, detections, iou_type, max_dets)


@EVALUATORS.register("fast")
def _fast(gt_json: str | Path, gt: dict[str, Any] | None, detections: list[dict[str, Any]], iou_type: str,
          max_dets: int):
    """stages.evaluation.fast_lvis_eval: LVISEval's numbers (tested against it), 14-38x faster
    (benchmarks/lvis_eval.md)."""
    from stages.data.lvis import load_lvis
    from stages.evaluation.fast_lvis_eval import fast_lvis_eval

    _check_fields(detections, iou_type)  # up front, as run_lvis_eval does (the fast path reads masks lazily)
    return fast_lvis_eval(gt if gt is not None else load_lvis(gt_json), detections, iou_type, max_dets)


def evaluate_lvis(gt_json: str | Path, detections: list[dict[str, Any]], iou_type: str, max_dets: int = 300,
                  evaluator: str = "fast", gt: dict[str, Any] | None = None):
    """A run evaluation by the registered ``evaluator`` (``evaluation.evaluator``); ``gt``: the
    already loaded json at ``gt_json``, if the caller has it."""
    return EVALUATORS.get(evaluator)(gt_json, gt, detections, iou_type, max_dets)


def summary_metrics(evaluator) -> dict[str, float]:
    """The METRIC_KEYS of a run LVISEval, times 100; NaN where LVIS gives -1 (no ground truth)."""
    out = {}
    for key in METRIC_KEYS:
        value = float(evaluator.results[key])
        out[key] = math.nan if value < 0 else 100.0 * value
    return out


def per_class_ap(evaluator, categories: list[dict[str, Any]] | None = None) -> pd.DataFrame:
    """Per-category AP (0-1 scale), for the paper's Fig. 4.

    ap = mean of LVIS's precision over the IoU thresholds and recall points (area 'all') of that
    class -- the class's share of AP; NaN for a class without ground truth. Rows in category order
    (sorted by id): category_id, name, frequency, ap. ``categories`` default: the evaluator's gt.
    """
    cats = {c["id"]: c for c in (categories if categories is not None else evaluator.lvis_gt.dataset["categories"])}
    precision = evaluator.eval["precision"]  # (iou thresholds, recall points, categories, area ranges)
    column = {cid: k for k, cid in enumerate(evaluator.params.cat_ids)}
    all_area = evaluator.params.area_rng_lbl.index("all")
    rows = []
    for cid in sorted(cats):
        ap = math.nan
        if cid in column:
            p = precision[:, :, column[cid], all_area]
            p = p[p > -1]
            ap = float(np.mean(p)) if p.size else math.nan
        rows.append({"category_id": cid, "name": cats[cid]["name"], "frequency": cats[cid].get("frequency", ""), "ap": ap})
    return pd.DataFrame(rows, columns=["category_id", "name", "frequency", "ap"])
