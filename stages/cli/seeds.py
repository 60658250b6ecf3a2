"""Rule seeds: Table 1 under every seed of ``seeds`` -- each row's mean +- std, and each seed's
paired-bootstrap differences (stages.reporting.seeds).

CLI: python -m stages.cli.seeds --runs SEED:MODEL:metrics.json ... --intervals SEED:intervals.csv ...
        --out-table seeds.csv --out-differences seeds_differences.csv --out-md seeds.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.reporting.seeds import seed_differences, seed_metrics, seeds_markdown
from stages.utils.atomic import write_csv, write_text

CONFIG_KEYS: tuple[str, ...] = ()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Table 1 over seeds: mean +- std and per-seed intervals")
    parser.add_argument("--runs", required=True, nargs="+", help="SEED:MODEL:metrics.json")
    parser.add_argument("--intervals", nargs="*", default=[], help="SEED:intervals.csv (the bootstrap's)")
    parser.add_argument("--out-table", required=True, type=Path)
    parser.add_argument("--out-differences", required=True, type=Path)
    parser.add_argument("--out-md", required=True, type=Path)
    args = parser.parse_args(argv)
    runs = [(int(seed), model, Path(path)) for seed, model, path in (spec.split(":", 2) for spec in args.runs)]
    intervals = [(int(seed), Path(path)) for seed, path in (spec.split(":", 1) for spec in args.intervals)]
    table, differences = seed_metrics(runs), seed_differences(intervals)
    write_csv(table, args.out_table)
    write_csv(differences, args.out_differences)
    text = seeds_markdown(table, differences)
    write_text(text, args.out_md)
    print(text)


if __name__ == "__main__":
    main()
