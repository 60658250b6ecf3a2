"""Rule pseudo_label_gallery: the teacher's detections on a few unlabeled images, which the student's
selection keeps, ignores or drops, and for a few boxes the top-5 classes of every pseudo-labelling
variant's target with Delta (stages.reporting.pseudo_label_gallery).

CLI: python -m stages.cli.pseudo_label_gallery --config CFG --teacher model_final.pth --unlabeled unlabeled.json \
     --image-root R --categories categories.parquet --ccece ccece.parquet --out-png P --out-json J
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from stages.data.artifacts import read_categories, read_ccece
from stages.data.lvis import load_lvis
from stages.modeling.predictor import load_detector
from stages.reporting.drawing import run_metadata
from stages.reporting.pseudo_label_gallery import gallery_data, gallery_figure, select_images, teacher_detections
from stages.utils.atomic import write_figure, write_json
from stages.utils.config import load_stage_config
from stages.utils.device import configure_torch

CONFIG_KEYS = ("seed", "device", "model", "student", "figures")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Pseudo-label gallery: kept / ignored / dropped, and the targets")
    parser.add_argument("--config", required=True)
    parser.add_argument("--teacher", required=True, type=Path, help="the teacher the students learn from")
    parser.add_argument("--unlabeled", required=True, type=Path)
    parser.add_argument("--image-root", required=True, type=Path)
    parser.add_argument("--categories", required=True, type=Path, help="categories.parquet (the category order)")
    parser.add_argument("--ccece", required=True, type=Path, help="ccece.parquet (its delta column)")
    parser.add_argument("--out-png", required=True, type=Path)
    parser.add_argument("--out-json", required=True, type=Path)
    args = parser.parse_args(argv)
    config = load_stage_config(args.config, CONFIG_KEYS)
    configure_torch(config["num_threads"], config["device"])
    categories = read_categories(args.categories)
    ids = categories["category_id"].tolist()
    delta = torch.tensor(read_ccece(args.ccece, ids)["delta"].to_numpy(), dtype=torch.float32)
    unlabeled = load_lvis(args.unlabeled, require_annotations=False)
    if sorted(c["id"] for c in unlabeled["categories"]) != ids:
        raise ValueError(f"{args.unlabeled}: its categories are not those of {args.categories}")
    images = select_images(unlabeled, config["figures"]["pseudo_label_images"], config["seed"])
    model = load_detector(config, args.teacher, len(ids))
    data = gallery_data(images, teacher_detections(model, config, images, args.image_root), delta,
                        categories[["category_id", "name"]].rename(columns={"category_id": "id"}).to_dict("records"),
                        config)
    write_json(data, args.out_json, indent=1)
    metadata = run_metadata("pseudo_label_gallery", args.unlabeled, args.image_root, require_annotations=False)
    write_figure(gallery_figure(data, args.image_root, metadata, config["figures"]["panel_size"]), args.out_png)
    counts = [len(i["detections"]) for i in data["images"]]
    print(f"pseudo_label_gallery: {len(images)} images, {counts} detections drawn, {len(data['boxes'])} boxes -> "
          f"{args.out_png}")


if __name__ == "__main__":
    main()
