"""Eq. (1): class prototypes = mean backbone embedding of each class's ground-truth instances.

B(x) is the backbone's pooled feature of instance x: RoIAlign over the instance box on each
output level of the backbone trunk the teacher starts from (pretrained, before any detection
training; the FPN is not part of it), averaged over the RoI, levels concatenated.
Writes categories.parquet (the category order of every matrix, with N_i) and prototypes.npy.

CLI: python -m stages.prototypes --config CFG --train-json train85.json --image-root R
        --out-categories categories.parquet --out-prototypes prototypes.npy
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from detectron2.data import detection_utils as utils
from detectron2.structures import BoxMode
from torchvision.ops import roi_align
from tqdm import tqdm

from stages.atomic import write_npy, write_parquet
from stages.config import load_config
from stages.detector_data import test_transform
from stages.device import configure_torch
from stages.lvis_data import category_index, category_order, image_path, instance_counts, load_lvis
from stages.modeling.build import build_detector, detectron2_config


def categories_frame(data: dict[str, Any]) -> pd.DataFrame:
    """The contract's categories.parquet: index, category_id, name, frequency, instance_count."""
    cats = category_order(data)
    return pd.DataFrame({
        "index": np.arange(len(cats), dtype=np.int64),
        "category_id": [c["id"] for c in cats],
        "name": [c["name"] for c in cats],
        "frequency": [c["frequency"] for c in cats],
        "instance_count": instance_counts(data),
    })


def backbone_trunk(model: torch.nn.Module) -> torch.nn.Module:
    """The pretrained part of the detector's backbone (FPN's bottom-up network)."""
    backbone = model.backbone
    return getattr(backbone, "bottom_up", getattr(backbone, "net", backbone))


@torch.inference_mode()
def instance_embeddings(model: torch.nn.Module, config: dict[str, Any], data: dict[str, Any],
                        image_root: Path) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings (N, D) float32, class index per instance (N,)) for every annotation."""
    trunk = backbone_trunk(model)
    transform = test_transform(config)
    index = category_index(data)
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    feats, labels = [], []
    images = [img for img in data["images"] if img["id"] in by_image]
    device = torch.device(config["device"])
    for img in tqdm(images, desc="prototypes", unit="img"):
        path = image_path(img, image_root)
        try:
            array = utils.read_image(str(path), format="RGB")
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read image {img['id']}: {exc}") from exc
        tfm = transform.get_transform(array)
        resized = tfm.apply_image(array)
        tensor = torch.as_tensor(resized.transpose(2, 0, 1).copy()).float().to(device)
        normalized = (tensor - model.pixel_mean) / model.pixel_std
        levels = trunk(normalized[None])
        anns = by_image[img["id"]]
        boxes = np.array([BoxMode.convert(a["bbox"], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS) for a in anns], dtype=np.float32)
        boxes = torch.as_tensor(tfm.apply_box(boxes), dtype=torch.float32, device=device)
        rois = torch.cat([boxes.new_zeros((len(boxes), 1)), boxes], dim=1)
        pooled = []
        for name, fmap in levels.items():
            stride = trunk.output_shape()[name].stride
            region = roi_align(fmap, rois, output_size=(7, 7), spatial_scale=1.0 / stride, sampling_ratio=2, aligned=True)
            pooled.append(region.mean(dim=(2, 3)))
        feats.append(torch.cat(pooled, dim=1).cpu())
        labels.extend(index[a["category_id"]] for a in anns)
    embeddings = torch.cat(feats).numpy().astype(np.float32)
    if not np.all(np.isfinite(embeddings)):
        raise FloatingPointError("backbone embeddings of ground-truth instances contain NaN/inf")
    return embeddings, np.asarray(labels, dtype=np.int64)


def class_prototypes(embeddings: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Eq. (1): row i = mean of class i's embeddings; an all-zero row where N_i = 0."""
    sums = np.zeros((num_classes, embeddings.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, embeddings)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    protos = np.divide(sums, counts[:, None], out=np.zeros_like(sums), where=counts[:, None] > 0)
    return protos.astype(np.float32)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Eq. (1): class prototypes from backbone features")
    parser.add_argument("--config", required=True)
    parser.add_argument("--train-json", required=True, type=Path)
    parser.add_argument("--image-root", required=True, type=Path)
    parser.add_argument("--out-categories", required=True, type=Path)
    parser.add_argument("--out-prototypes", required=True, type=Path)
    args = parser.parse_args(argv)
    config = load_config(args.config)
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
