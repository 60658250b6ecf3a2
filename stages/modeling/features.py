"""B(x) of eq. (1): the pooled backbone feature of each ground-truth instance.

RoIAlign over the instance box on each output level of the backbone trunk the teacher starts from
(pretrained, before any detection training; the FPN is not part of it), averaged over the RoI,
levels concatenated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from detectron2.structures import BoxMode
from torchvision.ops import roi_align
from tqdm import tqdm

from stages.data.images import ImageReadError, read_rgb_array
from stages.data.lvis import category_index, image_path
from stages.modeling.data import test_transform


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
            array = read_rgb_array(path)  # EXIF-oriented, as detectron2 reads training images
        except ImageReadError as exc:
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
