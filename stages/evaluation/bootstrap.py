"""Paired image-level bootstrap of Table 1's metrics: how sure a difference between two models is.

Each draw resamples the evaluation images with replacement (the same draw for every model) and
re-computes, for each model, on the resampled data set: mask AP, APr, APc and APf (LVIS, at most
``evaluation.max_detections`` per image), AP-Fixed, APr-Fixed, APc-Fixed, APf-Fixed and AP-Pool
(Dave et al. 2021: K detections per class, no per-image cap; stages.evaluation.fixed_ap) and the ECE
(stages.core.calibration, the detections judged as ``calibration`` says).

Matching detections to ground truth happens within an image, so it does not depend on which images
are drawn: it is done once per model (stages.evaluation.fast_lvis_eval.match_detections), and a draw
only re-accumulates the detections of the resampled data set (``accumulate`` with the images'
multiplicities). The per-class limit of AP-Fixed is re-applied on every draw (an image drawn twice
brings its detections twice, and they compete for the K places of their class); the ECE's judged
detections are weighted by their image's multiplicity. Each is the same number as evaluating the
resampled data set (tests/evaluation/test_bootstrap.py), at a fraction of the cost. Intervals are
the percentiles of ``evaluation.interval_level`` over the draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from stages.core.calibration import bin_index
from stages.evaluation.fast_lvis_eval import MatchedDetections, accumulate, match_detections
from stages.evaluation.fixed_ap import (
    FIXED_KEYS,
    POOL_KEY,
    FixedMatch,
    detections_per_class,
    kept_copies,
    match_fixed,
    pool_ap,
    pooled_precision,
)
from stages.evaluation.judging import judge_detections
from stages.evaluation.metrics import top_detections

AP_KEYS = ("AP", "APr", "APc", "APf")
METRICS = (*AP_KEYS, *FIXED_KEYS, POOL_KEY, "ECE")
# Differences within one model, each paired on the same draw: APr - AP is the premise's P1 (is the
# model worse on rare classes than overall? stages.reporting.premise), for every model alike.
GAPS = (("APr", "AP"),)


def difference_name(a: str, b: str) -> str:
    """How intervals.csv names a minus b: a comparison of two models (its ``what``) or a gap
    between two metrics of one model (its ``metric``)."""
    return f"{a} - {b}"


def ap_summary(precision: np.ndarray, freq_groups: list[list[int]], keys: Sequence[str] = AP_KEYS) -> dict[str, float]:
    """AP and APr/APc/APf (0-100; named ``keys``) of an area-'all' precision array (T, R, K, ...):
    LVIS's means over the entries > -1; NaN for a group without ground truth."""
    p = precision[:, :, :, 0]
    out = {}
    for name, cats in zip(keys, [slice(None), *freq_groups]):
        values = p[:, :, cats]
        values = values[values > -1]
        out[name] = 100.0 * float(values.mean()) if values.size else float("nan")
    return out


def weighted_ece(score: np.ndarray, correct: np.ndarray, weights: np.ndarray, bins: int) -> float:
    """ECE = sum_b (N_b / N) |acc_b - conf_b| of detections counted ``weights`` times each (the ECE
    of the data set in which detection i appears weights[i] times); 0.0 when N = 0."""
    weights = np.asarray(weights, dtype=np.float64)
    b = bin_index(score, bins)
    count = np.bincount(b, weights=weights, minlength=bins)
    total = count.sum()
    if total == 0:
        return 0.0
    hits = np.bincount(b, weights=weights * np.asarray(correct, dtype=np.float64), minlength=bins)
    confidence = np.bincount(b, weights=weights * np.asarray(score, dtype=np.float64), minlength=bins)
    filled = count > 0
    return float((np.abs(hits[filled] - confidence[filled]) / total).sum())


@dataclass
class ModelEvaluation:
    """One model's detections, matched once for every draw: ``matched`` (LVIS AP, the per-image
    budget), ``fixed`` (AP-Fixed and AP-Pool, all detections) and the judged detections of the ECE
    (``judged_image``: image rank, ``judged_score``, ``judged_correct``)."""

    matched: MatchedDetections
    fixed: FixedMatch
    judged_image: np.ndarray
    judged_score: np.ndarray
    judged_correct: np.ndarray


