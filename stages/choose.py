"""Pick hyperparameters from a grid of runs evaluated on holdout15 (the paper's small grid search).

The choice maximises holdout mask AP, ties broken by APr. Each run is ``k1=v1,k2=v2:metrics.json``;
the chosen ``k=v`` pairs are written as numbers to the choice json.

CLI: python -m stages.choose --config CFG --runs eps=0.1,gamma=1.5:m.json ... --out-table T.csv --out-choice C.json
"""

from __future__ import annotations

import argparse
import json
import math

import pandas as pd

from stages.atomic import write_csv, write_json


def grid_table(runs: list[str]) -> pd.DataFrame:
    rows = []
    for spec in runs:
        settings, path = spec.split(":", 1)
        row = {k: float(v) for k, v in (pair.split("=") for pair in settings.split(","))}
        metrics = json.loads(open(path).read())
        row.update(AP=metrics["segm"]["AP"], APr=metrics["segm"]["APr"], ECE=metrics["ece"])
        rows.append(row)
    return pd.DataFrame(rows)


def choose(table: pd.DataFrame) -> dict[str, float]:
    keys = [c for c in table.columns if c not in ("AP", "APr", "ECE")]
    ranked = table.assign(_apr=table["APr"].fillna(-math.inf)).sort_values(["AP", "_apr"], ascending=False)
    best = ranked.iloc[0]
    return {k: float(best[k]) for k in keys} | {"AP": float(best["AP"])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Choose hyperparameters from holdout15 results")
    parser.add_argument("--config", required=True)
    parser.add_argument("--runs", nargs="+", required=True)
    parser.add_argument("--out-table", required=True)
    parser.add_argument("--out-choice", required=True)
    args = parser.parse_args(argv)
    table = grid_table(args.runs)
    choice = choose(table)
    write_csv(table, args.out_table)
    write_json(choice, args.out_choice, indent=2)
    print(table.to_string(index=False))
    print(f"chosen: {choice}")


if __name__ == "__main__":
    main()
