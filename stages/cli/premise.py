"""Rule premise: the paper's premise measured on the run's data (stages.reporting.premise): P1 teacher
APr - AP with its paired interval (the bootstrap job's, from its intervals.csv), P2 mean CCECE per
r/c/f and r - f with its interval (on the holdout detections the ccece stage judges: the top
evaluation.max_detections of each image), P3 the share
of val images whose teacher detections above the score threshold exceed the per-image budget, P4 the
share of rare-class objects in the unlabeled set against the pool (when the pool's truth is known).

CLI: python -m stages.cli.premise --config CFG --val-gt val.json --teacher-detections D.json --intervals I.csv
        --holdout-gt holdout15.json --holdout-detections H.parquet --unlabeled unlabeled.json
        --pool pool.json [--pool-truth pool_truth.json] --out-csv premise.csv --out-md premise.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from stages.data.detections import read_detections
from stages.data.lvis import load_lvis
from stages.evaluation.judging import judge_detections
from stages.evaluation.metrics import top_detections
from stages.reporting.premise import budget_share, ccece_gap, premise_markdown, premise_table, rare_gap, rare_share
from stages.reporting.table1 import read_intervals
from stages.utils.atomic import write_csv, write_text
from stages.utils.config import load_stage_config
from stages.utils.readers import read_json

CONFIG_KEYS = ("seed", "evaluation.max_detections", "evaluation.bootstrap_draws", "evaluation.interval_level",
               "calibration.iou_type", "calibration.iou_threshold", "model.test_score_threshold")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The paper's premise (P1-P4) measured on this run's data")
    parser.add_argument("--config", required=True)
    parser.add_argument("--val-gt", required=True, type=Path)
    parser.add_argument("--teacher-detections", required=True, type=Path, help="the teacher's val detections")
    parser.add_argument("--intervals", required=True, type=Path, help="the bootstrap's intervals.csv on val (P1)")
    parser.add_argument("--holdout-gt", required=True, type=Path)
    parser.add_argument("--holdout-detections", required=True, type=Path, help="the train85 teacher's on holdout15")
    parser.add_argument("--unlabeled", required=True, type=Path, help="retrieval/unlabeled.json")
    parser.add_argument("--pool", required=True, type=Path, help="the candidate pool json")
    parser.add_argument("--pool-truth", type=Path, default=None, help="mini-LVIS's pool_truth.json (P4)")
    parser.add_argument("--out-csv", required=True, type=Path)
    parser.add_argument("--out-md", required=True, type=Path)
    args = parser.parse_args(argv)
    config = load_stage_config(args.config, CONFIG_KEYS)
    evaluation, cal = config["evaluation"], config["calibration"]
    draws, level, seed = evaluation["bootstrap_draws"], evaluation["interval_level"], config["seed"]

    val = load_lvis(args.val_gt)
    teacher = read_detections(args.teacher_detections)
    p1 = rare_gap(read_intervals(args.intervals, ["teacher"]))
    holdout = load_lvis(args.holdout_gt)
    # the detections the ccece stage judges: the top evaluation.max_detections of each image
    holdout_detections, _ = top_detections(read_detections(args.holdout_detections), evaluation["max_detections"])
    judged = judge_detections(holdout_detections, holdout, cal["iou_type"], cal["iou_threshold"])
    p2 = ccece_gap(judged, holdout["categories"], draws, seed, level)
    p3 = budget_share(pd.DataFrame({"image_id": [d["image_id"] for d in teacher], "score": [d["score"] for d in teacher]}),
                      [img["id"] for img in val["images"]], evaluation["max_detections"],
                      config["model"]["test_score_threshold"])
    p4 = None
    if args.pool_truth is not None:
        truth = read_json(args.pool_truth)
        frequency = {c["id"]: c["frequency"] for c in val["categories"]}
        unlabeled = [img["id"] for img in load_lvis(args.unlabeled, require_annotations=False)["images"]]
        pool = [img["id"] for img in load_lvis(args.pool, require_annotations=False)["images"]]
        p4 = {"unlabeled": rare_share(unlabeled, truth, frequency), "pool": rare_share(pool, truth, frequency)}
    table = premise_table(p1, p2, p3, p4)
    write_csv(table, args.out_csv)
    write_text(premise_markdown(table, level), args.out_md)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
