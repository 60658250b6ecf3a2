"""Table 1 of the paper with its intervals, the differences between its rows, and the calibration
table, from the models' metrics.json files and the bootstrap's intervals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from stages.core.pseudo_labels import STUDENT_PREFIX, PaperRow, ladder, model_variant, student_model
from stages.evaluation.bootstrap import GAPS, difference_name
from stages.utils.readers import read_json

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


# Table 1's metrics, in column order, each with its paired bootstrap interval: mask AP, APr, APc,
# APf (LVIS, evaluation.max_detections per image); AP-Fixed, APr-Fixed (Dave et al. 2021: K per class,
# no per-image cap, so a per-class re-scoring cannot move it) and AP-Pool (all classes in one
# ranking: it rewards cross-class calibration); the ECE.
INTERVAL_METRICS = ("AP", "APr", "APc", "APf", "AP-Fixed", "APr-Fixed", "AP-Pool", "ECE")
# The differences between rows (the ladder) shown in table1.md and the seeds' report.
DIFFERENCE_METRICS = ("AP", "APr", "AP-Fixed", "APr-Fixed", "AP-Pool", "ECE")
# Each model's within-model gaps (APr - AP: the premise's P1), with their paired intervals.
GAP_METRICS = tuple(difference_name(a, b) for a, b in GAPS)
# The paper reports neither AP-Fixed nor AP-Pool: "-" beside ours.
PAPER_WITHOUT = ("AP-Fixed", "APr-Fixed")
_SEGM_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf", "AP-Fixed", "APr-Fixed", "APc-Fixed",
              "APf-Fixed", "AP-Pool")


def load_metrics(eval_dir: Path, models: list[str]) -> dict[str, dict]:
    """model -> its metrics.json, read once for every table and figure; ValueError naming the file
    when it lacks a key of its contract (docs/design.md)."""
    out = {}
    for model in models:
        path = eval_dir / model / "metrics.json"
        metrics = read_json(path)
        missing = [f"{kind}.{key}" for kind in ("segm", "bbox") for key in _SEGM_KEYS if key not in metrics.get(kind, {})]
        missing += [key for key in ("ece", "ece_per_frequency") if key not in metrics]
        if missing:
            raise ValueError(f"{path}: metrics.json lacks {missing} (rerun its evaluate job)")
        out[model] = metrics
    return out


def metric_value(metrics: dict, metric: str) -> float:
    """A Table 1 metric from a metrics.json: the ECE, or the mask (segm) value; NaN for null."""
    value = metrics["ece"] if metric == "ECE" else metrics["segm"][metric]
    return math.nan if value is None else float(value)


def table1(metrics_of: dict[str, dict], intervals: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per model: INTERVAL_METRICS (with ``<metric>_low`` / ``_high``, the bootstrap
    interval, when ``intervals`` are given), box AP, and the paper's numbers (NaN where it has none)."""
    rows = []
    for model, metrics in metrics_of.items():
        label, paper = row_reference(model)
        rows.append({"model": model, "description": label,
                     **{metric: metric_value(metrics, metric) for metric in INTERVAL_METRICS},
                     "AP_bbox": metrics["bbox"]["AP"], "paper_AP": paper.ap, "paper_APr": paper.apr,
                     **{f"paper_{metric}": math.nan for metric in PAPER_WITHOUT},
                     "paper_ECE": paper.ece})
        if intervals is not None:
            for metric in INTERVAL_METRICS:
                low, high = _interval(intervals, model, metric)
                rows[-1] |= {f"{metric}_low": low, f"{metric}_high": high}
    return pd.DataFrame(rows)


def check_intervals(intervals: pd.DataFrame, models: list[str], source: str | Path,
                    comparisons: list[str] = ()) -> pd.DataFrame:
    """The bootstrap's intervals.csv against its contract: columns what, metric, value, low, high, a
    row for every model and INTERVAL_METRICS or GAP_METRICS metric and, for every comparison
    ("a - b"), a row per DIFFERENCE_METRICS metric; ValueError naming ``source`` and what is missing."""
    missing_columns = {"what", "metric", "value", "low", "high"} - set(intervals.columns)
    if missing_columns:
        raise ValueError(f"{source}: intervals lack the columns {sorted(missing_columns)}")
    have = set(zip(intervals["what"], intervals["metric"]))
    missing = [f"{model}/{metric}" for model in models for metric in (*INTERVAL_METRICS, *GAP_METRICS)
               if (model, metric) not in have]
    missing += [f"{c}/{metric}" for c in comparisons for metric in DIFFERENCE_METRICS if (c, metric) not in have]
    if missing:
        raise ValueError(f"{source}: no interval for {missing[:6]}{' ...' if len(missing) > 6 else ''} (rerun the bootstrap job)")
    return intervals


