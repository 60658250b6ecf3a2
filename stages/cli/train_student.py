"""Rule train_student: distillation with calibration-corrected soft pseudo-labels, eq. (5)
(stages.modeling.student).

CLI: python -m stages.cli.train_student --config CFG --variant soft_corrected --labeled-json train85.json
        --unlabeled-json unlabeled.json --image-root R --teacher teacher.pth --ccece ccece.parquet
        --out student.pth --checkpoint-dir DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.core.pseudo_labels import STUDENT_VARIANTS
from stages.modeling.distributed import launch
from stages.modeling.student import train_student
from stages.utils.config import load_stage_config

CONFIG_KEYS = ("seed", "device", "distributed", "model", "student")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Teacher-student distillation with corrected pseudo-labels")
    parser.add_argument("--config", required=True)
    parser.add_argument("--variant", required=True, choices=STUDENT_VARIANTS.names())
    parser.add_argument("--labeled-json", required=True, type=Path)
    parser.add_argument("--unlabeled-json", required=True, type=Path)
    parser.add_argument("--image-root", required=True, type=Path)
    parser.add_argument("--teacher", required=True, type=Path)
    parser.add_argument("--ccece", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--checkpoint-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    config = load_stage_config(args.config, CONFIG_KEYS)
    launch(train_student, config, "student", config, args.variant, args.labeled_json, args.unlabeled_json,
           args.image_root, args.teacher, args.ccece, args.out, args.checkpoint_dir)
    print(f"student ({args.variant}) -> {args.out}")


if __name__ == "__main__":
    main()
