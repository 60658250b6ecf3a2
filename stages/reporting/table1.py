"""Table 1 of the paper with its intervals, the differences between its rows, and the calibration
table, from the models' metrics.json files and the bootstrap's intervals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from stages.core.pseudo_labels import STUDENT_PREFIX, PaperRow, ladder, model_variant, student_model

# Table 1 of the paper (LVIS v1 val, mask AP): the teacher's row. A student's label and paper
# numbers are part of its variant's registry entry (stages.core.pseudo_labels).
TEACHER_LABEL = "Supervised + non-unif. smooth. + class corr."
TEACHER_PAPER = PaperRow(54.0, 47.0, 0.22)


def row_reference(model: str) -> tuple[str, PaperRow]:
    """(Table 1 description, the paper's numbers) of a model: the teacher, a registered student
    variant, or any other name (itself, no paper numbers)."""
    if model == "teacher":
        return TEACHER_LABEL, TEACHER_PAPER
    variant = model_variant(model)
    return (variant.label or model, variant.paper) if variant is not None else (model, PaperRow())


def figure_models(models: list[str]) -> list[str]:
    """The models Figs. 3 and 4 compare: the teacher and the top step of the paper's ladder among
    ``models`` (the paper's full method); the first two models when neither is there."""
    steps = ladder([m.removeprefix(STUDENT_PREFIX) for m in models if model_variant(m) is not None])
    shown = [m for m in ("teacher", *(student_model(s) for s in steps[-1:])) if m in models]
    return shown or models[:2]


def load_metrics(eval_dir: Path, models: list[str]) -> dict[str, dict]:
    """model -> its metrics.json, read once for every table and figure."""
    return {model: json.loads((eval_dir / model / "metrics.json").read_text()) for model in models}


INTERVAL_METRICS = ("AP", "APr", "APc", "APf")


def table1(metrics_of: dict[str, dict], intervals: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per model: mask AP, APr, APc, APf (with ``<metric>_low`` / ``_high``, the bootstrap
    interval, when ``intervals`` are given), box AP, ECE, and the paper's numbers."""
    rows = []
    for model, metrics in metrics_of.items():
        label, paper = row_reference(model)
        segm, bbox = metrics["segm"], metrics["bbox"]
        rows.append({
            "model": model, "description": label,
            "AP": segm["AP"], "APr": segm["APr"], "APc": segm["APc"], "APf": segm["APf"],
            "AP_bbox": bbox["AP"], "ECE": metrics["ece"],
            "paper_AP": paper.ap, "paper_APr": paper.apr, "paper_ECE": paper.ece,
        })
        if intervals is not None:
            for metric in INTERVAL_METRICS:
                low, high = _interval(intervals, model, metric)
                rows[-1] |= {f"{metric}_low": low, f"{metric}_high": high}
    return pd.DataFrame(rows)


def _interval(intervals: pd.DataFrame, what: str, metric: str) -> tuple[float, float]:
    row = intervals[(intervals["what"] == what) & (intervals["metric"] == metric)]
    if row.empty:
        return math.nan, math.nan
    return float(row["low"].iloc[0]), float(row["high"].iloc[0])


def with_intervals(frame: pd.DataFrame) -> pd.DataFrame:
    """Table 1 for reading: each metric with a ``_low``/``_high`` pair shown as ``value [low, high]``."""
    out = frame.copy()
    for metric in INTERVAL_METRICS:
        if f"{metric}_low" in out:
            out[metric] = [f"{_fmt(v)} [{_fmt(lo)}, {_fmt(hi)}]" if not math.isnan(lo) else _fmt(v)
                           for v, lo, hi in zip(out[metric], out[f"{metric}_low"], out[f"{metric}_high"])]
            out = out.drop(columns=[f"{metric}_low", f"{metric}_high"])
    return out


def differences_table(intervals: pd.DataFrame) -> pd.DataFrame:
    """The paired differences ("a - b") with their intervals, AP and APr first; ``above_zero`` says
    whether the whole interval lies above 0."""
    diffs = intervals[intervals["what"].str.contains(" - ", regex=False)]
    rows = []
    for what, part in diffs.groupby("what", sort=False):
        row: dict[str, object] = {"comparison": what}
        for metric in INTERVAL_METRICS:
            r = part[part["metric"] == metric].iloc[0]
            row[f"d{metric}"] = f"{r['value']:+.1f} [{r['low']:+.1f}, {r['high']:+.1f}]"
            row[f"d{metric}_above_zero"] = bool(r["low"] > 0)
        rows.append(row)
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
                     "paper_ECE": row_reference(model)[1].ece})  # fmt: skip
    return pd.DataFrame(rows)


def table1_markdown(title: str, frame: pd.DataFrame, metrics_of: dict[str, dict], ece_bins: int,
                    intervals: pd.DataFrame | None = None, holdout_ece: float | None = None,
                    dedup: dict | None = None, timings: pd.DataFrame | None = None) -> str:
    """table1.md: Table 1 (with intervals), the differences between rows, calibration, the run's cost."""
    parts = [f"# {title}\n", markdown_table(with_intervals(frame))]
    if intervals is not None:
        level = "95%"
        parts.append(f"\nIntervals: {level} paired image-level bootstrap (the same resampled val images for every "
                     "model).\n\n## Differences between rows (mask AP points)\n\n")
        parts.append(markdown_table(differences_table(intervals)))
    parts.append(f"\n## Calibration (ECE, {ece_bins} bins, val detections)\n\n")
    parts.append(markdown_table(calibration_table(metrics_of)))
    if holdout_ece is not None:
        parts.append(f"\nTeacher ECE on holdout15 (source of CCECE): {holdout_ece:.3f}\n")
    if dedup is not None:
        parts.append("\nUnlabeled images: " + json.dumps(dedup) + "\n")
    if timings is not None and len(timings):
        parts.append(f"\n## Wall time and peak memory per job (Snakemake benchmark files; {timings['seconds'].sum():.0f} s "
                     "in all)\n\n")
        parts.append(markdown_table(timings))
    return "".join(parts)
