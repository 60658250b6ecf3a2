"""A seeded image-level fraction of a labeled split that keeps every class (Fig. 2's sweep).

The paper trains teachers on 1%, 5%, 10%, ... of the labeled data. With a long tail a plain
random fraction would drop most rare classes entirely, so every class present in the source keeps
at least one image: one image per class is chosen first (rarest class first), the rest is drawn
at random up to round(fraction * n) images (more if the classes alone need more).

CLI: python -m stages.subsample --config CFG --train-json J --fraction 0.1 --out J_0.1.json
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from typing import Any

import numpy as np

from stages.atomic import write_json
from stages.config import load_config
from stages.lvis_data import load_lvis, subset


def subsample_image_ids(data: dict[str, Any], fraction: float, seed: int) -> set[int]:
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], found {fraction}")
    rng = np.random.default_rng(seed)
    all_ids = sorted(img["id"] for img in data["images"])
    target = max(1, int(round(fraction * len(all_ids))))
    if target >= len(all_ids):
        return set(all_ids)
    images_of: dict[int, set[int]] = defaultdict(set)
    for ann in data["annotations"]:
        images_of[ann["category_id"]].add(ann["image_id"])
    chosen: set[int] = set()
    for cat_id in sorted(images_of, key=lambda c: (len(images_of[c]), c)):
        if not images_of[cat_id] & chosen:
            candidates = sorted(images_of[cat_id])
            chosen.add(int(candidates[rng.integers(len(candidates))]))
    rest = [i for i in all_ids if i not in chosen]
    extra = max(target - len(chosen), 0)
    chosen.update(int(i) for i in rng.choice(rest, size=min(extra, len(rest)), replace=False))
    return chosen


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Seeded fraction of a labeled split keeping every class")
    parser.add_argument("--config", required=True)
    parser.add_argument("--train-json", required=True)
    parser.add_argument("--fraction", required=True, type=float)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    data = load_lvis(args.train_json)
    ids = subsample_image_ids(data, args.fraction, config["seed"])
    write_json(subset(data, ids), args.out)
    print(f"subsample: {len(ids)} of {len(data['images'])} images (fraction {args.fraction})")


if __name__ == "__main__":
    main()
