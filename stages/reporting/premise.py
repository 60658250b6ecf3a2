"""The paper's premise, measured on the run's own data (report/premise.md and .csv).

The calibration correction (eq. 5) can only pay off where (a) the teacher is worse on rare classes,
(b) it is under-confident on rare and over-confident on frequent classes (the direction eq. 5
corrects), (c) classes compete for the per-image detection budget (a per-class lift of scores moves
LVIS AP only through the detections it brings into or out of an image's list: Dave et al. 2021), and
(d) retrieval brings rare-class objects into the unlabeled set. Each is one statistic here:

- **P1** teacher APr minus AP on val, with its paired image-level bootstrap interval (both on the same
  resampled images): the bootstrap job's own row (intervals.csv), the same for every seed's teacher.
  Paper: 47.0 - 54.0 = -7.0 (Table 1's teacher); EVA-02-L mask: 47.6 - 53.5 = -5.9.
- **P2** the teacher's mean CCECE (eq. 4) over the r, c and f classes with judged holdout15 detections,
  and r minus f with a bootstrap interval over holdout images (> 0: rare more under-confident).
- **P3** the share of val images on which the teacher has more detections above the score threshold
  than the per-image budget (``evaluation.max_detections``).
- **P4** the share of rare-class objects, counted as (image, class) pairs, in the unlabeled set and
  in the whole pool (needs the pool's ground truth: mini-LVIS's pool_truth.json).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from stages.evaluation.bootstrap import difference_name, draw_weights, interval

COLUMNS = ["premise", "statistic", "value", "low", "high", "holds", "paper"]
# P1 is the bootstrap's within-model gap APr - AP (stages.evaluation.bootstrap.GAPS) of the teacher.
P1_METRIC = difference_name("APr", "AP")


def rare_gap(intervals: pd.DataFrame, model: str = "teacher") -> dict[str, float]:
    """P1 of ``model``: its AP and APr (points) and APr - AP with the paired interval of the bootstrap
    (stages.evaluation.bootstrap: both metrics on the same resampled images), from an intervals table
    that read_intervals checked (NaN without rare ground truth). ValueError when the table has no P1
    row for ``model``."""
    rows = intervals[intervals["what"] == model].set_index("metric")
    if not {"AP", "APr", P1_METRIC} <= set(rows.index):
        raise ValueError(f"the intervals have no {P1_METRIC} row for the model {model!r} (rerun the bootstrap job)")
    gap = rows.loc[P1_METRIC]
    return {"AP": float(rows.loc["AP", "value"]), "APr": float(rows.loc["APr", "value"]), "value": float(gap["value"]),
            "low": float(gap["low"]), "high": float(gap["high"])}


def p1_holds(p1: dict[str, float]) -> bool | None:
    """P1's test: the interval of APr - AP lies below 0. None where there is no interval (no rare
    ground truth, or no draw with one): undefined, not failed."""
    return None if np.isnan(p1["high"]) else bool(p1["high"] < 0)


def group_ccece(judged: pd.DataFrame, frequency: dict[int, str], weights: np.ndarray | None = None,
                image_index: np.ndarray | None = None) -> dict[str, float]:
    """Mean over the classes of each r/c/f group with judged detections of eq. (4)'s CCECE, in its
    direct form mean(correct) - mean(score) per class (equal to the binned sum). ``weights`` (one per
    image, ``image_index`` mapping each detection to it) gives a resample's multiplicities."""
    w = np.ones(len(judged)) if weights is None else weights[image_index].astype(np.float64)
    classes, inverse = np.unique(judged["category_id"].to_numpy(), return_inverse=True)
    mass = np.bincount(inverse, weights=w, minlength=len(classes))
    gap = np.bincount(inverse, weights=w * (judged["correct"].to_numpy(np.float64) - judged["score"].to_numpy()),
                      minlength=len(classes))
    seen = mass > 0
    per_class = np.divide(gap, mass, out=np.zeros_like(gap), where=seen)
    groups = np.array([frequency.get(int(c), "?") for c in classes])
    return {g: float(per_class[seen & (groups == g)].mean()) if (seen & (groups == g)).any() else float("nan")
            for g in ("r", "c", "f")}


def ccece_gap(judged: pd.DataFrame, categories: Sequence[dict[str, Any]], draws: int, seed: int, level: float
              ) -> dict[str, float]:
    """P2: the mean CCECE of r, c and f classes, r - f, and r - f's bootstrap interval (holdout images
    resampled with replacement; a class enters a draw's mean when it has judged detections in it)."""
    frequency = {c["id"]: c["frequency"] for c in categories}
    point = group_ccece(judged, frequency)
    images, image_index = np.unique(judged["image_id"].to_numpy(), return_inverse=True)
    diffs = []
    for w in draw_weights(len(images), draws, seed):
        g = group_ccece(judged, frequency, w, image_index)
        diffs.append(g["r"] - g["f"])
    low, high = interval(np.asarray(diffs), level)
    return {**point, "value": point["r"] - point["f"], "low": low, "high": high}


