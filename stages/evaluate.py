"""Evaluate one model's val detections: LVIS segm + bbox metrics, ECE, reliability, per-class AP.

metrics.json (DESIGN.md contract): {"segm": {AP, AP50, AP75, APs, APm, APl, APr, APc, APf},
"bbox": {...}, "ece": float, "ece_per_frequency": {"r", "c", "f"}, "n_detections": int,
"n_judged": int, "n_cut": int}; AP on the 0-100 scale, null where a group has no ground truth.
The ECE judges the detections on the val ground truth with the `calibration` rule of the config
(IoU type and threshold) and `evaluation.ece_bins` bins. per_class_ap.csv is the mask AP per
class (0-1 scale); reliability.csv the ECE's per-bin table. AP comes from `evaluation.evaluator`:
the vectorised evaluator (same numbers as LVISEval) or LVISEval itself.

CLI: python -m stages.evaluate --config CFG --gt val.json --detections detections.json
        --out-metrics metrics.json --out-per-class per_class_ap.csv --out-reliability reliability.csv
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from stages.atomic import write_csv, write_json
from stages.calibration import ece_per_frequency, expected_calibration_error, judge_detections, reliability_table
from stages.config import load_config
from stages.detections_io import read_detections
from stages.lvis_data import load_lvis
from stages.lvis_eval import evaluate_lvis, per_class_ap, summary_metrics


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


def evaluate(config: dict[str, Any], gt_path: Path, detections: list[dict[str, Any]]) -> tuple[dict[str, Any], Any, Any]:
    """metrics.json's content, the per-class AP frame and the reliability frame."""
    evaluation, cal = config["evaluation"], config["calibration"]
    max_dets, bins = evaluation["max_detections"], evaluation["ece_bins"]
    gt = load_lvis(gt_path)
    detections, cut = top_detections(detections, max_dets)
    if cut:
        print(f"evaluate: kept the top {max_dets} detections per image, cut {cut}")
    segm_eval, bbox_eval = (evaluate_lvis(gt_path, detections, iou_type, max_dets, evaluation["evaluator"], gt)
                            for iou_type in ("segm", "bbox"))
    judged = judge_detections(detections, gt, cal["iou_type"], cal["iou_threshold"])
    metrics: dict[str, Any] = {
        "segm": json_safe(summary_metrics(segm_eval)),
        "bbox": json_safe(summary_metrics(bbox_eval)),
        "ece": expected_calibration_error(judged["score"], judged["correct"], bins),
        "ece_per_frequency": ece_per_frequency(judged, gt["categories"], bins),
        "n_detections": len(detections),
        "n_judged": int(len(judged)),
        "n_cut": cut,
    }
    per_class = per_class_ap(segm_eval, gt["categories"])
    reliability = reliability_table(judged["score"], judged["correct"], bins)
    return metrics, per_class, reliability


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="LVIS metrics (segm, bbox), ECE and reliability of one model")
    parser.add_argument("--config", required=True)
    parser.add_argument("--gt", required=True, type=Path, help="LVIS json of the evaluation set")
    parser.add_argument("--detections", required=True, type=Path, help="LVIS results json (or detections parquet)")
    parser.add_argument("--out-metrics", required=True, type=Path)
    parser.add_argument("--out-per-class", required=True, type=Path)
    parser.add_argument("--out-reliability", required=True, type=Path)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    metrics, per_class, reliability = evaluate(config, args.gt, read_detections(args.detections))
    write_json(metrics, args.out_metrics, indent=2)
    write_csv(per_class, args.out_per_class)
    write_csv(reliability, args.out_reliability)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
