"""Eq. (5): the student's targets from the teacher's class vectors, one registered kind per student
variant (the rows of Table 1), and the pseudo-label rule that applies them.

The student's target from a teacher probability vector y is y + lambda * Delta, clipped to
[0, 1] (renormalised to a distribution for the softmax loss). Variants (``student.variants``):

* ``labeled_only``: no pseudo-labels -- the teacher trained on with the student's schedule on the
  labeled data alone: the control that separates the effect of pseudo-labels from more training.
* ``onehot``: one-hot on the detected class.
* ``soft``: the teacher's class vector y.
* ``soft_corrected``: y + lambda * Delta (eq. 5).

A variant is one decorated function here, and its registry entry carries everything the rest of
the pipeline asks about it: its Table 1 label and the paper's numbers for that row, its step on the
paper's ladder (one-hot -> soft -> soft + correction: each step is compared with the one before),
whether it is the control, and whether the ``tuning.student`` grid tunes it.

Which detections become pseudo-labels is decided on the teacher's own score of the detected class
(``student.select_on: teacher_score``), or on the variant's target for it
(``corrected_score``: for ``soft_corrected`` the corrected score, so that a class the teacher
under-rates passes the threshold more often). :class:`PseudoLabelRule` holds every such setting,
built once from the config (:meth:`PseudoLabelRule.from_config`) and passed whole; the NMS and the
detectron2 side live in stages.modeling.student.

torch is imported inside the functions that make tensors, not at the top: the registry is read
when the Snakemake DAG is built, which must not pay for importing torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stages.core.registry import Registry

if TYPE_CHECKING:
    import torch

# (class_scores (N, C), classes (N,), delta (N, C) -- Delta where eq. (5) applies --, the rule) -> targets (N, C) in [0, 1]
TargetsFn = Callable[["torch.Tensor", "torch.Tensor", "torch.Tensor", "PseudoLabelRule"], "torch.Tensor"]

# A Table 1 row's model name is its variant's name behind this prefix (the teacher's is "teacher").
STUDENT_PREFIX = "student_"


@dataclass(frozen=True)
class PaperRow:
    """The paper's Table 1 numbers for a row (LVIS v1 val, mask AP and APr in points; ECE where
    the paper gives it). NaN: the paper has no such row or number."""

    ap: float = math.nan
    apr: float = math.nan
    ece: float = math.nan


@dataclass(frozen=True)
class StudentVariant:
    """A registered student variant.

    ``targets``: the pseudo-label targets (None: the variant trains on labeled data only);
    ``uses_delta``: whether Delta (CCECE) enters them, and so whether selection on the corrected
    score differs from the teacher's score; ``label``: its Table 1 description; ``paper``: the
    paper's numbers for its row; ``ladder``: its step on the paper's ladder (ascending; None: not
    on it); ``control``: the row every student is also compared with (the effect of pseudo-labels);
    ``tuned``: the variant whose lambda and weights the ``tuning.student`` grid chooses.
    """

    targets: TargetsFn | None
    uses_delta: bool = False
    label: str = ""
    paper: PaperRow = PaperRow()
    ladder: float | None = None
    control: bool = False
    tuned: bool = False

    @property
    def uses_unlabeled(self) -> bool:
        return self.targets is not None


STUDENT_VARIANTS: Registry[StudentVariant] = Registry("student.variants")


def student_variant(name: str, *, label: str, uses_delta: bool = False, paper: PaperRow = PaperRow(),
                    ladder: float | None = None, control: bool = False,
                    tuned: bool = False) -> Callable[[TargetsFn], TargetsFn]:
    """Register ``fn(class_scores, classes, delta, rule)`` as the student variant ``name`` with its
    metadata (:class:`StudentVariant`)."""

    def decorator(fn: TargetsFn) -> TargetsFn:
        STUDENT_VARIANTS.register(name)(StudentVariant(fn, uses_delta, label, paper, ladder, control, tuned))
        return fn

    return decorator


def student_model(variant: str) -> str:
    """The Table 1 model name of a student variant (``soft`` -> ``student_soft``)."""
    return f"{STUDENT_PREFIX}{variant}"


def model_variant(model: str) -> StudentVariant | None:
    """The registered variant behind a Table 1 model name; None for the teacher or an unknown name."""
    name = model.removeprefix(STUDENT_PREFIX)
    return STUDENT_VARIANTS.get(name) if model.startswith(STUDENT_PREFIX) and name in STUDENT_VARIANTS else None


def ladder(variants: list[str]) -> list[str]:
    """The variants among ``variants`` that are steps of the paper's ladder, in ladder order."""
    steps = [(STUDENT_VARIANTS.get(v).ladder, v) for v in variants]
    return [v for step, v in sorted((s, v) for s, v in steps if s is not None)]


def control_variants(variants: list[str]) -> list[str]:
    """The control rows among ``variants``."""
    return [v for v in variants if STUDENT_VARIANTS.get(v).control]


def tuned_variant() -> str:
    """The one variant the ``tuning.student`` grid tunes. Raises ValueError unless exactly one
    registered variant says ``tuned``."""
    tuned = [name for name in STUDENT_VARIANTS if STUDENT_VARIANTS.get(name).tuned]
    if len(tuned) != 1:
        raise ValueError(f"student.variants: the tuning grid needs exactly one variant registered with tuned=True, "
                         f"found {tuned or 'none'}")
    return tuned[0]


# The score a detection is selected on (``student.select_on``).
SELECT_ON = ("teacher_score", "corrected_score")

