"""Table 1 over seeds: every row's mean and standard deviation over the seeds, and each seed's
paired-bootstrap differences (is the gain there under every seed, not just one?)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from stages.reporting.table1 import (
    INTERVAL_METRICS,
    differences_wide,
    digits,
    interval_differences,
    markdown_table,
    metric_value,
    read_intervals,
)
from stages.utils.readers import read_json


def seed_metrics(runs: list[tuple[int, str, Path]]) -> pd.DataFrame:
    """One row per (seed, model): Table 1's metrics (INTERVAL_METRICS: mask AP, APr, APc, APf,
    AP-Fixed, APr-Fixed, AP-Pool, ECE) from each metrics.json."""
    rows = []
    for seed, model, path in runs:
        metrics = read_json(path)
        try:
            values = {m: metric_value(metrics, m) for m in INTERVAL_METRICS}
        except KeyError as exc:
            raise ValueError(f"{path}: metrics.json lacks {exc} (rerun its evaluate job)") from None
        rows.append({"seed": seed, "model": model, **values})
    return pd.DataFrame(rows, columns=["seed", "model", *INTERVAL_METRICS])


def seed_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per model (in first-seen order): ``mean +- std`` over the seeds of every metric (std with n - 1)."""
    rows = []
    for model, part in table.groupby("model", sort=False):
        row: dict[str, object] = {"model": model, "seeds": len(part)}
        for metric in INTERVAL_METRICS:
            mean, std = part[metric].mean(), part[metric].std(ddof=1)
            d = digits(metric)
            row[metric] = f"{mean:.{d}f} +- {std:.{d}f}"
        rows.append(row)
    return pd.DataFrame(rows)


def seed_differences(intervals: list[tuple[int, Path]]) -> pd.DataFrame:
    """Per seed, comparison and metric of DIFFERENCE_METRICS (AP, APr, AP-Fixed, APr-Fixed, AP-Pool,
    ECE): the difference with its interval (each intervals.csv checked by read_intervals)."""
    frames = []
    for seed, path in intervals:
        diffs = interval_differences(read_intervals(path, []))
        frames.append(diffs.assign(seed=seed, above_zero=diffs["low"] > 0))
    columns = ["seed", "comparison", "metric", "value", "low", "high", "above_zero"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def seeds_markdown(table: pd.DataFrame, differences: pd.DataFrame) -> str:
    seeds = sorted(table["seed"].unique().tolist())
    parts = [f"# Table 1 over seeds {seeds} (mask AP on val, mean +- std)\n\n", markdown_table(seed_summary(table)),
             "\n## Paired-bootstrap differences per seed (95%)\n\n"]
    if len(differences):
        parts.append(markdown_table(differences_wide(differences, ["seed"])))
    return "".join(parts)
