"""Eq. (5) and pseudo-label selection."""

import dataclasses

import pytest
import torch
from detectron2.structures import Boxes, Instances

from stages.core.pseudo_labels import PseudoLabelRule, corrected_scores
from stages.modeling.student import select_pseudo_labels
from stages.utils.config import load_config


def rule(variant: str, **changes) -> PseudoLabelRule:
    """The rule config.yaml builds for ``variant``, with ``changes``."""
    return dataclasses.replace(PseudoLabelRule.from_config(load_config(), variant), **changes)


def test_the_rule_is_built_from_the_student_section():
    config = load_config()
    config["student"].update({"lambda": 0.5, "score_threshold": 0.3, "select_on": "corrected_score",
                              "correction_scope": "all_classes", "ignore_threshold": 0.1})
    config["model"]["classifier_loss"] = "softmax"
    assert PseudoLabelRule.from_config(config, "soft") == PseudoLabelRule(
        variant="soft", lam=0.5, score_threshold=0.3, select_on="corrected_score", correction_scope="all_classes",
        ignore_threshold=0.1, loss="softmax")
    config["student"]["select_on"] = "best_score"
    with pytest.raises(ValueError, match="student.select_on"):
        PseudoLabelRule.from_config(config, "soft")
    with pytest.raises(ValueError, match="student.variants.*sharpened"):
        rule("sharpened")


def test_eq5_small_vectors():
    y = torch.tensor([[0.6, 0.3, 0.05]])
    delta = torch.tensor([-0.1, 0.2, 0.5])
    got = corrected_scores(y, delta, lam=2.0)
    torch.testing.assert_close(got, torch.tensor([[0.4, 0.7, 1.0]]))  # 0.05 + 1.0 clipped to 1


def test_softmax_variant_renormalises():
    y = torch.tensor([[0.6, 0.3, 0.1]])
    targets, score = rule("soft_corrected", lam=1.0, loss="softmax", correction_scope="all_classes").targets(
        y, torch.tensor([0]), torch.tensor([0.0, 0.1, 0.0]))
    # y + 1.0 * delta = (0.6, 0.4, 0.1), sum 1.1, renormalised
    torch.testing.assert_close(targets, torch.tensor([[0.6 / 1.1, 0.4 / 1.1, 0.1 / 1.1]]))
    torch.testing.assert_close(score, torch.tensor([0.6]))


def _detections(scores_per_det, classes):
    n = len(classes)
    inst = Instances((64, 64))
    # far apart boxes so that NMS keeps all
    inst.pred_boxes = Boxes(torch.tensor([[10.0 * i, 0, 10.0 * i + 8, 8] for i in range(n)]))
    inst.class_scores = torch.tensor(scores_per_det)
    inst.pred_classes = torch.tensor(classes)
    inst.scores = inst.class_scores[torch.arange(n), inst.pred_classes]
    inst.pred_masks = torch.zeros((n, 64, 64), dtype=torch.bool)
    return inst


def test_selection_on_the_teacher_score_or_on_the_corrected_score():
    # four detections of a rare class 1 with teacher scores around the threshold
    dets = _detections([[0.1, 0.35, 0.0], [0.1, 0.45, 0.0], [0.1, 0.55, 0.0], [0.2, 0.65, 0.0]], [1, 1, 1, 1])
    delta = torch.tensor([0.0, 0.1, 0.0])  # the teacher under-rates class 1
    settings = dict(lam=2.0, loss="sigmoid", score_threshold=0.5, correction_scope="all_classes")
    soft = select_pseudo_labels(dets, delta, rule("soft", **settings))
    on_teacher = select_pseudo_labels(dets, delta, rule("soft_corrected", select_on="teacher_score", **settings))
    on_corrected = select_pseudo_labels(dets, delta, rule("soft_corrected", select_on="corrected_score", **settings))
    assert len(soft) == 2
    # teacher_score: the same detections as the soft student, eq. (5) changes their targets only
    assert sorted(on_teacher.gt_boxes.tensor[:, 0].tolist()) == sorted(soft.gt_boxes.tensor[:, 0].tolist())
    torch.testing.assert_close(on_teacher.gt_soft_classes[:, 1].sort().values, torch.tensor([0.75, 0.85]))
    torch.testing.assert_close(on_teacher.pseudo_scores.sort().values, torch.tensor([0.55, 0.65]))
    # corrected_score: the under-rated class passes the threshold more often
    assert len(on_corrected) == 4
    torch.testing.assert_close(on_corrected.gt_soft_classes[:, 1].sort().values, torch.tensor([0.55, 0.65, 0.75, 0.85]))
    # for a variant without Delta both settings select alike
    soft_corrected_sel = select_pseudo_labels(dets, delta, rule("soft", select_on="corrected_score", **settings))
    assert len(soft_corrected_sel) == len(soft)


