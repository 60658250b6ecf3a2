"""Fig. 2: teacher AP and APr against the labeled fraction, one line per smoothing variant.

CLI: python -m stages.sweep_report --config CFG --runs VARIANT:FRACTION:metrics.json ... --out-table T.csv --out-figure F.png
"""

from __future__ import annotations

import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from stages.atomic import write_csv, write_figure  # noqa: E402


def sweep_table(runs: list[str]) -> pd.DataFrame:
    rows = []
    for spec in runs:
        variant, fraction, path = spec.split(":", 2)
        metrics = json.loads(open(path).read())
        rows.append({"variant": variant, "fraction": float(fraction), "AP": metrics["segm"]["AP"],
                     "APr": metrics["segm"]["APr"], "ECE": metrics["ece"]})
    return pd.DataFrame(rows).sort_values(["variant", "fraction"]).reset_index(drop=True)


def sweep_figure(table: pd.DataFrame) -> plt.Figure:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, metric in zip(axes, ("AP", "APr")):
        for variant, part in table.groupby("variant", sort=False):
            ax.plot(100 * part["fraction"], part[metric], marker="o", label=variant)
        ax.set(xscale="log", xlabel="% of labeled training images", ylabel=f"mask {metric}", title=metric)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fig. 2: AP/APr against the labeled fraction")
    parser.add_argument("--config", required=True)
    parser.add_argument("--runs", nargs="+", required=True)
    parser.add_argument("--out-table", required=True)
    parser.add_argument("--out-figure", required=True)
    args = parser.parse_args(argv)
    table = sweep_table(args.runs)
    write_csv(table, args.out_table)
    write_figure(sweep_figure(table), args.out_figure)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
