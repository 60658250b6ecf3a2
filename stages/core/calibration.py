"""Eq. (4) and the calibration measures: CCECE per class, ECE, reliability tables.

Inputs are *judged* detections: one row per detection with its ``score`` (the confidence) and
``correct`` (whether it matches a ground truth of its class; the rule is in
stages.evaluation.judging). Bins: ``bins`` equal-width bins over [0, 1]; a score of exactly 1 falls
in the last bin.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

# LVIS's frequency groups (rare, common, frequent), in report order.
FREQUENCIES = ("r", "c", "f")


def check_probabilities(scores: np.ndarray, what: str = "scores") -> None:
    """Scores are probabilities: finite and in [0, 1]; anything else is a bug upstream."""
    scores = np.asarray(scores, dtype=np.float64)
    bad = ~np.isfinite(scores)
    if bad.any():
        raise ValueError(f"{what} contain NaN or inf ({int(bad.sum())} of {scores.size} values)")
    if scores.size and (scores.min() < 0 or scores.max() > 1):
        raise ValueError(f"{what} must lie in [0, 1], found range [{scores.min():.4g}, {scores.max():.4g}]")


def bin_index(scores: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bin of each score over [0, 1]; a score of exactly 1 falls in the last bin."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, found {bins}")
    return np.minimum((np.asarray(scores, dtype=np.float64) * bins).astype(np.int64), bins - 1)


def ccece_per_class(judged: pd.DataFrame, categories: list[dict[str, Any]], bins: int = 15) -> pd.DataFrame:
    """Eq. (4) per category, in category order (sorted by id).

    Columns category_id, name, frequency, n_detections, accuracy (mean correct), confidence (mean
    score), ccece = Delta_i = sum_b (N_ib / N_i)(acc_ib - conf_ib). A class with no judged
    detection: n_detections 0, ccece 0.0, accuracy and confidence NaN.
    """
    cats = sorted(categories, key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(cats)}
    unknown = set(judged["category_id"].unique().tolist()) - set(index)
    if unknown:
        raise ValueError(f"judged detections name categories {sorted(unknown)[:10]} that the ground truth does not have")
    scores = judged["score"].to_numpy(dtype=np.float64)
    check_probabilities(scores, "detection scores")
    correct = judged["correct"].to_numpy(dtype=np.float64)
    cls = judged["category_id"].map(index).to_numpy(dtype=np.int64)
    num = len(cats)
    # One bincount over (class, bin) cells gives N_ib, the correct count and the score sum per cell.
    flat = cls * bins + bin_index(scores, bins)
    n_ib = np.bincount(flat, minlength=num * bins).reshape(num, bins).astype(np.float64)
    correct_ib = np.bincount(flat, weights=correct, minlength=num * bins).reshape(num, bins)
    score_ib = np.bincount(flat, weights=scores, minlength=num * bins).reshape(num, bins)
    n_i = n_ib.sum(axis=1)
    filled = n_ib > 0
    acc_ib = np.divide(correct_ib, n_ib, out=np.zeros_like(n_ib), where=filled)
    conf_ib = np.divide(score_ib, n_ib, out=np.zeros_like(n_ib), where=filled)
    weight_ib = n_ib / np.maximum(n_i, 1)[:, None]
    binned = (weight_ib * (acc_ib - conf_ib)).sum(axis=1)  # 0 for a class without detections
    has = n_i > 0
    accuracy = np.divide(correct_ib.sum(axis=1), n_i, out=np.full(num, np.nan), where=has)
    confidence = np.divide(score_ib.sum(axis=1), n_i, out=np.full(num, np.nan), where=has)
    direct = np.where(has, accuracy - confidence, 0.0)
    # The signed binned sum telescopes to mean(correct) - mean(confidence) (docs/design.md): a
    # disagreement means a binning bug, never a property of the data.
    if not np.allclose(binned, direct, rtol=0.0, atol=1e-9):
        worst = int(np.argmax(np.abs(binned - direct)))
        raise AssertionError(f"binned and direct CCECE disagree for category {cats[worst]['id']}: "
                             f"{binned[worst]!r} vs {direct[worst]!r}")
    return pd.DataFrame({
        "category_id": np.asarray([c["id"] for c in cats], dtype=np.int64),
        "name": [c["name"] for c in cats],
        "frequency": [c.get("frequency", "") for c in cats],
        "n_detections": n_i.astype(np.int64),
        "accuracy": accuracy, "confidence": confidence, "ccece": binned,
    })


def reliability_table(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> pd.DataFrame:
    """Per bin: bin_lower, bin_upper, count, accuracy, confidence (NaN for an empty bin)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if confidence.shape != correct.shape:
        raise ValueError(f"confidence and correct differ in shape: {confidence.shape} vs {correct.shape}")
    check_probabilities(confidence, "confidences")
    b = bin_index(confidence, bins)
    count = np.bincount(b, minlength=bins).astype(np.int64)
    filled = count > 0
    acc = np.divide(np.bincount(b, weights=correct, minlength=bins), count, out=np.full(bins, np.nan), where=filled)
    conf = np.divide(np.bincount(b, weights=confidence, minlength=bins), count, out=np.full(bins, np.nan), where=filled)
    edges = np.linspace(0.0, 1.0, bins + 1)
    return pd.DataFrame({"bin_lower": edges[:-1], "bin_upper": edges[1:], "count": count,
                         "accuracy": acc, "confidence": conf})


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE = sum_b (N_b / N) |acc_b - conf_b| (Naeini et al. 2015); 0.0 for no detections."""
    table = reliability_table(confidence, correct, bins)
    total = int(table["count"].sum())
    if total == 0:
        return 0.0
    filled = table[table["count"] > 0]
    return float((filled["count"] / total * (filled["accuracy"] - filled["confidence"]).abs()).sum())


def ece_per_frequency(judged: pd.DataFrame, categories: list[dict[str, Any]], bins: int = 15) -> dict[str, float]:
    """ECE over the judged detections of each frequency group r/c/f (0.0 for a group without any)."""
    freq = {c["id"]: c.get("frequency") for c in categories}
    groups = judged["category_id"].map(freq)
    return {f: expected_calibration_error(judged.loc[groups == f, "score"], judged.loc[groups == f, "correct"], bins)
            for f in FREQUENCIES}


# -- how much Delta knows: standard errors and shrinkage ---------------------------------------------------------

# The residual correct - confidence of one detection lies in [-1, 1]; with no class to pool a
# variance from, its variance is taken as 0.25 (a fair coin against a confidence of 1/2).
FALLBACK_RESIDUAL_VARIANCE = 0.25


def ccece_standard_errors(judged: pd.DataFrame, categories: list[dict[str, Any]]) -> np.ndarray:
    """The standard error of each class's CCECE, in category order (sorted by id); NaN where the
    class has no judged detection.

    CCECE_i is the mean of the residuals correct - confidence over class i's n_i judged detections,
    so its standard error is sigma / sqrt(n_i). sigma^2 is pooled within the class's frequency group
    (the residual variance of classes with at least two detections, each around its own mean) --
    a class with 2 or 3 detections cannot estimate its own -- and over all classes when the group
    has none.
    """
    cats = sorted(categories, key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(cats)}
    cls = judged["category_id"].map(index).to_numpy(dtype=np.int64)
    residual = judged["correct"].to_numpy(dtype=np.float64) - judged["score"].to_numpy(dtype=np.float64)
    num = len(cats)
    n = np.bincount(cls, minlength=num).astype(np.float64)
    mean = np.divide(np.bincount(cls, weights=residual, minlength=num), n, out=np.zeros(num), where=n > 0)
    squares = np.bincount(cls, weights=(residual - mean[cls]) ** 2, minlength=num)
    frequency = np.array([c.get("frequency", "") for c in cats])

    def pooled(mask: np.ndarray) -> float:
        use = mask & (n >= 2)
        dof = (n[use] - 1).sum()
        return float(squares[use].sum() / dof) if dof > 0 else np.nan

    overall = pooled(np.ones(num, dtype=bool))
    overall = FALLBACK_RESIDUAL_VARIANCE if not np.isfinite(overall) else overall
    variance = np.full(num, overall)
    for group in np.unique(frequency):
        in_group = frequency == group
        value = pooled(in_group)
        if np.isfinite(value):
            variance[in_group] = value
    return np.where(n > 0, np.sqrt(variance / np.maximum(n, 1)), np.nan)


def random_effects_prior(estimates: np.ndarray, standard_errors: np.ndarray) -> tuple[float, float]:
    """(mean, variance tau^2) of the true values behind noisy ``estimates`` with known standard errors:
    DerSimonian and Laird's method of moments. tau^2 is the spread of the estimates beyond what their
    standard errors explain (0 when they explain it all); the mean weights each estimate by
    1 / (se^2 + tau^2)."""
    x = np.asarray(estimates, dtype=np.float64)
    v = np.asarray(standard_errors, dtype=np.float64) ** 2
    if x.size == 0:
        raise ValueError("random_effects_prior needs at least one estimate")
    if x.size == 1:
        return float(x[0]), 0.0
    w = 1.0 / np.maximum(v, 1e-12)
    fixed = float((w * x).sum() / w.sum())
    q = float((w * (x - fixed) ** 2).sum())
    tau2 = max(0.0, (q - (x.size - 1)) / (w.sum() - (w**2).sum() / w.sum()))
    w_star = 1.0 / (v + tau2)
    return float((w_star * x).sum() / w_star.sum()), tau2


def shrink_to_groups(ccece: np.ndarray, standard_errors: np.ndarray, n_detections: np.ndarray,
                     groups: np.ndarray) -> np.ndarray:
    """Empirical-Bayes estimates of the classes' true CCECE: each class's CCECE pulled toward its
    group's prior mean with the weight tau^2 / (tau^2 + se^2), where the prior (mean, tau^2) is
    estimated from the group's classes (:func:`random_effects_prior`). A class with many judged
    detections (se -> 0) keeps its CCECE; a class with none takes the group's mean; a group without
    any judged detection keeps 0, the CCECE of a class without detections."""
    ccece = np.asarray(ccece, dtype=np.float64)
    se = np.asarray(standard_errors, dtype=np.float64)
    seen = np.asarray(n_detections) > 0
    groups = np.asarray(groups)
    shrunk = np.where(seen, ccece, 0.0)
    for group in np.unique(groups):
        members = groups == group
        observed = members & seen
        if not observed.any():
            continue
        mean, tau2 = random_effects_prior(ccece[observed], se[observed])
        weight = np.zeros(len(ccece))
        if tau2 > 0:
            weight[observed] = tau2 / (tau2 + se[observed] ** 2)
        shrunk[members] = mean + weight[members] * (ccece[members] - mean)
    return shrunk
