"""Pick hyperparameters from a grid of runs evaluated on holdout15 (the paper's small grid search).

The choice maximises holdout mask AP, ties broken by APr. Each run of the grid's manifest is a
grid point as a config overlay (``{"overlay": {"section": {"k1": v1, ...}}, "metrics": path}``,
values as the config holds them, never parsed back from strings); the choice is the chosen point as
such an overlay (an integer key's value stays an integer, other numbers are floats), which
stages.cli.write_config puts into a config.
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


METRIC_COLUMNS = ("AP", "APr", "ECE")


def choose(table: pd.DataFrame) -> dict[str, dict[str, int | float | str]]:
    """The best grid point (highest AP, then APr) as a nested config overlay. A column of integers
    (``student.iterations``) gives an int, which the schema's integer keys require."""
    keys = [c for c in table.columns if c not in METRIC_COLUMNS]
    ranked = table.assign(_apr=table["APr"].fillna(-math.inf)).sort_values(["AP", "_apr"], ascending=False)
    best = ranked.iloc[0]
    overlay: dict[str, dict[str, int | float | str]] = {}
    for key in keys:
        section, name = key.split(".", 1)
        value = best[key]
        if isinstance(value, str):
            overlay.setdefault(section, {})[name] = value
        elif pd.api.types.is_integer_dtype(table[key]):
            overlay.setdefault(section, {})[name] = int(value)
        else:
            overlay.setdefault(section, {})[name] = float(value)
    return overlay
