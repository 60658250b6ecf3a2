"""Table 1 over seeds: every row's mean and standard deviation over the seeds, and each seed's
paired-bootstrap differences (is the gain there under every seed, not just one?)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from stages.reporting.table1 import INTERVAL_METRICS, markdown_table
from stages.utils.readers import read_json


def seed_metrics(runs: list[tuple[int, str, Path]]) -> pd.DataFrame:
    """One row per (seed, model): mask AP, APr, APc, APf and ECE from each metrics.json."""
    rows = []
    for seed, model, path in runs:
        metrics = read_json(path)
        rows.append({"seed": seed, "model": model, **{m: metrics["segm"][m] for m in INTERVAL_METRICS},
                     "ECE": metrics["ece"]})
    return pd.DataFrame(rows)


def seed_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per model (in first-seen order): ``mean +- std`` over the seeds of every metric (std with n - 1)."""
    rows = []
    for model, part in table.groupby("model", sort=False):
        row: dict[str, object] = {"model": model, "seeds": len(part)}
        for metric in (*INTERVAL_METRICS, "ECE"):
            mean, std = part[metric].mean(), part[metric].std(ddof=1)
            digits = 3 if metric == "ECE" else 1
            row[metric] = f"{mean:.{digits}f} +- {std:.{digits}f}"
        rows.append(row)
    return pd.DataFrame(rows)


def seed_differences(intervals: list[tuple[int, Path]]) -> pd.DataFrame:
    """Per seed and comparison: the AP and APr difference with its interval."""
    rows = []
    for seed, path in intervals:
        table = pd.read_csv(path)
        diffs = table[table["what"].str.contains(" - ", regex=False) & table["metric"].isin(["AP", "APr"])]
        for r in diffs.itertuples():
            rows.append({"seed": seed, "comparison": r.what, "metric": r.metric, "value": r.value, "low": r.low,
                         "high": r.high, "above_zero": bool(r.low > 0)})
    return pd.DataFrame(rows, columns=["seed", "comparison", "metric", "value", "low", "high", "above_zero"])


def seeds_markdown(table: pd.DataFrame, differences: pd.DataFrame) -> str:
    seeds = sorted(table["seed"].unique().tolist())
    parts = [f"# Table 1 over seeds {seeds} (mask AP on val, mean +- std)\n\n", markdown_table(seed_summary(table)),
             "\n## Paired-bootstrap differences per seed (95%)\n\n"]
    if len(differences):
        shown = differences.assign(interval=[f"{v:+.1f} [{lo:+.1f}, {hi:+.1f}]" for v, lo, hi in
                                             zip(differences["value"], differences["low"], differences["high"])])
        parts.append(markdown_table(shown[["seed", "comparison", "metric", "interval", "above_zero"]]))
    return "".join(parts)
