"""Rule seeds: Table 1 under every seed of ``seeds`` -- each row's mean +- std, each seed's
paired-bootstrap differences and each seed's premise P1 (stages.reporting.seeds).

Each seed's intervals.csv is checked for the models the runs manifest lists under that seed and for
Table 1's comparisons between them (stages.pipeline.experiments.table1_comparisons, as the rule that
wrote it asked for them).

CLI: python -m stages.cli.seeds --runs runs.json --intervals intervals.json
        --out-table seeds.csv --out-differences seeds_differences.csv --out-p1 seeds_p1.csv --out-md seeds.md
(manifests: json lists of ``{"seed": 1, "model": "teacher", "metrics": "m.json"}`` and
``{"seed": 1, "intervals": "intervals.csv"}``)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.data.artifacts import read_manifest
from stages.pipeline.experiments import table1_comparison_names
from stages.reporting.seeds import seed_differences, seed_metrics, seed_rare_gaps, seeds_markdown
from stages.reporting.table1 import read_intervals
from stages.utils.atomic import write_csv, write_text

CONFIG_KEYS: tuple[str, ...] = ()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Table 1 over seeds: mean +- std and per-seed intervals")
    parser.add_argument("--runs", required=True, help="manifest (json) of every (seed, model)'s metrics.json")
    parser.add_argument("--intervals", required=True, help="manifest (json) of every seed's bootstrap intervals.csv")
    parser.add_argument("--out-table", required=True, type=Path)
    parser.add_argument("--out-differences", required=True, type=Path)
    parser.add_argument("--out-p1", required=True, type=Path)
    parser.add_argument("--out-md", required=True, type=Path)
    args = parser.parse_args(argv)
    runs = [(r["seed"], r["model"], Path(r["metrics"])) for r in read_manifest(args.runs, ("seed", "model", "metrics"))]
    models: dict[int, list[str]] = {}
    for seed, model, _ in runs:
        models.setdefault(seed, []).append(model)
    records = read_manifest(args.intervals, ("seed", "intervals"))
    paths = {r["seed"]: Path(r["intervals"]) for r in records}
    if len(paths) != len(records) or set(paths) != set(models):
        parser.error(f"{args.intervals}: intervals for seeds {[r['seed'] for r in records]}, but {args.runs} has "
                     f"seeds {sorted(models)} (one intervals file per seed)")
    without_teacher = [seed for seed, names in models.items() if "teacher" not in names]
    if without_teacher:
        parser.error(f"{args.runs}: no teacher under seeds {without_teacher} (P1 is the teacher's)")
    intervals = {seed: read_intervals(path, models[seed], table1_comparison_names(models[seed]))
                 for seed, path in paths.items()}
    table, differences, rare_gaps = seed_metrics(runs), seed_differences(intervals), seed_rare_gaps(intervals)
    write_csv(table, args.out_table)
    write_csv(differences, args.out_differences)
    write_csv(rare_gaps, args.out_p1)
    text = seeds_markdown(table, differences, rare_gaps)
    write_text(text, args.out_md)
    print(text)


if __name__ == "__main__":
    main()
