"""The paper's figures as matplotlib figures, each with the table it plots (written beside the PNG).

* Fig. 1: AP and APr of every Table 1 row with its interval, the paper's values beside.
* Fig. 2: teacher AP and APr against the labeled fraction, one line per smoothing kind.
* Fig. 3: reliability diagrams (teacher vs student), with ECE.
* Fig. 4: per-class AP against the training instance count, r/c/f coloured.
* Fig. S1 (not in the paper): per-class CCECE with its interval and the Delta the student uses.

Fig. 5 (qualitative examples) is stages.reporting.examples.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from stages.core.smoothing import smoothing_label  # noqa: E402
from stages.reporting.table1 import (  # noqa: E402
    differences_wide,
    interval_differences,
    markdown_table,
    read_intervals,
)
from stages.utils.readers import read_json  # noqa: E402

FREQUENCY_COLOURS = {"r": "tab:red", "c": "tab:orange", "f": "tab:green"}

# Fig. 1's data: one row per Table 1 row and metric (values on the LVIS 0-100 scale; low / high NaN
# without the bootstrap, paper NaN where the paper has no such row).
FIG1_COLUMNS = ("model", "description", "metric", "value", "low", "high", "paper")
FIG1_METRICS = {"AP": "tab:green", "APr": "gold"}  # the paper's colours: all classes green, rare yellow


def fig1_data(table: pd.DataFrame) -> pd.DataFrame:
    """Fig. 1's data (FIG1_COLUMNS) from Table 1 as :func:`stages.reporting.table1.table1` makes it,
    in its row order: each row's AP and APr, their interval, and the paper's value."""
    rows = []
    for metric in FIG1_METRICS:
        for row in table.to_dict("records"):
            rows.append({"model": row["model"], "description": row["description"], "metric": metric,
                         "value": row[metric], "low": row.get(f"{metric}_low", math.nan),
                         "high": row.get(f"{metric}_high", math.nan), "paper": row[f"paper_{metric}"]})
    order = {m: k for k, m in enumerate(table["model"])}
    data = pd.DataFrame(rows, columns=list(FIG1_COLUMNS))
    return data.sort_values(["model", "metric"], key=lambda c: c.map(order) if c.name == "model" else c,
                            ignore_index=True)


def fig1_figure(data: pd.DataFrame) -> plt.Figure:
    """Per Table 1 row: AP (green) and APr (yellow) bars with their 95% intervals, and beside each the
    paper's LVIS v1 value as a hatched outline (absent where the paper has no such row)."""
    models = list(dict.fromkeys(data["model"]))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.7 * len(models)), 4.2))
    width = 0.2
    for j, (metric, colour) in enumerate(FIG1_METRICS.items()):
        part = data[data["metric"] == metric].set_index("model").reindex(models)
        x = [k + (2 * j - 1.5) * width for k in range(len(models))]
        ax.bar(x, part["value"], width, color=colour, edgecolor="black", linewidth=0.5, label=f"{metric} (this run)")
        # the interval itself (a percentile interval of a bootstrapped AP can lie beside its point,
        # which error bars around the point would hide); none where there is no bootstrap
        known = part["low"].notna().to_numpy()
        ax.vlines([v for v, k in zip(x, known) if k], part["low"][known], part["high"][known], colors="black",
                  linewidth=0.8, label=f"{metric} 95% interval")
        has_paper = part["paper"].notna().to_numpy()
        ax.bar([v + width for v, h in zip(x, has_paper) if h], part["paper"][has_paper], width, facecolor="none",
               edgecolor=colour, hatch="//", linewidth=1.0, label=f"{metric} (paper, LVIS v1)")
    labels = [textwrap.fill(str(d), 22) for d in data.drop_duplicates("model").set_index("model").loc[models, "description"]]
    ax.set_xticks(range(len(models)), labels, fontsize=7)
    ax.set(ylabel="mask AP", ylim=(0, 100), title="Fig. 1: AP and APr of every Table 1 row (95% intervals)")
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def reliability_data(eval_dir: Path, metrics_of: dict[str, dict]) -> pd.DataFrame:
    """Fig. 3's data: each model's reliability bins (bin_lower, bin_upper, count, confidence, accuracy)
    with its ECE."""
    frames = []
    for model, metrics in metrics_of.items():
        table = pd.read_csv(eval_dir / model / "reliability.csv")
        table.insert(0, "model", model)
        table["ece"] = metrics["ece"]
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


