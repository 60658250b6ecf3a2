"""Dataset mappers, augmentations and per-split statistics for the detector (teacher and student)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from stages.data.images import read_rgb_array
from stages.data.lvis import category_order, image_counts


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


def repeat_factor_threshold(setting: float | str, data: dict[str, Any], source: str = "train json") -> float:
    """detectron2's LVIS repeat-factor threshold t (an image is repeated sqrt(t / f_c) times for
    its rarest class c of image share f_c < t): ``setting`` when a number; ``"auto"``: the image
    share of the most frequent class the json's ``frequency`` marks rare or common.

    ``auto`` carries LVIS's choice to a data set of any size: LVIS's t = 0.001 repeats exactly its
    rare and common classes (the largest common class is in 100 of LVIS v1's 100,170 train images:
    auto gives 0.000998 there). A fixed 0.001 on 2,300 images would repeat classes of fewer than
    2.3 images only. Returns 0 (no repeating) when no class is rare or common.

    Raises ValueError naming ``source`` when a category lacks ``frequency``.
    """
    if setting != "auto":
        return float(setting)
    missing = [c["id"] for c in data["categories"] if c.get("frequency") not in ("r", "c", "f")]
    if missing:
        raise ValueError(f"{source}: model.repeat_factor_threshold 'auto' needs each category's LVIS frequency "
                         f"(r, c or f); categories {missing[:5]} have none (or set a number)")
    frequency = np.array([c["frequency"] for c in category_order(data)])  # image_counts' order
    counts = image_counts(data)
    below_frequent = counts[frequency != "f"]
    if below_frequent.size == 0 or not data["images"]:
        return 0.0
    return float(below_frequent.max()) / len(data["images"])
