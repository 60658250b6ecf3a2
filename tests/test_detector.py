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
    model = build_detector(detectron2_config(config, 5), class_targets=torch.full((5, 5), 0.2).numpy())
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