def reliability_figure(data: pd.DataFrame) -> plt.Figure:
    models = list(dict.fromkeys(data["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        table = data[data["model"] == model]
        width = table["bin_upper"] - table["bin_lower"]
        filled = table["count"] > 0
        ax.bar(table["bin_lower"][filled], table["accuracy"][filled], width=width[filled], align="edge",
               edgecolor="black", color="tab:blue", label="accuracy")
        ax.bar(table["bin_lower"][filled], (table["confidence"] - table["accuracy"])[filled],
               bottom=table["accuracy"][filled], width=width[filled], align="edge", color="tab:red", alpha=0.3,
               label="gap to confidence")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy",
               title=f"{model}  ECE={table['ece'].iloc[0]:.3f}")
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def per_class_data(eval_dir: Path, models: list[str], categories: pd.DataFrame) -> pd.DataFrame:
    """Fig. 4's data: per model and category, mask AP (0-1) and the training instance count."""
    frames = []
    for model in models:
        per_class = pd.read_csv(eval_dir / model / "per_class_ap.csv")
        merged = per_class.merge(categories[["category_id", "instance_count"]], on="category_id", how="left")
        merged.insert(0, "model", model)
        frames.append(merged)
    return pd.concat(frames, ignore_index=True)


def per_class_figure(data: pd.DataFrame) -> plt.Figure:
    models = list(dict.fromkeys(data["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 4), squeeze=False, sharey=True)
    for ax, model in zip(axes[0], models):
        part_model = data[data["model"] == model]
        for freq, colour in FREQUENCY_COLOURS.items():
            part = part_model[part_model["frequency"] == freq]
            # log axis: a class without training instances is drawn at 1
            ax.scatter(part["instance_count"].clip(lower=1), 100 * part["ap"], c=colour, label=freq, s=20)
        ax.set(xscale="log", xlabel="training instances", ylabel="mask AP", title=model)
        ax.legend(title="frequency", fontsize=8)
    fig.tight_layout()
    return fig


def sweep_table(runs: list[dict]) -> pd.DataFrame:
    """Fig. 2's points: one row per run of the sweep's manifest (``smoothing``: the kind, ``fraction``:
    of the labeled train set, ``metrics``: its metrics.json and, optionally, ``intervals``: its
    fraction's bootstrap intervals.csv, where the kind is the model name), with its mask AP, APr and
    ECE, and AP/APr ``_low``/``_high`` (NaN without intervals).

    Raises ValueError naming the intervals file when it lacks a kind of its fraction, or when its
    value for a kind is not that kind's metrics.json (the bootstrap's unresampled draw is
    metrics.json exactly, so a mismatch is a stale file or another fraction's)."""
    kinds: dict[str, list[str]] = {}
    for run in runs:
        if run.get("intervals"):
            kinds.setdefault(run["intervals"], []).append(run["smoothing"])
    tables = {path: read_intervals(path, names) for path, names in kinds.items()}
    rows = []
    for run in runs:
        metrics = read_json(run["metrics"])
        row = {"variant": run["smoothing"], "fraction": float(run["fraction"]), "AP": metrics["segm"]["AP"],
               "APr": metrics["segm"]["APr"], "ECE": metrics["ece"]}
        if run.get("intervals"):
            table = tables[run["intervals"]]
            for metric in ("AP", "APr"):
                found = table[(table["what"] == run["smoothing"]) & (table["metric"] == metric)].iloc[0]
                if not math.isclose(float(found["value"]), row[metric], rel_tol=1e-9, abs_tol=1e-9) and not (
                        math.isnan(float(found["value"])) and math.isnan(row[metric])):
                    raise ValueError(f"{run['intervals']}: {run['smoothing']} {metric} is {found['value']}, but "
                                     f"{run['metrics']} says {row[metric]} (a stale file: rerun its fig2_bootstrap job)")
                row |= {f"{metric}_low": float(found["low"]), f"{metric}_high": float(found["high"])}
        rows.append(row)
    table = pd.DataFrame(rows).sort_values(["variant", "fraction"]).reset_index(drop=True)
    for column in ("AP_low", "AP_high", "APr_low", "APr_high"):
        if column not in table:
            table[column] = math.nan
    return table


def sweep_differences(runs: list[dict]) -> pd.DataFrame:
    """Fig. 2's paired differences: per fraction, every comparison of its intervals.csv (each kind
    minus each kind before it in ``sweep.variants``) at DIFFERENCE_METRICS, columns fraction,
    comparison, metric, value, low, high. Empty when the manifest has no intervals."""
    frames, seen = [], set()
    for run in runs:
        path = run.get("intervals")
        if path and path not in seen:
            seen.add(path)
            frames.append(interval_differences(read_intervals(path, [])).assign(fraction=float(run["fraction"])))
    columns = ["fraction", "comparison", "metric", "value", "low", "high"]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns].sort_values("fraction", kind="stable").reset_index(drop=True)


def sweep_markdown(differences: pd.DataFrame) -> str:
    """fig2_differences.md: one row per (fraction, comparison), each metric's difference with its
    interval, e.g. ``+1.3 [+0.3, +2.4]``."""
    parts = ["# Fig. 2: paired differences between smoothing kinds (teachers on val, 95% image-level bootstrap)\n\n"]
    wide = differences_wide(differences.assign(fraction=[f"{100 * f:g}%" for f in differences["fraction"]]), ["fraction"])
    parts.append(markdown_table(wide) if len(wide) else "No comparisons: the sweep has one smoothing kind.\n")
    return "".join(parts)


def sweep_figure(table: pd.DataFrame) -> plt.Figure:
    """Fig. 2: AP and APr against the labeled fraction (log axis), a line per smoothing kind, with the
    95% interval of each point as an error bar where the table has one."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, metric in zip(axes, ("AP", "APr")):
        for variant, part in table.groupby("variant", sort=False):
            line = ax.plot(100 * part["fraction"], part[metric], marker="o", label=smoothing_label(variant))[0]
            low, high = part.get(f"{metric}_low"), part.get(f"{metric}_high")
            if low is not None and high is not None and low.notna().any():
                # the interval itself, not errors around the point: a percentile interval of a
                # bootstrapped AP can lie beside its point (README), and error bars would hide that
                ax.vlines(100 * part["fraction"], low, high, colors=line.get_color(), alpha=0.8)
        ax.set(xscale="log", xlabel="% of labeled training images", ylabel=f"mask {metric}", title=metric)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def ccece_data(ccece: pd.DataFrame, level_z: float = 1.96) -> pd.DataFrame:
    """Fig. S1's data: per class, CCECE with its interval (+- z standard errors), the Delta the student
    uses (shrunk toward the frequency group), and how many detections were judged."""
    data = ccece[["category_id", "name", "frequency", "n_detections", "ccece", "ccece_se", "delta"]].copy()
    data["low"] = data["ccece"] - level_z * data["ccece_se"]
    data["high"] = data["ccece"] + level_z * data["ccece_se"]
    order = {f: k for k, f in enumerate(FREQUENCY_COLOURS)}
    return data.sort_values(["frequency", "ccece"], key=lambda c: c.map(order) if c.name == "frequency" else c,
                            ignore_index=True)


def ccece_figure(data: pd.DataFrame) -> plt.Figure:
    """Per-class CCECE (eq. 4) with its 95% interval, and the shrunk Delta beside it."""
    fig, ax = plt.subplots(figsize=(max(6.0, 0.22 * len(data)), 4))
    x = range(len(data))
    for k, row in enumerate(data.itertuples()):
        colour = FREQUENCY_COLOURS.get(row.frequency, "grey")
        if row.n_detections > 0:
            ax.errorbar(k, row.ccece, yerr=[[row.ccece - row.low], [row.high - row.ccece]], fmt="o", color=colour,
                        ms=4, capsize=2)
        ax.plot(k + 0.25, row.delta, marker="D", color="black", ms=3)
    for freq, colour in FREQUENCY_COLOURS.items():
        ax.plot([], [], "o", color=colour, label=f"CCECE +- 95% ({freq})")
    ax.plot([], [], "D", color="black", ms=3, label="Delta (shrunk)")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xticks(list(x), data["name"], rotation=90, fontsize=6)
    ax.set(ylabel="accuracy - confidence", ylim=(-1, 1), title="Fig. S1: CCECE per class (teacher on holdout15)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig
