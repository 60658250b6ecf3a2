"""Teacher-student distillation with calibration-corrected soft pseudo-labels (eq. 5).

Each step: a labeled batch (weak augmentation, eq. (3) targets as for the teacher) and an
unlabeled batch; the teacher sees the weak view of each unlabeled image, its detections become
pseudo-labels (:func:`select_pseudo_labels`, targets from stages.core.pseudo_labels), and the
student learns them on the strong view. The loss is L_labeled + unlabeled_weight * L_unlabeled.
The student starts from the teacher's weights; the teacher stays fixed, or follows the student as
an EMA when ``student.ema_decay`` is set.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.engine import hooks
from detectron2.layers import batched_nms
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage

from stages.core.pseudo_labels import PseudoLabelRule
from stages.data.artifacts import read_delta
from stages.data.lvis import category_order, dataset_dicts, image_counts, load_lvis, register
from stages.modeling.build import build_detector, detectron2_config
from stages.modeling.data import WeakStrongMapper, fed_loss_weights, repeat_factor_threshold, train_mapper
from stages.modeling.predictor import load_detector
from stages.modeling.training import (
    IterationBatches,
    ZippedBatches,
    file_digest,
    prepare_checkpoint_dir,
    sampling_weights,
    setup_logging,
    train,
)
from stages.utils.device import configure_torch
from stages.utils.weights import load_checkpoint_state


def pseudo_label_selection(detections: Instances, delta: torch.Tensor, rule: PseudoLabelRule
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which of N teacher detections become pseudo-labels under ``rule`` (stages.core.pseudo_labels):
    (kept indices, ignore-band indices, the variant's targets (N, C), the selection scores (N,));
    every other detection is dropped.

    Kept: detections whose selection score exceeds ``rule.score_threshold``, after class-agnostic NMS
    at ``rule.nms_threshold`` (per-class NMS can leave one object under several classes, and the
    soft vector already says how the mass is shared among them). With ``rule.ignore_threshold``, the
    detections scoring between it and the threshold that survive the same NMS form the ignore band.
    """
    targets, scores = rule.targets(detections.class_scores, detections.pred_classes, delta)
    threshold, ignore_threshold = rule.score_threshold, rule.ignore_threshold
    low = threshold if ignore_threshold is None else min(ignore_threshold, threshold)
    candidates = torch.nonzero(scores > low).flatten()
    if candidates.numel():
        boxes = detections.pred_boxes.tensor[candidates]
        candidates = candidates[batched_nms(boxes, scores[candidates], torch.zeros_like(candidates), rule.nms_threshold)]
    return candidates[scores[candidates] > threshold], candidates[scores[candidates] <= threshold], targets, scores


def select_pseudo_labels(detections: Instances, delta: torch.Tensor, rule: PseudoLabelRule) -> Instances:
    """Teacher detections (with ``class_scores`` (N, C) and ``pred_masks``) and the teacher's per-class
    Delta (C,) -> student targets under ``rule``: the kept detections of
    :func:`pseudo_label_selection` with their targets, then its ignore band as ignore regions
    (``gt_classes`` -1): the proposals on them are left out of the classification loss -- neither
    object nor background, since the teacher was not sure either way.
    """
    keep, band, targets, scores = pseudo_label_selection(detections, delta, rule)
    out = Instances(detections.image_size)
    order = torch.cat([keep, band])
    out.gt_boxes = Boxes(detections.pred_boxes.tensor[order])
    out.gt_classes = torch.cat([detections.pred_classes[keep], torch.full_like(detections.pred_classes[band], -1)])
    out.gt_soft_classes = torch.cat([targets[keep], torch.zeros_like(targets[band])])
    out.pseudo_scores = scores[order]
    h, w = detections.image_size
    masks = detections.pred_masks[order] if detections.has("pred_masks") else torch.zeros((order.numel(), h, w))
    masks = masks.to(torch.bool)
    masks[keep.numel():] = False  # ignore regions teach no mask
    out.gt_masks = BitMasks(masks)
    return out


