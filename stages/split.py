"""The image-level, seeded 85/15 split of the labeled train set -> train85.json, holdout15.json.

Every category keeps its LVIS ``frequency`` (r/c/f is defined on the full train set, so APr means
the same classes on every split); ``image_count`` / ``instance_count`` are recounted per split,
since the federated loss weights and N_i of eq. (2) are statistics of the training split.

CLI: python -m stages.split --config CFG --train-json J --out-train train85.json --out-holdout holdout15.json
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from stages.atomic import write_json
from stages.config import load_config
from stages.lvis_data import load_lvis, subset


def split_image_ids(image_ids: list[int], holdout_fraction: float, seed: int) -> tuple[set[int], set[int]]:
    """(train_ids, holdout_ids): a seeded permutation, holdout = round(fraction * n), at least 1."""
    if len(image_ids) < 2:
        raise ValueError(f"cannot split {len(image_ids)} image(s) into train and holdout")
    ordered = np.array(sorted(image_ids))
    perm = np.random.default_rng(seed).permutation(len(ordered))
    n_holdout = min(max(1, int(round(holdout_fraction * len(ordered)))), len(ordered) - 1)
    holdout = {int(i) for i in ordered[perm[:n_holdout]]}
    train = {int(i) for i in ordered[perm[n_holdout:]]}
    return train, holdout


def split_dataset(data: dict[str, Any], holdout_fraction: float, seed: int) -> tuple[dict, dict]:
    train_ids, holdout_ids = split_image_ids([img["id"] for img in data["images"]], holdout_fraction, seed)
    return subset(data, train_ids), subset(data, holdout_ids)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Image-level seeded train/holdout split (85/15)")
    parser.add_argument("--config", required=True)
    parser.add_argument("--train-json", required=True)
    parser.add_argument("--out-train", required=True)
    parser.add_argument("--out-holdout", required=True)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    data = load_lvis(args.train_json)
    train, holdout = split_dataset(data, config["split"]["holdout_fraction"], config["seed"])
    write_json(train, args.out_train)
    write_json(holdout, args.out_holdout)
    print(f"split: {len(train['images'])} train / {len(holdout['images'])} holdout images")


if __name__ == "__main__":
    main()
