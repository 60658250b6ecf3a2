"""Pick hyperparameters from a grid of runs evaluated on holdout15 (the paper's small grid search).

The choice maximises holdout mask AP, ties broken by APr. Each run of the grid's manifest is a
grid point as a config overlay (``{"overlay": {"section": {"k1": v1, ...}}, "metrics": path}``,
values as the config holds them, never parsed back from strings); the choice is the chosen point as
that run's overlay as the manifest holds it, which stages.cli.write_config puts into a config.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from stages.utils.readers import read_json


def grid_table(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per grid point: its values under dotted column names (``student.lambda``), then its
    holdout mask AP, APr and ECE."""
    rows = []
    for run in runs:
        row = {f"{section}.{key}": value for section, values in run["overlay"].items() for key, value in values.items()}
        metrics = read_json(run["metrics"])
        row.update(AP=metrics["segm"]["AP"], APr=metrics["segm"]["APr"], ECE=metrics["ece"])
        rows.append(row)
    return pd.DataFrame(rows)


def choose(table: pd.DataFrame, runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The best grid point (highest AP, then APr) of ``table`` (grid_table of ``runs``, row i from
    run i): that run's own overlay, its values exactly as the manifest holds them (an integer axis
    stays an int, a name a string)."""
    ranked = table.assign(_apr=table["APr"].fillna(-math.inf)).sort_values(["AP", "_apr"], ascending=False, kind="stable")
    return runs[int(ranked.index[0])]["overlay"]
