"""Rule report: the paper's Table 1, Fig. 3 and Fig. 4 from a run's evaluation outputs
(stages.reporting).

Writes table1.md / table1.csv (segm AP, APr, APc, APf, bbox AP, ECE per model, the paper's
numbers beside them; table1.md also holds the calibration table: ECE overall and per frequency
group), fig3_reliability.png (reliability diagrams, teacher vs student, with ECE) and
fig4_per_class_ap.png (per-class AP against training instance count, r/c/f coloured). Each figure's
plotted data is written beside it as CSV (fig3_reliability.csv, fig4_per_class_ap.csv).

CLI: python -m stages.report --config CFG --eval-dir results/<run>/eval --models teacher student_soft ...
        --categories categories.parquet --dedup dedup_counts.json --holdout-ece ece.json --out-dir report/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from stages.reporting.figures import per_class_data, per_class_figure, reliability_data, reliability_figure
from stages.reporting.table1 import calibration_table, load_metrics, markdown_table, table1
from stages.utils.atomic import write_csv, write_figure, write_text
from stages.utils.config import load_stage_config

CONFIG_KEYS = ("run", "dataset.source", "evaluation.ece_bins")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Table 1, Fig. 3 and Fig. 4 of the paper for one run")
    parser.add_argument("--config", required=True)
    parser.add_argument("--eval-dir", required=True, type=Path)
    parser.add_argument("--models", required=True, nargs="+")
    parser.add_argument("--categories", required=True, type=Path)
    parser.add_argument("--dedup", type=Path, default=None)
    parser.add_argument("--holdout-ece", type=Path, default=None)
    parser.add_argument("--out-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    config = load_stage_config(args.config, CONFIG_KEYS)
    metrics_of = load_metrics(args.eval_dir, args.models)
    frame = table1(metrics_of)
    out = args.out_dir
    write_csv(frame, out / "table1.csv")
    notes = [f"# Table 1 - run `{config['run']}` (mask AP on {config['dataset']['source']} val; paper: LVIS v1 val)\n"]
    notes.append(markdown_table(frame))
    notes.append(f"\n## Calibration (ECE, {config['evaluation']['ece_bins']} bins, val detections)\n\n")
    notes.append(markdown_table(calibration_table(metrics_of)))
    if args.holdout_ece:
        ece = json.loads(args.holdout_ece.read_text())
        notes.append(f"\nTeacher ECE on holdout15 (source of CCECE): {ece['ece']:.3f}\n")
    if args.dedup:
        notes.append("\nUnlabeled images: " + json.dumps(json.loads(args.dedup.read_text())) + "\n")
    write_text("".join(notes), out / "table1.md")
    shown = [m for m in ("teacher", "student_soft_corrected") if m in args.models] or args.models[:2]
    reliability = reliability_data(args.eval_dir, {m: metrics_of[m] for m in shown})
    write_csv(reliability, out / "fig3_reliability.csv")
    write_figure(reliability_figure(reliability), out / "fig3_reliability.png")
    per_class = per_class_data(args.eval_dir, shown, pd.read_parquet(args.categories))
    write_csv(per_class, out / "fig4_per_class_ap.csv")
    write_figure(per_class_figure(per_class), out / "fig4_per_class_ap.png")
    print("".join(notes))
    print(f"report -> {out}")


if __name__ == "__main__":
    main()
