"""AP-Fixed and AP-Pool (Dave et al. 2021, "Evaluating Large-Vocabulary Object Detectors: The Devil
is in the Details", arXiv 2102.01066), beside LVIS AP.

Why: LVIS AP keeps the ``evaluation.max_detections`` highest-scoring detections of each image, so
the classes of an image compete for its places; re-scoring one class against the others (a change
of cross-class calibration, such as eq. 5's correction) then moves AP although no class's own
ranking changed. Dave et al. replace the per-image budget by a per-class one:

* **AP-Fixed**: no per-image cap; each class keeps its K highest-scoring detections over the whole
  evaluation set (K = 10,000 on LVIS v1 val's 19,809 images), then LVIS AP as usual: federated
  rules, area ranges, 10 IoU thresholds, 101 recall points, APr/APc/APf over the frequency groups.
  A per-class monotone re-scoring leaves it unchanged.
* **AP-Pool**: the same K per class and no per-image cap, then one precision/recall curve over the
  detections of all classes ranked together by score, read at the 101 recall points and averaged
  over the IoU thresholds (area 'all'). A score has to mean the same in every class for it to be
  high: it rewards cross-class calibration.

Their code (github.com/achalddave/large-vocab-devil: scripts/evaluate_ap_fixed.py and
evaluate_ap_pooled.py, the class LVISPooledEval in lvdevil/eval_wrapper.py) fixes what the paper
leaves open, and we follow it:

* The per-class limit ranks every detection of the class, also those LVIS will not evaluate (a class
  neither annotated nor verified absent in the image): they use up places, as they do under
  LVISResults' per-image cap. Equal scores keep the input order (Python's stable sort).
* Pooling changes only the accumulation. Matching stays per (image, class) under LVIS's federated
  rules: a detection of a class that is neither annotated in its image nor in the image's
  ``neg_category_ids`` is not evaluated, and an unmatched detection of a class in the image's
  ``not_exhaustive_category_ids`` is ignored (neither tp nor fp). The pooled curve counts the tps
  and fps of the evaluated detections of all classes against the counted gts of all classes. Equal
  scores are ordered by image id, then category id, then the (image, class) pair's own order.
* AP-Pool is the pool of all classes (their r/c/f pools are not reported here).

One difference from their scripts: for segm they drop the detections' boxes, so that LVIS takes the
mask area; we evaluate the same records as our AP (with a box, LVIS takes w * h). AP-Fixed's AP,
APr, APc, APf and AP-Pool read the area range 'all' only, where the two differ only for a detection
whose box or mask has zero area (LVIS drops it).

K scales with the evaluation set: ``evaluation.fixed_max_detections_per_class: auto`` gives
round(10,000 x images / 19,809), Dave et al.'s detections per class per evaluation image; an
integer is used as given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stages.core.registry import Registry
from stages.evaluation.fast_lvis_eval import (
    AREA_LBL,
    IOU_THRS,
    REC_THRS,
    MatchedDetections,
    _accumulate,
    _recall_counts,
    _segment_starts,
    accumulate,
    match_detections,
    summarize,
    true_false_positives,
)

DAVE_DETECTIONS_PER_CLASS = 10_000  # Dave et al.'s K on LVIS v1 val
LVIS_V1_VAL_IMAGES = 19_809
FIXED_KEYS = ("AP-Fixed", "APr-Fixed", "APc-Fixed", "APf-Fixed")
POOL_KEY = "AP-Pool"
METRIC_KEYS = (*FIXED_KEYS, POOL_KEY)
_AREA_ALL = AREA_LBL.index("all")


def detections_per_class(setting: int | str, n_images: int) -> int:
    """K, the detections each class keeps: ``setting`` if it is a positive integer; for 'auto',
    Dave et al.'s 10,000 per class on LVIS v1 val's 19,809 images scaled by ``n_images`` (the images
    of the evaluation set): max(1, round(10,000 n_images / 19,809)). ValueError otherwise."""
    if setting == "auto":
        return max(1, round(DAVE_DETECTIONS_PER_CLASS * n_images / LVIS_V1_VAL_IMAGES))
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise ValueError(f"evaluation.fixed_max_detections_per_class must be 'auto' or a positive integer, found {setting!r}")
    return setting


def _ids_and_scores(detections: Sequence[dict[str, Any]] | pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if isinstance(detections, pd.DataFrame):
        return (detections["image_id"].to_numpy(dtype=np.int64), detections["category_id"].to_numpy(dtype=np.int64),
                detections["score"].to_numpy(dtype=np.float64))
    n = len(detections)
    image_id = np.fromiter(map(itemgetter("image_id"), detections), dtype=np.int64, count=n)
    category_id = np.fromiter(map(itemgetter("category_id"), detections), dtype=np.int64, count=n)
    score = np.fromiter(map(itemgetter("score"), detections), dtype=np.float64, count=n)
    return image_id, category_id, score


def class_order(category_id: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, starts): the detections' indices by category, score descending, then index (the
    stable order of the per-class limit), and where each category's run starts in ``order``."""
    order = np.lexsort((np.arange(len(score)), -np.asarray(score, dtype=np.float64), category_id))
    return order, _segment_starts(np.asarray(category_id)[order])


