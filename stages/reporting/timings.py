"""The run's own cost: wall time and peak memory of every job, from Snakemake's benchmark files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd


def timings_table(benchmark_files: Sequence[str | Path]) -> pd.DataFrame:
    """One row per job (the benchmark file's name), slowest first: seconds, h:m:s, peak RSS in MiB."""
    rows = []
    for path in benchmark_files:
        bench = pd.read_csv(path, sep="\t")
        rows.append({"job": Path(path).stem, "seconds": float(bench["s"].iloc[0]), "h:m:s": str(bench["h:m:s"].iloc[0]),
                     "max_rss_mb": float(pd.to_numeric(bench["max_rss"], errors="coerce").iloc[0])})
    table = pd.DataFrame(rows, columns=["job", "seconds", "h:m:s", "max_rss_mb"])
    return table.sort_values("seconds", ascending=False, ignore_index=True)