def test_ignore_band_between_the_thresholds():
    # scores .2 (dropped), .35 and .45 (in the band), .55 and .65 (pseudo-labels); the .45 box overlaps the .65 one
    dets = _detections([[0.2, 0.0], [0.35, 0.0], [0.45, 0.0], [0.55, 0.0], [0.65, 0.0]], [0, 0, 0, 0, 0])
    boxes = dets.pred_boxes.tensor.clone()
    boxes[2] = boxes[4] + torch.tensor([0.5, 0.0, 0.5, 0.0])  # IoU ~ 0.9 with the .65 box
    dets.pred_boxes = Boxes(boxes)
    plain = select_pseudo_labels(dets, torch.zeros(2), rule("soft", lam=0.0, score_threshold=0.5, ignore_threshold=None))
    assert plain.gt_classes.tolist() == [0, 0]
    banded = select_pseudo_labels(dets, torch.zeros(2), rule("soft", lam=0.0, score_threshold=0.5, ignore_threshold=0.3))
    # the two pseudo-labels, then one ignore region: the .45 box is the .65 object again (NMS), the .2 one too low
    assert banded.gt_classes.tolist() == [0, 0, -1]
    torch.testing.assert_close(banded.pseudo_scores, torch.tensor([0.65, 0.55, 0.35]))
    assert float(banded.gt_soft_classes[2].abs().sum()) == 0.0 and not banded.gt_masks.tensor[2].any()


def test_the_control_makes_no_pseudo_labels():
    dets = _detections([[0.2, 0.7, 0.1]], [1])
    with pytest.raises(ValueError, match="labeled data only"):
        select_pseudo_labels(dets, torch.zeros(3), rule("labeled_only", score_threshold=0.5))


def test_onehot_variant_targets():
    dets = _detections([[0.2, 0.7, 0.1]], [1])
    out = select_pseudo_labels(dets, torch.zeros(3), rule("onehot", loss="sigmoid", score_threshold=0.5))
    torch.testing.assert_close(out.gt_soft_classes, torch.tensor([[0.0, 1.0, 0.0]]))
    assert out.gt_classes.tolist() == [1]


def test_the_correction_scope():
    """all_classes: eq. (5) as written, every entry moves by lambda * Delta; detected_class: only the
    detected class's entry, the one whose calibration Delta measured."""
    y = torch.tensor([[0.6, 0.03, 0.1], [0.05, 0.7, 0.2]])
    classes = torch.tensor([0, 1])
    delta = torch.tensor([0.1, 0.4, -0.05])
    settings = dict(lam=1.0, loss="sigmoid")
    everywhere, _ = rule("soft_corrected", correction_scope="all_classes", **settings).targets(y, classes, delta)
    torch.testing.assert_close(everywhere, torch.tensor([[0.7, 0.43, 0.05], [0.15, 1.0, 0.15]]))
    detected, score = rule("soft_corrected", correction_scope="detected_class", select_on="corrected_score",
                           **settings).targets(y, classes, delta)
    torch.testing.assert_close(detected, torch.tensor([[0.7, 0.03, 0.1], [0.05, 1.0, 0.2]]))
    torch.testing.assert_close(score, torch.tensor([0.7, 1.0]))
    with pytest.raises(ValueError, match="student.correction_scope"):
        rule("soft_corrected", correction_scope="some")
