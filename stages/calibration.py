"""Judging detections against LVIS ground truth, CCECE (eq. 4), ECE and reliability tables.

Judging (DESIGN.md): a detection of class i is correct when it matches, greedily by descending
score, an unmatched ground truth of class i in the same image with IoU >= threshold (box IoU by
default, mask IoU selectable). LVIS's federated rule decides what is judged: a detection whose
class is neither annotated in the image nor listed in its ``neg_category_ids`` is left out; as
in LVIS evaluation, an unmatched detection of a class in ``not_exhaustive_category_ids`` is left
out too (the image may hold unannotated instances of it).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd
import pycocotools.mask as mask_util


def _check_scores(scores: np.ndarray, what: str = "scores") -> None:
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{what} contain NaN or inf ({int((~np.isfinite(scores)).sum())} values)")
    if scores.size and (scores.min() < 0 or scores.max() > 1):
        raise ValueError(f"{what} must lie in [0, 1], found range [{scores.min():.4g}, {scores.max():.4g}]")


def _gt_rle(ann: dict[str, Any], height: int, width: int) -> dict:
    seg = ann["segmentation"]
    if isinstance(seg, list):
        return mask_util.merge(mask_util.frPyObjects(seg, height, width))
    if isinstance(seg["counts"], list):
        return mask_util.frPyObjects(seg, height, width)
    return seg


def judge_detections(detections: list[dict] | pd.DataFrame, gt: dict[str, Any], iou_type: str = "bbox",
                     iou_threshold: float = 0.5) -> pd.DataFrame:
    """Columns image_id, category_id, score, correct: the judged detections (federated rule)."""
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', found {iou_type!r}")
    dets = detections.to_dict("records") if isinstance(detections, pd.DataFrame) else list(detections)
    columns = ["image_id", "category_id", "score", "correct"]
    if not dets:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(columns, ["int64", "int64", "float64", "bool"])})
    _check_scores(np.asarray([d["score"] for d in dets], dtype=np.float64), "detection scores")
    images = {img["id"]: img for img in gt["images"]}
    gts: dict[tuple[int, int], list[dict]] = defaultdict(list)
    for ann in gt["annotations"]:
        gts[(ann["image_id"], ann["category_id"])].append(ann)
    groups: dict[tuple[int, int], list[dict]] = defaultdict(list)
    for det in dets:
        if det["image_id"] in images:
            groups[(det["image_id"], det["category_id"])].append(det)

    out_image, out_cat, out_score, out_correct = [], [], [], []
    for (image_id, cat_id), group in groups.items():
        img = images[image_id]
        targets = gts.get((image_id, cat_id), [])
        if not targets and cat_id not in img.get("neg_category_ids", []):
            continue  # federated rule: class not verified in this image
        group = sorted(group, key=lambda d: -d["score"])
        correct = np.zeros(len(group), dtype=bool)
        if targets:
            if iou_type == "bbox":
                iou = mask_util.iou([d["bbox"] for d in group], [t["bbox"] for t in targets], [0] * len(targets))
            else:
                h, w = img["height"], img["width"]
                iou = mask_util.iou([d["segmentation"] for d in group], [_gt_rle(t, h, w) for t in targets],
                                    [0] * len(targets))
            iou = np.asarray(iou, dtype=np.float64).reshape(len(group), len(targets))
            taken = np.zeros(len(targets), dtype=bool)
            for k in range(len(group)):
                candidates = np.where(taken, -1.0, iou[k])
                best = int(np.argmax(candidates))
                if candidates[best] >= iou_threshold:
                    taken[best] = True
                    correct[k] = True
        keep = correct | (cat_id not in img.get("not_exhaustive_category_ids", []))
        for det, ok, kept in zip(group, correct, keep):
            if kept:
                out_image.append(image_id)
                out_cat.append(cat_id)
                out_score.append(float(det["score"]))
                out_correct.append(bool(ok))
    return pd.DataFrame({"image_id": np.asarray(out_image, dtype=np.int64), "category_id": np.asarray(out_cat, dtype=np.int64),
                         "score": np.asarray(out_score, dtype=np.float64), "correct": np.asarray(out_correct, dtype=bool)})


def bin_index(scores: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bins over [0, 1]; a score of exactly 1 falls in the last bin."""
    return np.minimum((np.asarray(scores) * bins).astype(np.int64), bins - 1)


