"""Rule fig2: teacher AP and APr against the labeled fraction, one line per smoothing kind
(stages.reporting.figures).

CLI: python -m stages.cli.fig2 --manifest sweep.json --out-table T.csv --out-figure F.png
(the manifest: a json list of ``{"smoothing": KIND, "fraction": 0.1, "metrics": "m.json"}``)
"""

from __future__ import annotations

import argparse

from stages.data.artifacts import read_manifest
from stages.reporting.figures import sweep_figure, sweep_table
from stages.utils.atomic import write_csv, write_figure

CONFIG_KEYS: tuple[str, ...] = ()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fig. 2: AP/APr against the labeled fraction")
    parser.add_argument("--manifest", required=True, help="the sweep's runs and their metrics.json (json)")
    parser.add_argument("--out-table", required=True)
    parser.add_argument("--out-figure", required=True)
    args = parser.parse_args(argv)
    table = sweep_table(read_manifest(args.manifest, ("smoothing", "fraction", "metrics")))
    write_csv(table, args.out_table)
    write_figure(sweep_figure(table), args.out_figure)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
