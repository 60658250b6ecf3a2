"""Cascade ROI heads whose box classifiers train on soft targets (eq. 3 for ground truth,
eq. 5 for pseudo-labels) and whose inference keeps each detection's full class-score vector.

* A ground-truth instance may carry ``gt_soft_classes`` (C,), e.g. a calibration-corrected
  pseudo-label; otherwise its target is row ``gt_classes`` of the head's ``class_targets``
  buffer (the eq. (3) matrix, stored in the checkpoint so a teacher carries its own targets).
  An instance of class -1 is an ignore region: proposals matched to it are left out of the losses.
* Losses: softmax cross-entropy or the federated sigmoid loss, on those targets.
* Inference: detections carry ``class_scores`` (C,), the stage-averaged class probabilities of
  the proposal each detection came from; the student's soft pseudo-labels are built from them.
"""

from __future__ import annotations

import math

import torch
from detectron2.config import configurable
from detectron2.layers import batched_nms, cat
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, CascadeROIHeads
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers, _log_classification_stats
from detectron2.structures import Boxes, Instances, pairwise_iou
from detectron2.utils.events import get_event_storage
from torch import nn

from stages.modeling.soft_losses import (
    federated_classes,
    soft_sigmoid_cross_entropy,
    soft_softmax_cross_entropy,
    soft_target_matrix,
)