def read_intervals(path: str | Path, models: list[str], comparisons: list[str] = ()) -> pd.DataFrame:
    """A bootstrap's intervals.csv (stages.cli.bootstrap), checked by check_intervals. ValueError
    naming ``path`` for a missing, empty or unparsable file."""
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such intervals file (rerun the bootstrap job)") from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a bootstrap intervals CSV ({exc})") from None
    return check_intervals(frame, models, path, comparisons)


def interval_differences(intervals: pd.DataFrame) -> pd.DataFrame:
    """The comparisons of an intervals table (rows whose ``what`` is "a - b") at DIFFERENCE_METRICS:
    columns comparison, metric, value, low, high (the metric's units: AP points, ECE 0-1)."""
    rows = intervals[intervals["what"].str.contains(" - ", regex=False) & intervals["metric"].isin(DIFFERENCE_METRICS)]
    return (rows.rename(columns={"what": "comparison"})[["comparison", "metric", "value", "low", "high"]]
            .reset_index(drop=True))


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


def digits(metric: str) -> int:
    """Decimals a metric is shown with: 3 for the ECE (0-1), 1 for the APs (0-100)."""
    return 3 if metric == "ECE" else 1


def signed_interval(value: float, low: float, high: float, metric: str) -> str:
    """A difference and its interval, e.g. ``+1.3 [+0.3, +2.4]``."""
    d = digits(metric)
    return f"{value:+.{d}f} [{low:+.{d}f}, {high:+.{d}f}]"


def differences_table(intervals: pd.DataFrame) -> pd.DataFrame:
    """The paired differences ("a - b") of DIFFERENCE_METRICS with their intervals; ``above_zero``
    says whether the whole interval lies above 0 (for the ECE, lower is better)."""
    diffs = intervals[intervals["what"].str.contains(" - ", regex=False)]
    rows = []
    for what, part in diffs.groupby("what", sort=False):
        row: dict[str, object] = {"comparison": what}
        for metric in DIFFERENCE_METRICS:
            r = part[part["metric"] == metric].iloc[0]
            row[f"d{metric}"] = signed_interval(r["value"], r["low"], r["high"], metric)
            row[f"d{metric}_above_zero"] = bool(r["low"] > 0)
        rows.append(row)
    return pd.DataFrame(rows)


def differences_wide(differences: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Long differences (``keys``, comparison, metric, value, low, high: interval_differences plus
    the keys) as one row per (keys, comparison) and a ``d<metric>`` column per DIFFERENCE_METRICS
    metric, each ``value [low, high]`` ("-" where the metric is missing)."""
    rows = []
    for group, part in differences.groupby([*keys, "comparison"], sort=False):
        by_metric = {r.metric: signed_interval(r.value, r.low, r.high, r.metric) for r in part.itertuples()}
        rows.append({**dict(zip([*keys, "comparison"], group)), **{f"d{m}": by_metric.get(m, "-") for m in DIFFERENCE_METRICS}})
    return pd.DataFrame(rows, columns=[*keys, "comparison", *(f"d{m}" for m in DIFFERENCE_METRICS)])


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
    per_class = sorted({m["detections_per_class"] for m in metrics_of.values() if "detections_per_class" in m})
    parts.append(f"\nAP-Fixed: the top {', '.join(map(str, per_class)) or 'K'} detections of each class over the "
                 "evaluation set, no per-image cap; AP-Pool: the same detections, all classes in one ranking "
                 "(Dave et al. 2021). The paper reports neither.\n")
    if intervals is not None:
        level = "95%"
        parts.append(f"\nIntervals: {level} paired image-level bootstrap (the same resampled val images for every "
                     "model).\n\n## Differences between rows (mask AP points; ECE on its 0-1 scale, lower is better)\n\n")
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