def budget_share(detections: pd.DataFrame, image_ids: Sequence[int], budget: int, score_threshold: float
                 ) -> dict[str, float]:
    """P3: the share of images with more than ``budget`` detections scoring >= ``score_threshold``,
    and the mean and maximum count per image (images without detections count 0)."""
    above = detections[detections["score"] >= score_threshold]
    counts = above.groupby("image_id").size().reindex(list(image_ids), fill_value=0).to_numpy()
    return {"value": float((counts > budget).mean()) if len(counts) else float("nan"),
            "mean": float(counts.mean()) if len(counts) else float("nan"),
            "max": int(counts.max()) if len(counts) else 0, "budget": int(budget)}


def rare_share(image_ids: Sequence[int], truth: dict[str, Any], frequency: dict[int, str]) -> float:
    """P4's share of rare-class (image, class) pairs among all pairs of the given images, from the
    pool's ground truth (``pool_truth.json``: category_ids per image id)."""
    pairs = [c for i in image_ids for c in truth.get(str(i), {}).get("category_ids", [])]
    return float(np.mean([frequency.get(int(c)) == "r" for c in pairs])) if pairs else float("nan")


def premise_table(p1: dict[str, float], p2: dict[str, float], p3: dict[str, float],
                  p4: dict[str, float] | None) -> pd.DataFrame:
    """The premise.csv rows (columns COLUMNS); ``holds`` is the test each premise states: P1 interval
    below 0, P2 interval above 0 (both None without an interval), P3 at least half of the images, P4
    unlabeled share above the pool's."""
    rows = [
        {"premise": "P1", "statistic": "teacher APr - AP (val, points)", "value": p1["value"], "low": p1["low"],
         "high": p1["high"], "holds": p1_holds(p1), "paper": -7.0},
        {"premise": "P1", "statistic": "teacher AP", "value": p1["AP"], "paper": 54.0},
        {"premise": "P1", "statistic": "teacher APr", "value": p1["APr"], "paper": 47.0},
        {"premise": "P2", "statistic": "mean CCECE r - f (holdout15)", "value": p2["value"], "low": p2["low"],
         "high": p2["high"], "holds": None if np.isnan(p2["low"]) else bool(p2["low"] > 0)},
        *({"premise": "P2", "statistic": f"mean CCECE {g}", "value": p2[g]} for g in ("r", "c", "f")),
        {"premise": "P3", "statistic": f"share of val images with > {p3['budget']} teacher detections above the "
         "score threshold", "value": p3["value"], "holds": bool(p3["value"] >= 0.5)},
        {"premise": "P3", "statistic": "teacher detections above the threshold per val image (mean)", "value": p3["mean"]},
        {"premise": "P3", "statistic": "teacher detections above the threshold per val image (max)", "value": p3["max"]},
    ]
    if p4 is not None:
        rows += [
            {"premise": "P4", "statistic": "share of rare-class (image, class) pairs: unlabeled set",
             "value": p4["unlabeled"], "holds": bool(p4["unlabeled"] > p4["pool"])},
            {"premise": "P4", "statistic": "share of rare-class (image, class) pairs: whole pool", "value": p4["pool"]},
        ]
    return pd.DataFrame(rows, columns=COLUMNS)


def premise_markdown(table: pd.DataFrame, level: float) -> str:
    """premise.md: the table with intervals, and what each premise means for eq. (5)."""
    def fmt(v: Any, digits: int = 3) -> str:
        return "" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{digits}f}" if isinstance(v, float) else str(v)

    lines = ["# The paper's premise on this run's data", "",
             f"Intervals: {int(round(level * 100))}% paired image-level bootstrap.", "",
             "| premise | statistic | value | interval | holds | paper (LVIS v1) |", "|---|---|---|---|---|---|"]
    for r in table.itertuples(index=False):
        interval_text = f"[{fmt(r.low)}, {fmt(r.high)}]" if pd.notna(r.low) else ""
        holds = "" if pd.isna(r.holds) else ("yes" if r.holds else "no")
        lines.append(f"| {r.premise} | {r.statistic} | {fmt(r.value)} | {interval_text} | {holds} | {fmt(r.paper, 1)} |")
    lines += ["", "P1: the teacher is worse on rare classes. P2: it is more under-confident on rare than on frequent "
              "classes (the direction eq. 5 corrects). P3: classes compete for the per-image budget, the only way a "
              "per-class lift of scores moves LVIS AP. P4: retrieval enriches the unlabeled set in rare classes."]
    return "\n".join(lines) + "\n"
