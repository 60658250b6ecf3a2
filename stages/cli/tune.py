"""Rules tune_teacher / tune_student: pick hyperparameters from a grid of runs evaluated on holdout15
(stages.reporting.grid).

CLI: python -m stages.cli.tune --manifest grid.json --out-table T.csv --out-choice C.json
(the manifest: a json list of ``{"overlay": {"teacher": {"eps": 0.1, "gamma": 1.5}}, "metrics": "m.json"}``)
"""

from __future__ import annotations

import argparse

from stages.data.artifacts import read_manifest
from stages.reporting.grid import choose, grid_table
from stages.utils.atomic import write_csv, write_json

CONFIG_KEYS: tuple[str, ...] = ()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Choose hyperparameters from holdout15 results")
    parser.add_argument("--manifest", required=True, help="the grid's points and their metrics.json (json)")
    parser.add_argument("--out-table", required=True)
    parser.add_argument("--out-choice", required=True)
    args = parser.parse_args(argv)
    runs = read_manifest(args.manifest, ("overlay", "metrics"))
    table = grid_table(runs)
    choice = choose(table, runs)
    write_csv(table, args.out_table)
    write_json(choice, args.out_choice, indent=2)
    print(table.to_string(index=False))
    print(f"chosen: {choice}")


if __name__ == "__main__":
    main()
