"""The paper's Table 1, Fig. 3 and Fig. 4 from a run's evaluation outputs.

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
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from stages.atomic import write_csv, write_figure, write_text  # noqa: E402
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


def load_metrics(eval_dir: Path, models: list[str]) -> dict[str, dict]:
    """model -> its metrics.json, read once for every table and figure."""
    return {model: json.loads((eval_dir / model / "metrics.json").read_text()) for model in models}


def table1(metrics_of: dict[str, dict]) -> pd.DataFrame:
    rows = []
    for model, metrics in metrics_of.items():
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


def reliability_data(eval_dir: Path, metrics_of: dict[str, dict]) -> pd.DataFrame:
    """Fig. 3's data: each model's reliability bins (bin_lower, bin_upper, count, confidence, accuracy)
    with its ECE."""
    frames = []
    for model, metrics in metrics_of.items():
        table = pd.read_csv(eval_dir / model / "reliability.csv")
        table.insert(0, "model", model)
        table["ece"] = metrics["ece"]
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


def reliability_figure(data: pd.DataFrame) -> plt.Figure:
    models = list(dict.fromkeys(data["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        table = data[data["model"] == model]
        width = table["bin_upper"] - table["bin_lower"]
        filled = table["count"] > 0
        ax.bar(table["bin_lower"][filled], table["accuracy"][filled], width=width[filled], align="edge",
               edgecolor="black", color="tab:blue", label="accuracy")
        ax.bar(table["bin_lower"][filled], (table["confidence"] - table["accuracy"])[filled],
               bottom=table["accuracy"][filled], width=width[filled], align="edge", color="tab:red", alpha=0.3,
               label="gap to confidence")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy",
               title=f"{model}  ECE={table['ece'].iloc[0]:.3f}")
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def per_class_data(eval_dir: Path, models: list[str], categories: pd.DataFrame) -> pd.DataFrame:
    """Fig. 4's data: per model and category, mask AP (0-1) and the training instance count."""
    frames = []
    for model in models:
        per_class = pd.read_csv(eval_dir / model / "per_class_ap.csv")
        merged = per_class.merge(categories[["category_id", "instance_count"]], on="category_id", how="left")
        merged.insert(0, "model", model)
        frames.append(merged)
    return pd.concat(frames, ignore_index=True)


def per_class_figure(data: pd.DataFrame) -> plt.Figure:
    models = list(dict.fromkeys(data["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 4), squeeze=False, sharey=True)
    for ax, model in zip(axes[0], models):
        part_model = data[data["model"] == model]
        for freq, colour in FREQUENCY_COLOURS.items():
            part = part_model[part_model["frequency"] == freq]
            # log axis: a class without training instances is drawn at 1
            ax.scatter(part["instance_count"].clip(lower=1), 100 * part["ap"], c=colour, label=freq, s=20)
        ax.set(xscale="log", xlabel="training instances", ylabel="mask AP", title=model)
        ax.legend(title="frequency", fontsize=8)
    fig.tight_layout()
    return fig


def calibration_table(metrics_of: dict[str, dict]) -> pd.DataFrame:
    """ECE overall and per frequency group (val detections, the config's bins) per model."""
    rows = []
    for model, metrics in metrics_of.items():
        by_freq = metrics.get("ece_per_frequency", {})
        rows.append({"model": model, "ECE": metrics["ece"], "ECE_r": by_freq.get("r", math.nan),
                     "ECE_c": by_freq.get("c", math.nan), "ECE_f": by_freq.get("f", math.nan),
                     "paper_ECE": PAPER_ECE.get(model, math.nan)})  # fmt: skip
    return pd.DataFrame(rows)


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
