"""Dataset mappers, augmentations and per-split statistics for the detector (teacher and student)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from stages.data.images import read_rgb_array


def weak_augmentations(min_size: int, max_size: int) -> list[T.Augmentation]:
    return [T.ResizeShortestEdge((min_size,), max_size, sample_style="choice"), T.RandomFlip(horizontal=True)]


def strong_photometric() -> list[T.Augmentation]:
    """Colour jitter applied on top of the weak view (geometry unchanged, so boxes carry over)."""
    return [
        T.RandomBrightness(0.6, 1.4),
        T.RandomContrast(0.6, 1.4),
        T.RandomSaturation(0.5, 1.5),
        T.RandomLighting(0.5),
    ]


def train_mapper(config: dict[str, Any]) -> DatasetMapper:
    """Labeled images: weak augmentation (resize + flip), polygon masks, RGB."""
    model_cfg = config["model"]
    return DatasetMapper(
        is_train=True,
        augmentations=weak_augmentations(model_cfg["min_size"], model_cfg["max_size"]),
        image_format="RGB",
        use_instance_mask=True,
        instance_mask_format="polygon",
        recompute_boxes=False,
    )


def test_transform(config: dict[str, Any]) -> T.Augmentation:
    return T.ResizeShortestEdge(config["model"]["min_size"], config["model"]["max_size"])


class WeakStrongMapper:
    """Unlabeled images: one weak view for the teacher and a strong view (same geometry plus
    colour jitter) for the student, so the teacher's boxes and masks apply to both."""

    def __init__(self, config: dict[str, Any]):
        model_cfg = config["model"]
        self.geometric = T.AugmentationList(weak_augmentations(model_cfg["min_size"], model_cfg["max_size"]))
        self.photometric = T.AugmentationList(strong_photometric())

    def __call__(self, record: dict[str, Any]) -> dict[str, Any]:
        image = read_rgb_array(record["file_name"])  # the pipeline's one reader (EXIF-oriented, as read_image)
        utils.check_image_size(record, image)
        aug_input = T.AugInput(image)
        self.geometric(aug_input)
        weak = aug_input.image
        strong_input = T.AugInput(weak.copy())
        self.photometric(strong_input)
        strong = np.clip(strong_input.image, 0, 255)
        h, w = weak.shape[:2]
        return {
            "file_name": record["file_name"],
            "image_id": record.get("image_id"),
            "height": h,
            "width": w,
            "image_weak": torch.as_tensor(np.ascontiguousarray(weak.transpose(2, 0, 1))),
            "image": torch.as_tensor(np.ascontiguousarray(strong.transpose(2, 0, 1)).astype("float32")),
        }


def fed_loss_weights(image_counts: np.ndarray) -> np.ndarray:
    """Federated-loss sampling weights: image_count ** 0.5 on the training split (LVIS detectors)."""
    return np.power(np.maximum(image_counts, 0).astype(np.float64), 0.5).astype(np.float32)
