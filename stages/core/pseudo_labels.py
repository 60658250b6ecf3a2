"""Eq. (5): the student's targets from the teacher's class vectors, one registered kind per student
variant (the rows of Table 1).

The student's target from a teacher probability vector y is y + lambda * Delta, clipped to
[0, 1] (renormalised to a distribution for the softmax loss). Variants (``student.variants``):

* ``labeled_only``: no pseudo-labels -- the teacher trained on with the student's schedule on the
  labeled data alone: the control that separates the effect of pseudo-labels from more training.
* ``onehot``: one-hot on the detected class.
* ``soft``: the teacher's class vector y.
* ``soft_corrected``: y + lambda * Delta (eq. 5).

Which detections become pseudo-labels is decided on the teacher's own score of the detected class
(``student.select_on: teacher_score``), or on the variant's target for it
(``corrected_score``: for ``soft_corrected`` the corrected score, so that a class the teacher
under-rates passes the threshold more often). The thresholds, NMS and the detectron2 side live in
stages.modeling.student. A new variant is one decorated function here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from stages.core.registry import Registry

# (class_scores (N, C), classes (N,), delta (N, C) -- Delta where eq. (5) applies --, lambda) -> targets (N, C) in [0, 1]
TargetsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]


@dataclass(frozen=True)
class StudentVariant:
    """``targets``: the pseudo-label targets (None: the variant trains on labeled data only);
    ``uses_delta``: whether Delta (CCECE) enters them, and so whether selection on the corrected
    score differs from the teacher's score."""

    targets: TargetsFn | None
    uses_delta: bool = False

    @property
    def uses_unlabeled(self) -> bool:
        return self.targets is not None


STUDENT_VARIANTS: Registry[StudentVariant] = Registry("student.variants")


def student_variant(name: str, *, uses_delta: bool = False) -> Callable[[TargetsFn], TargetsFn]:
    """Register ``fn(class_scores, classes, delta, lam)`` as the student variant ``name``."""

    def decorator(fn: TargetsFn) -> TargetsFn:
        STUDENT_VARIANTS.register(name)(StudentVariant(fn, uses_delta))
        return fn

    return decorator


SELECT_ON = ("teacher_score", "corrected_score")

STUDENT_VARIANTS.register("labeled_only")(StudentVariant(targets=None))


# Which entries of a pseudo-label's class vector eq. (5) corrects (``student.correction_scope``):
# every class (the equation as written), or the detected class only -- Delta_i is measured on the
# teacher's detections *of class i*, so it says nothing about class i's small probability on a box
# the teacher reads as another class.
CORRECTION_SCOPES = ("all_classes", "detected_class")


def scoped_delta(delta: torch.Tensor, classes: torch.Tensor, num_classes: int, scope: str) -> torch.Tensor:
    """(N, C): Delta where eq. (5) applies for N detections of ``classes``, 0 elsewhere."""
    if scope not in CORRECTION_SCOPES:
        raise ValueError(f"config key 'student.correction_scope': {scope!r} is not one of {', '.join(CORRECTION_SCOPES)}")
    delta = delta.reshape(-1)
    if scope == "all_classes":
        return delta.view(1, -1).expand(classes.shape[0], num_classes)
    out = torch.zeros((classes.shape[0], num_classes), dtype=delta.dtype, device=delta.device)
    rows = torch.arange(classes.shape[0], device=classes.device)
    out[rows, classes] = delta[classes]
    return out


def corrected_scores(class_scores: torch.Tensor, delta: torch.Tensor, lam: float) -> torch.Tensor:
    """Eq. (5): clip(y + lambda * Delta, 0, 1) for (N, C) teacher vectors and a (C,) Delta (every
    class) or an (N, C) one (:func:`scoped_delta`)."""
    delta = delta.to(class_scores)
    return (class_scores + lam * (delta.view(1, -1) if delta.ndim == 1 else delta)).clamp_(0.0, 1.0)


@student_variant("onehot")
def onehot_targets(class_scores: torch.Tensor, classes: torch.Tensor, delta: torch.Tensor, lam: float) -> torch.Tensor:
    targets = torch.zeros_like(class_scores)
    targets[torch.arange(classes.shape[0], device=classes.device), classes] = 1.0
    return targets


@student_variant("soft")
def soft_targets(class_scores: torch.Tensor, classes: torch.Tensor, delta: torch.Tensor, lam: float) -> torch.Tensor:
    return class_scores


@student_variant("soft_corrected", uses_delta=True)
def soft_corrected_targets(class_scores: torch.Tensor, classes: torch.Tensor, delta: torch.Tensor,
                           lam: float) -> torch.Tensor:
    return corrected_scores(class_scores, delta, lam)


def pseudo_label_targets(class_scores: torch.Tensor, classes: torch.Tensor, delta: torch.Tensor, lam: float,
                         variant: str, loss: str, select_on: str = "teacher_score",
                         scope: str = "all_classes") -> tuple[torch.Tensor, torch.Tensor]:
    """(targets (N, C), the score each detection is selected on) for a variant.

    ``select_on``: ``teacher_score`` -- the teacher's probability of the detected class; or
    ``corrected_score`` -- the variant's target for it (the corrected score for a variant that uses
    Delta, the teacher's score otherwise). ``scope``: the entries eq. (5) corrects (CORRECTION_SCOPES).
    """
    kind = STUDENT_VARIANTS.get(variant)
    if kind.targets is None:
        raise ValueError(f"student variant {variant!r} trains on labeled data only and makes no pseudo-labels")
    if select_on not in SELECT_ON:
        raise ValueError(f"config key 'student.select_on': {select_on!r} is not one of {', '.join(SELECT_ON)}")
    rows = torch.arange(classes.shape[0], device=classes.device)
    if kind.uses_delta:
        delta = scoped_delta(delta, classes, class_scores.shape[1], scope)
    targets = kind.targets(class_scores, classes, delta, lam)
    corrected = select_on == "corrected_score" and kind.uses_delta
    scores = (targets if corrected else class_scores)[rows, classes]
    if loss == "softmax":
        # A distribution is needed; an all-zero row (everything clipped) falls back to one-hot.
        sums = targets.sum(dim=1, keepdim=True)
        onehot = torch.zeros_like(targets)
        onehot[rows, classes] = 1.0
        targets = torch.where(sums > 0, targets / sums.clamp_min(1e-12), onehot)
    return targets, scores
