"""Why a single model's bootstrap interval of AP sits above its point: class mix or within-class bias.

Table 1's single-model intervals are percentile intervals of a paired image-level bootstrap
(stages.evaluation.bootstrap). On the default run they sit mostly above their point (teacher AP
43.4 [43.2, 46.5]): the mean of the resampled AP is above the AP of the data as it is. LVIS AP is
the mean over categories of a per-category AP, so a draw can raise it in two ways:

- **class mix**: a category without ground truth in the draw drops out of the mean (a category
  with one val image does in about 37% of the draws, (1 - 1/n)^n; with two, 13%); if the dropped
  categories score below the mean, the mean rises with the same per-category APs;
- **within class**: a category's AP on the draw differs from its AP on the data as it is (its
  interpolated precision is a running maximum over the curve, so noise in the curve raises it).

For every model of a finished run this writes, for AP and APr, the mean over the draws of
(draw AP - point) split as

    class mix    = mean over draws of [mean of the *original* per-category APs over the categories
                   the draw has] - point
    within class = the rest: mean over draws of [draw AP - that same-category mean of originals]

with the share of draws above the point and the percentile interval of the bootstrap stage.
The draws are the bootstrap stage's own (``draw_weights`` with the run's seed); APr's figures are
over the draws that hold a rare category (the others have no APr, as in the bootstrap stage). The
models are those evaluated on the main evaluation set, val (``eval/val/<model>/detections.json``).

    .venv/bin/python -m benchmarks.bench_bootstrap_bias --run results/default --draws 300 --out benchmarks/bootstrap_bias.md
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import yaml

from stages.data.detections import check_results, read_detections
from stages.data.lvis import load_lvis
from stages.evaluation.bootstrap import ModelEvaluation, draw_weights, interval, prepare_models
from stages.evaluation.fast_lvis_eval import accumulate
from stages.evaluation.lvis_eval import category_ap

EVALSET = "val"  # the main evaluation set, whose detections the bootstrap stage resamples


def per_category_ap(e: ModelEvaluation, image_weights: np.ndarray | None) -> np.ndarray:
    """(K,) AP (0-100; of the IoU type ``e`` was matched with) of each category on the data set in
    which image r appears ``image_weights[r]`` times, NaN for a category without ground truth there;
    LVIS AP is the mean of the finite entries (stages.evaluation.lvis_eval.category_ap)."""
    return 100.0 * category_ap(accumulate(e.matched, image_weights, areas=[0])[0][:, :, :, 0])


def bias_decomposition(e: ModelEvaluation, weights: np.ndarray, level: float = 0.95) -> list[dict[str, float | str]]:
    """For AP and APr (rare categories, ``freq_groups[0]``): the point, the mean over the draws
    (``weights``: (draws, n_images) multiplicities), its split into class mix and within class (see
    the module docstring; class_mix + within_class = mean_draw - point), the share of draws above
    the point and the percentile interval at ``level``, each over the draws that have the metric. A
    metric whose categories have no ground truth has no row."""
    base = per_category_ap(e, None)
    groups = {"AP": np.arange(len(base)), "APr": np.asarray(e.matched.freq_groups[0], dtype=np.int64)}
    draws = np.stack([per_category_ap(e, w) for w in weights])  # (draws, K)
    rows = []
    for metric, cats in groups.items():
        drawn = draws[:, cats]
        has = np.isfinite(drawn).any(axis=1)
        if not np.isfinite(base[cats]).any() or not has.any():
            continue  # no category of the group has ground truth: no such metric
        point = float(np.nanmean(base[cats]))
        value = np.array([np.nanmean(d) for d in drawn[has]])
        same_categories = np.array([np.nanmean(np.where(np.isfinite(d), base[cats], np.nan)) for d in drawn[has]])
        low, high = interval(value, level)
        rows.append({"metric": metric, "point": point, "mean_draw": float(value.mean()),
                     "class_mix": float(same_categories.mean() - point),
                     "within_class": float((value - same_categories).mean()),
                     "above_point": float((value > point).mean()), "low": low, "high": high})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("results/default"))
    parser.add_argument("--evalset", choices=[EVALSET], default=EVALSET,
                        help="the main evaluation set (the only one whose images and models this reads)")
    parser.add_argument("--draws", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/bootstrap_bias.md"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    config = yaml.safe_load((args.run / "config" / "bootstrap.yaml").read_text())
    evaluation = config["evaluation"]
    gt = load_lvis(args.run / "data" / f"{EVALSET}.json")
    models = sorted(p.parent for p in (args.run / "eval" / EVALSET).glob("*/detections.json"))
    if not models:
        raise SystemExit(f"{args.run / 'eval' / EVALSET}: no <model>/detections.json (run the pipeline first)")
    weights = draw_weights(len(gt["images"]), args.draws, config["seed"])
    lines = [
        "# Where the upward bias of a single model's bootstrap AP comes from", "",
        f"`python -m benchmarks.bench_bootstrap_bias --run {args.run} --evalset {EVALSET} --draws {args.draws}` "
        f"on {platform.processor() or platform.machine()}, {time.strftime('%Y-%m-%d')}: mask AP on "
        f"{len(gt['images'])} {EVALSET} images, the bootstrap stage's first {args.draws} draws (seed "
        f"{config['seed']}), the per-image budget {evaluation['max_detections']}. bias = mean over the draws - point "
        "= class mix (categories absent from a draw drop out of the mean) + within class (a category's AP on the "
        "draw against its own AP).", "",
        "| model | metric | point | mean of draws | bias | class mix | within class | draws above point | "
        f"{evaluation['interval_level']:.0%} interval |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for path in models:
        dets = check_results(read_detections(path / "detections.json"), gt, path / "detections.json",
                             evaluation["max_detections"])
        e = prepare_models(gt, {path.name: dets}, iou_type="segm", max_dets=evaluation["max_detections"],
                           detections_per_class_setting=evaluation["fixed_max_detections_per_class"],
                           judge_iou_type=config["calibration"]["iou_type"],
                           judge_iou_threshold=config["calibration"]["iou_threshold"])[path.name]
        for row in bias_decomposition(e, weights, evaluation["interval_level"]):
            lines.append(
                f"| {path.name} | {row['metric']} | {row['point']:.1f} | {row['mean_draw']:.1f} | "
                f"{row['mean_draw'] - row['point']:+.2f} | {row['class_mix']:+.2f} | {row['within_class']:+.2f} | "
                f"{row['above_point']:.0%} | [{row['low']:.1f}, {row['high']:.1f}] |")
    lines += ["", f"{time.perf_counter() - started:.0f} s in all.", ""]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
