"""Classification losses on soft targets, for the box classifier of every cascade stage.

detectron2's losses take integer classes; eq. (3) and eq. (5) give a vector per instance, so
these take a target matrix. Background proposals keep a one-hot background target.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_target_matrix(gt_classes: torch.Tensor, soft_classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(R, C+1) targets: soft rows for foreground proposals, one-hot background (column C) otherwise."""
    foreground = (gt_classes >= 0) & (gt_classes < num_classes)
    target = soft_classes.new_zeros((gt_classes.shape[0], num_classes + 1))
    target[foreground, :num_classes] = soft_classes[foreground].to(target.dtype)
    target[~foreground, num_classes] = 1.0
    return target


def soft_softmax_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over proposals of -sum_j t_j log softmax(z)_j; equals F.cross_entropy for one-hot t."""
    if logits.numel() == 0:
        return logits.sum() * 0.0
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def federated_classes(
    target: torch.Tensor, class_weights: torch.Tensor, num_sampled: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Classes that take part in the federated sigmoid loss (LVIS detectors, Zhou et al. 2021).

    Positives are the classes with the largest summed target mass over the batch's foreground
    proposals -- the annotated classes first, then those that soft targets point at -- capped at
    half of ``num_sampled``; the rest are negatives drawn without replacement with probability
    proportional to ``class_weights`` (image_count ** 0.5 of the training split).
    """
    num_classes = class_weights.shape[0]
    mass = target[:, :num_classes].sum(dim=0)
    # Annotated (argmax) classes always count, whatever their mass.
    hard = torch.unique(target[:, :num_classes][target[:, num_classes] < 1].argmax(dim=1))
    if num_sampled >= num_classes:
        return torch.arange(num_classes, device=target.device)
    soft_budget = max(num_sampled // 2 - hard.numel(), 0)
    mass_excl = mass.clone()
    mass_excl[hard] = -1.0
    candidates = torch.argsort(mass_excl, descending=True)[:soft_budget]
    candidates = candidates[mass_excl[candidates] > 0]
    positives = torch.unique(torch.cat([hard, candidates]))
    remaining = num_sampled - positives.numel()
    prob = class_weights.float().clone()
    prob[positives] = 0
    if remaining > 0 and prob.sum() > 0:
        remaining = min(remaining, int((prob > 0).sum()))
        negatives = torch.multinomial(prob, remaining, replacement=False, generator=generator)
        return torch.cat([positives, negatives])
    return positives


def soft_sigmoid_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, class_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Binary cross-entropy per class on soft targets, summed over classes, averaged over proposals.

    ``logits`` (R, C+1) as produced by detectron2's predictor (the last column is unused, as in
    detectron2's sigmoid loss); ``target`` (R, C+1) from :func:`soft_target_matrix`;
    ``class_mask`` (C,) selects the federated classes (None: all classes).
    """
    num_classes = logits.shape[1] - 1
    if logits.numel() == 0:
        return logits.sum() * 0.0
    loss = F.binary_cross_entropy_with_logits(logits[:, :num_classes], target[:, :num_classes], reduction="none")
    if class_mask is not None:
        loss = loss * class_mask.view(1, num_classes).to(loss.dtype)
    return loss.sum() / logits.shape[0]
