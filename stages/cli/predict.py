"""Rules predict / predict_holdout: a trained detector's detections on the images of a json, as
LVIS results json (the evaluation contract) or, for an ``--out`` ending in .parquet, as a table.
At most ``model.detections_per_image`` per image: the evaluator cuts them to
``evaluation.max_detections`` per image for AP, and keeps them all for AP-Fixed / AP-Pool.

The detector's classes are those it was trained on, in the order of its training set's
categories.parquet (``--categories``), never read from the json it predicts on: a json with other
categories stops with both files named (stages.data.evalsets.check_same_categories).

CLI: python -m stages.cli.predict --config CFG --weights model_final.pth --categories categories.parquet
        --images-json J --image-root R --out D.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.data.artifacts import read_categories
from stages.data.detections import results_frame
from stages.data.evalsets import check_same_categories
from stages.data.lvis import load_lvis
from stages.modeling.predictor import load_detector, predict
from stages.utils.atomic import write_json, write_parquet
from stages.utils.config import load_stage_config
from stages.utils.device import configure_torch

CONFIG_KEYS = ("model", "device")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Detector predictions as an LVIS results json")
    parser.add_argument("--config", required=True)
    parser.add_argument("--weights", required=True, type=Path)
    parser.add_argument("--categories", required=True, type=Path, help="the training set's categories.parquet")
    parser.add_argument("--images-json", required=True, type=Path)
    parser.add_argument("--image-root", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    config = load_stage_config(args.config, CONFIG_KEYS)
    configure_torch(config["num_threads"], config["device"])
    data = load_lvis(args.images_json, require_annotations=False)
    category_ids = read_categories(args.categories)["category_id"].tolist()
    check_same_categories(data, args.images_json, category_ids, args.categories)
    model = load_detector(config, args.weights, len(category_ids))
    results = predict(model, config, data["images"], args.image_root, category_ids)
    if args.out.suffix == ".parquet":
        write_parquet(results_frame(results), args.out)
    else:
        write_json(results, args.out)
    print(f"predict: {len(results)} detections on {len(data['images'])} images -> {args.out}")


if __name__ == "__main__":
    main()