def top_per_class(category_id: np.ndarray, score: np.ndarray, k: int) -> np.ndarray:
    """Indices (ascending) of the ``k`` highest-scoring detections of each category; equal scores
    keep the earlier detection, as ``sorted(..., reverse=True)[:k]`` in Dave et al.'s scripts."""
    order, starts = class_order(category_id, score)
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    return np.sort(order[rank < k])


def limit_per_class(detections: Sequence[dict[str, Any]] | pd.DataFrame, k: int) -> list[dict[str, Any]] | pd.DataFrame:
    """The detections that :func:`top_per_class` keeps, in their input order (dicts or a results table)."""
    _, category_id, score = _ids_and_scores(detections)
    kept = top_per_class(category_id, score, k)
    if isinstance(detections, pd.DataFrame):
        return detections.iloc[kept]
    return [detections[i] for i in kept.tolist()]


@dataclass
class FixedMatch:
    """One model's detections matched for AP-Fixed and AP-Pool: all of them, without a per-image cap
    (``matched``), and what the per-class limit needs to cut them again on any resampled data set:
    ``order``/``starts`` (:func:`class_order` of all input detections), ``image`` (the image rank of
    each detection of ``order``) and ``k``."""

    matched: MatchedDetections
    order: np.ndarray
    starts: np.ndarray
    image: np.ndarray
    k: int


def match_fixed(gt: dict[str, Any], detections: Sequence[dict[str, Any]] | pd.DataFrame, iou_type: str, k: int
                ) -> FixedMatch:
    """LVISEval's matching of all ``detections`` (no per-image cap) for the per-class limit ``k``.

    Matching the whole list once is enough for every cut of it: the limit keeps, within each
    (image, class) pair, a prefix of the pair's score order, and LVIS's greedy matching of a prefix
    is the prefix of its matching."""
    matched = match_detections(gt, detections, iou_type, max_dets=-1)
    image_id, category_id, score = _ids_and_scores(detections)
    order, starts = class_order(category_id, score)
    img_ids = np.array(sorted(img["id"] for img in gt["images"]), dtype=np.int64)
    return FixedMatch(matched=matched, order=order, starts=starts, image=np.searchsorted(img_ids, image_id[order]), k=k)


def kept_copies(fm: FixedMatch, image_weights: np.ndarray | None = None) -> np.ndarray:
    """Per detection of ``fm.matched``: how many of its image's copies keep it under the per-class
    limit, in the data set where image r appears ``image_weights[r]`` times (default once).

    Copies of a detection are listed together (the resampled data set lists each detection's copies
    where it stood), so the class's ranking is its ranking with each detection repeated: a detection
    keeps min(copies, max(0, K - copies of the detections ranked before it in its class))."""
    n = len(fm.order)
    w = np.ones(n, dtype=np.int64) if image_weights is None else np.asarray(image_weights, dtype=np.int64)[fm.image]
    before = np.cumsum(w) - w  # copies ranked before, over all classes ...
    if n:
        before -= np.repeat(before[fm.starts], np.diff(np.r_[fm.starts, n]))  # ... and within the class
    kept = np.empty(n, dtype=np.int64)
    kept[fm.order] = np.clip(fm.k - before, 0, w)
    return kept[fm.matched.src]


