"""Eq. (5): calibration-corrected soft pseudo-labels from the teacher's detections.

The student's target from a teacher probability vector y is y + lambda * Delta, clipped to
[0, 1] (renormalised to a distribution for the softmax loss). Variants (Table 1 rows):

* ``onehot``: one-hot on the detected class; kept when the teacher's score > threshold.
* ``soft``: the teacher's class vector y; kept when y[class] > threshold.
* ``soft_corrected``: y + lambda * Delta; kept when the corrected score of the class > threshold,
  so a class the teacher under-rates (Delta > 0, typically rare) yields more pseudo-labels.
"""

from __future__ import annotations

import torch
from detectron2.layers import batched_nms
from detectron2.structures import BitMasks, Boxes, Instances

PSEUDO_LABEL_VARIANTS = ("onehot", "soft", "soft_corrected")


def corrected_scores(class_scores: torch.Tensor, delta: torch.Tensor, lam: float) -> torch.Tensor:
    """Eq. (5): clip(y + lambda * Delta, 0, 1) for (N, C) teacher vectors and (C,) Delta."""
    return (class_scores + lam * delta.to(class_scores).view(1, -1)).clamp_(0.0, 1.0)


def pseudo_label_targets(class_scores: torch.Tensor, classes: torch.Tensor, delta: torch.Tensor, lam: float,
                         variant: str, loss: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets (N, C), score of each detection's class used for filtering) for a variant."""
    if variant not in PSEUDO_LABEL_VARIANTS:
        raise ValueError(f"pseudo-label variant must be one of {PSEUDO_LABEL_VARIANTS}, found {variant!r}")
    rows = torch.arange(classes.shape[0], device=classes.device)
    if variant == "onehot":
        targets = torch.zeros_like(class_scores)
        targets[rows, classes] = 1.0
        return targets, class_scores[rows, classes]
    targets = class_scores if variant == "soft" else corrected_scores(class_scores, delta, lam)
    scores = targets[rows, classes]
    if loss == "softmax":
        # A distribution is needed; an all-zero row (everything clipped) falls back to one-hot.
        sums = targets.sum(dim=1, keepdim=True)
        onehot = torch.zeros_like(targets)
        onehot[rows, classes] = 1.0
        targets = torch.where(sums > 0, targets / sums.clamp_min(1e-12), onehot)
    return targets, scores


def select_pseudo_labels(detections: Instances, delta: torch.Tensor, lam: float, variant: str, loss: str,
                         threshold: float, nms_threshold: float = 0.5) -> Instances:
    """Teacher detections (with ``class_scores`` and ``pred_masks``) -> student targets.

    Kept: detections whose (variant's) class score exceeds ``threshold``; then class-agnostic NMS,
    since per-class NMS can leave one object under several classes and the soft vector already
    says how the mass is shared among them.
    """
    out = Instances(detections.image_size)
    targets, scores = pseudo_label_targets(detections.class_scores, detections.pred_classes, delta, lam, variant, loss)
    keep = torch.nonzero(scores > threshold).flatten()
    if keep.numel():
        boxes = detections.pred_boxes.tensor[keep]
        nms_keep = batched_nms(boxes, scores[keep], torch.zeros_like(keep), nms_threshold)
        keep = keep[nms_keep]
    out.gt_boxes = Boxes(detections.pred_boxes.tensor[keep])
    out.gt_classes = detections.pred_classes[keep]
    out.gt_soft_classes = targets[keep]
    out.pseudo_scores = scores[keep]
    h, w = detections.image_size
    masks = detections.pred_masks[keep] if detections.has("pred_masks") else torch.zeros((keep.numel(), h, w))
    out.gt_masks = BitMasks(masks.to(torch.bool))
    return out
