"""The paper-scale run's cost: GPU-hours per rule and disk per artifact, from configs/lvis.yaml, the
measured per-iteration times of the GPU check (benchmarks/gpu.md, when a GPU run has filled it)
and stated assumptions -- every figure says which it is.

    .venv/bin/python -m benchmarks.cost_sheet --out benchmarks/paper_scale.md
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from stages.pipeline.experiments import grid_axes, grid_points
from stages.utils.config import load_config

REPO = Path(__file__).resolve().parent.parent

# LVIS v1 and the paper (section 4.1): what the config does not say.
LVIS_TRAIN_IMAGES = 100_170
LVIS_VAL_IMAGES = 19_809
LVIS_RARE_INSTANCES = 10_800  # annotations of the 337 rare classes in LVIS v1 train (about)
RETRIEVED_IMAGES = 200_000  # "approximately 200k unlabeled images" after dedup (paper)
POOL_IMAGES = 10_000_000  # the paper's "large internal dataset": size not given; an assumption
DETECTOR_PARAMS = 330e6  # Cascade Mask R-CNN with EVA-02-L (304M trunk + pyramid and heads), about
PAPER = {"train_teacher": ("2 x 8 V100", 10.0 * 16), "train_student": ("1 x 8 V100", 24.0 * 8)}


def measured_seconds_per_iteration(gpu_md: Path) -> dict[str, float]:
    """s/iter of the teacher and student rows of a GPU check's table (empty when it has not run on a GPU)."""
    if not gpu_md.is_file() or "CPU dry mode" in gpu_md.read_text():
        return {}
    out = {}
    for line in gpu_md.read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) >= 3 and cells[0] in ("a", "c") and re.match(r"^[0-9.]+$", cells[2]):
            out["train_teacher" if cells[0] == "a" else "train_student"] = float(cells[2])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "lvis.yaml")
    parser.add_argument("--gpu-md", type=Path, default=REPO / "benchmarks" / "gpu.md")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "paper_scale.md")
    args = parser.parse_args()
    config = load_config(args.config)
    measured = measured_seconds_per_iteration(args.gpu_md)
    gpus = {"train_teacher": config["distributed"]["processes_per_machine"] * config["distributed"]["teacher_machines"],
            "train_student": config["distributed"]["processes_per_machine"] * config["distributed"]["student_machines"]}
    iterations = {"train_teacher": config["teacher"]["iterations"], "train_student": config["student"]["iterations"]}
    per_gpu_batch = {"train_teacher": config["teacher"]["batch_size"] / gpus["train_teacher"],
                     "train_student": (config["student"]["labeled_batch_size"]
                                       + config["student"]["unlabeled_batch_size"]) / gpus["train_student"]}

    rows = []
    for rule in ("train_teacher", "train_student"):
        if rule in measured:
            s_iter, source = measured[rule], "s/it measured on one H100 at 2 images per GPU (benchmarks/gpu.md), extrapolated"
        else:
            paper_gpus, paper_hours = PAPER[rule]
            s_iter = paper_hours * 3600 / gpus[rule] / iterations[rule]
            source = f"not measured here (no GPU run yet): the paper's {paper_hours / (16 if 'teacher' in rule else 8):g} h on {paper_gpus}"
        hours = iterations[rule] * s_iter * gpus[rule] / 3600
        rows.append((rule, f"{iterations[rule]:,} it x {s_iter:.2f} s/it x {gpus[rule]} GPUs "
                           f"({per_gpu_batch[rule]:g} images per GPU)", f"{hours:,.0f}", source))
    teacher_runs, student_runs = len(grid_points(config, "teacher")), len(grid_points(config, "student"))
    grid = {section: " x ".join(grid_axes(config, section)) or "no" for section in ("teacher", "student")}
    extra_seeds, students = len(config["seeds"]) - 1, len(config["student"]["variants"])
    teacher_hours, student_hours = (float(r[2].replace(",", "")) for r in rows)
    rows.append((f"tune_teacher ({grid['teacher']} grid on train85)", f"{teacher_runs} teachers",
                 f"{teacher_runs * teacher_hours:,.0f}", "extrapolated from train_teacher (the same iterations on 85% of the images)"))
    rows.append((f"tune_student ({grid['student']} grid)", f"{student_runs} students", f"{student_runs * student_hours:,.0f}",
                 "extrapolated from train_student"))
    rows.append((f"seeds (Table 1 under {extra_seeds} more seeds)", f"{extra_seeds} x (teacher + {students} students)",
                 f"{extra_seeds * (teacher_hours + students * student_hours):,.0f}", "extrapolated"))
    embed_images = POOL_IMAGES + LVIS_TRAIN_IMAGES + LVIS_VAL_IMAGES
    rows.append(("embed_images (DINOv2 ViT-L/14, 224 px)", f"{embed_images:,} images", f"{embed_images / 1000 / 3600:,.1f}",
                 "assumed 1,000 images/s on one GPU (the GPU check's part d measures the model's own rate)"))

    dim = 1024  # DINOv2 ViT-L/14
    checkpoint_gb = DETECTOR_PARAMS * 4 * 3 / 1e9  # weights + AdamW's two moments, float32
    disks = [
        ("retrieval/crops.npy", f"{LVIS_RARE_INSTANCES:,} x {dim} float32", LVIS_RARE_INSTANCES * dim * 4 / 1e9, "estimated"),
        ("retrieval/images_pool.npy (+ index in memory)", f"{POOL_IMAGES:,} x {dim} float32", POOL_IMAGES * dim * 4 / 1e9,
         "estimated; the pool size is an assumption"),
        ("retrieval/images_train.npy, images_val.npy", f"{LVIS_TRAIN_IMAGES + LVIS_VAL_IMAGES:,} x {dim}",
         (LVIS_TRAIN_IMAGES + LVIS_VAL_IMAGES) * dim * 4 / 1e9, "estimated"),
        ("retrieval/neighbours.parquet", f"{LVIS_RARE_INSTANCES:,} x k={config['retrieve']['k']} rows",
         LVIS_RARE_INSTANCES * config["retrieve"]["k"] * 40 / 1e9, "estimated, ~40 bytes per row"),
        ("teacher/*/checkpoints/*.pth (each)", "weights + AdamW state", checkpoint_gb, "estimated"),
        ("calibration/holdout_detections.parquet", f"{int(0.15 * LVIS_TRAIN_IMAGES):,} images x 300",
         0.15 * LVIS_TRAIN_IMAGES * 300 * 150 / 1e9, "estimated, ~150 bytes per detection with its mask RLE"),
        ("eval/val/<model>/detections.json (each of 5)", f"{LVIS_VAL_IMAGES:,} images x 300", LVIS_VAL_IMAGES * 300 * 250 / 1e9,
         "estimated, ~250 bytes per detection in json"),
    ]
    lines = ["# The paper-scale run's cost (benchmarks/cost_sheet.py)", "",
             "`.venv/bin/python -m benchmarks.cost_sheet --out benchmarks/paper_scale.md`", "",
             f"From `{args.config.resolve().relative_to(REPO) if args.config.resolve().is_relative_to(REPO) else args.config}`: LVIS v1 ({LVIS_TRAIN_IMAGES:,} train images), about "
             f"{RETRIEVED_IMAGES:,} retrieved unlabeled images (the paper), the paper's schedule. Every figure says "
             "whether it was measured, extrapolated from a measurement, or assumed.", "",
             "## GPU-hours per rule", "", "| rule | work | GPU-hours | source |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines += ["", f"The paper's own figures: teacher {PAPER['train_teacher'][0]} for about 10 h "
              f"({PAPER['train_teacher'][1]:.0f} GPU-hours), student {PAPER['train_student'][0]} for about 24 h "
              f"({PAPER['train_student'][1]:.0f} GPU-hours).", "",
              "## Disk per artifact", "", "| artifact | size of | GB | source |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c:,.2f} | {d} |" for a, b, c, d in disks]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