class EMAUpdate(hooks.HookBase):
    """teacher <- decay * teacher + (1 - decay) * student, after every step."""

    def __init__(self, teacher: torch.nn.Module, student: torch.nn.Module, decay: float):
        self.teacher, self.student, self.decay = teacher, student, decay

    @torch.no_grad()
    def after_step(self) -> None:
        student_state = self.student.state_dict()
        for name, value in self.teacher.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(self.decay).add_(student_state[name], alpha=1 - self.decay)


class StudentLoss:
    """The loss of one distillation step (called by the trainer with the zipped batches)."""

    def __init__(self, student: torch.nn.Module, teacher: torch.nn.Module, delta: torch.Tensor,
                 rule: PseudoLabelRule, unlabeled_weight: float, device: str):
        self.student, self.teacher, self.delta, self.rule = student, teacher, delta, rule
        self.unlabeled_weight = unlabeled_weight
        self.uses_unlabeled = rule.kind.uses_unlabeled
        self.device = torch.device(device)

    @torch.no_grad()
    def pseudo_label(self, unlabeled: list[dict]) -> list[dict]:
        self.teacher.eval()
        weak = [{"image": u["image_weak"].float().to(self.device), "height": u["height"], "width": u["width"]}
                for u in unlabeled]
        try:
            outputs = self.teacher(weak)
        except FloatingPointError as exc:
            ids = [u.get("image_id") for u in unlabeled]
            raise FloatingPointError(f"teacher pseudo-labels at iteration {get_event_storage().iter}, "
                                     f"unlabeled images {ids}: {exc}") from exc
        batch = []
        for u, out in zip(unlabeled, outputs):
            pseudo = select_pseudo_labels(out["instances"], self.delta.to(self.device), self.rule)
            batch.append({"image": u["image"], "height": u["height"], "width": u["width"], "instances": pseudo})
        # Logged with the losses: how many pseudo-labels pass the threshold, how many regions are ignored.
        storage = get_event_storage()
        storage.put_scalar("pseudo_labels_per_image", sum(int((b["instances"].gt_classes >= 0).sum()) for b in batch) / len(batch))
        storage.put_scalar("ignored_per_image", sum(int((b["instances"].gt_classes < 0).sum()) for b in batch) / len(batch))
        return batch

    def __call__(self, data: tuple[list[dict], ...]) -> dict[str, torch.Tensor]:
        if not self.uses_unlabeled:  # the control: the same schedule on the labeled stream alone
            return {f"{k}_labeled": v for k, v in self.student(data[0]).items()}
        labeled, unlabeled = data
        pseudo_batch = self.pseudo_label(unlabeled)
        # Two forward passes, one optimizer step: the labeled loss is backpropagated here (without
        # DDP's all-reduce), the unlabeled one by the trainer, whose backward all-reduces the sum.
        labeled_losses = self.student(labeled)
        no_sync = getattr(self.student, "no_sync", contextlib.nullcontext)
        with no_sync():
            sum(labeled_losses.values()).backward()
        losses = {f"{k}_labeled": v.detach() for k, v in labeled_losses.items()}
        losses.update({f"{k}_unlabeled": self.unlabeled_weight * v for k, v in self.student(pseudo_batch).items()})
        return losses


def build_student(config: dict[str, Any], teacher_weights: Path, num_classes: int,
                  fed_weights: np.ndarray) -> tuple[CfgNode, torch.nn.Module]:
    """(detectron2 config with the student's schedule, the student in train mode): the teacher's
    architecture -- frozen BatchNorm included -- with the teacher's weights.

    The labeled stream keeps the teacher's eq. (3) targets (carried in its checkpoint); the
    federated loss uses the labeled split's image counts (``fed_weights``).
    """
    cfg = detectron2_config(config, num_classes, solver=config["student"])
    cfg.MODEL.TIMM.WEIGHTS = ""  # the teacher's checkpoint sets every weight; FROZEN_BN stays as configured
    student = build_detector(cfg)
    student.load_state_dict(load_checkpoint_state(teacher_weights))
    student.roi_heads.set_fed_loss_weights(torch.as_tensor(fed_weights))
    student.train()
    return cfg, student


