"""Pick hyperparameters from a grid of runs evaluated on holdout15 (the paper's small grid search).

The choice maximises holdout mask AP, ties broken by APr. Each run is
``section.k1=v1,section.k2=v2:metrics.json`` with dotted config keys; the choice is the chosen point
as a config overlay (``{"section": {"k1": v1, "k2": v2}}``, numbers), which stages.cli.write_config puts
into a config.
"""

from __future__ import annotations

import math

import pandas as pd

from stages.utils.readers import read_json


def grid_table(runs: list[str]) -> pd.DataFrame:
    rows = []
    for spec in runs:
        settings, path = spec.split(":", 1)
        row = {k: _value(v) for k, v in (pair.split("=", 1) for pair in settings.split(","))}
        metrics = read_json(path)
        row.update(AP=metrics["segm"]["AP"], APr=metrics["segm"]["APr"], ECE=metrics["ece"])
        rows.append(row)
    return pd.DataFrame(rows)


METRIC_COLUMNS = ("AP", "APr", "ECE")


def _value(text: str) -> float | str:
    """A grid value as written in a run spec: a number, or a name (e.g. a select_on setting)."""
    try:
        return float(text)
    except ValueError:
        return text


def choose(table: pd.DataFrame) -> dict[str, dict[str, float | str]]:
    """The best grid point (highest AP, then APr) as a nested config overlay."""
    keys = [c for c in table.columns if c not in METRIC_COLUMNS]
    ranked = table.assign(_apr=table["APr"].fillna(-math.inf)).sort_values(["AP", "_apr"], ascending=False)
    best = ranked.iloc[0]
    overlay: dict[str, dict[str, float | str]] = {}
    for key in keys:
        section, name = key.split(".", 1)
        value = best[key]
        overlay.setdefault(section, {})[name] = value if isinstance(value, str) else float(value)
    return overlay