def prepare_models(gt: dict[str, Any], detections: dict[str, list[dict[str, Any]]], *, iou_type: str, max_dets: int,
                   detections_per_class_setting: int | str, judge_iou_type: str, judge_iou_threshold: float
                   ) -> dict[str, ModelEvaluation]:
    """Per model: its detections (all the predictor wrote) matched for AP (``max_dets`` per image),
    for AP-Fixed / AP-Pool (K per class from ``detections_per_class_setting`` and the number of
    images, no per-image cap), and judged for the ECE (the ``max_dets`` per image that AP sees, with
    the calibration rule ``judge_iou_type`` / ``judge_iou_threshold``) -- what stages.evaluation.metrics
    computes for metrics.json."""
    k = detections_per_class(detections_per_class_setting, len(gt["images"]))
    img_ids = np.array(sorted(img["id"] for img in gt["images"]), dtype=np.int64)
    out = {}
    for model, dets in detections.items():
        capped, _ = top_detections(dets, max_dets)
        judged = judge_detections(capped, gt, judge_iou_type, judge_iou_threshold)
        out[model] = ModelEvaluation(
            matched=match_detections(gt, dets, iou_type, max_dets), fixed=match_fixed(gt, dets, iou_type, k),
            judged_image=np.searchsorted(img_ids, judged["image_id"].to_numpy(dtype=np.int64)),
            judged_score=judged["score"].to_numpy(dtype=np.float64),
            judged_correct=judged["correct"].to_numpy(dtype=bool))
    return out


def draw_metrics(e: ModelEvaluation, image_weights: np.ndarray | None, ece_bins: int) -> dict[str, float]:
    """Every metric of METRICS for one model on the data set in which image r appears
    ``image_weights[r]`` times (None: the data as it is)."""
    out = ap_summary(accumulate(e.matched, image_weights, areas=[0])[0], e.matched.freq_groups)
    kept = kept_copies(e.fixed, image_weights)
    fixed = accumulate(e.fixed.matched, image_weights, areas=[0], detection_weights=kept)[0]
    out |= ap_summary(fixed, e.fixed.matched.freq_groups, FIXED_KEYS)
    out[POOL_KEY] = pool_ap(pooled_precision(e.fixed.matched, image_weights, kept))
    weights = np.ones(len(e.judged_score)) if image_weights is None else np.asarray(image_weights)[e.judged_image]
    out["ECE"] = weighted_ece(e.judged_score, e.judged_correct, weights, ece_bins)
    return out


def draw_weights(n_images: int, draws: int, seed: int) -> np.ndarray:
    """(draws, n_images) multiplicities: each row a resample of the images with replacement."""
    rng = np.random.default_rng(seed)
    return np.stack([np.bincount(rng.integers(0, n_images, n_images), minlength=n_images) for _ in range(draws)])


def bootstrap_metrics(models: dict[str, ModelEvaluation], draws: int, seed: int, ece_bins: int) -> pd.DataFrame:
    """One row per (draw, model): every metric of METRICS on the draw. All models must share the
    ground truth (the same images in the same order); draw -1 is the evaluation on the data as it is."""
    n_images = {e.matched.n_images for e in models.values()}
    if len(n_images) != 1:
        raise ValueError(f"models were matched against different ground truths ({n_images} images)")
    weights = draw_weights(n_images.pop(), draws, seed)
    rows = []
    for model, e in models.items():
        rows.append({"draw": -1, "model": model, **draw_metrics(e, None, ece_bins)})
        for k, w in enumerate(weights):
            rows.append({"draw": k, "model": model, **draw_metrics(e, w, ece_bins)})
    return pd.DataFrame(rows, columns=["draw", "model", *METRICS])


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
    bootstrap interval, for every metric of METRICS; per model also each within-model gap of GAPS
    (metric ``difference_name(a, b)``, paired on the same draws). Columns: what, metric, value, low, high."""
    point = draws[draws["draw"] == -1].set_index("model")
    boot = draws[draws["draw"] >= 0]
    rows = []
    for model in point.index:
        part = boot[boot["model"] == model]
        for metric in METRICS:
            low, high = interval(part[metric].to_numpy(), level)
            rows.append({"what": model, "metric": metric, "value": point.loc[model, metric], "low": low, "high": high})
        for a, b in GAPS:
            low, high = interval((part[a] - part[b]).to_numpy(), level)
            rows.append({"what": model, "metric": difference_name(a, b), "value": point.loc[model, a] - point.loc[model, b],
                         "low": low, "high": high})
    by_model = {model: part.set_index("draw") for model, part in boot.groupby("model")}
    for a, b in comparisons:
        for metric in METRICS:
            diff = (by_model[a][metric] - by_model[b][metric]).to_numpy()
            low, high = interval(diff, level)
            rows.append({"what": difference_name(a, b), "metric": metric, "value": point.loc[a, metric] - point.loc[b, metric],
                         "low": low, "high": high})
    return pd.DataFrame(rows, columns=["what", "metric", "value", "low", "high"])
