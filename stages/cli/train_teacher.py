"""Rule train_teacher: Cascade Mask R-CNN with eq. (3) smoothed targets (stages.modeling.teacher).

CLI: python -m stages.cli.train_teacher --config CFG --train-json train85.json --image-root R
        --similarity similarity.npy --out teacher/model_final.pth --checkpoint-dir teacher/checkpoints
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.modeling.distributed import launch
from stages.modeling.teacher import train_teacher
from stages.utils.config import load_stage_config

CONFIG_KEYS = ("seed", "device", "distributed", "model", "teacher")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the teacher with eq. (3) smoothed targets")
    parser.add_argument("--config", required=True)
    parser.add_argument("--train-json", required=True, type=Path)
    parser.add_argument("--image-root", required=True, type=Path)
    parser.add_argument("--similarity", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--checkpoint-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    config = load_stage_config(args.config, CONFIG_KEYS)
    launch(train_teacher, config, "teacher", config, args.train_json, args.image_root, args.similarity, args.out,
           args.checkpoint_dir)
    print(f"teacher -> {args.out}")


if __name__ == "__main__":
    main()
