"""Paired image-level bootstrap of LVIS AP: how sure a difference between two models is.

Each draw resamples the evaluation images with replacement (the same draw for every model) and
re-computes AP, APr, APc and APf of each model on it. Matching detections to ground truth happens
within an image, so it does not depend on which images are drawn: it is done once per model
(stages.evaluation.fast_lvis_eval.match_detections), and a draw only re-accumulates the detections
of the resampled data set (``accumulate`` with the images' multiplicities) -- the same numbers as
evaluating the resampled data set (tests/evaluation/test_bootstrap.py), at a fraction of the cost. Intervals
are the 2.5 and 97.5 percentiles over the draws (95%).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from stages.evaluation.fast_lvis_eval import MatchedDetections, accumulate, match_detections

METRICS = ("AP", "APr", "APc", "APf")


def ap_summary(precision: np.ndarray, freq_groups: list[list[int]]) -> dict[str, float]:
    """AP and APr/APc/APf (0-100) of an area-'all' precision array (T, R, K, ...): LVIS's means over
    the entries > -1; NaN for a group without ground truth."""
    p = precision[:, :, :, 0]
    out = {}
    for name, cats in [("AP", slice(None)), *zip(("APr", "APc", "APf"), freq_groups)]:
        values = p[:, :, cats]
        values = values[values > -1]
        out[name] = 100.0 * float(values.mean()) if values.size else float("nan")
    return out


def draw_weights(n_images: int, draws: int, seed: int) -> np.ndarray:
    """(draws, n_images) multiplicities: each row a resample of the images with replacement."""
    rng = np.random.default_rng(seed)
    return np.stack([np.bincount(rng.integers(0, n_images, n_images), minlength=n_images) for _ in range(draws)])


def bootstrap_metrics(matched: dict[str, MatchedDetections], draws: int, seed: int) -> pd.DataFrame:
    """One row per (draw, model): AP, APr, APc, APf on the draw. All models must share the ground
    truth (the same images in the same order); draw -1 is the evaluation on the data as it is."""
    n_images = {m.n_images for m in matched.values()}
    if len(n_images) != 1:
        raise ValueError(f"models were matched against different ground truths ({n_images} images)")
    weights = draw_weights(n_images.pop(), draws, seed)
    rows = []
    for model, m in matched.items():
        rows.append({"draw": -1, "model": model, **ap_summary(accumulate(m, areas=[0])[0], m.freq_groups)})
        for k, w in enumerate(weights):
            rows.append({"draw": k, "model": model, **ap_summary(accumulate(m, w, areas=[0])[0], m.freq_groups)})
    return pd.DataFrame(rows)


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of the finite values (NaN, NaN when there are none)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def intervals(draws: pd.DataFrame, comparisons: Sequence[tuple[str, str]], level: float = 0.95) -> pd.DataFrame:
    """Per model and per comparison (a minus b): the point value (on the data as it is) and its
    bootstrap interval, for every metric. Columns: what, metric, value, low, high."""
    point = draws[draws["draw"] == -1].set_index("model")
    boot = draws[draws["draw"] >= 0]
    rows = []
    for model in point.index:
        part = boot[boot["model"] == model]
        for metric in METRICS:
            low, high = interval(part[metric].to_numpy(), level)
            rows.append({"what": model, "metric": metric, "value": point.loc[model, metric], "low": low, "high": high})
    by_model = {model: part.set_index("draw") for model, part in boot.groupby("model")}
    for a, b in comparisons:
        for metric in METRICS:
            diff = (by_model[a][metric] - by_model[b][metric]).to_numpy()
            low, high = interval(diff, level)
            rows.append({"what": f"{a} - {b}", "metric": metric, "value": point.loc[a, metric] - point.loc[b, metric],
                         "low": low, "high": high})
    return pd.DataFrame(rows, columns=["what", "metric", "value", "low", "high"])


def match_models(gt: dict[str, Any], detections: dict[str, list[dict[str, Any]]], iou_type: str,
                 max_dets: int) -> dict[str, MatchedDetections]:
    return {model: match_detections(gt, dets, iou_type, max_dets) for model, dets in detections.items()}
