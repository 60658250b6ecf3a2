"""Rule fig5: the paper's Fig. 5 -- val images with rare classes: the image, the ground truth, the
teacher's and the student's top detections, chosen by the fixed rule of stages.reporting.examples.

Writes fig5_examples.png and fig5_examples.csv (the shown images, why each was chosen, what each
model finds).

CLI: python -m stages.cli.fig5 --config CFG --val-json val.json --image-root R --teacher teacher/detections.json \
     --student student/detections.json --student-name student_soft_corrected --out-png P --out-csv C
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.data.detections import read_detections
from stages.data.lvis import load_lvis
from stages.reporting.drawing import run_metadata
from stages.reporting.examples import examples_figure, select_examples
from stages.utils.atomic import write_csv, write_figure
from stages.utils.config import load_stage_config

CONFIG_KEYS = ("seed", "figures")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fig. 5: qualitative examples on val images with rare classes")
    parser.add_argument("--config", required=True)
    parser.add_argument("--val-json", required=True, type=Path)
    parser.add_argument("--image-root", required=True, type=Path)
    parser.add_argument("--teacher", required=True, type=Path, help="the teacher's val detections")
    parser.add_argument("--student", required=True, type=Path, help="the student's val detections")
    parser.add_argument("--student-name", default="student")
    parser.add_argument("--out-png", required=True, type=Path)
    parser.add_argument("--out-csv", required=True, type=Path)
    args = parser.parse_args(argv)
    config = load_stage_config(args.config, CONFIG_KEYS)
    val = load_lvis(args.val_json)
    teacher, student = read_detections(args.teacher), read_detections(args.student)
    metadata = run_metadata("fig5_val", args.val_json, args.image_root)
    selection = select_examples(val, teacher, student, config["figures"], config["seed"])
    write_csv(selection, args.out_csv)
    write_figure(examples_figure(selection, val, teacher, student, args.image_root, metadata, config["figures"],
                                 ("teacher", args.student_name)), args.out_png)
    print(f"fig5: {len(selection)} images ({selection['kind'].value_counts().to_dict()}) -> {args.out_png}")


if __name__ == "__main__":
    main()
