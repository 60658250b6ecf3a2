"""Judging detections against LVIS ground truth: which detections are correct (the input of eq. 4).

The rule (docs/design.md): a detection of class i is correct when it matches, greedily by descending
score, an unmatched ground truth of class i in the same image with IoU >= threshold (box IoU by
default, mask IoU selectable). LVIS's federated rule decides what is judged: a detection whose
class is neither annotated in the image nor listed in its ``neg_category_ids`` is left out; as
in LVIS evaluation, an unmatched detection of a class in ``not_exhaustive_category_ids`` is left
out too (the image may hold unannotated instances of it, so "wrong" would be a guess).
Detections on images that the ground truth does not have are dropped. A list of LVIS results is
completed as LVISResults completes it (stages.data.detections.complete_results: a box-only
detection's mask is its box, a mask-only detection's box is its mask's), so that judging and AP see
the same detections; every pycocotools call runs under the wall-clock guard (stages.utils.watchdog).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pycocotools.mask as mask_util

from stages.core.calibration import check_probabilities
from stages.data.detections import complete_results
from stages.data.lvis import segmentation_rle
from stages.utils.watchdog import guarded

JUDGED_COLUMNS = {"image_id": "int64", "category_id": "int64", "score": "float64", "correct": "bool"}


def _empty_judged() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in JUDGED_COLUMNS.items()})


def _check_iou_type(iou_type: str) -> None:
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', found {iou_type!r}")




def _gt_rle(ann: dict[str, Any], height: int, width: int) -> dict:
    with guarded(f"pycocotools mask of annotation {ann.get('id')} on image {ann.get('image_id')} (judging)"):
        return segmentation_rle(ann["segmentation"], height, width)


def _box_iou_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of row-aligned XYWH boxes a[k], b[k] (non-crowd), as pycocotools computes it."""
    ax1, ay1 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx1, by1 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax1, bx1) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(ay1, by1) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = iw * ih
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _mask_iou_pairs(segmentations: list, anns: list[dict], images: dict[int, dict], pair_key: np.ndarray,
                    pair_det: np.ndarray, pair_gt: np.ndarray) -> np.ndarray:
    """Mask IoU of each (detection, ground truth) pair: one pycocotools call per (image, class) group."""
    out = np.empty(len(pair_det), dtype=np.float64)
    if not len(pair_det):
        return out
    gt_rles: dict[int, dict] = {}
    order = np.argsort(pair_key, kind="stable")
    bounds = np.r_[0, np.flatnonzero(np.diff(pair_key[order])) + 1, len(order)]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        block = order[lo:hi]
        det_u = np.unique(pair_det[block])
        gt_u = np.unique(pair_gt[block])
        for g in gt_u:
            if g not in gt_rles:
                img = images[anns[g]["image_id"]]
                gt_rles[g] = _gt_rle(anns[g], img["height"], img["width"])
        with guarded(f"pycocotools.mask.iou on image {anns[gt_u[0]]['image_id']} (judging), detections "
                     f"{det_u[:10].tolist()} x annotations {[anns[g].get('id') for g in gt_u[:10]]}"):
            iou = np.asarray(mask_util.iou([segmentations[d] for d in det_u], [gt_rles[g] for g in gt_u], [0] * len(gt_u)),
                             dtype=np.float64).reshape(len(det_u), len(gt_u))
        out[block] = iou[np.searchsorted(det_u, pair_det[block]), np.searchsorted(gt_u, pair_gt[block])]
    return out


