"""Rule ccece: CCECE (eq. 4) of the train85 teacher on holdout15, and its ECE.

Writes ccece.parquet (one row per category, in category order: category_id, name, frequency,
n_detections, accuracy, confidence, ccece (eq. 4 exactly), ccece_se (its standard error, NaN
without detections) and delta (what the student uses: ccece itself with ``calibration.shrinkage:
none``, its empirical-Bayes estimate shrunk toward the frequency group with ``group``); the run's ECE
in the parquet key-value metadata under "ece", the whole summary under "summary"), the summary json {"ece", "n_judged", "bins",
"iou_type", "per_frequency": {"r", "c", "f"}, ...} and, optionally, the reliability table.
Judging and bins follow the config's `calibration` section; the detections judged are the
``evaluation.max_detections`` highest-scoring of each image, those LVIS AP judges.

CLI: python -m stages.cli.ccece --config CFG --detections holdout_detections.json --gt holdout15.json
        --out ccece.parquet --ece-json ece.json [--reliability reliability.csv]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd

from stages.core.calibration import (
    FREQUENCIES,
    ccece_per_class,
    ccece_standard_errors,
    ece_per_frequency,
    expected_calibration_error,
    reliability_table,
    shrink_to_groups,
)
from stages.data.detections import check_results, read_detections
from stages.data.lvis import load_lvis
from stages.evaluation.judging import judge_detections
from stages.evaluation.metrics import top_detections
from stages.utils import watchdog
from stages.utils.atomic import write_csv, write_json, write_parquet
from stages.utils.config import load_stage_config

CONFIG_KEYS = ("calibration", "evaluation.max_detections", "evaluation.guard_seconds")


def summary_lines(table: pd.DataFrame, summary: dict[str, Any], shown: int = 3) -> list[str]:
    """A few lines for the log: counts, ECE, mean CCECE per frequency, the extreme classes."""
    lines = [f"ccece: {summary['n_judged']} judged of {summary['n_detections']} detections; "
             f"ECE {summary['ece']:.4f} ({summary['bins']} bins, {summary['iou_type']} IoU >= {summary['iou_threshold']})"]
    seen = table[table["n_detections"] > 0]
    for freq in FREQUENCIES:
        part = seen[seen["frequency"] == freq]
        mean = f"{part['ccece'].mean():+.4f}" if len(part) else "n/a"
        lines.append(f"  {freq}: {len(part)} classes with detections, mean CCECE {mean}, "
                     f"ECE {summary['per_frequency'][freq]:.4f}")
    if len(seen):
        ordered = seen.sort_values("ccece")
        for label, rows in (("most overconfident", ordered.head(shown)), ("most underconfident", ordered.tail(shown)[::-1])):
            text = ", ".join(f"{r.name} ({r.frequency}, n={r.n_detections}) {r.ccece:+.3f} (delta {r.delta:+.3f})"
                             for r in rows.itertuples())
            lines.append(f"  {label}: {text}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Eq. (4): class-conditional expected calibration error (CCECE)")
    parser.add_argument("--config", required=True)
    parser.add_argument("--detections", required=True, type=Path, help="LVIS results json or detections parquet")
    parser.add_argument("--gt", required=True, type=Path, help="LVIS json the detections are judged on")
    parser.add_argument("--out", required=True, type=Path, help="ccece.parquet")
    parser.add_argument("--ece-json", required=True, type=Path)
    parser.add_argument("--reliability", type=Path, default=None, help="optional reliability csv")
    args = parser.parse_args(argv)
    config = load_stage_config(args.config, CONFIG_KEYS)
    cal = config["calibration"]
    watchdog.configure(config["evaluation"]["guard_seconds"])
    gt = load_lvis(args.gt)
    # The detections may cover more images than the ground truth judges them on (the student's tuning
    # judges holdout15's detections on its half a): those of other images are left out here; an id
    # of the wrong type still reaches the contract check, which names it.
    image_ids = {img["id"] for img in gt["images"]}
    detections = [d for d in read_detections(args.detections)
                  if not isinstance(d.get("image_id"), int) or d["image_id"] in image_ids]
    detections = check_results(detections, gt, args.detections, max_dets=-1)
    # the detections LVIS AP judges: the predictor may write more per image (for AP-Fixed)
    detections, _ = top_detections(detections, config["evaluation"]["max_detections"])
    judged = judge_detections(detections, gt, cal["iou_type"], cal["iou_threshold"])
    table = ccece_per_class(judged, gt["categories"], cal["bins"])
    table["ccece_se"] = ccece_standard_errors(judged, gt["categories"])
    table["delta"] = table["ccece"]
    if cal["shrinkage"] == "group":
        table["delta"] = shrink_to_groups(table["ccece"], table["ccece_se"], table["n_detections"], table["frequency"])
    ece = expected_calibration_error(judged["score"], judged["correct"], cal["bins"])
    summary = {"ece": ece, "n_judged": int(len(judged)), "n_detections": len(detections), "bins": cal["bins"],
               "iou_type": cal["iou_type"], "iou_threshold": cal["iou_threshold"], "shrinkage": cal["shrinkage"],
               "per_frequency": ece_per_frequency(judged, gt["categories"], cal["bins"])}
    write_parquet(table, args.out, metadata={"ece": repr(ece), "summary": json.dumps(summary)})
    write_json(summary, args.ece_json, indent=2)
    if args.reliability:
        write_csv(reliability_table(judged["score"], judged["correct"], cal["bins"]), args.reliability)
    print("\n".join(summary_lines(table, summary)))


if __name__ == "__main__":
    main()
