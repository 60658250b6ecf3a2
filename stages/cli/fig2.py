"""Rule fig2: teacher AP and APr against the labeled fraction, one line per smoothing kind, with
each point's interval, and the paired differences between kinds at each fraction
(stages.reporting.figures).

CLI: python -m stages.cli.fig2 --manifest sweep.json --out-table T.csv --out-figure F.png
        --out-differences D.csv --out-md D.md
(the manifest: a json list of ``{"smoothing": KIND, "fraction": 0.1, "metrics": "m.json",
"intervals": "intervals_frac0.1.csv"}``; the intervals: stages.cli.bootstrap over the fraction's
teachers, each named by its kind)
"""

from __future__ import annotations

import argparse

from stages.data.artifacts import read_manifest
from stages.reporting.figures import sweep_differences, sweep_figure, sweep_markdown, sweep_table
from stages.utils.atomic import write_csv, write_figure, write_text

CONFIG_KEYS: tuple[str, ...] = ()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fig. 2: AP/APr against the labeled fraction")
    parser.add_argument("--manifest", required=True, help="the sweep's runs, their metrics.json and intervals (json)")
    parser.add_argument("--out-table", required=True)
    parser.add_argument("--out-figure", required=True)
    parser.add_argument("--out-differences", required=True, help="paired differences between kinds (CSV)")
    parser.add_argument("--out-md", required=True, help="the same as a markdown table")
    args = parser.parse_args(argv)
    runs = read_manifest(args.manifest, ("smoothing", "fraction", "metrics", "intervals"))
    table, differences = sweep_table(runs), sweep_differences(runs)
    write_csv(table, args.out_table)
    write_csv(differences, args.out_differences)
    write_text(sweep_markdown(differences), args.out_md)
    write_figure(sweep_figure(table), args.out_figure)
    print(table.to_string(index=False))
    print(differences.to_string(index=False))


if __name__ == "__main__":
    main()