def pooled_precision(m: MatchedDetections, image_weights: np.ndarray | None = None,
                     detection_weights: np.ndarray | None = None) -> np.ndarray:
    """AP-Pool's precision (T, R): the detections of all classes in one ranking (area 'all'); -1
    everywhere when no class has a counted gt. ``image_weights`` / ``detection_weights`` as in
    ``fast_lvis_eval.accumulate`` (a resampled data set; the copies of image r sort as images with
    ids between r's and the next image's). Equal scores: image, copy, category, the pair's order."""
    n_thr, n_rec = len(IOU_THRS), len(REC_THRS)
    if detection_weights is not None:
        w = np.asarray(detection_weights, dtype=np.int64)
    elif image_weights is not None:
        w = np.asarray(image_weights, dtype=np.int64)[m.img]
    else:
        w = np.ones(len(m.cat), dtype=np.int64)
    counted_gt = ~m.gt_ignored[_AREA_ALL]
    gt_w = np.ones(len(m.gt_img), dtype=np.int64) if image_weights is None else np.asarray(image_weights)[m.gt_img]
    n_gt = int(gt_w[counted_gt].sum())
    if n_gt == 0:
        return -np.ones((n_thr, n_rec))
    rep = np.repeat(np.arange(len(w)), w)
    if not len(rep):
        return np.zeros((n_thr, n_rec))
    copy = np.arange(len(rep)) - np.repeat(np.cumsum(w) - w, w)
    # m's order within a pair is the pair's order (score, then input order): rep breaks the last ties
    order = rep[np.lexsort((rep, m.cat[rep], copy, m.img[rep], -m.score[rep]))]
    return _pooled_curve([true_false_positives(m, t, _AREA_ALL) for t in range(n_thr)], order, n_gt)


def _pooled_curve(flags: list[tuple[np.ndarray, np.ndarray]], order: np.ndarray | None, n_gt: int) -> np.ndarray:
    """Precision at the recall points (T, R) of one ranking: ``flags[t]`` = (tp, fp) per detection,
    taken in ``order`` (None: as given) against ``n_gt`` counted gts (> 0)."""
    starts, n_gt_seg = np.zeros(1, dtype=np.int64), np.array([n_gt])
    rows = []
    for tp, fp in flags:
        if order is not None:
            tp, fp = tp[order], fp[order]
        if not len(tp):
            rows.append(np.zeros(len(REC_THRS)))
            continue
        rows.append(_accumulate(tp, fp, starts, n_gt_seg, _recall_counts(n_gt_seg))[0][0])
    return np.stack(rows)


def pooled_precision_lvis(evaluator) -> np.ndarray:
    """AP-Pool's precision (T, R) from an official LVISEval run (``evaluator.eval_imgs``): the
    per-(image, class) matches of area 'all' of every class, ranked together by score (stable, in
    LVISPooledEval's order: image by image, class by class, each pair by score); -1 everywhere when
    no class has a counted gt."""
    p = evaluator.params
    n_area, n_img = len(p.area_rng), len(p.img_ids)
    area = p.area_rng_lbl.index("all")
    entries = [evaluator.eval_imgs[c * n_area * n_img + area * n_img + i] for i in range(n_img)
               for c in range(len(p.cat_ids))]
    entries = [e for e in entries if e is not None]
    n_thr = len(p.iou_thrs)
    n_gt = sum(int(np.count_nonzero(np.asarray(e["gt_ignore"]) == 0)) for e in entries)
    if n_gt == 0:
        return -np.ones((n_thr, len(p.rec_thrs)))
    scores = np.concatenate([np.asarray(e["dt_scores"], dtype=np.float64) for e in entries])
    order = np.argsort(-scores, kind="mergesort")
    matched = np.concatenate([np.asarray(e["dt_matches"]).reshape(n_thr, -1) for e in entries], axis=1)[:, order] != 0
    ignored = np.concatenate([np.asarray(e["dt_ignore"]).reshape(n_thr, -1) for e in entries], axis=1)[:, order] != 0
    return _pooled_curve([(matched[t] & ~ignored[t], ~matched[t] & ~ignored[t]) for t in range(n_thr)], None, n_gt)


