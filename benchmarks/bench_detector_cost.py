"""The default detector's cost on 2 CPU cores, side by side in one run: the knobs set by cost.

On a finished run of the LVIS-shaped default (its train85 split, similarity and teacher):
- seconds per teacher iteration (forward + backward + SGD step, batch ``teacher.batch_size``) at
  ``model.roi_batch_size`` 128 and 64;
- seconds per val image of inference with detectron2's mask head and with the class-gathered one
  (``stages/modeling/mask_head.py``), at ``model.detections_per_image`` 300 and 100.
Every variant runs the same batches; writes a markdown table.

    .venv/bin/python -m benchmarks.bench_detector_cost --run results/default --out benchmarks/detector_cost.md
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from pathlib import Path

import yaml
from detectron2.utils.events import EventStorage

from stages.data.lvis import category_order, load_lvis
from stages.modeling.data import train_mapper
from stages.modeling.predictor import load_detector, predict
from stages.modeling.teacher import build_teacher
from stages.modeling.training import IterationBatches, build_optimizer
from stages.utils.device import configure_torch


def seconds_per_iteration(config: dict, run: Path, iterations: int, warmup: int = 3,
                          on_warm: Callable[[], None] | None = None) -> float:
    """Seconds per teacher iteration over ``iterations`` after ``warmup``; ``on_warm`` is called once
    the model is built and warm, just before the timer starts (bench_parallel_jobs aligns jobs on it)."""
    model, cfg, dicts, weights = build_teacher(config, run / "split" / "train85.json", run / "data" / "images",
                                               run / "prototypes" / "train85" / "similarity.npy")
    model.train()
    optimizer = build_optimizer(cfg, model)
    batches = IterationBatches(dicts, train_mapper(config), config["teacher"]["batch_size"], 0, 0, warmup + iterations,
                               weights)
    with EventStorage(0):
        for i in range(warmup + iterations):
            if i == warmup:
                if on_warm is not None:
                    on_warm()
                start = time.perf_counter()
            losses = model(batches[i])
            sum(losses.values()).backward()
            optimizer.step()
            optimizer.zero_grad()
    return (time.perf_counter() - start) / iterations


def seconds_per_image(config: dict, run: Path, images: int, mask_head: str) -> float:
    val = load_lvis(run / "data" / "val.json")
    category_ids = [c["id"] for c in category_order(val)]
    model = load_detector(config, run / "teacher" / "train85" / "model_final.pth", len(category_ids))
    if mask_head == "detectron2":  # the same weights in detectron2's own head class
        from detectron2.modeling.roi_heads.mask_head import MaskRCNNConvUpsampleHead
        model.roi_heads.mask_head.__class__ = MaskRCNNConvUpsampleHead
    subset = val["images"][:images]
    predict(model, config, subset[:4], run / "data" / "images", category_ids)  # warm-up
    start = time.perf_counter()
    predict(model, config, subset, run / "data" / "images", category_ids)
    return (time.perf_counter() - start) / len(subset)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("results/default"))
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    base = dict(yaml.safe_load((args.run / "config" / "train_teacher.yaml").read_text()))  # the run's teacher config
    base["device"] = "cpu"
    threads = base.get("num_threads", 2)
    configure_torch(threads, "cpu")
    rows = ["| measurement | setting | seconds |", "|---|---|---|"]
    for roi in (128, 64):
        config = copy.deepcopy(base)
        config["model"]["roi_batch_size"] = roi
        rows.append(f"| teacher iteration (batch {config['teacher']['batch_size']}) | roi_batch_size {roi} | "
                    f"{seconds_per_iteration(config, args.run, args.iterations):.3f} |")
    for cap in (300, 100):
        for head in ("detectron2", "class_gathered"):
            config = copy.deepcopy(base)
            config["model"]["detections_per_image"] = cap
            rows.append(f"| val image, inference | detections_per_image {cap}, {head} mask head | "
                        f"{seconds_per_image(config, args.run, args.images, head):.3f} |")
    text = (f"# The default detector's cost (2 CPU cores, torch threads {threads})\n\n"
            f"`python -m benchmarks.bench_detector_cost --run {args.run}`: {args.iterations} teacher iterations "
            f"after 3 of warm-up, {args.images} val images, side by side in one run.\n\n" + "\n".join(rows) + "\n")
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
