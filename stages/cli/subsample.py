"""Rule subsample: the class-keeping fractions ``sweep.fractions`` of the full labeled train set, for
Fig. 2's sweep (stages.data.splits.subsample_image_ids); one json per fraction, in config order.

CLI: python -m stages.cli.subsample --config CFG --train-json J --out J_0.1.json J_0.25.json ...
"""

from __future__ import annotations

import argparse

from stages.data.lvis import load_lvis, subset
from stages.data.splits import subsample_image_ids
from stages.utils.atomic import write_json
from stages.utils.config import load_stage_config

CONFIG_KEYS = ("seed", "sweep.fractions")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Seeded fractions of a labeled split keeping every class")
    parser.add_argument("--config", required=True)
    parser.add_argument("--train-json", required=True)
    parser.add_argument("--out", required=True, nargs="+", help="one json per sweep.fractions entry, in order")
    args = parser.parse_args(argv)
    config = load_stage_config(args.config, CONFIG_KEYS)
    fractions = config["sweep"]["fractions"]
    if len(args.out) != len(fractions):
        parser.error(f"--out: {len(args.out)} files for {len(fractions)} sweep.fractions")
    data = load_lvis(args.train_json)
    for fraction, out in zip(fractions, args.out):
        ids = subsample_image_ids(data, fraction, config["seed"])
        write_json(subset(data, ids), out)
        print(f"subsample: {len(ids)} of {len(data['images'])} images (fraction {fraction}) -> {out}")


if __name__ == "__main__":
    main()
