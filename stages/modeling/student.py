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

import torch
from detectron2.engine import hooks
from detectron2.layers import batched_nms
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage

from stages.core.pseudo_labels import pseudo_label_targets
from stages.data.artifacts import read_delta
from stages.data.lvis import category_order, dataset_dicts, image_counts, load_lvis, register
from stages.modeling.build import build_detector, detectron2_config
from stages.modeling.data import WeakStrongMapper, fed_loss_weights, train_mapper
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


def select_pseudo_labels(detections: Instances, delta: torch.Tensor, lam: float, variant: str, loss: str,
                         threshold: float, nms_threshold: float = 0.5) -> Instances:
    """Teacher detections (with ``class_scores`` and ``pred_masks``) -> student targets.

    Kept: detections whose (variant's) class score exceeds ``threshold``; then class-agnostic NMS,
    since per-class NMS can leave one object under several classes and the soft vector already
    says how the mass is shared among them.
    """
    out = Instances(detections.image_size)
    targets, scores = pseudo_label_targets(detections.class_scores, detections.pred_classes, delta, lam, variant, loss)
    keep = torch.nonzero(scores > threshold).flatten()
    if keep.numel():
        boxes = detections.pred_boxes.tensor[keep]
        nms_keep = batched_nms(boxes, scores[keep], torch.zeros_like(keep), nms_threshold)
        keep = keep[nms_keep]
    out.gt_boxes = Boxes(detections.pred_boxes.tensor[keep])
    out.gt_classes = detections.pred_classes[keep]
    out.gt_soft_classes = targets[keep]
    out.pseudo_scores = scores[keep]
    h, w = detections.image_size
    masks = detections.pred_masks[keep] if detections.has("pred_masks") else torch.zeros((keep.numel(), h, w))
    out.gt_masks = BitMasks(masks.to(torch.bool))
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
                 config: dict[str, Any], variant: str):
        self.student, self.teacher, self.delta = student, teacher, delta
        self.student_cfg = config["student"]
        self.loss_kind = config["model"]["classifier_loss"]
        self.variant = variant
        self.device = torch.device(config["device"])

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
            pseudo = select_pseudo_labels(out["instances"], self.delta.to(self.device), self.student_cfg["lambda"],
                                          self.variant, self.loss_kind, self.student_cfg["score_threshold"])
            batch.append({"image": u["image"], "height": u["height"], "width": u["width"], "instances": pseudo})
        # Logged with the losses: how many pseudo-labels survive the (corrected) threshold.
        get_event_storage().put_scalar("pseudo_labels_per_image", sum(len(b["instances"]) for b in batch) / len(batch))
        return batch

    def __call__(self, data: tuple[list[dict], list[dict]]) -> dict[str, torch.Tensor]:
        labeled, unlabeled = data
        pseudo_batch = self.pseudo_label(unlabeled)
        # Two forward passes, one optimizer step: the labeled loss is backpropagated here (without
        # DDP's all-reduce), the unlabeled one by the trainer, whose backward all-reduces the sum.
        labeled_losses = self.student(labeled)
        no_sync = getattr(self.student, "no_sync", contextlib.nullcontext)
        with no_sync():
            sum(labeled_losses.values()).backward()
        losses = {f"{k}_labeled": v.detach() for k, v in labeled_losses.items()}
        weight = self.student_cfg["unlabeled_weight"]
        losses.update({f"{k}_unlabeled": weight * v for k, v in self.student(pseudo_batch).items()})
        return losses


def train_student(config: dict[str, Any], variant: str, labeled_json: Path, unlabeled_json: Path, image_root: Path,
                  teacher_weights: Path, ccece_path: Path, out: Path, checkpoint_dir: Path) -> None:
    student_cfg = config["student"]
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
    cfg = detectron2_config(config, num_classes, solver=student_cfg)
    cfg.MODEL.TIMM.WEIGHTS = ""
    student = build_detector(cfg)
    student.load_state_dict(load_checkpoint_state(teacher_weights))
    # The labeled stream keeps the teacher's eq. (3) targets (carried in its checkpoint); the
    # federated loss uses this split's image counts.
    student.roi_heads.set_fed_loss_weights(torch.as_tensor(fed_loss_weights(image_counts(labeled))))
    student.train()
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
    if student_cfg["batch_size"] % (2 * world_size):
        raise ValueError(f"student.batch_size={student_cfg['batch_size']} must split into labeled and unlabeled "
                         f"halves over {world_size} processes")
    half = student_cfg["batch_size"] // (2 * world_size)
    labeled_weights = sampling_weights(labeled_dicts, config["model"]["repeat_factor_threshold"])
    labeled_mapper, unlabeled_mapper = train_mapper(config), WeakStrongMapper(config)

    def dataset(start_iter: int) -> ZippedBatches:
        return ZippedBatches(
            IterationBatches(labeled_dicts, labeled_mapper, half, config["seed"], start_iter, cfg.SOLVER.MAX_ITER,
                             labeled_weights, stream=0, rank=rank),
            IterationBatches(unlabeled_dicts, unlabeled_mapper, half, config["seed"], start_iter, cfg.SOLVER.MAX_ITER,
                             None, stream=1, rank=rank),
        )

    extra: dict[str, Any] = {}
    if student_cfg["ema_decay"] is not None:
        extra["teacher"] = teacher  # the EMA teacher is part of the resumable state
    trainer_hooks = [EMAUpdate(teacher, student, student_cfg["ema_decay"])] if student_cfg["ema_decay"] is not None else []
    train(student, cfg, dataset, checkpoint_dir, out, config["seed"], workers=config["data_workers"], loss_factory=lambda trained: StudentLoss(trained, teacher, delta, config, variant),
          extra_checkpointables=extra, extra_hooks=trainer_hooks)
