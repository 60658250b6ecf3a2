"""The teacher: Cascade Mask R-CNN trained with eq. (3) smoothed targets (stages.core.smoothing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.utils import comm

from stages.core.smoothing import smoothed_targets
from stages.data.artifacts import read_similarity
from stages.data.lvis import image_counts, load_lvis, register
from stages.modeling.build import build_detector, detectron2_config
from stages.modeling.data import fed_loss_weights, repeat_factor_threshold, train_mapper
from stages.modeling.training import (
    IterationBatches,
    file_digest,
    prepare_checkpoint_dir,
    sampling_weights,
    setup_logging,
    train,
)
from stages.utils.device import configure_torch


def build_teacher(config: dict[str, Any], train_json: Path, image_root: Path, similarity_path: Path
                  ) -> tuple[torch.nn.Module, CfgNode, list[dict], np.ndarray]:
    """The untrained teacher of ``config`` for ``train_json``: (detector with the eq. (3) targets of
    ``teacher.smoothing`` from S' at ``similarity_path`` and the fed-loss weights, its detectron2
    config, the registered dataset dicts, their repeat-factor sampling probabilities)."""
    data = load_lvis(train_json)
    dicts = register("teacher_train", train_json, image_root)
    num_classes = len(data["categories"])
    similarity = read_similarity(similarity_path, num_classes)
    targets = smoothed_targets(config["teacher"]["smoothing"], similarity, config["teacher"]["eps"])
    cfg = detectron2_config(config, num_classes, solver=config["teacher"])
    model = build_detector(cfg, targets, fed_loss_weights(image_counts(data)))
    threshold = repeat_factor_threshold(config["model"]["repeat_factor_threshold"], data, str(train_json))
    return model, cfg, dicts, sampling_weights(dicts, threshold)


def train_teacher(config: dict[str, Any], train_json: Path, image_root: Path, similarity_path: Path, out: Path,
                  checkpoint_dir: Path) -> None:
    """Train on ``train_json`` with the eq. (3) targets of ``teacher.smoothing`` (S' from
    ``similarity_path``); final weights to ``out``, resumable checkpoints in ``checkpoint_dir``."""
    teacher_cfg = config["teacher"]
    configure_torch(config["num_threads"], config["device"])
    model, cfg, dicts, weights = build_teacher(config, train_json, image_root, similarity_path)
    signature = {
        "config": {k: config[k] for k in ("seed", "model", "teacher")},
        "train_json": file_digest(train_json),
        "similarity": file_digest(similarity_path),
    }
    checkpoint_dir = prepare_checkpoint_dir(checkpoint_dir, signature)
    setup_logging(checkpoint_dir)
    mapper = train_mapper(config)

    world_size, rank = comm.get_world_size(), comm.get_rank()
    if teacher_cfg["batch_size"] % world_size:
        raise ValueError(f"teacher.batch_size={teacher_cfg['batch_size']} does not split over {world_size} processes")

    def dataset(start_iter: int) -> IterationBatches:
        return IterationBatches(dicts, mapper, teacher_cfg["batch_size"] // world_size, config["seed"], start_iter,
                                cfg.SOLVER.MAX_ITER, weights, rank=rank)

    train(model, cfg, dataset, checkpoint_dir, out, config["seed"], workers=config["data_workers"])