class SoftTargetOutputLayers(FastRCNNOutputLayers):
    """FastRCNNOutputLayers trained on per-proposal soft targets (``gt_soft_classes``)."""

    @configurable
    def __init__(self, *, use_sigmoid_ce: bool = False, fed_loss_num_classes: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.use_sigmoid_ce = use_sigmoid_ce
        self.fed_loss_num_classes = fed_loss_num_classes
        if use_sigmoid_ce:
            # Sigmoid classifiers start at a 1% foreground prior (as detectron2's sigmoid CE),
            # otherwise C background-dominated terms swamp the first iterations.
            nn.init.constant_(self.cls_score.bias, -math.log((1 - 0.01) / 0.01))
        # image_count ** 0.5 of the training split (set by the trainer); ones until then.
        self.register_buffer("fed_loss_weights", torch.ones(self.num_classes))

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["use_sigmoid_ce"] = cfg.MODEL.SOFT_TARGETS.LOSS == "sigmoid"
        ret["fed_loss_num_classes"] = cfg.MODEL.SOFT_TARGETS.FED_LOSS_NUM_CLASSES
        return ret

    def losses(self, predictions, proposals):
        scores, proposal_deltas = predictions
        gt_classes = cat([p.gt_classes for p in proposals], dim=0) if len(proposals) else torch.empty(0)
        soft = cat([p.gt_soft_classes for p in proposals], dim=0)
        proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
        gt_boxes = cat([(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals], dim=0)
        # Proposals on an ignore region of the pseudo-labels (gt class -1) are neither object nor
        # background: they take no part in any loss, nor in its normalisation.
        judged = gt_classes >= 0
        if not bool(judged.all()):
            scores, proposal_deltas, gt_classes = scores[judged], proposal_deltas[judged], gt_classes[judged]
            soft, proposal_boxes, gt_boxes = soft[judged], proposal_boxes[judged], gt_boxes[judged]
        _log_classification_stats(scores, gt_classes)
        target = soft_target_matrix(gt_classes, soft, self.num_classes)
        if self.use_sigmoid_ce:
            mask = None
            if self.fed_loss_num_classes > 0:
                classes = federated_classes(target, self.fed_loss_weights, self.fed_loss_num_classes)
                mask = scores.new_zeros(self.num_classes)
                mask[classes] = 1.0
            loss_cls = soft_sigmoid_cross_entropy(scores, target, mask)
        else:
            loss_cls = soft_softmax_cross_entropy(scores, target)
        losses = {
            "loss_cls": loss_cls,
            "loss_box_reg": self.box_reg_loss(proposal_boxes, gt_boxes, proposal_deltas, gt_classes),
        }
        return {k: v * self.loss_weight.get(k, 1.0) for k, v in losses.items()}

    def predict_probs(self, predictions, proposals):
        scores, _ = predictions
        num_inst_per_image = [len(p) for p in proposals]
        # Sigmoid: independent class probabilities; the unused last column keeps shapes aligned.
        probs = scores.sigmoid() if self.use_sigmoid_ce else torch.softmax(scores, dim=-1)
        return probs.split(num_inst_per_image, dim=0)


def inference_with_class_scores(
    boxes: list[torch.Tensor],
    scores: list[torch.Tensor],
    image_shapes: list[tuple[int, int]],
    score_thresh: float,
    nms_thresh: float,
    topk_per_image: int,
) -> list[Instances]:
    """detectron2's fast_rcnn_inference, plus ``class_scores``: the source proposal's (C,) vector."""
    results = []
    for position, (boxes_img, scores_img, image_shape) in enumerate(zip(boxes, scores, image_shapes)):
        valid = torch.isfinite(boxes_img).all(dim=1) & torch.isfinite(scores_img).all(dim=1)
        if not valid.all():
            # detectron2 drops these silently; from a trained model they mean diverged weights, and
            # dropping them would hide that in the metrics or the pseudo-labels
            raise FloatingPointError(
                f"non-finite box or class score for {int((~valid).sum())} of {len(valid)} proposals of "
                f"image {position} of the batch"
            )
        class_probs = scores_img[:, :-1]
        num_reg_classes = boxes_img.shape[1] // 4  # 1 for class-agnostic regression
        per_class_boxes = Boxes(boxes_img.reshape(-1, 4))
        per_class_boxes.clip(image_shape)
        per_class_boxes = per_class_boxes.tensor.view(-1, num_reg_classes, 4)
        filter_mask = class_probs > score_thresh
        filter_inds = filter_mask.nonzero()
        if num_reg_classes == 1:
            kept_boxes = per_class_boxes[filter_inds[:, 0], 0]
        else:
            kept_boxes = per_class_boxes[filter_mask]
        kept_scores = class_probs[filter_mask]
        keep = batched_nms(kept_boxes, kept_scores, filter_inds[:, 1], nms_thresh)
        if topk_per_image >= 0:
            keep = keep[:topk_per_image]
        kept_boxes, kept_scores, filter_inds = kept_boxes[keep], kept_scores[keep], filter_inds[keep]
        result = Instances(image_shape)
        result.pred_boxes = Boxes(kept_boxes)
        result.scores = kept_scores
        result.pred_classes = filter_inds[:, 1]
        result.class_scores = class_probs[filter_inds[:, 0]]
        results.append(result)
    return results


@ROI_HEADS_REGISTRY.register()
class SoftTargetCascadeROIHeads(CascadeROIHeads):
    """Cascade Mask R-CNN heads for soft classification targets (see module docstring)."""

    @configurable
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.register_buffer("class_targets", torch.eye(self.num_classes))

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        ret["box_predictors"] = [
            SoftTargetOutputLayers(cfg, head.output_shape, box2box_transform=pred.box2box_transform)
            for head, pred in zip(ret["box_heads"], ret["box_predictors"])
        ]
        return ret

    def set_class_targets(self, targets: torch.Tensor) -> None:
        """Install the (C, C) eq. (3) matrix: row c is the target of an instance of class c."""
        if targets.shape != self.class_targets.shape:
            raise ValueError(f"class targets have shape {tuple(targets.shape)}, expected {tuple(self.class_targets.shape)}")
        self.class_targets.copy_(targets.to(self.class_targets))

    def set_fed_loss_weights(self, weights: torch.Tensor) -> None:
        for predictor in self.box_predictor:
            predictor.fed_loss_weights.copy_(weights.to(predictor.fed_loss_weights))

    def _attach_soft_targets(self, proposals: list[Instances]) -> None:
        for props in proposals:
            if not props.has("gt_soft_classes"):
                classes = props.gt_classes.clamp(max=self.num_classes - 1)
                props.gt_soft_classes = self.class_targets[classes]

    @torch.no_grad()
    def _match_and_label_boxes(self, proposals, stage, targets):
        num_fg, num_bg = [], []
        for props, targs in zip(proposals, targets):
            quality = pairwise_iou(targs.gt_boxes, props.proposal_boxes)
            matched_idxs, labels = self.proposal_matchers[stage](quality)
            if len(targs) > 0:
                gt_classes = targs.gt_classes[matched_idxs]
                gt_classes[labels == 0] = self.num_classes
                props.gt_boxes = targs.gt_boxes[matched_idxs]
                if targs.has("gt_soft_classes"):
                    props.gt_soft_classes = targs.gt_soft_classes[matched_idxs]
            else:
                gt_classes = torch.zeros_like(matched_idxs) + self.num_classes
                props.gt_boxes = Boxes(targs.gt_boxes.tensor.new_zeros((len(props), 4)))
                if targs.has("gt_soft_classes"):
                    props.gt_soft_classes = targs.gt_soft_classes.new_zeros((len(props), self.num_classes))
            props.gt_classes = gt_classes
            num_fg.append((labels == 1).sum().item())
            num_bg.append(labels.numel() - num_fg[-1])
        storage = get_event_storage()
        storage.put_scalar(f"stage{stage}/roi_head/num_fg_samples", sum(num_fg) / len(num_fg))
        storage.put_scalar(f"stage{stage}/roi_head/num_bg_samples", sum(num_bg) / len(num_bg))
        return proposals

    def _forward_box(self, features, proposals, targets=None):
        features = [features[f] for f in self.box_in_features]
        head_outputs = []
        prev_pred_boxes = None
        image_sizes = [x.image_size for x in proposals]
        for k in range(self.num_cascade_stages):
            if k > 0:
                proposals = self._create_proposals_from_boxes(prev_pred_boxes, image_sizes)
                if self.training:
                    proposals = self._match_and_label_boxes(proposals, k, targets)
            predictions = self._run_stage(features, proposals, k)
            prev_pred_boxes = self.box_predictor[k].predict_boxes(predictions, proposals)
            head_outputs.append((self.box_predictor[k], predictions, proposals))

        if self.training:
            losses = {}
            storage = get_event_storage()
            for stage, (predictor, predictions, stage_proposals) in enumerate(head_outputs):
                self._attach_soft_targets(stage_proposals)
                with storage.name_scope(f"stage{stage}"):
                    stage_losses = predictor.losses(predictions, stage_proposals)
                losses.update({f"{name}_stage{stage}": v for name, v in stage_losses.items()})
            return losses

        scores_per_stage = [h[0].predict_probs(h[1], h[2]) for h in head_outputs]
        scores = [sum(per_image) * (1.0 / self.num_cascade_stages) for per_image in zip(*scores_per_stage)]
        predictor, predictions, last_proposals = head_outputs[-1]
        boxes = predictor.predict_boxes(predictions, last_proposals)
        return inference_with_class_scores(
            boxes, scores, image_sizes, predictor.test_score_thresh, predictor.test_nms_thresh,
            predictor.test_topk_per_image,
        )