def train_student(config: dict[str, Any], variant: str, labeled_json: Path, unlabeled_json: Path, image_root: Path,
                  teacher_weights: Path, ccece_path: Path, out: Path, checkpoint_dir: Path) -> None:
    student_cfg = config["student"]
    rule = PseudoLabelRule.from_config(config, variant)  # a bad variant or setting fails before any data is read
    configure_torch(config["num_threads"], config["device"])
    labeled = load_lvis(labeled_json)
    unlabeled = load_lvis(unlabeled_json, require_annotations=False)
    categories = category_order(labeled)
    num_classes = len(categories)
    labeled_dicts = register("student_labeled", labeled_json, image_root)
    unlabeled_dicts = dataset_dicts(unlabeled, image_root)
    if not unlabeled_dicts:
        raise ValueError(f"{unlabeled_json}: no unlabeled images")
    delta = torch.as_tensor(read_delta(ccece_path, categories))

    teacher = load_detector(config, teacher_weights, num_classes)
    cfg, student = build_student(config, teacher_weights, num_classes, fed_loss_weights(image_counts(labeled)))
    if student_cfg["ema_decay"] is None:
        for p in teacher.parameters():
            p.requires_grad_(False)

    signature = {
        "config": {k: config[k] for k in ("seed", "model", "student")},
        "variant": variant,
        "labeled": file_digest(labeled_json), "unlabeled": file_digest(unlabeled_json),
        "teacher": file_digest(teacher_weights), "ccece": file_digest(ccece_path),
    }
    checkpoint_dir = prepare_checkpoint_dir(checkpoint_dir, signature)
    setup_logging(checkpoint_dir)
    world_size, rank = comm.get_world_size(), comm.get_rank()
    for key in ("labeled_batch_size", "unlabeled_batch_size"):
        if student_cfg[key] % world_size:
            raise ValueError(f"student.{key}={student_cfg[key]} does not split over {world_size} processes")
    labeled_weights = sampling_weights(
        labeled_dicts, repeat_factor_threshold(config["model"]["repeat_factor_threshold"], labeled, str(labeled_json)))
    labeled_mapper, unlabeled_mapper = train_mapper(config), WeakStrongMapper(config)
    uses_unlabeled = rule.kind.uses_unlabeled

    def dataset(start_iter: int) -> ZippedBatches:
        streams = [IterationBatches(labeled_dicts, labeled_mapper, student_cfg["labeled_batch_size"] // world_size,
                                    config["seed"], start_iter, cfg.SOLVER.MAX_ITER, labeled_weights, stream=0, rank=rank)]
        if uses_unlabeled:
            streams.append(IterationBatches(unlabeled_dicts, unlabeled_mapper,
                                            student_cfg["unlabeled_batch_size"] // world_size, config["seed"],
                                            start_iter, cfg.SOLVER.MAX_ITER, None, stream=1, rank=rank))
        return ZippedBatches(*streams)

    extra: dict[str, Any] = {}
    if student_cfg["ema_decay"] is not None:
        extra["teacher"] = teacher  # the EMA teacher is part of the resumable state
    trainer_hooks = [EMAUpdate(teacher, student, student_cfg["ema_decay"])] if student_cfg["ema_decay"] is not None else []
    train(student, cfg, dataset, checkpoint_dir, out, config["seed"], workers=config["data_workers"],
          loss_factory=lambda trained: StudentLoss(trained, teacher, delta, rule, student_cfg["unlabeled_weight"],
                                                   config["device"]),
          extra_checkpointables=extra, extra_hooks=trainer_hooks)
