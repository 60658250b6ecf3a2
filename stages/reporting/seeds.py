"""Table 1 over seeds: every row's mean and standard deviation over the seeds, each seed's
paired-bootstrap differences (is the gain there under every seed, not just one?), and each seed's
premise P1 (is its teacher worse on rare classes?)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from stages.reporting.premise import p1_holds, rare_gap
from stages.reporting.table1 import (
    INTERVAL_METRICS,
    differences_wide,
    digits,
    interval_differences,
    markdown_table,
    metric_value,
    signed_interval,
)
from stages.utils.readers import read_json

P1_COLUMNS = ["seed", "AP", "APr", "value", "low", "high", "holds"]


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


def seed_differences(intervals: dict[int, pd.DataFrame]) -> pd.DataFrame:
    """Per seed, comparison and metric of DIFFERENCE_METRICS (AP, APr, AP-Fixed, APr-Fixed, AP-Pool,
    ECE): the difference with its interval, from each seed's intervals table (read_intervals checked
    it for the seed's models and comparisons)."""
    frames = [interval_differences(table).assign(seed=seed) for seed, table in intervals.items()]
    frames = [f.assign(above_zero=f["low"] > 0) for f in frames]
    columns = ["seed", "comparison", "metric", "value", "low", "high", "above_zero"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def seed_rare_gaps(intervals: dict[int, pd.DataFrame]) -> pd.DataFrame:
    """The premise's P1 under every seed: the seed's teacher AP, APr and APr - AP with its paired
    interval (columns P1_COLUMNS; ``holds`` as premise.csv states it: p1_holds)."""
    rows = []
    for seed, table in intervals.items():
        gap = rare_gap(table, "teacher")
        rows.append({"seed": seed, **gap, "holds": p1_holds(gap)})
    return pd.DataFrame(rows, columns=P1_COLUMNS)


def seeds_markdown(table: pd.DataFrame, differences: pd.DataFrame, rare_gaps: pd.DataFrame) -> str:
    seeds = sorted(table["seed"].unique().tolist())
    parts = [f"# Table 1 over seeds {seeds} (mask AP on val, mean +- std)\n\n", markdown_table(seed_summary(table)),
             "\n## Paired-bootstrap differences per seed (95%)\n\n"]
    if len(differences):
        parts.append(markdown_table(differences_wide(differences, ["seed"])))
    shown = rare_gaps.assign(
        gap=[signed_interval(r.value, r.low, r.high, "APr") if pd.notna(r.high) else "-" for r in rare_gaps.itertuples()],
        holds=[("yes" if h else "no") if pd.notna(h) else "-" for h in rare_gaps["holds"]])
    parts += ["\n## Premise P1 per seed: the teacher's APr - AP (paired interval; paper -7.0)\n\n",
              markdown_table(shown[["seed", "AP", "APr", "gap", "holds"]].rename(columns={"gap": "APr - AP"}))]
    return "".join(parts)