# Which entries of a pseudo-label's class vector eq. (5) corrects (``student.correction_scope``):
# every class (the equation as written), or the detected class only -- Delta_i is measured on the
# teacher's detections *of class i*, so it says nothing about class i's small probability on a box
# the teacher reads as another class.
CORRECTION_SCOPES = ("all_classes", "detected_class")


@dataclass(frozen=True)
class PseudoLabelRule:
    """How one student variant turns teacher detections into training targets: the settings of the
    ``student`` section (and the classifier loss of ``model``) in one object, built by
    :meth:`from_config` and passed whole, so that a new setting is a field here and a key in
    config.yaml, never another positional argument through the callers.

    ``lam``: lambda of eq. (5); ``score_threshold``: a detection becomes a pseudo-label when its
    selection score exceeds it; ``ignore_threshold``: detections between it and the threshold
    become ignore regions (None: none); ``nms_threshold``: IoU of the class-agnostic NMS among
    the candidates (a fixed part of the method, not a config key).

    Raises ValueError for an unregistered variant, a ``select_on`` outside SELECT_ON or a
    ``correction_scope`` outside CORRECTION_SCOPES, naming the config key.
    """

    variant: str
    lam: float
    score_threshold: float
    select_on: str
    correction_scope: str
    ignore_threshold: float | None
    loss: str
    nms_threshold: float = 0.5

    def __post_init__(self) -> None:
        STUDENT_VARIANTS.get(self.variant)
        if self.select_on not in SELECT_ON:
            raise ValueError(f"config key 'student.select_on': {self.select_on!r} is not one of {', '.join(SELECT_ON)}")
        if self.correction_scope not in CORRECTION_SCOPES:
            raise ValueError(f"config key 'student.correction_scope': {self.correction_scope!r} is not one of "
                             f"{', '.join(CORRECTION_SCOPES)}")

    @classmethod
    def from_config(cls, config: dict[str, Any], variant: str) -> PseudoLabelRule:
        """The rule of ``variant`` from a validated config's ``student`` section and
        ``model.classifier_loss``."""
        student = config["student"]
        return cls(variant=variant, lam=float(student["lambda"]), score_threshold=float(student["score_threshold"]),
                   select_on=student["select_on"], correction_scope=student["correction_scope"],
                   ignore_threshold=student["ignore_threshold"], loss=config["model"]["classifier_loss"])

    @property
    def kind(self) -> StudentVariant:
        return STUDENT_VARIANTS.get(self.variant)

    def targets(self, class_scores: torch.Tensor, classes: torch.Tensor,
                delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(targets (N, C), the score (N,) each detection is selected on) for N teacher detections
        with class vectors ``class_scores`` (N, C), detected ``classes`` (N,) and the teacher's
        per-class ``delta`` (C,).

        ``select_on`` ``teacher_score``: the teacher's probability of the detected class;
        ``corrected_score``: the variant's target for it (the corrected score for a variant that
        uses Delta, the teacher's score otherwise). Raises ValueError for the control variant,
        which makes no pseudo-labels.
        """
        import torch

        kind = self.kind
        if kind.targets is None:
            raise ValueError(f"student variant {self.variant!r} trains on labeled data only and makes no pseudo-labels")
        rows = torch.arange(classes.shape[0], device=classes.device)
        if kind.uses_delta:
            delta = scoped_delta(delta, classes, class_scores.shape[1], self.correction_scope)
        targets = kind.targets(class_scores, classes, delta, self)
        corrected = self.select_on == "corrected_score" and kind.uses_delta
        scores = (targets if corrected else class_scores)[rows, classes]
        if self.loss == "softmax":
            # A distribution is needed; an all-zero row (everything clipped) falls back to one-hot.
            sums = targets.sum(dim=1, keepdim=True)
            onehot = torch.zeros_like(targets)
            onehot[rows, classes] = 1.0
            targets = torch.where(sums > 0, targets / sums.clamp_min(1e-12), onehot)
        return targets, scores


def scoped_delta(delta: torch.Tensor, classes: torch.Tensor, num_classes: int, scope: str) -> torch.Tensor:
    """(N, C): Delta where eq. (5) applies for N detections of ``classes``, 0 elsewhere."""
    import torch

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


STUDENT_VARIANTS.register("labeled_only")(StudentVariant(
    targets=None, label="Control: teacher continued on labeled data only", control=True))


@student_variant("onehot", label="Semi-supervised baseline, one-hot labels", paper=PaperRow(54.8, 49.7), ladder=1)
def onehot_targets(class_scores: torch.Tensor, classes: torch.Tensor, delta: torch.Tensor,
                   rule: PseudoLabelRule) -> torch.Tensor:
    import torch

    targets = torch.zeros_like(class_scores)
    targets[torch.arange(classes.shape[0], device=classes.device), classes] = 1.0
    return targets


@student_variant("soft", label="+ soft student targets", paper=PaperRow(55.5, 53.0), ladder=2)
def soft_targets(class_scores: torch.Tensor, classes: torch.Tensor, delta: torch.Tensor,
                 rule: PseudoLabelRule) -> torch.Tensor:
    return class_scores


@student_variant("soft_corrected", label="+ soft student targets + calibration correction", uses_delta=True,
                 paper=PaperRow(56.8, 57.3, 0.07), ladder=3, tuned=True)
def soft_corrected_targets(class_scores: torch.Tensor, classes: torch.Tensor, delta: torch.Tensor,
                           rule: PseudoLabelRule) -> torch.Tensor:
    return corrected_scores(class_scores, delta, rule.lam)
