"""The one translation of the pipeline config into a detectron2 config, and model building.

The detector is Cascade Mask R-CNN (detectron2's cascade with box-regression weights
(10,5),(20,10),(30,15) and IoU thresholds from ``model.cascade_iou``), with the soft-target ROI
heads of stages.modeling.roi_heads and a backbone from stages.modeling.backbones.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.modeling import build_model

import stages.modeling.backbones  # noqa: F401  (registers the backbones)
import stages.modeling.mask_head  # noqa: F401  (registers the mask head)
import stages.modeling.roi_heads  # noqa: F401  (registers the ROI heads)
from stages.modeling.backbones import pixel_stats


def detectron2_config(config: dict[str, Any], num_classes: int, *, solver: dict[str, Any] | None = None) -> CfgNode:
    """detectron2 CfgNode of the configured detector; ``solver`` (the ``teacher`` or ``student``
    section) adds its training schedule, and is left out for inference."""
    model_cfg = config["model"]
    cfg = get_cfg()
    cfg.MODEL.DEVICE = config["device"]
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    cfg.MODEL.MASK_ON = True
    backbone = model_cfg["backbone"]
    cfg.MODEL.BACKBONE.NAME = backbone
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    # WEIGHTS: the pretrained file to load (blanked when a trained checkpoint follows); FROZEN_BN: the
    # architecture that goes with pretrained weights, whether or not this build loads them.
    cfg.MODEL.TIMM = CfgNode({"WEIGHTS": model_cfg["backbone_weights"] or "", "FROZEN_BN": bool(model_cfg["backbone_weights"]),
                              "MODEL": model_cfg["timm_model"], "PATCH_SIZE": model_cfg["patch_size"],
                              "DROP_PATH": model_cfg["drop_path"], "WINDOW_SIZE": model_cfg["window_size"],
                              "GLOBAL_BLOCKS": list(model_cfg["global_blocks"])})
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = (list(v) for v in pixel_stats(backbone, model_cfg["timm_model"]))
    cfg.MODEL.FPN.OUT_CHANNELS = model_cfg["fpn_channels"]
    cfg.MODEL.FPN.IN_FEATURES = []  # the backbone builder wires its own features
    levels = ["p3", "p4", "p5", "p6"]
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[16], [32], [64], [128]]
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]
    cfg.MODEL.RPN.IN_FEATURES = levels
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 1000
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 500
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 500
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 300
    cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 128

    cfg.MODEL.ROI_HEADS.NAME = "SoftTargetCascadeROIHeads"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    cfg.MODEL.ROI_HEADS.IN_FEATURES = levels[:3]
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = model_cfg["roi_batch_size"]
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = model_cfg["test_score_threshold"]
    cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST = 0.5
    cfg.TEST.DETECTIONS_PER_IMAGE = model_cfg["detections_per_image"]
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 2
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 256
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
    cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = True
    cfg.MODEL.ROI_BOX_CASCADE_HEAD.IOUS = list(model_cfg["cascade_iou"])
    cfg.MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS = [
        (10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0)
    ][: len(model_cfg["cascade_iou"])]
    cfg.MODEL.ROI_MASK_HEAD.NAME = "ClassGatheredMaskHead"  # detectron2's, one class channel at inference
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 2
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = model_cfg["fpn_channels"]
    cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 14
    cfg.MODEL.SOFT_TARGETS = CfgNode({
        "LOSS": model_cfg["classifier_loss"],
        "FED_LOSS_NUM_CLASSES": model_cfg["fed_loss_classes"] if model_cfg["classifier_loss"] == "sigmoid" else 0,
    })

    cfg.INPUT.MIN_SIZE_TRAIN = (model_cfg["min_size"],)
    cfg.INPUT.MAX_SIZE_TRAIN = model_cfg["max_size"]
    cfg.INPUT.MIN_SIZE_TEST = model_cfg["min_size"]
    cfg.INPUT.MAX_SIZE_TEST = model_cfg["max_size"]
    cfg.INPUT.MASK_FORMAT = "polygon"

    if solver is None:
        return cfg  # inference: the checkpoint sets every weight, no seed needed
    cfg.SEED = config["seed"]
    train_cfg = solver
    cfg.SOLVER.OPTIMIZER = train_cfg["optimizer"]
    cfg.SOLVER.BASE_LR = train_cfg["base_lr"]
    cfg.SOLVER.WEIGHT_DECAY = train_cfg["weight_decay"]
    cfg.SOLVER.MAX_ITER = train_cfg["iterations"]
    cfg.SOLVER.WARMUP_ITERS = train_cfg["warmup_iters"]
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupCosineLR"  # the paper's cosine schedule
    cfg.SOLVER.CHECKPOINT_PERIOD = train_cfg["checkpoint_period"]
    cfg.SOLVER.STEPS = ()
    # Small batches on a long tail give occasional huge box-regression gradients early on.
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = train_cfg["clip_grad_norm"]
    cfg.SOLVER.LAYER_DECAY = model_cfg["layer_decay"]
    return cfg


def build_detector(cfg: CfgNode, class_targets: np.ndarray | None = None,
                   fed_loss_weights: np.ndarray | None = None) -> torch.nn.Module:
    """Build the detector on cfg.MODEL.DEVICE and install eq. (3) targets and fed-loss weights.

    The random initialisation of the heads is seeded with cfg.SEED (set for training), so that a
    run is a pure function of its config and inputs.
    """
    if cfg.SEED >= 0:
        torch.manual_seed(cfg.SEED)
    model = build_model(cfg)
    if class_targets is not None:
        model.roi_heads.set_class_targets(torch.as_tensor(class_targets, dtype=torch.float32))
    if fed_loss_weights is not None:
        model.roi_heads.set_fed_loss_weights(torch.as_tensor(fed_loss_weights, dtype=torch.float32))
    return model
