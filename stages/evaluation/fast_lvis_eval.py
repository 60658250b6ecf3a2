"""A vectorised LVIS evaluator that reproduces the official ``lvis`` 0.5.3 LVISEval number for number.

Why: LVISEval spends its time in Python per (image, category, area range) and per detection -- on
LVIS val (20k images x 1,203 classes x 300 detections) that is tens of minutes and tens of GB. Here
the IoUs are one ``pycocotools.mask.iou`` call per image, the greedy matching runs for all
(image, category) pairs, the 10 IoU thresholds and the 4 area ranges at once (numpy over those
axes, one step per detection rank within a pair), and the accumulation is one sort over all
detections plus segmented cumulative sums. Only pure numpy / pycocotools.

What is reproduced from lvis 0.5.3 (``results.py``, ``eval.py``, ``lvis.py``), quirks included:

* LVISResults keeps the ``max_dets`` highest scores per image (Python's stable ``sorted(...,
  reverse=True)``: ties keep the input order) *before* any other filtering, so dropped detections
  still count towards the cap.
* Detection area: ``w * h`` of the box when the first kept detection has a 'bbox' -- also for segm
  (detectron2-style results carry both) -- otherwise the RLE mask area, also for bbox. The 'area' a
  caller passes is overwritten. A detection without a mask is scored for segm with its box as the
  mask (polygon); one without a box for bbox with its mask's box (``toBbox``).
* ``get_ann_ids`` keeps only annotations/detections with ``0 < area < inf`` and a category of the
  ground truth: gt with area 0 vanish (also from the image's positive set), so do empty boxes.
* A detection is evaluated only if its category has gt in its image or is in the image's
  ``neg_category_ids``; unmatched detections of a ``not_exhaustive_category_ids`` class are ignored.
* gt '_ignore' = 'ignore' flag or area outside the range (both bounds inclusive: area 1024 is small
  *and* medium); detections outside the range are ignored only when unmatched.
* Matching per threshold ``min(t, 1 - 1e-10)``, detections by score (stable), gts non-ignored first;
  no crowd rule: an ignored gt, too, takes one detection only. Among free gts with ``iou >= thr`` the
  highest IoU wins, a tie goes to the *later* gt; an ignored gt only if no regular gt qualifies.
* A match is recorded as the gt's id, and "matched" is tested as ``id != 0``: a detection matched to
  a gt with id 0 counts as unmatched (the gt is consumed all the same).
* Accumulation per category and area range: detections ordered by score with ties by image id, then
  input order (mergesort over per-image lists); ignored detections stay in the cumulative arrays;
  precision ``tp / (fp + tp + eps)`` made monotone, read at the 101 recall points with
  ``searchsorted(left)`` against ``np.linspace`` points (0.35000000000000003, not 0.35: a recall of
  exactly 0.35 misses that point); precision 0 past the highest recall; -1 where no gt.
* Summaries: means over entries > -1; -1 for an empty group (e.g. APr without rare classes).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pycocotools.mask as mask_util

from stages.data.lvis import segmentation_rle
from stages.data.masks import box_polygon, mask_box
from stages.utils.watchdog import guarded

# Exactly LVISEval's Params (np.linspace, not arange: the recall points are compared bit for bit).
IOU_THRS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
AREA_RNG = ((0**2, 1e5**2), (0**2, 32**2), (32**2, 96**2), (96**2, 1e5**2))
AREA_LBL = ("all", "small", "medium", "large")
FREQ_LBL = ("r", "c", "f")


@dataclass
class FastLVISResult:
    """LVISEval's outputs: ``precision`` (T=10, R=101, K, A=4) and ``recall`` (T, K, A), -1 where a
    category has no gt in that area range; ``results`` as LVISEval.results (0-1 scale, -1 for a group
    without gt; the AR keys too). ``eval`` and ``params`` mirror the LVISEval attributes, so
    ``stages.lvis_eval.summary_metrics`` and ``per_class_ap`` accept this object as they are."""

    precision: np.ndarray
    recall: np.ndarray
    cat_ids: list[int]
    results: dict[str, float]
    iou_type: str
    max_dets: int
    freq_groups: list[list[int]] = field(default_factory=list)
    categories: list[dict[str, Any]] = field(default_factory=list)

    @property
    def eval(self) -> dict[str, Any]:
        return {"precision": self.precision, "recall": self.recall, "params": self.params,
                "counts": list(self.precision.shape)}

    @property
    def params(self) -> SimpleNamespace:
        return SimpleNamespace(cat_ids=self.cat_ids, iou_thrs=IOU_THRS, rec_thrs=REC_THRS, area_rng=[list(r) for r in AREA_RNG],
                               area_rng_lbl=list(AREA_LBL), max_dets=self.max_dets, iou_type=self.iou_type,
                               img_count_lbl=list(FREQ_LBL))

    @property
    def lvis_gt(self) -> SimpleNamespace:
        """Only ``.dataset["categories"]``, which ``per_class_ap`` reads when not given categories."""
        return SimpleNamespace(dataset={"categories": self.categories})


# -- ground truth --------------------------------------------------------------------------------------------------

class _GroundTruth:
    """The gt as arrays, filtered as LVISEval._prepare sees it (images, categories, 0 < area < inf)."""

    def __init__(self, gt: dict[str, Any]) -> None:
        images = {img["id"]: img for img in gt["images"]}
        cats = {c["id"]: c for c in gt["categories"]}
        self.img_ids = np.array(sorted(images), dtype=np.int64)
        self.cat_ids = np.array(sorted(cats), dtype=np.int64)
        self.categories = [cats[c] for c in self.cat_ids.tolist()]
        self.freq_groups: list[list[int]] = [[] for _ in FREQ_LBL]
        for k, cat in enumerate(self.categories):
            self.freq_groups[FREQ_LBL.index(cat["frequency"])].append(k)
        img_list = [images[i] for i in self.img_ids.tolist()]
        self.heights = [img.get("height") for img in img_list]
        self.widths = [img.get("width") for img in img_list]
        self.neg_codes = self._codes(img_list, "neg_category_ids")
        self.nel_codes = self._codes(img_list, "not_exhaustive_category_ids")

        anns = gt["annotations"]
        n = len(anns)
        img = self.img_rank(np.fromiter((a["image_id"] for a in anns), dtype=np.int64, count=n), strict=False)
        cat = self.cat_index(np.fromiter((a["category_id"] for a in anns), dtype=np.int64, count=n))
        area = np.fromiter((a["area"] for a in anns), dtype=np.float64, count=n)
        keep = np.flatnonzero((img >= 0) & (cat >= 0) & (area > 0) & (area < np.inf))  # get_ann_ids
        self.anns = [anns[i] for i in keep.tolist()]  # dataset order: the order LVIS sees within an image
        self.img, self.cat, self.area = img[keep], cat[keep], area[keep]
        self.ann_id = np.array([a["id"] for a in self.anns], dtype=np.int64)
        self.ignore = np.array([bool(a.get("ignore", 0)) for a in self.anns], dtype=bool)
        self.codes = self.img * len(self.cat_ids) + self.cat
        self.pos_codes = np.unique(self.codes)
        # gts grouped by image (stable: dataset order inside an image)
        self.by_image = np.argsort(self.img, kind="stable")
        self._rles: dict[int, Any] = {}

    def _codes(self, img_list: list[dict[str, Any]], key: str) -> np.ndarray:
        ranks, cids = [], []
        for r, img in enumerate(img_list):
            ids = img.get(key) or []
            ranks.extend([r] * len(ids))
            cids.extend(ids)
        cat = self.cat_index(np.asarray(cids, dtype=np.int64))
        ranks = np.asarray(ranks, dtype=np.int64)
        return np.unique(ranks[cat >= 0] * len(self.cat_ids) + cat[cat >= 0])

    def img_rank(self, image_ids: np.ndarray, strict: bool = True) -> np.ndarray:
        """Position in the sorted image ids; -1 for an unknown id (a ValueError if ``strict``)."""
        pos = np.searchsorted(self.img_ids, image_ids).clip(max=max(len(self.img_ids) - 1, 0))
        known = (self.img_ids[pos] == image_ids) if len(self.img_ids) else np.zeros(len(image_ids), bool)
        if strict and not known.all():
            unknown = np.unique(image_ids[~known])
            raise ValueError(f"detections name {len(unknown)} image ids absent from the ground truth, e.g. "
                             f"{unknown[:5].tolist()}")
        return np.where(known, pos, -1)

    def cat_index(self, category_ids: np.ndarray) -> np.ndarray:
        """Position in the sorted category ids (params.cat_ids); -1 for a category not in the gt."""
        if not len(self.cat_ids):
            return np.full(len(category_ids), -1, dtype=np.int64)
        pos = np.searchsorted(self.cat_ids, category_ids).clip(max=len(self.cat_ids) - 1)
        return np.where(self.cat_ids[pos] == category_ids, pos, -1)

    def boxes(self, idx: np.ndarray) -> np.ndarray:
        return np.array([self.anns[i]["bbox"] for i in idx.tolist()], dtype=np.float64).reshape(-1, 4)

    def rles(self, idx: np.ndarray) -> list[Any]:
        """Compressed RLE of each gt (LVIS.ann_to_rle), made once per gt. Single-polygon gts of one image
        are rasterised in one pycocotools call (the RLE of one polygon is what ``merge`` of it gives)."""
        todo = np.unique(idx[[i not in self._rles for i in idx.tolist()]])
        if len(todo):
            todo = todo[np.argsort(self.img[todo], kind="stable")]
            bounds = np.r_[_segment_starts(self.img[todo]), len(todo)]
            for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
                r = int(self.img[todo[s]])
                h, w = self.heights[r], self.widths[r]
                single, polygons = [], []
                with guarded(f"pycocotools masks of the ground truth of image {int(self.img_ids[r])}, annotations "
                             f"{self.ann_id[todo[s:e]][:10].tolist()}"):
                    for i in todo[s:e].tolist():
                        seg = self.anns[i]["segmentation"]
                        # a 4-number list is read as a box by frPyObjects when it comes first: never batched
                        if isinstance(seg, list) and len(seg) == 1 and len(seg[0]) > 4:
                            single.append(i)
                            polygons.append(seg[0])
                        else:
                            self._rles[i] = segmentation_rle(seg, h, w)
                    if polygons:
                        self._rles.update(zip(single, mask_util.frPyObjects(polygons, h, w)))
        return [self._rles[i] for i in idx.tolist()]


# -- detections ----------------------------------------------------------------------------------------------------

class _Records:
    """A list of LVIS result dicts; boxes and masks read only for the detections that need them."""

    def __init__(self, dets: Sequence[dict[str, Any]]) -> None:
        n = len(dets)
        self.dets = dets
        self.image_id = np.fromiter(map(itemgetter("image_id"), dets), dtype=np.int64, count=n)
        self.category_id = np.fromiter(map(itemgetter("category_id"), dets), dtype=np.int64, count=n)
        self.score = np.fromiter(map(itemgetter("score"), dets), dtype=np.float64, count=n)

    def has_box(self, i: int) -> bool:
        return "bbox" in self.dets[i]

    def boxes(self, idx: np.ndarray) -> np.ndarray:
        """The boxes; a detection without one has its mask's (LVISResults' toBbox)."""
        try:
            boxes = map(itemgetter("bbox"), map(self.dets.__getitem__, idx.tolist()))
            flat = np.fromiter(itertools.chain.from_iterable(boxes), dtype=np.float64, count=4 * len(idx))
        except KeyError:
            return np.array([self._box(i) for i in idx.tolist()], dtype=np.float64).reshape(-1, 4)
        return flat.reshape(-1, 4)

    def _box(self, i: int) -> list[float]:
        det = self.dets[i]
        if "bbox" in det:
            return det["bbox"]
        if "segmentation" not in det:
            raise ValueError(f"detection #{i} has neither 'bbox' nor 'segmentation'")
        with guarded(f"pycocotools toBbox of the mask of detection #{i} (image {det.get('image_id')})"):
            return mask_box(det["segmentation"])

    def segms(self, idx: np.ndarray) -> list[Any]:
        """The masks; a detection without one has its box as a polygon (LVISResults)."""
        try:
            return list(map(itemgetter("segmentation"), map(self.dets.__getitem__, idx.tolist())))
        except KeyError:
            return [self._segm(i) for i in idx.tolist()]

    def _segm(self, i: int) -> Any:
        det = self.dets[i]
        if "segmentation" in det:
            return det["segmentation"]
        if "bbox" not in det:
            raise ValueError(f"detection #{i} has neither 'bbox' nor 'segmentation'")
        return box_polygon(det["bbox"])


class _TableRecords:
    """Detections as the columns of ``stages.data.detections.results_frame`` (image_id, category_id,
    score, x, y, w, h, rle_counts, rle_height, rle_width): the same answers as :class:`_Records` for
    the same detections, without a Python dict per detection -- at LVIS val size (6 million) the
    dicts alone take 3 GB with boxes and 6 GB with masks. Every row has a box, as in the dict form
    the table is made from."""

    def __init__(self, table: pd.DataFrame) -> None:
        missing = {"image_id", "category_id", "score", "x", "y", "w", "h"} - set(table.columns)
        if missing:
            raise ValueError(f"the detections table lacks the columns {sorted(missing)} (stages.data.detections.results_frame)")
        self.table = table
        self.image_id = table["image_id"].to_numpy(dtype=np.int64)
        self.category_id = table["category_id"].to_numpy(dtype=np.int64)
        self.score = table["score"].to_numpy(dtype=np.float64)

    def has_box(self, i: int) -> bool:
        return True

    def boxes(self, idx: np.ndarray) -> np.ndarray:
        return np.stack([self.table[c].to_numpy(dtype=np.float64)[idx] for c in ("x", "y", "w", "h")], axis=1)

    def segms(self, idx: np.ndarray) -> list[Any]:
        if "rle_counts" not in self.table.columns:
            raise ValueError("the detections table has no 'rle_counts' column, needed for segm evaluation")
        # Python strings for the rows asked for only: an Arrow-backed column (read_parquet with
        # dtype_backend="pyarrow") then holds 6 million masks in one buffer, not 6 million objects
        counts = self.table["rle_counts"].iloc[idx].tolist()
        heights = self.table["rle_height"].to_numpy(dtype=np.int64)[idx].tolist()
        widths = self.table["rle_width"].to_numpy(dtype=np.int64)[idx].tolist()
        if any(not isinstance(c, (str, bytes, list)) for c in counts):  # None, NaN or pd.NA: no mask
            raise ValueError("detections lack 'segmentation' (rle_counts), needed for segm evaluation")
        return [{"size": [h, w], "counts": c} for c, h, w in zip(counts, heights, widths)]


def _mask_areas(rles: list[Any]) -> np.ndarray:
    """pycocotools ``area`` of each RLE, in chunks: pycocotools 2.0.11 overflows on lists of 256 or more."""
    chunks = []
    for i in range(0, len(rles), 255):
        with guarded(f"pycocotools mask areas of detections {i}..{min(i + 255, len(rles)) - 1} (in area order)"):
            chunks.append(mask_util.area(rles[i:i + 255]))
    return np.concatenate(chunks).astype(np.float64) if chunks else np.zeros(0)


def _segment_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Start of each run of equal values in a sorted array."""
    if not len(sorted_keys):
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])


