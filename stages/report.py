"""The paper's Table 1, Fig. 3 and Fig. 4 from a run's evaluation outputs.

Writes table1.md / table1.csv (segm AP, APr, APc, APf, bbox AP, ECE per model, the paper's
numbers beside them), fig3_reliability.png (reliability diagrams, teacher vs student, with ECE)
and fig4_per_class_ap.png (per-class AP against training instance count, r/c/f coloured).

CLI: python -m stages.report --config CFG --eval-dir results/<run>/eval --models teacher student_soft ...
        --categories categories.parquet --dedup dedup_counts.json --holdout-ece ece.json --out-dir report/
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from stages.atomic import atomic_path, write_figure, write_text  # noqa: E402
from stages.config import load_config  # noqa: E402

# Table 1 of the paper (LVIS v1 val, mask AP): the reference each of our rows stands for.
PAPER_TABLE1 = {
    "teacher": ("Supervised + non-unif. smooth. + class corr.", 54.0, 47.0),
    "student_onehot": ("Semi-supervised baseline, one-hot labels", 54.8, 49.7),
    "student_soft": ("+ soft student targets", 55.5, 53.0),
    "student_soft_corrected": ("+ soft student targets + calibration correction", 56.8, 57.3),
}
PAPER_ECE = {"teacher": 0.22, "student_soft_corrected": 0.07}
FREQUENCY_COLOURS = {"r": "tab:red", "c": "tab:orange", "f": "tab:green"}


def table1(eval_dir: Path, models: list[str]) -> pd.DataFrame:
    rows = []
    for model in models:
        metrics = json.loads((eval_dir / model / "metrics.json").read_text())
        label, paper_ap, paper_apr = PAPER_TABLE1.get(model, (model, math.nan, math.nan))
        segm, bbox = metrics["segm"], metrics["bbox"]
        rows.append({
            "model": model, "description": label,
            "AP": segm["AP"], "APr": segm["APr"], "APc": segm["APc"], "APf": segm["APf"],
            "AP_bbox": bbox["AP"], "ECE": metrics["ece"],
            "paper_AP": paper_ap, "paper_APr": paper_apr, "paper_ECE": PAPER_ECE.get(model, math.nan),
        })
    return pd.DataFrame(rows)


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if value is None or math.isnan(value) else f"{value:.3f}" if abs(value) < 1 else f"{value:.1f}"
    return str(value)


def markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def reliability_figure(eval_dir: Path, models: list[str], out: Path) -> None:
    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        table = pd.read_csv(eval_dir / model / "reliability.csv")
        ece = json.loads((eval_dir / model / "metrics.json").read_text())["ece"]
        width = table["bin_upper"] - table["bin_lower"]
        filled = table["count"] > 0
        ax.bar(table["bin_lower"][filled], table["accuracy"][filled], width=width[filled], align="edge",
               edgecolor="black", color="tab:blue", label="accuracy")
        ax.bar(table["bin_lower"][filled], (table["confidence"] - table["accuracy"])[filled],
               bottom=table["accuracy"][filled], width=width[filled], align="edge", color="tab:red", alpha=0.3,
               label="gap to confidence")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title=f"{model}  ECE={ece:.3f}")
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    write_figure(fig, out)


def per_class_figure(eval_dir: Path, models: list[str], categories: pd.DataFrame, out: Path) -> None:
    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 4), squeeze=False, sharey=True)
    for ax, model in zip(axes[0], models):
        per_class = pd.read_csv(eval_dir / model / "per_class_ap.csv")
        merged = per_class.merge(categories[["category_id", "instance_count"]], on="category_id")
        for freq, colour in FREQUENCY_COLOURS.items():
            part = merged[merged["frequency"] == freq]
            ax.scatter(part["instance_count"].clip(lower=1), 100 * part["ap"], c=colour, label=freq, s=20)
        ax.set(xscale="log", xlabel="training instances", ylabel="mask AP", title=model)
        ax.legend(title="frequency", fontsize=8)
    fig.tight_layout()
    write_figure(fig, out)


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
    config = load_config(args.config)
    frame = table1(args.eval_dir, args.models)
    out = args.out_dir
    with atomic_path(out / "table1.csv") as tmp:
        frame.to_csv(tmp, index=False)
    notes = [f"# Table 1 - run `{config['run']}` (mask AP on {config['dataset']['source']} val; paper: LVIS v1 val)\n"]
    notes.append(markdown_table(frame))
    if args.holdout_ece:
        ece = json.loads(args.holdout_ece.read_text())
        notes.append(f"\nTeacher ECE on holdout15 (source of CCECE): {ece['ece']:.3f}\n")
    if args.dedup:
        notes.append("\nUnlabeled images: " + json.dumps(json.loads(args.dedup.read_text())) + "\n")
    write_text("".join(notes), out / "table1.md")
    shown = [m for m in ("teacher", "student_soft_corrected") if m in args.models] or args.models[:2]
    reliability_figure(args.eval_dir, shown, out / "fig3_reliability.png")
    per_class_figure(args.eval_dir, shown, pd.read_parquet(args.categories), out / "fig4_per_class_ap.png")
    print("".join(notes))
    print(f"report -> {out}")


if __name__ == "__main__":
    main()
