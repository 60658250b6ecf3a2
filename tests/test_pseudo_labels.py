"""Eq. (5) and pseudo-label selection."""

import torch
from detectron2.structures import Boxes, Instances

from stages.core.pseudo_labels import corrected_scores, pseudo_label_targets
from stages.modeling.student import select_pseudo_labels


def test_eq5_small_vectors():
    y = torch.tensor([[0.6, 0.3, 0.05]])
    delta = torch.tensor([-0.1, 0.2, 0.5])
    got = corrected_scores(y, delta, lam=2.0)
    torch.testing.assert_close(got, torch.tensor([[0.4, 0.7, 1.0]]))  # 0.05 + 1.0 clipped to 1


def test_softmax_variant_renormalises():
    y = torch.tensor([[0.6, 0.3, 0.1]])
    targets, score = pseudo_label_targets(y, torch.tensor([0]), torch.tensor([0.0, 0.1, 0.0]), 1.0,
                                          "soft_corrected", "softmax")
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


def test_positive_delta_grows_rare_pseudo_labels():
    # four detections of a rare class 1 with teacher scores around the threshold
    dets = _detections([[0.1, 0.35, 0.0], [0.1, 0.45, 0.0], [0.1, 0.55, 0.0], [0.2, 0.65, 0.0]], [1, 1, 1, 1])
    delta = torch.tensor([0.0, 0.1, 0.0])  # the teacher under-rates class 1
    soft = select_pseudo_labels(dets, delta, 2.0, "soft", "sigmoid", threshold=0.5)
    corrected = select_pseudo_labels(dets, delta, 2.0, "soft_corrected", "sigmoid", threshold=0.5)
    assert len(soft) == 2
    assert len(corrected) == 4
    torch.testing.assert_close(corrected.gt_soft_classes[:, 1].sort().values, torch.tensor([0.55, 0.65, 0.75, 0.85]))


def test_onehot_variant_targets():
    dets = _detections([[0.2, 0.7, 0.1]], [1])
    out = select_pseudo_labels(dets, torch.zeros(3), 2.0, "onehot", "sigmoid", threshold=0.5)
    torch.testing.assert_close(out.gt_soft_classes, torch.tensor([[0.0, 1.0, 0.0]]))
    assert out.gt_classes.tolist() == [1]
