"""Train the teacher: Cascade Mask R-CNN with eq. (3) similarity-and-frequency smoothed targets.

CLI: python -m stages.train_teacher --config CFG --train-json train85.json --image-root R
        --similarity similarity.npy --out teacher/model_final.pth --checkpoint-dir teacher/checkpoints
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from detectron2.utils import comm

from stages.config import load_config
from stages.detector_data import fed_loss_weights, train_mapper
from stages.device import configure_torch
from stages.distributed import launch
from stages.lvis_data import image_counts, load_lvis, register
from stages.modeling.build import build_detector, detectron2_config
from stages.similarity import smoothed_targets
from stages.training import (
    IterationBatches,
    file_digest,
    prepare_checkpoint_dir,
    sampling_weights,
    setup_logging,
    train,
)


def train_teacher(config: dict[str, Any], train_json: Path, image_root: Path, similarity_path: Path | None,
                  out: Path, checkpoint_dir: Path, smoothing: str | None = None, eps: float | None = None) -> None:
    teacher_cfg = config["teacher"]
    smoothing = smoothing or teacher_cfg["smoothing"]
    eps = teacher_cfg["eps"] if eps is None else eps
    configure_torch(config["num_threads"], config["device"])
    data = load_lvis(train_json)
    dicts = register("teacher_train", train_json, image_root)
    num_classes = len(data["categories"])
    if smoothing == "similarity":
        if similarity_path is None:
            raise ValueError("similarity smoothing needs --similarity")
        similarity = np.load(similarity_path, allow_pickle=False)
    else:
        similarity = np.eye(num_classes, dtype=np.float32)
    if similarity.shape != (num_classes, num_classes):
        raise ValueError(f"{similarity_path}: shape {similarity.shape}, but {train_json} has {num_classes} categories")
    targets = smoothed_targets(similarity, eps, smoothing)
    cfg = detectron2_config(config, num_classes, phase="teacher")
    model = build_detector(cfg, targets, fed_loss_weights(image_counts(data)))
    signature = {
        "config": {k: config[k] for k in ("seed", "model", "teacher")},
        "smoothing": smoothing, "eps": eps,
        "train_json": file_digest(train_json),
        "similarity": file_digest(similarity_path) if similarity_path else None,
    }
    checkpoint_dir = prepare_checkpoint_dir(checkpoint_dir, signature)
    setup_logging(checkpoint_dir)
    weights = sampling_weights(dicts, config["model"]["repeat_factor_threshold"])
    mapper = train_mapper(config)

    world_size, rank = comm.get_world_size(), comm.get_rank()
    if teacher_cfg["batch_size"] % world_size:
        raise ValueError(f"teacher.batch_size={teacher_cfg['batch_size']} does not split over {world_size} processes")

    def dataset(start_iter: int) -> IterationBatches:
        return IterationBatches(dicts, mapper, teacher_cfg["batch_size"] // world_size, config["seed"], start_iter,
                                cfg.SOLVER.MAX_ITER, weights, rank=rank)

    train(model, cfg, dataset, checkpoint_dir, out, config["seed"], workers=config["data_workers"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the teacher with eq. (3) smoothed targets")
    parser.add_argument("--config", required=True)
    parser.add_argument("--train-json", required=True, type=Path)
    parser.add_argument("--image-root", required=True, type=Path)
    parser.add_argument("--similarity", type=Path, default=None)
    parser.add_argument("--smoothing", default=None, help="override teacher.smoothing")
    parser.add_argument("--eps", type=float, default=None, help="override teacher.eps")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--checkpoint-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    launch(train_teacher, config, "teacher", config, args.train_json, args.image_root, args.similarity, args.out,
           args.checkpoint_dir, args.smoothing, args.eps)
    print(f"teacher -> {args.out}")


if __name__ == "__main__":
    main()