def judge_detections(detections: list[dict] | pd.DataFrame, gt: dict[str, Any], iou_type: str = "bbox",
                     iou_threshold: float = 0.5) -> pd.DataFrame:
    """The judged detections: columns image_id, category_id, score, correct (bool).

    ``detections``: LVIS results (list of dicts, checked by stages.data.detections.check_results) or
    a frame with the same columns; ``gt``: an LVIS json. Rules in the module docstring. Vectorised: detection-ground-truth pairs of the same
    (image, class) are built with numpy, and the greedy matching runs over score ranks -- step r
    matches the r-th best detection of every group at once (groups share no ground truth, so one
    step has no conflicts). Same result as the plain-loop reference in tests/reference_judging.py.
    """
    _check_iou_type(iou_type)
    if not isinstance(detections, pd.DataFrame):
        detections = complete_results(list(detections), gt, max_dets=-1)
    frame = detections if isinstance(detections, pd.DataFrame) else pd.DataFrame(detections)
    if frame.empty:
        return _empty_judged()
    needed = {"image_id", "category_id", "score", "bbox" if iou_type == "bbox" else "segmentation"}
    missing = needed - set(frame.columns)
    if missing:
        raise ValueError(f"detections lack {sorted(missing)} (needed for iou_type {iou_type!r})")
    scores = frame["score"].to_numpy(dtype=np.float64)
    check_probabilities(scores, "detection scores")
    images = {img["id"]: img for img in gt["images"]}
    in_gt = frame["image_id"].isin(list(images)).to_numpy()
    frame, scores = frame[in_gt].reset_index(drop=True), scores[in_gt]
    if frame.empty:
        return _empty_judged()
    det_img = frame["image_id"].to_numpy(dtype=np.int64)
    det_cat = frame["category_id"].to_numpy(dtype=np.int64)

    anns = gt["annotations"]
    gt_img = np.fromiter((a["image_id"] for a in anns), dtype=np.int64, count=len(anns))
    gt_cat = np.fromiter((a["category_id"] for a in anns), dtype=np.int64, count=len(anns))
    neg_pairs = np.array([(img["id"], c) for img in gt["images"] for c in img.get("neg_category_ids", [])],
                         dtype=np.int64).reshape(-1, 2)
    ne_pairs = np.array([(img["id"], c) for img in gt["images"] for c in img.get("not_exhaustive_category_ids", [])],
                        dtype=np.int64).reshape(-1, 2)
    # One integer key per (image, class): image * shift + class, shift above every class id.
    shift = np.int64(1 + max(det_cat.max(initial=0), gt_cat.max(initial=0), neg_pairs[:, 1].max(initial=0),
                             ne_pairs[:, 1].max(initial=0)))
    det_key, gt_key = det_img * shift + det_cat, gt_img * shift + gt_cat
    neg_keys = neg_pairs[:, 0] * shift + neg_pairs[:, 1]
    ne_keys = ne_pairs[:, 0] * shift + ne_pairs[:, 1]

    gt_order = np.argsort(gt_key, kind="stable")
    gt_key_sorted = gt_key[gt_order]
    start = np.searchsorted(gt_key_sorted, det_key, side="left")
    count = np.searchsorted(gt_key_sorted, det_key, side="right") - start
    judged = (count > 0) | np.isin(det_key, neg_keys)

    # Rank of every detection within its group, by descending score (stable on input order).
    order = np.lexsort((-scores, det_key))
    sorted_keys = det_key[order]
    first = np.r_[0, np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1]
    group_start = np.repeat(first, np.diff(np.r_[first, len(order)]))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order)) - group_start

    # All (detection, ground truth) pairs of the same group.
    pair_det = np.repeat(np.arange(len(det_key)), count)
    offsets = np.arange(len(pair_det)) - np.repeat(np.cumsum(count) - count, count)
    pair_gt = gt_order[np.repeat(start, count) + offsets]
    if iou_type == "bbox":
        det_boxes = np.asarray(frame["bbox"].tolist(), dtype=np.float64).reshape(-1, 4)
        gt_boxes = np.asarray([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        pair_iou = _box_iou_pairs(det_boxes[pair_det], gt_boxes[pair_gt])
    else:
        pair_iou = _mask_iou_pairs(frame["segmentation"].tolist(), anns, images, det_key[pair_det], pair_det, pair_gt)

    correct = np.zeros(len(det_key), dtype=bool)
    taken = np.zeros(len(anns), dtype=bool)
    pair_rank = rank[pair_det]
    by_rank = np.argsort(pair_rank, kind="stable")
    bounds = np.searchsorted(pair_rank[by_rank], np.arange(pair_rank.max(initial=-1) + 2))
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if lo == hi:
            continue
        sl = by_rank[lo:hi]
        dets, gts = pair_det[sl], pair_gt[sl]
        iou = np.where(taken[gts], -1.0, pair_iou[sl])
        # best free ground truth per detection: sort by (detection, -iou, gt index), take each block's first
        pick = np.lexsort((gts, -iou, dets))
        is_first = np.r_[True, dets[pick][1:] != dets[pick][:-1]]
        best = pick[is_first]
        hit = iou[best] >= iou_threshold
        correct[dets[best][hit]] = True
        taken[gts[best][hit]] = True

    keep = judged & (correct | ~np.isin(det_key, ne_keys))
    return pd.DataFrame({"image_id": det_img[keep], "category_id": det_cat[keep], "score": scores[keep],
                         "correct": correct[keep]})
