"""Rule bootstrap: Table 1's uncertainty -- a paired image-level bootstrap of every model's mask AP,
APr, APc, APf, AP-Fixed, APr-Fixed, APc-Fixed, APf-Fixed, AP-Pool and ECE on the evaluation set,
and of the differences between models (stages.evaluation.bootstrap).

Writes a CSV with one row per (model or comparison "a - b", metric): the value on the data as it
is and the ``evaluation.interval_level`` percentile interval over ``evaluation.bootstrap_draws``
draws, all models resampled with the same draws; per model also the gap "APr - AP" (the premise's
P1, both metrics on each draw).

CLI: python -m stages.cli.bootstrap --config CFG --gt val.json --detections teacher=D.json student_soft=E.json ...
        --compare student_soft:teacher ... --out intervals.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.data.detections import check_results, read_detections
from stages.data.lvis import load_lvis
from stages.evaluation.bootstrap import bootstrap_metrics, intervals, prepare_models
from stages.utils import watchdog
from stages.utils.atomic import write_csv
from stages.utils.config import load_stage_config

CONFIG_KEYS = ("seed", "evaluation.max_detections", "evaluation.fixed_max_detections_per_class", "evaluation.ece_bins",
               "evaluation.bootstrap_draws", "evaluation.interval_level", "evaluation.guard_seconds",
               "calibration.iou_type", "calibration.iou_threshold")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Paired image-level bootstrap intervals of Table 1's metrics")
    parser.add_argument("--config", required=True)
    parser.add_argument("--gt", required=True, type=Path)
    parser.add_argument("--detections", required=True, nargs="+", help="MODEL=detections.json, one per model")
    parser.add_argument("--compare", nargs="*", default=[], help="A:B -- the interval of A minus B")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    config = load_stage_config(args.config, CONFIG_KEYS)
    evaluation = config["evaluation"]
    detections = dict(spec.split("=", 1) for spec in args.detections)
    comparisons = [tuple(spec.split(":", 1)) for spec in args.compare]
    unknown = {m for pair in comparisons for m in pair} - set(detections)
    if unknown:
        parser.error(f"--compare names models without --detections: {sorted(unknown)}")
    watchdog.configure(evaluation["guard_seconds"])
    gt = load_lvis(args.gt)
    checked = {m: check_results(read_detections(p), gt, p, evaluation["max_detections"]) for m, p in detections.items()}
    models = prepare_models(gt, checked, iou_type="segm", max_dets=evaluation["max_detections"],
                            detections_per_class_setting=evaluation["fixed_max_detections_per_class"],
                            judge_iou_type=config["calibration"]["iou_type"],
                            judge_iou_threshold=config["calibration"]["iou_threshold"])
    draws = bootstrap_metrics(models, evaluation["bootstrap_draws"], config["seed"], evaluation["ece_bins"])
    table = intervals(draws, comparisons, evaluation["interval_level"])
    write_csv(table, args.out)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
