"""Training curves: the total loss, every loss term and the learning rate against the iteration, for
the teacher and each student, from detectron2's event storage as the trainer writes it
(``metrics.json`` in each checkpoint directory, stages.modeling.training.metric_writers: one JSON
object per line every WRITE_PERIOD iterations and at the last; losses are medians over the last
WRITE_PERIOD iterations). A line holds the scalars last put at its iteration, so a scalar not put
at every step (a loss term without foreground samples) may sit on a line of an earlier iteration. A
resumed run appends to the file; where a scalar appears twice for one iteration, the later line (the
resumed run's) counts.

The figure's data (CURVE_COLUMNS, one row per model, iteration and metric) is written beside the PNG.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from stages.data.artifacts import ArtifactError  # noqa: E402

CURVE_COLUMNS = ("model", "iteration", "metric", "value")


def is_curve_metric(name: str) -> bool:
    """The scalars drawn: ``total_loss``, every loss term (``loss_*``, the student's ``*_labeled`` /
    ``*_unlabeled`` included) and ``lr``."""
    return name in ("total_loss", "lr") or name.startswith("loss")


def read_training_metrics(path: Path | str) -> pd.DataFrame:
    """One training run's metrics.json as CURVE_COLUMNS without ``model`` (iteration order).

    Errors (ArtifactError, naming the file and line): a missing file, a line that is not a JSON object
    with an integer ``iteration``, a non-finite loss or learning rate. An empty file gives no rows."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: no training metrics (detectron2's metrics.json is written by the trainer "
                            "into the checkpoint directory)")
    latest: dict[tuple[int, str], float] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{path}, line {number}: not JSON ({exc.msg})") from exc
        if not isinstance(record, dict) or not isinstance(record.get("iteration"), int):
            raise ArtifactError(f"{path}, line {number}: expected an object with an integer 'iteration'")
        values = {k: v for k, v in record.items() if is_curve_metric(k)}
        bad = [k for k, v in values.items() if not isinstance(v, (int, float)) or not math.isfinite(v)]
        if bad:
            raise ArtifactError(f"{path}, line {number} (iteration {record['iteration']}): {bad} not finite numbers")
        for metric, value in values.items():  # a resumed run's value replaces the killed run's
            latest[(record["iteration"], metric)] = float(value)
    rows = [(it, metric, latest[(it, metric)]) for it, metric in sorted(latest)]
    return pd.DataFrame(rows, columns=["iteration", "metric", "value"])


def curves_table(logs: dict[str, Path]) -> pd.DataFrame:
    """CURVE_COLUMNS for every model -> its metrics.json (models in the given order)."""
    frames = [read_training_metrics(path).assign(model=model) for model, path in logs.items()]
    return pd.concat(frames, ignore_index=True)[list(CURVE_COLUMNS)] if frames else pd.DataFrame(columns=CURVE_COLUMNS)


def curves_figure(table: pd.DataFrame) -> plt.Figure:
    """One panel per model: the total loss (thick) and each loss term (log scale), the learning rate
    dashed on the right axis."""
    models = list(dict.fromkeys(table["model"]))
    if not models:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.text(0.5, 0.5, "no training metrics", ha="center", va="center")
        ax.set_axis_off()
        return fig
    columns = min(3, len(models))
    rows = -(-len(models) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 4.4 * rows), squeeze=False)
    for ax in axes.flat[len(models):]:
        ax.set_axis_off()
    for ax, model in zip(axes.flat, models):
        part = table[table["model"] == model]
        losses = [m for m in dict.fromkeys(part["metric"]) if m != "lr"]
        for metric in sorted(losses, key=lambda m: (m != "total_loss", m)):
            series = part[part["metric"] == metric]
            ax.plot(series["iteration"], series["value"], marker="o", ms=2, label=metric,
                    linewidth=2.2 if metric == "total_loss" else 0.9, color="black" if metric == "total_loss" else None)
        if losses and (part.loc[part["metric"].isin(losses), "value"] > 0).all():
            ax.set_yscale("log")
        ax.set(xlabel="iteration", ylabel="loss (median of the last 20 iterations)", title=model)
        ax.grid(alpha=0.3)
        lr = part[part["metric"] == "lr"]
        if not lr.empty:
            right = ax.twinx()
            right.plot(lr["iteration"], lr["value"], "--", color="tab:purple", label="lr")
            right.set_ylabel("learning rate", color="tab:purple")
            right.tick_params(axis="y", labelcolor="tab:purple", labelsize=7)
        ax.legend(fontsize=5, ncol=2, loc="upper right")
    fig.suptitle("Training curves (detectron2's event storage: metrics.json; TensorBoard files beside it)", fontsize=9)
    fig.tight_layout()
    return fig
