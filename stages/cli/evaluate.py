"""Rule evaluate: one model's val detections -> LVIS segm + bbox metrics, ECE, reliability, per-class
AP (stages.evaluation.metrics).

CLI: python -m stages.cli.evaluate --config CFG --gt val.json --detections detections.json
        --out-metrics metrics.json --out-per-class per_class_ap.csv --out-reliability reliability.csv
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stages.data.detections import read_detections
from stages.evaluation.metrics import evaluate_detections
from stages.utils import watchdog
from stages.utils.atomic import write_csv, write_json
from stages.utils.config import load_stage_config

# evaluation.sets is not read here: a new evaluation set must not rerun the other sets' evaluations
CONFIG_KEYS = ("evaluation.max_detections", "evaluation.fixed_max_detections_per_class", "evaluation.ece_bins",
               "evaluation.evaluator", "evaluation.guard_seconds", "calibration")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="LVIS metrics (segm, bbox), ECE and reliability of one model")
    parser.add_argument("--config", required=True)
    parser.add_argument("--gt", required=True, type=Path, help="LVIS json of the evaluation set")
    parser.add_argument("--detections", required=True, type=Path, help="LVIS results json (or detections parquet)")
    parser.add_argument("--out-metrics", required=True, type=Path)
    parser.add_argument("--out-per-class", required=True, type=Path)
    parser.add_argument("--out-reliability", required=True, type=Path)
    args = parser.parse_args(argv)
    config = load_stage_config(args.config, CONFIG_KEYS)
    watchdog.configure(config["evaluation"]["guard_seconds"])
    metrics, per_class, reliability = evaluate_detections(config, args.gt, read_detections(args.detections),
                                                          args.detections)
    write_json(metrics, args.out_metrics, indent=2)
    write_csv(per_class, args.out_per_class)
    write_csv(reliability, args.out_reliability)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
