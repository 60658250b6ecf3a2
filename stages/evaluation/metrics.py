"""One model's detections evaluated: LVIS segm + bbox metrics, AP-Fixed and AP-Pool, ECE,
reliability, per-class AP.

metrics.json (the contract in docs/design.md): {"segm": {AP, AP50, AP75, APs, APm, APl, APr, APc, APf,
AP-Fixed, APr-Fixed, APc-Fixed, APf-Fixed, AP-Pool}, "bbox": {...}, "ece": float,
"ece_per_frequency": {"r", "c", "f"}, "n_detections": int, "n_judged": int, "n_cut": int,
"detections_per_class": int, "n_cut_per_class": int}; AP on the 0-100 scale, null where a group
has no ground truth.

The detections are what the predictor wrote (at most ``model.detections_per_image`` per image).
AP, per-class AP and the ECE see the ``evaluation.max_detections`` highest-scoring of each image
(``n_detections`` kept, ``n_cut`` cut); AP-Fixed and AP-Pool (stages.evaluation.fixed_ap) see all of
them, limited to the ``detections_per_class`` highest-scoring of each class over the evaluation set
(``evaluation.fixed_max_detections_per_class``; ``n_cut_per_class`` cut). The ECE judges the
detections on the val ground truth with the `calibration` rule of the config (IoU type and
threshold) and `evaluation.ece_bins` bins. per_class_ap.csv is the mask AP per class (0-1 scale);
reliability.csv the ECE's per-bin table. AP, AP-Fixed and AP-Pool come from
`evaluation.evaluator`: the vectorised evaluator (same numbers as LVISEval) or LVISEval itself. The detections are checked
against the ground truth once, up front (stages.data.detections.check_results), so that AP and the
ECE count the same detections and both evaluators see what passed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd

from stages.core.calibration import ece_per_frequency, expected_calibration_error, reliability_table
from stages.data.detections import check_results
from stages.data.lvis import load_lvis
from stages.evaluation.fixed_ap import detections_per_class, fixed_pool_metrics, limit_per_class
from stages.evaluation.judging import judge_detections
from stages.evaluation.lvis_eval import evaluate_lvis, per_class_ap, summary_metrics


def top_detections(detections: list[dict[str, Any]], max_per_image: int) -> tuple[list[dict[str, Any]], int]:
    """At most ``max_per_image`` highest-scoring detections per image, and how many were cut."""
    by_image: dict[int, list[dict]] = defaultdict(list)
    for det in detections:
        by_image[det["image_id"]].append(det)
    kept, cut = [], 0
    for dets in by_image.values():
        dets.sort(key=lambda d: -d["score"])
        kept.extend(dets[:max_per_image])
        cut += max(len(dets) - max_per_image, 0)
    return kept, cut


def json_safe(metrics: dict[str, float]) -> dict[str, float | None]:
    """NaN -> None: json has no NaN, and the atomic writer refuses it."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


def evaluate_detections(config: dict[str, Any], gt_path: Path, detections: list[dict[str, Any]],
                        source: str | Path = "detections") -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """metrics.json's content, the per-class AP frame and the reliability frame. ``source`` names the
    detections in errors (DatasetError for the ground truth, DetectionsError for the detections)."""
    evaluation, cal = config["evaluation"], config["calibration"]
    max_dets, bins = evaluation["max_detections"], evaluation["ece_bins"]
    gt = load_lvis(gt_path)
    check_results(detections, gt, source, max_dets)
    per_class = detections_per_class(evaluation["fixed_max_detections_per_class"], len(gt["images"]))
    fixed = {iou_type: fixed_pool_metrics(gt_path, detections, iou_type, per_class, evaluation["evaluator"], gt)
             for iou_type in ("segm", "bbox")}
    cut_per_class = len(detections) - len(limit_per_class(detections, per_class))
    all_detections = len(detections)
    detections, cut = top_detections(detections, max_dets)
    if cut:
        print(f"evaluate: kept the top {max_dets} detections per image for AP, cut {cut} of {all_detections}")
    segm_eval, bbox_eval = (evaluate_lvis(gt_path, detections, iou_type, max_dets, evaluation["evaluator"], gt, source)
                            for iou_type in ("segm", "bbox"))
    judged = judge_detections(detections, gt, cal["iou_type"], cal["iou_threshold"])
    metrics: dict[str, Any] = {
        "segm": json_safe(summary_metrics(segm_eval) | fixed["segm"]),
        "bbox": json_safe(summary_metrics(bbox_eval) | fixed["bbox"]),
        "ece": expected_calibration_error(judged["score"], judged["correct"], bins),
        "ece_per_frequency": ece_per_frequency(judged, gt["categories"], bins),
        "n_detections": len(detections),
        "n_judged": int(len(judged)),
        "n_cut": cut,
        "detections_per_class": per_class,
        "n_cut_per_class": cut_per_class,
    }
    per_class = per_class_ap(segm_eval, gt["categories"])
    reliability = reliability_table(judged["score"], judged["correct"], bins)
    return metrics, per_class, reliability
