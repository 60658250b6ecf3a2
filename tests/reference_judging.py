"""The judging rule of stages.evaluation.judging as a plain loop: the oracle the tests and the
CCECE benchmark compare the vectorised implementation with."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd
import pycocotools.mask as mask_util

from stages.core.calibration import check_probabilities
from stages.evaluation.judging import _check_iou_type, _empty_judged, _gt_rle


def judge_detections_loop(detections: list[dict] | pd.DataFrame, gt: dict[str, Any], iou_type: str = "bbox",
                          iou_threshold: float = 0.5) -> pd.DataFrame:
    """The judging rule written as a plain loop over (image, class) groups: the readable reference
    that stages.evaluation.judging.judge_detections (vectorised) must reproduce; slow at LVIS scale."""
    _check_iou_type(iou_type)
    dets = detections.to_dict("records") if isinstance(detections, pd.DataFrame) else list(detections)
    if not dets:
        return _empty_judged()
    check_probabilities(np.asarray([d["score"] for d in dets], dtype=np.float64), "detection scores")
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
                iou = mask_util.iou([list(map(float, d["bbox"])) for d in group], [t["bbox"] for t in targets],
                                    [0] * len(targets))
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
