"""Evaluate one model's val detections: LVIS segm + bbox metrics, ECE, reliability, per-class AP.

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

from stages.atomic import atomic_path, write_json
from stages.calibration import ece_per_frequency, expected_calibration_error, judge_detections, reliability_table
from stages.config import load_config
from stages.lvis_data import load_lvis
from stages.lvis_eval import lvis_metrics, per_class_ap, run_lvis_eval, summary_metrics


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


def _json_safe(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="LVIS metrics, ECE and reliability of one model")
    parser.add_argument("--config", required=True)
    parser.add_argument("--gt", required=True, type=Path)
    parser.add_argument("--detections", required=True, type=Path)
    parser.add_argument("--out-metrics", required=True, type=Path)
    parser.add_argument("--out-per-class", required=True, type=Path)
    parser.add_argument("--out-reliability", required=True, type=Path)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    gt = load_lvis(args.gt)
    with open(args.detections) as fh:
        detections = json.load(fh)
    detections, cut = top_detections(detections, config["evaluation"]["max_detections"])
    if cut:
        print(f"evaluate: kept the top {config['evaluation']['max_detections']} per image, cut {cut} detections")
    segm_eval = run_lvis_eval(args.gt, detections, "segm", config["evaluation"]["max_detections"])
    metrics: dict[str, Any] = {
        "segm": _json_safe(summary_metrics(segm_eval)),
        "bbox": _json_safe(lvis_metrics(args.gt, detections, "bbox", config["evaluation"]["max_detections"])),
    }
    cal = config["calibration"]
    bins = config["evaluation"]["ece_bins"]
    judged = judge_detections(detections, gt, cal["iou_type"], cal["iou_threshold"])
    metrics["ece"] = expected_calibration_error(judged["score"], judged["correct"], bins)
    metrics["ece_per_frequency"] = ece_per_frequency(judged, gt["categories"], bins)
    metrics["n_detections"] = len(detections)
    metrics["n_judged"] = int(len(judged))
    write_json(metrics, args.out_metrics, indent=2)
    with atomic_path(args.out_per_class) as tmp:
        per_class_ap(segm_eval, gt["categories"]).to_csv(tmp, index=False)
    with atomic_path(args.out_reliability) as tmp:
        reliability_table(judged["score"], judged["correct"], bins).to_csv(tmp, index=False)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
