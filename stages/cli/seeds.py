"""Rule seeds: Table 1 under every seed of ``seeds`` -- each row's mean +- std, and each seed's
paired-bootstrap differences (stages.reporting.seeds).

CLI: python -m stages.cli.seeds --runs runs.json --intervals intervals.json
        --out-table seeds.csv --out-differences seeds_differences.csv --out-md seeds.md
(manifests: json lists of ``{"seed": 1, "model": "teacher", "metrics": "m.json"}`` and
``{"seed": 1, "intervals": "intervals.csv"}``)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.data.artifacts import read_manifest
from stages.reporting.seeds import seed_differences, seed_metrics, seeds_markdown
from stages.utils.atomic import write_csv, write_text

CONFIG_KEYS: tuple[str, ...] = ()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Table 1 over seeds: mean +- std and per-seed intervals")
    parser.add_argument("--runs", required=True, help="manifest (json) of every (seed, model)'s metrics.json")
    parser.add_argument("--intervals", required=True, help="manifest (json) of every seed's bootstrap intervals.csv")
    parser.add_argument("--out-table", required=True, type=Path)
    parser.add_argument("--out-differences", required=True, type=Path)
    parser.add_argument("--out-md", required=True, type=Path)
    args = parser.parse_args(argv)
    runs = [(r["seed"], r["model"], Path(r["metrics"])) for r in read_manifest(args.runs, ("seed", "model", "metrics"))]
    intervals = [(r["seed"], Path(r["intervals"])) for r in read_manifest(args.intervals, ("seed", "intervals"))]
    table, differences = seed_metrics(runs), seed_differences(intervals)
    write_csv(table, args.out_table)
    write_csv(differences, args.out_differences)
    text = seeds_markdown(table, differences)
    write_text(text, args.out_md)
    print(text)


if __name__ == "__main__":
    main()
