"""The student is its teacher until it learns: same architecture (frozen BatchNorm included), and with
a zero learning rate the same weights and the same predictions after training steps -- for every
registered backbone."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from stages.data.lvis import category_order, image_counts, load_lvis
from stages.modeling.data import fed_loss_weights
from stages.modeling.predictor import load_detector, predict
from stages.modeling.student import build_student, train_student
from stages.modeling.teacher import train_teacher
from tests.conftest import identity_similarity, tiny_config, write_ccece

BACKBONES = {
    "efficientnet_lite0_fpn": {},  # packaged ImageNet weights: frozen BatchNorm
    "vit_sfp": {"timm_model": "vit_tiny_patch16_224", "backbone_weights": None},
}


def _config(tmp_path: Path, backbone: str) -> dict:
    config = tiny_config(tmp_path / "results")
    # a low score threshold: a teacher of 3 iterations from random weights detects something to compare
    config["model"].update(backbone=backbone, test_score_threshold=0.001, **BACKBONES[backbone])
    config["teacher"].update(smoothing="uniform", iterations=3, warmup_iters=1, checkpoint_period=10)
    config["student"].update(iterations=3, warmup_iters=1, checkpoint_period=10, base_lr=0.0, score_threshold=0.01)
    return config


@pytest.mark.slow
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_a_student_that_learns_nothing_predicts_as_its_teacher(backbone: str, tiny_minilvis: Path,
                                                               tmp_path: Path) -> None:
    config = _config(tmp_path, backbone)
    train_json, root = tiny_minilvis / "train.json", tiny_minilvis / "images"
    teacher_path = tmp_path / "teacher.pth"
    train_teacher(copy.deepcopy(config), train_json, root, identity_similarity(tmp_path / "s.npy", train_json),
                  teacher_path, tmp_path / "teacher_ckpt")
    data = load_lvis(train_json)
    num_classes = len(data["categories"])

    teacher = load_detector(config, teacher_path, num_classes)
    _, student = build_student(config, teacher_path, num_classes, fed_loss_weights(image_counts(data)))
    assert [type(m) for m in student.modules()] == [type(m) for m in teacher.modules()]

    student_path = tmp_path / "student.pth"
    # soft pseudo-labels with a non-zero Delta: every part of the student's step runs, at learning rate 0
    train_student(copy.deepcopy(config), "soft_corrected", train_json, tiny_minilvis / "pool.json", root, teacher_path,
                  write_ccece(tmp_path / "ccece.parquet", data["categories"], 0.1), student_path, tmp_path / "student_ckpt")
    before = torch.load(teacher_path, map_location="cpu", weights_only=True)["model"]
    after = torch.load(student_path, map_location="cpu", weights_only=True)["model"]
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, f"a student at learning rate 0 changed {changed[:5]}"

    val = load_lvis(tiny_minilvis / "val.json")
    ids = [c["id"] for c in category_order(val)]
    images = sorted(val["images"], key=lambda img: img["id"])[:6]
    from_teacher = predict(teacher, config, images, root, ids)
    from_student = predict(load_detector(config, student_path, num_classes), config, images, root, ids)
    assert from_teacher and from_student == from_teacher
