"""Rule split: the image-level, seeded 85/15 split of the labeled train set -> train85.json,
holdout15.json (stages.data.splits), and holdout15 cut in two halves for the student's tuning:
Delta is estimated on half a, lambda and the unlabeled weight are chosen on half b.

CLI: python -m stages.cli.split --config CFG --train-json J --out-train train85.json --out-holdout holdout15.json
        --out-halves holdout15_a.json holdout15_b.json
"""

from __future__ import annotations

import argparse

from stages.core.splits import halving_problem
from stages.data.lvis import load_lvis
from stages.data.splits import split_dataset
from stages.utils.atomic import write_json
from stages.utils.config import ConfigError, load_stage_config

CONFIG_KEYS = ("split", "seed")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Image-level seeded train/holdout split (85/15)")
    parser.add_argument("--config", required=True)
    parser.add_argument("--train-json", required=True)
    parser.add_argument("--out-train", required=True)
    parser.add_argument("--out-holdout", required=True)
    parser.add_argument("--out-halves", required=True, nargs=2, metavar=("A", "B"))
    args = parser.parse_args(argv)
    config = load_stage_config(args.config, CONFIG_KEYS)
    data = load_lvis(args.train_json)
    fraction = config["split"]["holdout_fraction"]
    problem = halving_problem(len(data["images"]), fraction)
    if problem:
        raise ConfigError(f"config key 'split.holdout_fraction' ({args.train_json}): {problem}")
    train, holdout = split_dataset(data, fraction, config["seed"])
    halves = split_dataset(holdout, 0.5, config["seed"])
    for data_out, path in zip((train, holdout, *halves), (args.out_train, args.out_holdout, *args.out_halves)):
        write_json(data_out, path)
    print(f"split: {len(train['images'])} train / {len(holdout['images'])} holdout images "
          f"({len(halves[0]['images'])} + {len(halves[1]['images'])} in the tuning halves)")


if __name__ == "__main__":
    main()