def ccece_per_class(judged: pd.DataFrame, categories: list[dict[str, Any]], bins: int = 15) -> pd.DataFrame:
    """Eq. (4) per category (in category order): Delta_i = sum_b (N_ib / N_i)(acc_ib - conf_ib)."""
    cats = sorted(categories, key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(cats)}
    unknown = set(judged["category_id"].unique()) - set(index)
    if unknown:
        raise ValueError(f"detections name categories {sorted(unknown)[:10]} that the ground truth does not have")
    scores = judged["score"].to_numpy(dtype=np.float64)
    _check_scores(scores, "detection scores")
    correct = judged["correct"].to_numpy(dtype=np.float64)
    cls = judged["category_id"].map(index).to_numpy(dtype=np.int64)
    num = len(cats)
    flat = cls * bins + bin_index(scores, bins)
    n_ib = np.bincount(flat, minlength=num * bins).reshape(num, bins).astype(np.float64)
    correct_ib = np.bincount(flat, weights=correct, minlength=num * bins).reshape(num, bins)
    score_ib = np.bincount(flat, weights=scores, minlength=num * bins).reshape(num, bins)
    n_i = n_ib.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc_ib = np.where(n_ib > 0, correct_ib / n_ib, 0.0)
        conf_ib = np.where(n_ib > 0, score_ib / n_ib, 0.0)
        binned = np.where(n_i > 0, ((n_ib / np.maximum(n_i[:, None], 1)) * (acc_ib - conf_ib)).sum(axis=1), 0.0)
        accuracy = np.where(n_i > 0, correct_ib.sum(axis=1) / n_i, np.nan)
        confidence = np.where(n_i > 0, score_ib.sum(axis=1) / n_i, np.nan)
    direct = np.where(n_i > 0, accuracy - confidence, 0.0)
    # The signed binned sum telescopes to mean(correct) - mean(confidence); both forms must agree.
    if not np.allclose(binned, direct, atol=1e-9):
        raise AssertionError("binned and direct CCECE disagree")
    return pd.DataFrame({
        "category_id": [c["id"] for c in cats], "name": [c["name"] for c in cats],
        "frequency": [c.get("frequency", "") for c in cats], "n_detections": n_i.astype(np.int64),
        "accuracy": accuracy, "confidence": confidence, "ccece": binned,
    })


def reliability_table(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> pd.DataFrame:
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    _check_scores(confidence, "confidences")
    b = bin_index(confidence, bins)
    count = np.bincount(b, minlength=bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(b, weights=correct, minlength=bins) / count
        conf = np.bincount(b, weights=confidence, minlength=bins) / count
    edges = np.linspace(0.0, 1.0, bins + 1)
    return pd.DataFrame({"bin_lower": edges[:-1], "bin_upper": edges[1:], "count": count,
                         "accuracy": np.where(count > 0, acc, np.nan), "confidence": np.where(count > 0, conf, np.nan)})


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE = sum_b (N_b / N) |acc_b - conf_b| (Naeini et al. 2015); 0 for no detections."""
    table = reliability_table(confidence, correct, bins)
    total = table["count"].sum()
    if total == 0:
        return 0.0
    filled = table[table["count"] > 0]
    return float((filled["count"] / total * (filled["accuracy"] - filled["confidence"]).abs()).sum())


def ece_per_frequency(judged: pd.DataFrame, categories: list[dict[str, Any]], bins: int = 15) -> dict[str, float]:
    freq = {c["id"]: c.get("frequency") for c in categories}
    groups = judged["category_id"].map(freq)
    return {f: expected_calibration_error(judged.loc[groups == f, "score"], judged.loc[groups == f, "correct"], bins)
            for f in ("r", "c", "f")}
