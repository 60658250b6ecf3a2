"""Image-level subsets of a labeled split: the seeded 85/15 split, and the class-keeping fractions of
the Fig. 2 sweep.

The 85/15 split: a seeded permutation of the image ids; every category keeps its LVIS
``frequency`` (r/c/f is defined on the full train set, so APr means the same classes on every
split), while ``image_count`` / ``instance_count`` are recounted per split (stages.data.lvis.subset),
since the federated loss weights and N_i of eq. (2) are statistics of the training split.

The fractions (Fig. 2: the paper trains teachers on 1%, 5%, 10%, ... of the labeled data): with a
long tail a plain random fraction would drop most rare classes entirely, so every class present in
the source keeps at least one image: one image per class is chosen first (rarest class first), the rest is drawn
at random up to round(fraction * n) images (more if the classes alone need more).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from stages.core.splits import holdout_size
from stages.data.lvis import subset


def split_image_ids(image_ids: list[int], holdout_fraction: float, seed: int) -> tuple[set[int], set[int]]:
    """(train_ids, holdout_ids): a seeded permutation, holdout = round(fraction * n), at least 1
    (stages.core.splits.holdout_size). ValueError when there are fewer than 2 images."""
    if len(image_ids) < 2:
        raise ValueError(f"cannot split {len(image_ids)} image(s) in two parts: at least 2 are needed")
    ordered = np.array(sorted(image_ids))
    perm = np.random.default_rng(seed).permutation(len(ordered))
    n_holdout = holdout_size(len(ordered), holdout_fraction)
    holdout = {int(i) for i in ordered[perm[:n_holdout]]}
    train = {int(i) for i in ordered[perm[n_holdout:]]}
    return train, holdout


def split_dataset(data: dict[str, Any], holdout_fraction: float, seed: int) -> tuple[dict, dict]:
    train_ids, holdout_ids = split_image_ids([img["id"] for img in data["images"]], holdout_fraction, seed)
    return subset(data, train_ids), subset(data, holdout_ids)


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
