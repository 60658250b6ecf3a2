"""CCECE at LVIS scale: vectorised judging + binned eq. (4) against the plain loop, side by side.

Synthetic LVIS-like data: ``--images`` images, 1,203 classes, ``--per-image`` detections each.
The loop reference runs on the first ``--loop-images`` images only (it is too slow for all);
the ratio is measured on that same subset in this one run. Writes a markdown table.

    .venv/bin/python -m benchmarks.bench_ccece --images 20000 --per-image 300 --out benchmarks/ccece.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from stages.core.calibration import ccece_per_class
from stages.evaluation.judging import judge_detections
from tests.reference_judging import judge_detections_loop

NUM_CLASSES = 1203


def synthetic(images: int, per_image: int, seed: int = 0) -> tuple[dict, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    cats = [{"id": c, "name": f"c{c}", "frequency": "rcf"[c % 3]} for c in range(1, NUM_CLASSES + 1)]
    gt_images, anns = [], []
    for i in range(1, images + 1):
        present = rng.choice(np.arange(1, NUM_CLASSES + 1), size=rng.integers(1, 8), replace=False)
        neg = rng.choice(np.arange(1, NUM_CLASSES + 1), size=5, replace=False)
        gt_images.append({"id": i, "height": 480, "width": 640, "neg_category_ids": [int(c) for c in neg if c not in present],
                          "not_exhaustive_category_ids": []})
        for c in present:
            for _ in range(rng.integers(1, 4)):
                x, y, w, h = rng.uniform(0, 400), rng.uniform(0, 300), rng.uniform(20, 200), rng.uniform(20, 150)
                anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c), "bbox": [x, y, w, h]})
    n = images * per_image
    # Half of the detections land on annotated classes of their image (near a gt box), half anywhere.
    ann_frame = pd.DataFrame(anns)
    pick = rng.integers(0, len(anns), size=n // 2)
    near = ann_frame.iloc[pick]
    jitter = rng.normal(0, 8, size=(len(near), 4))
    boxes_near = np.stack(near["bbox"].to_numpy()) + jitter
    far_img = rng.integers(1, images + 1, size=n - n // 2)
    boxes_far = np.stack([rng.uniform(0, 400, n - n // 2), rng.uniform(0, 300, n - n // 2),
                          rng.uniform(20, 200, n - n // 2), rng.uniform(20, 150, n - n // 2)], axis=1)
    dets = pd.DataFrame({
        "image_id": np.r_[near["image_id"].to_numpy(), far_img],
        "category_id": np.r_[near["category_id"].to_numpy(), rng.integers(1, NUM_CLASSES + 1, n - n // 2)],
        "bbox": list(np.vstack([boxes_near, boxes_far])),
        "score": rng.random(n),
    })
    return {"images": gt_images, "annotations": anns, "categories": cats}, dets


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--per-image", type=int, default=300)
    parser.add_argument("--loop-images", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/ccece.md"))
    args = parser.parse_args()
    gt, dets = synthetic(args.images, args.per_image)
    cats = gt["categories"]

    subset = dets[dets["image_id"] <= args.loop_images]
    loop_judged, t_loop = timed(judge_detections_loop, subset, gt)
    fast_judged, t_fast_sub = timed(judge_detections, subset, gt)
    key = ["image_id", "category_id", "score", "correct"]
    same = loop_judged.sort_values(key).reset_index(drop=True).equals(fast_judged.sort_values(key).reset_index(drop=True))

    judged, t_judge = timed(judge_detections, dets, gt)
    table, t_binned = timed(ccece_per_class, judged, cats, 15)
    direct, t_direct = timed(lambda j: j.groupby("category_id").apply(
        lambda g: g["correct"].mean() - g["score"].mean(), include_groups=False), judged)
    agree = np.allclose(table.set_index("category_id").loc[direct.index, "ccece"], direct.to_numpy(), atol=1e-9)

    lines = [
        "# CCECE benchmark (benchmarks/bench_ccece.py)",
        "",
        f"Synthetic LVIS-scale data: {args.images} images, {NUM_CLASSES} classes, {len(dets):,} detections "
        f"({len(judged):,} judged under the federated rule). 2-core machine, single-threaded numpy, one run.",
        "",
        "| measurement | seconds | note |",
        "|---|---|---|",
        f"| loop judging, first {args.loop_images} images ({len(subset):,} dets) | {t_loop:.2f} | reference |",
        f"| vectorised judging, same subset | {t_fast_sub:.3f} | **{t_loop / t_fast_sub:.0f}x faster**, identical output: {same} |",
        f"| vectorised judging, all {len(dets):,} detections | {t_judge:.1f} | |",
        f"| binned eq. (4), all classes | {t_binned:.3f} | |",
        f"| direct mean(correct) - mean(conf) (pandas groupby) | {t_direct:.3f} | binned = direct: {agree} |",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
