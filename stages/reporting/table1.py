"""Table 1 of the paper, and the calibration table, from the models' metrics.json files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

# Table 1 of the paper (LVIS v1 val, mask AP): the reference each of our rows stands for.
PAPER_TABLE1 = {
    "teacher": ("Supervised + non-unif. smooth. + class corr.", 54.0, 47.0),
    "student_onehot": ("Semi-supervised baseline, one-hot labels", 54.8, 49.7),
    "student_soft": ("+ soft student targets", 55.5, 53.0),
    "student_soft_corrected": ("+ soft student targets + calibration correction", 56.8, 57.3),
}

PAPER_ECE = {"teacher": 0.22, "student_soft_corrected": 0.07}


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


def calibration_table(metrics_of: dict[str, dict]) -> pd.DataFrame:
    """ECE overall and per frequency group (val detections, the config's bins) per model."""
    rows = []
    for model, metrics in metrics_of.items():
        by_freq = metrics.get("ece_per_frequency", {})
        rows.append({"model": model, "ECE": metrics["ece"], "ECE_r": by_freq.get("r", math.nan),
                     "ECE_c": by_freq.get("c", math.nan), "ECE_f": by_freq.get("f", math.nan),
                     "paper_ECE": PAPER_ECE.get(model, math.nan)})  # fmt: skip
    return pd.DataFrame(rows)