def _top_per_image(img: np.ndarray, score: np.ndarray, max_dets: int) -> tuple[np.ndarray, int]:
    """LVISResults.limit_dets_per_image: the kept input indices (input order), and the index of the
    first kept detection (result_anns[0], whose keys decide how LVISResults computes the area)."""
    n = len(img)
    if max_dets < 0 or n == 0 or np.bincount(img).max() <= max_dets:
        return np.arange(n), 0  # nothing to cut (the usual case: detectors already cap per image)
    order = np.lexsort((-score, img))  # stable: equal scores keep the input order, as sorted(reverse=True)
    starts = _segment_starts(img[order])
    lengths = np.diff(np.r_[starts, n])
    rank = np.arange(n) - np.repeat(starts, lengths)
    kept = np.sort(order[rank < max_dets])
    # result_anns[0]: the first image in input order; its list is re-sorted only when it was cut
    group = np.searchsorted(img[order][starts], img[0])
    first = int(order[starts[group]]) if lengths[group] > max_dets else 0
    return kept, first


# -- matching ------------------------------------------------------------------------------------------------------

def _edges(gt: _GroundTruth, src: _Records, d: dict[str, np.ndarray], iou_type: str
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(detection, gt, IoU) of every same-category pair with IoU >= 0.5 (the lowest threshold: no
    other pair can ever match). Boxes: one pycocotools ``iou`` call per image (a full matrix is
    cheap). Masks: one call per (image, category), since an RLE IoU costs per pair and only
    same-category pairs can match (4x fewer pairs on LVIS-like data, 1.7x faster overall)."""
    rel = np.flatnonzero(np.isin(d["code"], gt.pos_codes))  # detections whose (image, class) has gt
    group_key = d["img"] if iou_type == "bbox" else d["code"]  # code = img * K + cat: images stay together
    rel = rel[np.argsort(group_key[rel], kind="stable")]
    starts = _segment_starts(group_key[rel])
    bounds = np.r_[starts, len(rel)]
    # each group's gts (dataset order within an image, which a stable sort keeps), as index ranges
    group_keys = group_key[rel[starts]]
    if iou_type == "bbox":
        gt_order, gt_keys = gt.by_image, gt.img[gt.by_image]
        det_objs, gt_objs = d["boxes"][rel], gt.boxes(gt_order)
    else:
        gt_order = np.argsort(gt.codes, kind="stable")
        gt_keys = gt.codes[gt_order]
        det_objs = _compressed_rles(src.segms(d["src"][rel]), d["img"][rel], gt)
        needed = np.flatnonzero(np.isin(gt_keys, group_keys))  # only gts that some detection may match
        gt_objs = [None] * len(gt_order)
        for k, rle in zip(needed.tolist(), gt.rles(gt_order[needed])):
            gt_objs[k] = rle
    gt_lo = np.searchsorted(gt_keys, group_keys, side="left").tolist()
    gt_hi = np.searchsorted(gt_keys, group_keys, side="right").tolist()
    lo = IOU_THRS.min()
    e_det, e_gt, e_iou = [], [], []
    for s, e, g0, g1 in zip(bounds[:-1].tolist(), bounds[1:].tolist(), gt_lo, gt_hi):
        gsel = gt_order[g0:g1]
        dsel = rel[s:e]
        with guarded(f"pycocotools.mask.iou on image {int(gt.img_ids[d['img'][dsel[0]]])}, detections "
                     f"{d['src'][dsel][:10].tolist()} x annotations {gt.ann_id[gsel][:10].tolist()}"):
            ious = np.asarray(mask_util.iou(det_objs[s:e], gt_objs[g0:g1], np.zeros(len(gsel), dtype=np.uint8))).reshape(len(dsel), len(gsel))
        if iou_type == "bbox":
            di, gi = np.nonzero((d["cat"][dsel][:, None] == gt.cat[gsel][None, :]) & (ious >= lo))
        else:
            di, gi = np.nonzero(ious >= lo)
        e_det.append(dsel[di])
        e_gt.append(gsel[gi])
        e_iou.append(ious[di, gi])
    if not e_det:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    return np.concatenate(e_det), np.concatenate(e_gt), np.concatenate(e_iou)


def _compressed_rles(segms: list[Any], img: np.ndarray, gt: _GroundTruth) -> list[Any]:
    """Detection masks as pycocotools takes them in ``iou``: compressed RLE as given, the rest
    (polygons, uncompressed RLE) converted at their image's size."""
    segms = list(segms)
    # compressed: a dict whose counts are a string (or bytes); tested inline, a call per detection costs more
    convert = [not (isinstance(m, dict) and not isinstance(m.get("counts"), list)) for m in segms]
    for k in np.flatnonzero(convert).tolist():
        r = int(img[k])
        with guarded(f"pycocotools conversion of a detection mask on image {int(gt.img_ids[r])}"):
            segms[k] = segmentation_rle(segms[k], gt.heights[r], gt.widths[r])
    return segms


def _match(e_det: np.ndarray, e_gt: np.ndarray, e_iou: np.ndarray, codes: np.ndarray, gt_ig: np.ndarray, n_gt: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching of LVISEval.evaluate_img for every (image, class) pair, threshold and area range
    at once. Detections (indices in score order) with candidate edges; step k handles the k-th such
    detection of every pair. Returns the detections that have edges and their matched gt (T, A, n),
    -1 for none."""
    n_thr, n_area = len(IOU_THRS), gt_ig.shape[0]
    dets = np.unique(e_det)  # ascending = accumulation (score) order
    if not len(dets):
        return dets, np.full((n_thr, n_area, 0), -1, dtype=np.int64)
    # rank of each detection within its (image, class) pair, counting only detections with edges
    by_pair = np.lexsort((dets, codes[dets]))
    pair_starts = _segment_starts(codes[dets][by_pair])
    rank = np.empty(len(dets), dtype=np.int64)
    rank[by_pair] = np.arange(len(dets)) - np.repeat(pair_starts, np.diff(np.r_[pair_starts, len(dets)]))
    local = np.searchsorted(dets, e_det)
    order = np.lexsort((local, rank[local]))  # by step, then detection
    e_gt, e_iou, local = e_gt[order], e_iou[order], local[order]
    step = rank[local]
    # priority of an edge, per area range: regular gt before ignored, then IoU, then the later gt
    prio_order = np.stack([np.lexsort((e_gt, e_iou, ~gt_ig[a, e_gt])) for a in range(n_area)])  # (A, E)
    prio = np.empty_like(prio_order)
    np.put_along_axis(prio, prio_order, np.arange(len(e_gt))[None, :] + 1, axis=1)  # 1..E, 0 = not eligible

    thr = np.minimum(IOU_THRS, 1 - 1e-10)[:, None]
    taken = np.zeros((n_thr, n_area, n_gt), dtype=bool)
    matched = np.full((n_thr, n_area, len(dets)), -1, dtype=np.int64)
    step_bounds = np.r_[_segment_starts(step), len(step)]
    det_starts = _segment_starts(local)
    det_bounds = np.searchsorted(det_starts, step_bounds)
    for k in range(len(step_bounds) - 1):
        s0, s1 = step_bounds[k], step_bounds[k + 1]
        g = e_gt[s0:s1]
        eligible = (e_iou[s0:s1][None, :] >= thr)[:, None, :] & ~taken[:, :, g]  # (T, A, edges)
        value = np.where(eligible, prio[None, :, s0:s1], 0)
        starts = det_starts[det_bounds[k]:det_bounds[k + 1]]
        best = np.maximum.reduceat(value, starts - s0, axis=2)  # (T, A, detections of this step)
        ti, ai, di = np.nonzero(best)
        won = e_gt[prio_order[ai, best[ti, ai, di] - 1]]
        taken[ti, ai, won] = True
        matched[ti, ai, local[starts[di]]] = won
    return dets, matched


# -- accumulation --------------------------------------------------------------------------------------------------

def _recall_counts(n_gt: np.ndarray) -> np.ndarray:
    """For each count of gt n and recall point r: the least integer m with float(m / n) >= r, i.e. the
    tp count at which LVIS's ``searchsorted(tp / n, r, 'left')`` lands (exact, float rounding included)."""
    n = np.maximum(n_gt, 1)[:, None]
    m = np.ceil(REC_THRS[None, :] * n).astype(np.int64)
    for _ in range(4):
        down = (m > 0) & ((m - 1) / n >= REC_THRS[None, :])
        up = m / n < REC_THRS[None, :]
        if not (down.any() or up.any()):
            break
        m = m - down + up
    return m


def _accumulate(tp: np.ndarray, fp: np.ndarray, seg_starts: np.ndarray, n_gt_seg: np.ndarray, m_seg: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """One (threshold, area) row of LVISEval.accumulate for all categories: precision at the recall
    points (S, R) and recall (S,) per segment (category with detections), detections in score order."""
    n = len(tp)
    seg_len = np.diff(np.r_[seg_starts, n])
    ctp, cfp = np.cumsum(tp, dtype=np.int64), np.cumsum(fp, dtype=np.int64)
    base_tp = np.where(seg_starts > 0, ctp[seg_starts - 1], 0)  # counts before each segment
    base_fp = np.where(seg_starts > 0, cfp[seg_starts - 1], 0)
    tp_f = (ctp - np.repeat(base_tp, seg_len)).astype(np.float64)
    fp_f = (cfp - np.repeat(base_fp, seg_len)).astype(np.float64)
    pr = np.empty(n + 1)  # + a 0 sentinel for reduceat at the very end
    pr[n] = 0.0
    np.divide(tp_f, fp_f + tp_f + np.spacing(1), out=pr[:n])  # LVIS: tp / (fp + tp + eps)
    seg_end = np.r_[seg_starts[1:], n]
    tp_in_seg = ctp[seg_end - 1] - base_tp
    recall = tp_in_seg / np.maximum(n_gt_seg, 1)
    # first position of the segment where its tp count reaches m: the segment's m-th true positive,
    # read from the positions of all tps (a gather, not a search); m = 0 is the segment's start, and
    # m beyond the segment's tps is seg_end (past the last recall reached)
    pos = np.where(m_seg < 1, seg_starts[:, None], seg_end[:, None])
    inside = (m_seg >= 1) & (m_seg <= tp_in_seg[:, None])
    pos[inside] = np.flatnonzero(tp)[(base_tp[:, None] + m_seg - 1)[inside]]
    # precision made monotone (max to the right), read at pos: block maxima between read points,
    # then a running max over the blocks from the right; blocks tile each segment as REC_THRS[0] = 0.
    flat = pos.ravel()
    block = np.maximum.reduceat(pr, flat)
    block[np.r_[flat[1:] == flat[:-1], flat[-1] >= n]] = 0.0
    block = block.reshape(pos.shape)
    mono = np.maximum.accumulate(block[:, ::-1], axis=1)[:, ::-1]
    return np.where(pos < seg_end[:, None], mono, 0.0), recall


# -- summaries -----------------------------------------------------------------------------------------------------

def _summarize(precision: np.ndarray, recall: np.ndarray, freq_groups: list[list[int]], summary_type: str,
               iou_thr: float | None = None, area_rng: str = "all", freq_group_idx: int | None = None) -> float:
    """LVISEval._summarize, statement for statement (mean of the entries > -1, -1 if none)."""
    aidx = [idx for idx, lbl in enumerate(AREA_LBL) if lbl == area_rng]
    if summary_type == "ap":
        s = precision
        if iou_thr is not None:
            s = s[np.where(iou_thr == IOU_THRS)[0]]
        s = s[:, :, freq_groups[freq_group_idx], aidx] if freq_group_idx is not None else s[:, :, :, aidx]
    else:
        s = recall
        if iou_thr is not None:
            s = s[np.where(iou_thr == IOU_THRS)[0]]
        s = s[:, :, aidx]
    valid = s[s > -1]
    return -1.0 if len(valid) == 0 else float(np.mean(valid))


def summarize(precision: np.ndarray, recall: np.ndarray, freq_groups: list[list[int]], max_dets: int) -> dict[str, float]:
    """LVISEval.summarize's results dict (AP..APf, then AR@max_dets, ARs/ARm/ARl@max_dets)."""
    args = (precision, recall, freq_groups)
    out = {
        "AP": _summarize(*args, "ap"),
        "AP50": _summarize(*args, "ap", iou_thr=0.50),
        "AP75": _summarize(*args, "ap", iou_thr=0.75),
        "APs": _summarize(*args, "ap", area_rng="small"),
        "APm": _summarize(*args, "ap", area_rng="medium"),
        "APl": _summarize(*args, "ap", area_rng="large"),
        "APr": _summarize(*args, "ap", freq_group_idx=0),
        "APc": _summarize(*args, "ap", freq_group_idx=1),
        "APf": _summarize(*args, "ap", freq_group_idx=2),
        f"AR@{max_dets}": _summarize(*args, "ar"),
    }
    for area_rng in ("small", "medium", "large"):
        out[f"AR{area_rng[0]}@{max_dets}"] = _summarize(*args, "ar", area_rng=area_rng)
    return out


# -- the evaluator -------------------------------------------------------------------------------------------------

def _detections(gt: _GroundTruth, src: _Records, iou_type: str, max_dets: int) -> dict[str, np.ndarray]:
    """The detections LVISEval evaluates, as arrays in accumulation order: by category, score
    (descending), image id, input order. Keys: src (input index), img (rank), cat (index), code
    (img * K + cat), area, boxes (zeros when the area came from masks), nel (not exhaustive)."""
    img_all = gt.img_rank(src.image_id)
    kept, first = _top_per_image(img_all, src.score, max_dets)
    # class / positive-or-negative filters first: boxes and masks are read for the survivors only
    cat = gt.cat_index(src.category_id[kept])
    img = img_all[kept]
    code = img * len(gt.cat_ids) + cat
    keep = (cat >= 0) & (np.isin(code, gt.pos_codes) | np.isin(code, gt.neg_codes))
    kept, img, cat, code = kept[keep], img[keep], cat[keep], code[keep]
    boxes = np.zeros((len(kept), 4))
    if len(kept) and not src.has_box(first):
        area = _mask_areas(src.segms(kept))  # LVISResults' mask branch: the mask's area, for bbox too
        if iou_type == "bbox":
            boxes = src.boxes(kept)  # a missing box is the mask's
    elif len(kept):
        boxes = src.boxes(kept)
        area = boxes[:, 2] * boxes[:, 3]  # LVISResults' box branch: w * h, for segm too
    else:
        area = np.zeros(0)
    order = np.flatnonzero((area > 0) & (area < np.inf))  # get_ann_ids
    order = order[np.lexsort((kept[order], img[order], -src.score[kept[order]], cat[order]))]
    kept, img, cat, code, area, boxes = kept[order], img[order], cat[order], code[order], area[order], boxes[order]
    return {"src": kept, "img": img, "cat": cat, "code": code, "area": area, "boxes": boxes,
            "nel": np.isin(code, gt.nel_codes)}


@dataclass
class MatchedDetections:
    """LVISEval's matching of one model's detections to a ground truth: all that accumulation needs.

    Detections are in accumulation order (category, score descending, image id, input order);
    ``cat``/``img``/``score``: their category index, image rank and score; ``src``: their index in the
    detections as given (a per-class limit counts in that order). ``dets``: the detections with candidate
    gts, with ``hit_counted`` / ``hit_ignored`` (T, A, len(dets)): matched to a counted / an ignored
    gt; ``det_out`` (A, N): outside the area range or of a not-exhaustive class (ignored when
    unmatched). ``gt_img``/``gt_cat``/``gt_ignored`` (A, G): the gts LVISEval keeps."""

    cat: np.ndarray
    img: np.ndarray
    score: np.ndarray
    src: np.ndarray
    dets: np.ndarray
    hit_counted: np.ndarray
    hit_ignored: np.ndarray
    det_out: np.ndarray
    gt_img: np.ndarray
    gt_cat: np.ndarray
    gt_ignored: np.ndarray
    n_images: int
    cat_ids: list[int]
    freq_groups: list[list[int]]
    categories: list[dict[str, Any]]


def match_detections(gt: dict[str, Any], detections: Sequence[dict[str, Any]] | pd.DataFrame, iou_type: str,
                     max_dets: int = 300) -> MatchedDetections:
    """LVISEval's evaluate step (which detection matches which gt, per IoU threshold and area range)."""
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', found {iou_type!r}")
    g = _GroundTruth(gt)
    src = _TableRecords(detections) if isinstance(detections, pd.DataFrame) else _Records(detections)
    d = _detections(g, src, iou_type, max_dets)
    n_area = len(AREA_RNG)
    lo = np.array([r[0] for r in AREA_RNG], dtype=np.float64)[:, None]
    hi = np.array([r[1] for r in AREA_RNG], dtype=np.float64)[:, None]

    gt_ig = g.ignore[None, :] | (g.area[None, :] < lo) | (g.area[None, :] > hi)  # (A, G)
    e_det, e_gt, e_iou = _edges(g, src, d, iou_type)
    dets, matched = _match(e_det, e_gt, e_iou, d["code"], gt_ig, len(g.area))
    hit = matched >= 0
    won = np.maximum(matched, 0)
    hit_ignored = hit & gt_ig[np.arange(n_area)[None, :, None], won]
    hit_counted = hit & (g.ann_id[won] != 0)  # LVIS tests dt_m (the gt id) against 0
    det_out = (d["area"][None, :] < lo) | (d["area"][None, :] > hi) | d["nel"][None, :]  # (A, N)
    return MatchedDetections(cat=d["cat"], img=d["img"], score=src.score[d["src"]], src=d["src"], dets=dets, hit_counted=hit_counted, hit_ignored=hit_ignored,
                             det_out=det_out, gt_img=g.img, gt_cat=g.cat, gt_ignored=gt_ig, n_images=len(g.img_ids),
                             cat_ids=g.cat_ids.tolist(), freq_groups=g.freq_groups, categories=g.categories)


def _resampled_order(m: MatchedDetections, image_weights: np.ndarray, detection_weights: np.ndarray | None = None
                     ) -> np.ndarray:
    """The detections of a data set in which image r appears ``image_weights[r]`` times, as indices
    into ``m``'s detections, in LVISEval's accumulation order: the copies of an image sit next to
    each other among equal scores, so a run of equal-score detections of one image repeats as a
    whole (copy 1's run, then copy 2's), exactly as LVISEval orders the copies' detections.
    ``detection_weights``: a detection sits in the first that many copies of its image only (a
    per-class limit on the resampled data set cuts copies of its lowest-ranked detections)."""
    n = len(m.cat)
    w = (np.asarray(image_weights, dtype=np.int64)[m.img] if detection_weights is None
         else np.asarray(detection_weights, dtype=np.int64))
    rep = np.repeat(np.arange(n), w)
    copy = np.arange(len(rep)) - np.repeat(np.cumsum(w) - w, w)
    change = np.r_[True, (m.cat[1:] != m.cat[:-1]) | (m.score[1:] != m.score[:-1]) | (m.img[1:] != m.img[:-1])]
    run = np.cumsum(change)
    return rep[np.lexsort((rep, copy, run[rep]))]


def true_false_positives(m: MatchedDetections, t: int, a: int) -> tuple[np.ndarray, np.ndarray]:
    """LVISEval's tps / fps of every detection of ``m`` (accumulation order) at IoU threshold index
    ``t`` and area range index ``a``: matched to a counted gt and not ignored / neither matched nor
    ignored (a detection outside the area range or of a not-exhaustive class is ignored when unmatched)."""
    counted = np.zeros(len(m.cat), dtype=bool)
    counted[m.dets] = m.hit_counted[t, a]
    ignored = np.zeros(len(m.cat), dtype=bool)
    ignored[m.dets] = m.hit_ignored[t, a]
    ignored |= ~counted & m.det_out[a]
    return counted & ~ignored, ~(counted | ignored)


def accumulate(m: MatchedDetections, image_weights: np.ndarray | None = None, areas: Sequence[int] | None = None,
               detection_weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """LVISEval's accumulate step: precision (T, R, K, A) and recall (T, K, A), -1 where a category
    has no gt. ``image_weights`` (an integer per image rank) evaluates the data set in which every
    image appears that many times -- a bootstrap draw -- without matching again: matching is per
    image, so only the accumulation changes. ``detection_weights`` (an integer per detection of
    ``m``, at most its image's weight): the detection is in only the first that many copies of its
    image -- what a per-class limit leaves of a resampled data set; within an (image, class) pair
    the copies kept must be a prefix of the score order, so that the matching stays valid.
    ``areas``: the area ranges to fill (default all; the others stay -1)."""
    n_cat, n_area, n_thr, n_rec = len(m.cat_ids), len(AREA_RNG), len(IOU_THRS), len(REC_THRS)
    areas = range(n_area) if areas is None else areas
    if detection_weights is not None and image_weights is None:
        image_weights = np.ones(m.n_images, dtype=np.int64)
    order = None if image_weights is None else _resampled_order(m, image_weights, detection_weights)
    gt_w = None if image_weights is None else np.asarray(image_weights, dtype=np.int64)[m.gt_img]
    cat = m.cat if order is None else m.cat[order]
    precision = -np.ones((n_thr, n_rec, n_cat, n_area))
    recall = -np.ones((n_thr, n_cat, n_area))
    n = len(cat)
    seg_starts = _segment_starts(cat)
    seg_cat = cat[seg_starts]
    for a in areas:
        kept = ~m.gt_ignored[a]
        n_gt = np.bincount(m.gt_cat[kept], weights=None if gt_w is None else gt_w[kept],
                           minlength=n_cat).astype(np.int64)
        defined = n_gt > 0
        precision[:, :, defined, a] = 0.0
        recall[:, defined, a] = 0.0
        if not n:
            continue
        n_gt_seg = n_gt[seg_cat]
        m_seg = _recall_counts(n_gt_seg)
        seg_defined = n_gt_seg > 0
        for t in range(n_thr):
            tp, fp = true_false_positives(m, t, a)
            if order is not None:
                tp, fp = tp[order], fp[order]
            pr, rc = _accumulate(tp, fp, seg_starts, n_gt_seg, m_seg)
            precision[t, :, seg_cat[seg_defined], a] = pr[seg_defined]
            recall[t, seg_cat[seg_defined], a] = rc[seg_defined]
    return precision, recall


def fast_lvis_eval(gt: dict[str, Any], detections: Sequence[dict[str, Any]] | pd.DataFrame, iou_type: str,
                   max_dets: int = 300) -> FastLVISResult:
    """LVISEval(gt, LVISResults(gt, detections, max_dets), iou_type).run(), vectorised.

    ``gt``: the loaded LVIS json (images with neg_category_ids / not_exhaustive_category_ids,
    annotations, categories with 'frequency'). ``detections``: LVIS result dicts (image_id,
    category_id, score, bbox [x, y, w, h], segmentation RLE for segm), or the same detections as a
    ``results_frame`` table (``pd.read_parquet`` of a detections parquet): the same numbers, without
    a dict per detection (at LVIS val size, gigabytes). ``iou_type``: 'bbox' or 'segm'. Neither input
    is modified.
    An empty detection list gives what LVISEval gives when nothing matches (0 where there is gt).
    """
    matched = match_detections(gt, detections, iou_type, max_dets)
    precision, recall = accumulate(matched)
    return FastLVISResult(precision=precision, recall=recall, cat_ids=matched.cat_ids,
                          results=summarize(precision, recall, matched.freq_groups, max_dets), iou_type=iou_type,
                          max_dets=max_dets, freq_groups=matched.freq_groups, categories=matched.categories)
