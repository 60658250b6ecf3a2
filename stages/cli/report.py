"""Rule report: the paper's Table 1, Figs. 1, 3 and 4 from a run's evaluation outputs
(stages.reporting).

Writes table1.md / table1.csv (segm AP, APr, APc, APf, AP-Fixed, APr-Fixed, AP-Pool, ECE, bbox AP
per model, the paper's numbers beside them; table1.md also holds the calibration table: ECE overall
and per frequency group), fig1_ap_apr.png (AP and APr of every Table 1 row with its interval, the
paper's beside), fig3_reliability.png (reliability diagrams, teacher vs student, with ECE),
fig4_per_class_ap.png (per-class AP against training instance count, r/c/f coloured) and
figS1_ccece.png (not in the paper: per-class CCECE with its interval and the Delta the student
uses; the paper's Fig. 5 is the qualitative one, rule fig5). Each figure's
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
from pathlib import Path

from stages.data.artifacts import read_ccece
from stages.pipeline.experiments import table1_comparison_names
from stages.reporting.figures import (
    ccece_data,
    ccece_figure,
    fig1_data,
    fig1_figure,
    per_class_data,
    per_class_figure,
    reliability_data,
    reliability_figure,
)
from stages.reporting.table1 import figure_models, load_metrics, read_intervals, table1, table1_markdown
from stages.reporting.timings import timings_table
from stages.utils.atomic import write_csv, write_figure, write_text
from stages.utils.config import load_stage_config
from stages.utils.readers import read_json, read_parquet

CONFIG_KEYS = ("run", "dataset.source", "evaluation.ece_bins")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Table 1, Figs. 1, 3 and 4 of the paper (and Fig. S1, CCECE) for one run")
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
    # the comparisons the bootstrap rule asks for (TABLE1_COMPARE): Table 1's differences between these models
    comparisons = table1_comparison_names(args.models)
    intervals = read_intervals(args.intervals, args.models, comparisons) if args.intervals else None
    frame = table1(metrics_of, intervals)
    timings = timings_table(args.benchmarks)
    out = args.out_dir
    write_csv(frame, out / "table1.csv")
    write_csv(timings, out / "timings.csv")
    text = table1_markdown(
        f"Table 1 - run `{config['run']}` (mask AP on {config['dataset']['source']} {args.evalset}; paper: LVIS v1 val)",
        frame, metrics_of, config["evaluation"]["ece_bins"], intervals,
        read_json(args.holdout_ece)["ece"] if args.holdout_ece else None,
        read_json(args.dedup) if args.dedup else None, timings)
    write_text(text, out / "table1.md")
    fig1 = fig1_data(frame)
    write_csv(fig1, out / "fig1_ap_apr.csv")
    write_figure(fig1_figure(fig1), out / "fig1_ap_apr.png")
    shown = figure_models(args.models)
    reliability = reliability_data(args.eval_dir, {m: metrics_of[m] for m in shown})
    write_csv(reliability, out / "fig3_reliability.csv")
    write_figure(reliability_figure(reliability), out / "fig3_reliability.png")
    per_class = per_class_data(args.eval_dir, shown, read_parquet(args.categories))
    write_csv(per_class, out / "fig4_per_class_ap.csv")
    write_figure(per_class_figure(per_class), out / "fig4_per_class_ap.png")
    ccece = ccece_data(read_ccece(args.ccece, read_parquet(args.categories)["category_id"].tolist()))
    write_csv(ccece, out / "figS1_ccece.csv")
    write_figure(ccece_figure(ccece), out / "figS1_ccece.png")
    print(text)
    print(f"report -> {out}")


if __name__ == "__main__":
    main()
