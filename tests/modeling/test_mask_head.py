"""The class-gathered mask head gives detectron2's MaskRCNNConvUpsampleHead's masks and losses."""

from __future__ import annotations

import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads.mask_head import MaskRCNNConvUpsampleHead
from detectron2.structures import Boxes, Instances, PolygonMasks
from detectron2.utils.events import EventStorage

from stages.modeling.mask_head import ClassGatheredMaskHead

NUM_CLASSES, CHANNELS = 7, 8


def heads() -> tuple[MaskRCNNConvUpsampleHead, ClassGatheredMaskHead]:
    cfg = get_cfg()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = NUM_CLASSES
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 2
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = CHANNELS
    shape = ShapeSpec(channels=CHANNELS, width=14, height=14)
    torch.manual_seed(0)
    reference = MaskRCNNConvUpsampleHead(cfg, shape)
    torch.nn.init.normal_(reference.predictor.weight, std=0.5)  # detectron2 starts it near 0: masks would all be 0.5
    torch.nn.init.normal_(reference.predictor.bias, std=0.5)
    gathered = ClassGatheredMaskHead(cfg, shape)
    gathered.load_state_dict(reference.state_dict())
    return reference, gathered


def detections(classes: list[list[int]]) -> list[Instances]:
    out = []
    for cls in classes:
        inst = Instances((32, 32))
        inst.pred_boxes = Boxes(torch.tensor([[1.0, 2.0, 20.0, 25.0]] * len(cls)))
        inst.pred_classes = torch.tensor(cls, dtype=torch.long)
        out.append(inst)
    return out


def test_inference_masks_equal_detectron2s():
    reference, gathered = heads()
    reference.eval(), gathered.eval()
    classes = [[0, 6, 3, 3], [], [5, 1]]  # an image without detections among them
    features = torch.randn(6, CHANNELS, 14, 14)
    expected = reference(features, detections(classes))
    got = gathered(features, detections(classes))
    for e, g, cls in zip(expected, got, classes):
        assert g.pred_masks.shape == (len(cls), 1, 28, 28)
        torch.testing.assert_close(g.pred_masks, e.pred_masks, rtol=1e-5, atol=1e-6)
    # the masks differ between classes, so the right channel was taken
    assert not torch.allclose(got[0].pred_masks[0], got[0].pred_masks[1])


def test_training_loss_is_detectron2s():
    reference, gathered = heads()
    inst = Instances((32, 32))
    inst.proposal_boxes = Boxes(torch.tensor([[0.0, 0.0, 16.0, 16.0], [4.0, 4.0, 30.0, 30.0]]))
    inst.gt_classes = torch.tensor([2, 4])
    inst.gt_masks = PolygonMasks([[[0, 0, 12, 0, 12, 12, 0, 12]], [[5, 5, 28, 5, 28, 28]]])
    features = torch.randn(2, CHANNELS, 14, 14)
    with EventStorage():
        expected = reference(features, [inst])["loss_mask"]
        got = gathered(features, [inst])["loss_mask"]
    torch.testing.assert_close(got, expected)
