"""Rule report: the paper's Table 1, Fig. 3 and Fig. 4 from a run's evaluation outputs
(stages.reporting).

Writes table1.md / table1.csv (segm AP, APr, APc, APf, bbox AP, ECE per model, the paper's
numbers beside them; table1.md also holds the calibration table: ECE overall and per frequency
group), fig3_reliability.png (reliability diagrams, teacher vs student, with ECE) and
fig4_per_class_ap.png (per-class AP against training instance count, r/c/f coloured) and
fig5_ccece.png (per-class CCECE with its interval and the Delta the student uses). Each figure's
plotted data is written beside it as CSV. With the bootstrap's intervals, Table 1 shows each
metric's interval and the differences between rows with theirs; with the jobs' benchmark files,
timings.csv and table1.md list every job's wall time and peak memory.

CLI: python -m stages.cli.report --config CFG --eval-dir results/<run>/eval/<set> --models teacher student_soft ...
        --evalset <set>
        --categories categories.parquet --ccece ccece.parquet [--intervals intervals.csv] [--dedup dedup_counts.json]
        [--holdout-ece ece.json] [--benchmarks B.tsv ...] --out-dir report/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from stages.data.artifacts import read_ccece
from stages.reporting.figures import (
    ccece_data,
    ccece_figure,
    per_class_data,
    per_class_figure,
    reliability_data,
    reliability_figure,
)
from stages.reporting.table1 import figure_models, load_metrics, table1, table1_markdown
from stages.reporting.timings import timings_table
from stages.utils.atomic import write_csv, write_figure, write_text
from stages.utils.config import load_stage_config

CONFIG_KEYS = ("run", "dataset.source", "evaluation.ece_bins")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Table 1, Fig. 3, Fig. 4 and Fig. 5 of the paper for one run")
    parser.add_argument("--config", required=True)
    parser.add_argument("--eval-dir", required=True, type=Path)
    parser.add_argument("--models", required=True, nargs="+")
    parser.add_argument("--evalset", required=True, help="the evaluation set's name (evaluation.sets)")
    parser.add_argument("--categories", required=True, type=Path)
    parser.add_argument("--ccece", required=True, type=Path)
    parser.add_argument("--intervals", type=Path, default=None, help="the bootstrap's intervals.csv")
    parser.add_argument("--dedup", type=Path, default=None)
    parser.add_argument("--holdout-ece", type=Path, default=None)
    parser.add_argument("--benchmarks", type=Path, nargs="*", default=[], help="Snakemake benchmark files")
    parser.add_argument("--out-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    config = load_stage_config(args.config, CONFIG_KEYS)
    metrics_of = load_metrics(args.eval_dir, args.models)
    intervals = pd.read_csv(args.intervals) if args.intervals else None
    frame = table1(metrics_of, intervals)
    timings = timings_table(args.benchmarks)
    out = args.out_dir
    write_csv(frame, out / "table1.csv")
    write_csv(timings, out / "timings.csv")
    text = table1_markdown(
        f"Table 1 - run `{config['run']}` (mask AP on {config['dataset']['source']} {args.evalset}; paper: LVIS v1 val)",
        frame, metrics_of, config["evaluation"]["ece_bins"], intervals,
        json.loads(args.holdout_ece.read_text())["ece"] if args.holdout_ece else None,
        json.loads(args.dedup.read_text()) if args.dedup else None, timings)
    write_text(text, out / "table1.md")
    shown = figure_models(args.models)
    reliability = reliability_data(args.eval_dir, {m: metrics_of[m] for m in shown})
    write_csv(reliability, out / "fig3_reliability.csv")
    write_figure(reliability_figure(reliability), out / "fig3_reliability.png")
    per_class = per_class_data(args.eval_dir, shown, pd.read_parquet(args.categories))
    write_csv(per_class, out / "fig4_per_class_ap.csv")
    write_figure(per_class_figure(per_class), out / "fig4_per_class_ap.png")
    ccece = ccece_data(read_ccece(args.ccece, pd.read_parquet(args.categories)["category_id"].tolist()))
    write_csv(ccece, out / "fig5_ccece.csv")
    write_figure(ccece_figure(ccece), out / "fig5_ccece.png")
    print(text)
    print(f"report -> {out}")


if __name__ == "__main__":
    main()
