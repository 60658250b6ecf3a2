"""The soft-target Cascade Mask R-CNN: both classifier losses train; detections keep class vectors."""

from __future__ import annotations

import pytest
import torch
from detectron2.structures import Boxes, Instances, PolygonMasks
from detectron2.utils.events import EventStorage

from stages.modeling.build import build_detector, detectron2_config
from stages.modeling.student import EMAUpdate
from stages.utils.config import load_config


def _batch(n=2, size=96):
    out = []
    for _ in range(n):
        inst = Instances((size, size))
        inst.gt_boxes = Boxes(torch.tensor([[10.0, 10, 50, 50], [55, 50, 90, 90]]))
        inst.gt_classes = torch.tensor([1, 3])
        inst.gt_masks = PolygonMasks([[[10, 10, 50, 10, 50, 50, 10, 50]], [[55, 50, 90, 50, 90, 90]]])
        out.append({"image": torch.rand(3, size, size) * 255, "instances": inst, "height": size, "width": size})
    return out


@pytest.mark.parametrize("loss", ["softmax", "sigmoid"])
def test_soft_target_detector_trains_with_both_losses(loss):
    config = load_config()
    config["model"].update(classifier_loss=loss, min_size=96, max_size=96)
    model = build_detector(detectron2_config(config, 5, solver=config["teacher"]),
                           class_targets=torch.full((5, 5), 0.2).numpy())
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.005, momentum=0.9)
    batch = _batch()
    losses = []
    with EventStorage():
        for _ in range(6):
            loss_dict = model(batch)
            total = sum(loss_dict.values())
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
            losses.append(total.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    model.eval()
    with torch.no_grad():
        det = model(batch[:1])[0]["instances"]
    assert det.class_scores.shape == (len(det), 5)
    rows = torch.arange(len(det))
    torch.testing.assert_close(det.scores, det.class_scores[rows, det.pred_classes])


def test_ema_update():
    teacher, student = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        teacher.weight.fill_(1.0)
        student.weight.fill_(3.0)
    EMAUpdate(teacher, student, decay=0.75).after_step()
    torch.testing.assert_close(teacher.weight, torch.full((1, 2), 1.5))


@pytest.mark.parametrize("loss", ["softmax", "sigmoid"])
def test_ignore_regions_take_no_part_in_the_box_head_losses(loss):
    """Proposals matched to an ignore region (gt class -1) are neither object nor background: the
    losses with them equal the losses without them."""
    config = load_config()
    config["model"].update(classifier_loss=loss)
    model = build_detector(detectron2_config(config, 5, solver=config["teacher"]))
    predictor = model.roi_heads.box_predictor[1]
    generator = torch.Generator().manual_seed(0)
    n = 8
    proposals = Instances((96, 96))
    corners = torch.rand(n, 2, generator=generator) * 40
    proposals.proposal_boxes = Boxes(torch.cat([corners, corners + 30], dim=1))
    proposals.gt_boxes = Boxes(torch.cat([corners + 2, corners + 33], dim=1))
    proposals.gt_classes = torch.tensor([0, 2, -1, 5, -1, 5, 4, -1])  # 5 = background, -1 = ignore region
    proposals.gt_soft_classes = torch.rand(n, 5, generator=generator)
    scores, deltas = torch.randn(n, 6, generator=generator), torch.randn(n, 4, generator=generator)
    judged = proposals.gt_classes >= 0
    with EventStorage():
        torch.manual_seed(1)  # the federated loss samples its negative classes
        with_ignored = predictor.losses((scores, deltas), [proposals])
        torch.manual_seed(1)
        without = predictor.losses((scores[judged], deltas[judged]), [proposals[judged]])
    for key in ("loss_cls", "loss_box_reg"):
        torch.testing.assert_close(with_ignored[key], without[key])
    assert with_ignored["loss_cls"] > 0