def pool_ap(precision: np.ndarray) -> float:
    """AP-Pool on the 0-100 scale: the mean of the pooled precision (T, R); NaN without gt."""
    valid = precision[precision > -1]
    return 100.0 * float(valid.mean()) if valid.size else math.nan


@dataclass
class FixedPoolEvaluation:
    """AP-Fixed's LVIS results dict (``results``: 0-1, -1 for a group without gt, as LVISEval's) and
    precision (T, R, K, A), and AP-Pool's pooled precision (T, R)."""

    results: dict[str, float]
    precision: np.ndarray
    pool_precision: np.ndarray


# How each ``evaluation.evaluator`` computes AP-Fixed and AP-Pool: fn(gt_json, gt, detections,
# iou_type, k) -> FixedPoolEvaluation. The same names as stages.evaluation.lvis_eval.EVALUATORS.
FIXED_EVALUATORS: Registry[Callable[..., FixedPoolEvaluation]] = Registry("evaluation.evaluator")


@FIXED_EVALUATORS.register("fast")
def _fast(gt_json: str | Path, gt: dict[str, Any] | None, detections: Sequence[dict[str, Any]] | pd.DataFrame,
          iou_type: str, k: int) -> FixedPoolEvaluation:
    """All detections matched once (fast_lvis_eval), the per-class limit applied after matching."""
    from stages.data.lvis import load_lvis

    fm = match_fixed(gt if gt is not None else load_lvis(gt_json), detections, iou_type, k)
    kept = kept_copies(fm)
    precision, recall = accumulate(fm.matched, detection_weights=kept)
    return FixedPoolEvaluation(results=summarize(precision, recall, fm.matched.freq_groups, -1), precision=precision,
                               pool_precision=pooled_precision(fm.matched, detection_weights=kept))


@FIXED_EVALUATORS.register("lvis")
def _official(gt_json: str | Path, gt: dict[str, Any] | None, detections: Sequence[dict[str, Any]], iou_type: str,
              k: int) -> FixedPoolEvaluation:
    """Dave et al.'s recipe on the official lvis-api: LVISEval on the detections limited to the top
    ``k`` per class, with LVISResults(max_dets=-1) and params.max_dets = -1 (no per-image cap);
    AP-Pool pools LVISEval's own per-image matches (:func:`pooled_precision_lvis`)."""
    from stages.evaluation.lvis_eval import run_lvis_eval

    evaluator = run_lvis_eval(gt_json, limit_per_class(detections, k), iou_type, max_dets=-1)
    return FixedPoolEvaluation(results=dict(evaluator.results), precision=evaluator.eval["precision"],
                               pool_precision=pooled_precision_lvis(evaluator))


def fixed_pool_metrics(gt_json: str | Path, detections: Sequence[dict[str, Any]] | pd.DataFrame, iou_type: str, k: int,
                       evaluator: str = "fast", gt: dict[str, Any] | None = None) -> dict[str, float]:
    """AP-Fixed, APr-Fixed, APc-Fixed, APf-Fixed and AP-Pool (0-100; NaN for a group without gt) of
    ``detections`` (all the predictor wrote, no per-image cap) on the LVIS json ``gt_json`` (``gt``:
    the same, already loaded), with ``k`` detections per class, by the registered ``evaluator``."""
    run = FIXED_EVALUATORS.get(evaluator)(gt_json, gt, detections, iou_type, k)
    out = {}
    for key, lvis_key in zip(FIXED_KEYS, ("AP", "APr", "APc", "APf")):
        value = float(run.results[lvis_key])
        out[key] = math.nan if value < 0 else 100.0 * value
    out[POOL_KEY] = pool_ap(run.pool_precision)
    return out
