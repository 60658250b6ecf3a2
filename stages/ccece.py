"""CCECE (eq. 4) of the train85 teacher on holdout15, and its ECE.

Writes ccece.parquet (one row per category; the run's ECE in the parquet metadata under "ece"),
a sibling json with the ECE (overall and per frequency group) and the reliability table.

CLI: python -m stages.ccece --config CFG --detections holdout_detections.json --gt holdout15.json
        --out ccece.parquet --ece-json ece.json [--reliability reliability.csv]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stages.atomic import atomic_path, write_json, write_parquet
from stages.calibration import (
    ccece_per_class,
    ece_per_frequency,
    expected_calibration_error,
    judge_detections,
    reliability_table,
)
from stages.config import load_config
from stages.detections_io import read_detections
from stages.lvis_data import load_lvis


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Eq. (4): class-conditional expected calibration error")
    parser.add_argument("--config", required=True)
    parser.add_argument("--detections", required=True, type=Path)
    parser.add_argument("--gt", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--ece-json", required=True, type=Path)
    parser.add_argument("--reliability", type=Path, default=None)
    args = parser.parse_args(argv)
    cal = load_config(args.config)["calibration"]
    gt = load_lvis(args.gt)
    detections = read_detections(args.detections)
    judged = judge_detections(detections, gt, cal["iou_type"], cal["iou_threshold"])
    table = ccece_per_class(judged, gt["categories"], cal["bins"])
    ece = expected_calibration_error(judged["score"], judged["correct"], cal["bins"])
    summary = {"ece": ece, "n_detections": len(detections), "n_judged": int(len(judged)), "bins": cal["bins"],
               "iou_type": cal["iou_type"], "iou_threshold": cal["iou_threshold"],
               "per_frequency": ece_per_frequency(judged, gt["categories"], cal["bins"])}
    write_parquet(table, args.out, metadata={"ece": repr(ece), "summary": json.dumps(summary)})
    write_json(summary, args.ece_json, indent=2)
    if args.reliability:
        with atomic_path(args.reliability) as tmp:
            reliability_table(judged["score"], judged["correct"], cal["bins"]).to_csv(tmp, index=False)
    print(f"ccece: {len(judged)} judged of {len(detections)} detections; ECE {ece:.4f}")
    print(table.to_string(index=False))



if __name__ == "__main__":
    main()
