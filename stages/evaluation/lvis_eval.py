"""LVIS metrics with the official `lvis` package (LVIS, LVISResults, LVISEval), on the 0-100 scale.

Conventions of the returned metrics:

* AP, AP50, AP75, APs, APm, APl, APr, APc, APf: LVIS's 0-1 values times 100.
* LVIS reports -1 for a group with no ground truth (e.g. APr on a split without rare classes);
  that becomes NaN here (``null`` in json).
* No detections at all: LVISResults refuses an empty list, so an empty result set is built by
  hand and LVISEval runs on it: every group with ground truth gets AP 0.0, the others NaN --
  exactly what detections that match nothing would give.

:func:`evaluate_lvis`, the entry of both evaluators, validates once before either runs: the ground
truth with stages.data.lvis.load_lvis (every field the evaluators read, masks pycocotools can
decode; a string id is an error that says how to convert it) and the detections against it with
stages.data.detections.check_results (LVISResults' rules, its conversions of box-only and mask-only
results included). So ``evaluator: fast`` and ``evaluator: lvis`` accept and refuse the same
inputs, and what they accept they score alike. Every pycocotools call of LVISEval runs under the
wall-clock guard (stages.utils.watchdog), as those of the fast evaluator and judging do.
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
from stages.data.detections import check_results
from stages.data.lvis import load_lvis
from stages.utils.compat import ensure_numpy_aliases
from stages.utils.watchdog import guarded

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


def _check_detections(gt, detections: list[dict[str, Any]]) -> None:
    unknown = {d["image_id"] for d in detections} - set(gt.imgs)
    if unknown:
        raise ValueError(f"detections name {len(unknown)} image ids absent from the ground truth, e.g. {sorted(unknown)[:5]}")


def _ground_truth(lvis, gt: str | Path | dict[str, Any]):
    """An LVIS object of a json path, or of an already loaded json (copied: LVISEval writes into it)."""
    if not isinstance(gt, dict):
        return lvis.LVIS(str(gt))
    out = lvis.LVIS.__new__(lvis.LVIS)
    out.logger = logging.getLogger("lvis.lvis")
    out.dataset = copy.deepcopy(gt)
    out._create_index()
    return out


def _guarded_eval(lvis):
    """LVISEval whose pycocotools calls (mask conversion, IoU per image and class) run under the guard."""

    class GuardedLVISEval(lvis.LVISEval):
        def _to_mask(self, anns, lvis_data):
            for ann in anns:
                with guarded(f"LVIS.ann_to_rle of annotation {ann.get('id')} on image {ann.get('image_id')}"):
                    super()._to_mask([ann], lvis_data)

        def compute_iou(self, img_id, cat_id):
            gt, dt = self._get_gt_dt(img_id, cat_id)
            if not gt and not dt:
                return []
            with guarded(f"LVISEval's pycocotools.mask.iou on image {img_id}, category {cat_id}, annotations "
                         f"{[g.get('id') for g in gt][:10]}"):
                return super().compute_iou(img_id, cat_id)

    return GuardedLVISEval


def run_lvis_eval(gt_json: str | Path | dict[str, Any], detections: list[dict[str, Any]], iou_type: str,
                  max_dets: int = 300):
    """The lvis.LVISEval object after evaluate/accumulate/summarize (the caller's list is not modified).

    ``gt_json``: the ground truth's path, or the json already loaded. The detections as LVISResults
    takes them (it converts box-only results for segm and mask-only results for bbox); check them
    first with stages.data.detections.check_results, as :func:`evaluate_lvis` does."""
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', found {iou_type!r}")
    lvis = _lvis()
    gt = _ground_truth(lvis, gt_json)
    _check_detections(gt, detections)
    if detections:
        # LVISResults writes area/id (and, for bbox, polygons) into the dicts: work on a copy.
        dets = copy.deepcopy(detections)
        if iou_type == "bbox" and all("bbox" in d for d in dets):
            for d in dets:
                d.pop("segmentation", None)  # not needed for box IoU (nor, with a box first, for the area)
        results = lvis.LVISResults(gt, dets, max_dets=max_dets)
    else:
        results = _empty_results(lvis, gt)
    evaluator = _guarded_eval(lvis)(gt, results, iou_type)
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
    return run_lvis_eval(gt if gt is not None else gt_json, detections, iou_type, max_dets)


@EVALUATORS.register("fast")
def _fast(gt_json: str | Path, gt: dict[str, Any] | None, detections: list[dict[str, Any]], iou_type: str,
          max_dets: int):
    """stages.evaluation.fast_lvis_eval: LVISEval's numbers (tested against it), 14-38x faster
    (benchmarks/lvis_eval.md)."""
    from stages.evaluation.fast_lvis_eval import fast_lvis_eval

    return fast_lvis_eval(gt if gt is not None else load_lvis(gt_json), detections, iou_type, max_dets)


def evaluate_lvis(gt_json: str | Path, detections: list[dict[str, Any]], iou_type: str, max_dets: int = 300,
                  evaluator: str = "fast", gt: dict[str, Any] | None = None, source: str | Path = "detections"):
    """A run evaluation by the registered ``evaluator`` (``evaluation.evaluator``), after the one
    validation both evaluators share (module docstring). ``gt``: the json at ``gt_json`` as
    load_lvis returned it, if the caller has it (else it is loaded and checked here); ``source``
    names the detections in errors.

    Raises stages.data.lvis.DatasetError (the ground truth) or stages.data.detections.DetectionsError
    (the detections) naming the file, the record and the problem; ValueError for an unknown iou_type."""
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', found {iou_type!r}")
    run = EVALUATORS.get(evaluator)
    if gt is None:
        gt = load_lvis(gt_json)
    check_results(detections, gt, source, max_dets)
    return run(gt_json, gt, detections, iou_type, max_dets)


def summary_metrics(evaluator) -> dict[str, float]:
    """The METRIC_KEYS of a run LVISEval, times 100; NaN where LVIS gives -1 (no ground truth)."""
    out = {}
    for key in METRIC_KEYS:
        value = float(evaluator.results[key])
        out[key] = math.nan if value < 0 else 100.0 * value
    return out


def category_ap(precision: np.ndarray) -> np.ndarray:
    """(K,) AP of each category (0-1 scale) from LVIS's precision of one area range, (T, R, K): the
    mean of the category's entries > -1 over the IoU thresholds and recall points -- its share of
    AP (LVIS AP is the mean of the finite values); NaN for a category without ground truth."""
    valid = precision > -1
    count = valid.sum(axis=(0, 1))
    total = np.where(valid, precision, 0.0).sum(axis=(0, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def per_class_ap(evaluator, categories: list[dict[str, Any]] | None = None) -> pd.DataFrame:
    """Per-category AP (0-1 scale), for the paper's Fig. 4.

    ap = mean of LVIS's precision over the IoU thresholds and recall points (area 'all') of that
    class -- the class's share of AP; NaN for a class without ground truth. Rows in category order
    (sorted by id): category_id, name, frequency, ap. ``categories`` default: the evaluator's gt.
    """
    cats = {c["id"]: c for c in (categories if categories is not None else evaluator.lvis_gt.dataset["categories"])}
    precision = evaluator.eval["precision"]  # (iou thresholds, recall points, categories, area ranges)
    column = {cid: k for k, cid in enumerate(evaluator.params.cat_ids)}
    ap_of = category_ap(precision[:, :, :, evaluator.params.area_rng_lbl.index("all")])
    rows = []
    for cid in sorted(cats):
        ap = float(ap_of[column[cid]]) if cid in column else math.nan
        rows.append({"category_id": cid, "name": cats[cid]["name"], "frequency": cats[cid].get("frequency", ""), "ap": ap})
    return pd.DataFrame(rows, columns=["category_id", "name", "frequency", "ap"])
