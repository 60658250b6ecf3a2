"""Rule prototypes, eq. (1): class prototypes from the pretrained backbone's instance features.

Writes categories.parquet (the category order of every matrix, with N_i) and prototypes.npy.

CLI: python -m stages.cli.prototypes --config CFG --train-json train85.json --image-root R
        --out-categories categories.parquet --out-prototypes prototypes.npy
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.core.prototypes import class_prototypes
from stages.data.lvis import categories_frame, load_lvis
from stages.modeling.build import build_detector, detectron2_config
from stages.modeling.features import instance_embeddings
from stages.utils.atomic import write_npy, write_parquet
from stages.utils.config import load_stage_config
from stages.utils.device import configure_torch

CONFIG_KEYS = ("model", "device")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Eq. (1): class prototypes from backbone features")
    parser.add_argument("--config", required=True)
    parser.add_argument("--train-json", required=True, type=Path)
    parser.add_argument("--image-root", required=True, type=Path)
    parser.add_argument("--out-categories", required=True, type=Path)
    parser.add_argument("--out-prototypes", required=True, type=Path)
    args = parser.parse_args(argv)
    config = load_stage_config(args.config, CONFIG_KEYS)
    configure_torch(config["num_threads"], config["device"])
    data = load_lvis(args.train_json)
    categories = categories_frame(data)
    model = build_detector(detectron2_config(config, len(categories))).eval()
    embeddings, labels = instance_embeddings(model, config, data, args.image_root)
    protos = class_prototypes(embeddings, labels, len(categories))
    write_parquet(categories, args.out_categories)
    write_npy(protos, args.out_prototypes)
    print(f"prototypes: {len(labels)} instances, {protos.shape} -> {args.out_prototypes}")


if __name__ == "__main__":
    main()
