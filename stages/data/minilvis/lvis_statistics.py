"""Published statistics of LVIS v1 that the ``lvis_shaped`` mini-LVIS preset is derived from.

Sources: the LVIS v1 release (lvis_v1_train.json: 100,170 images, 1,270,141 annotations, 1,203
categories, each with its ``frequency`` and ``image_count``), the LVIS paper (Gupta et al. 2019:
rare = 1-10 train images, common = 11-100, frequent = more), and its evaluation protocol (300
detections per image). The image-count curve below is a summary we computed from the categories'
``image_count`` field: the count at every 2.5% of the categories ranked from most to fewest images
(log-linear between neighbouring ranks). It reproduces LVIS v1's 337 / 461 / 405 r/c/f split.
"""

from __future__ import annotations

import math

import numpy as np

LVIS_V1_TRAIN_IMAGES = 100_170
LVIS_V1_TRAIN_ANNOTATIONS = 1_270_141
LVIS_V1_CATEGORIES = 1_203
LVIS_V1_FREQUENCY_COUNTS = {"r": 337, "c": 461, "f": 405}
LVIS_RARE_MAX_IMAGES, LVIS_COMMON_MAX_IMAGES = 10, 100
LVIS_DETECTIONS_PER_IMAGE = 300
# sum of the categories' image_count / images: how many categories an LVIS train image holds on average
LVIS_V1_IMAGE_COUNT_SUM = 360_952
LVIS_V1_CATEGORIES_PER_IMAGE = LVIS_V1_IMAGE_COUNT_SUM / LVIS_V1_TRAIN_IMAGES  # 3.60
# annotations per (image, category) pair: 1,270,141 / 360,952
LVIS_V1_INSTANCES_PER_CATEGORY = LVIS_V1_TRAIN_ANNOTATIONS / LVIS_V1_IMAGE_COUNT_SUM  # 3.52

# image_count at rank fraction 0, 0.025, ..., 1 of the 1,203 categories, most images first
LVIS_V1_IMAGE_COUNT_CURVE = (
    1977.0, 1914.8, 1876.5, 1686.7, 1400.6, 1009.5, 725.4, 527.6, 358.2, 270.0, 221.0, 162.1, 130.4, 106.3,
    91.3, 76.0, 66.2, 56.1, 49.0, 44.0, 37.0, 32.9, 29.0, 26.0, 22.0, 18.0, 16.0, 14.0, 12.0, 10.0, 9.0, 7.0,
    6.0, 5.0, 4.0, 3.0, 3.0, 2.0, 1.0, 1.0, 1.0,
)


def lvis_image_counts(num_classes: int) -> np.ndarray:
    """LVIS v1's image-count curve sampled at ``num_classes`` evenly spaced ranks (mid-points),
    most images first; float64 (num_classes,). Log-linear between the curve's points."""
    curve = np.log(np.asarray(LVIS_V1_IMAGE_COUNT_CURVE))
    position = (np.arange(num_classes) + 0.5) / num_classes * (len(curve) - 1)
    return np.exp(np.interp(position, np.arange(len(curve)), curve))


def frequency_of_lvis_count(image_count: np.ndarray) -> np.ndarray:
    """LVIS's r/c/f rule on LVIS's own count axis (<= 10 r, <= 100 c, else f)."""
    return np.where(image_count <= LVIS_RARE_MAX_IMAGES, "r",
                    np.where(image_count <= LVIS_COMMON_MAX_IMAGES, "c", "f"))


def scaled_image_counts(num_classes: int, rare_max_images: int, common_max_images: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Train-image counts of a small data set shaped like LVIS v1: returns (counts int64 (C,), most
    first; frequency str (C,)).

    LVIS's curve is sampled at C ranks and mapped through the power law that sends LVIS's thresholds
    onto the small set's: count' = rare_max * (count / 10) ** b, b = log10(common_max / rare_max), so
    10 -> ``rare_max_images`` and 100 -> ``common_max_images`` (with common_max = rare_max ** 2, 1 -> 1).
    A class keeps the r/c/f group it has on LVIS's axis, and its count is kept inside that group's
    scaled range, so the r/c/f shares are LVIS's (337 / 461 / 405 of 1,203) up to rounding.

    Raises ValueError unless 1 <= rare_max_images < common_max_images.
    """
    if not 1 <= rare_max_images < common_max_images:
        raise ValueError(f"minilvis: need 1 <= rare_max_images ({rare_max_images}) < common_max_images "
                         f"({common_max_images})")
    lvis = lvis_image_counts(num_classes)
    frequency = frequency_of_lvis_count(lvis)
    exponent = math.log10(common_max_images / rare_max_images)
    counts = np.rint(rare_max_images * (lvis / LVIS_RARE_MAX_IMAGES) ** exponent).astype(np.int64)
    low = np.select([frequency == "r", frequency == "c"], [1, rare_max_images + 1], common_max_images + 1)
    high = np.select([frequency == "r", frequency == "c"], [rare_max_images, common_max_images], np.iinfo(np.int64).max)
    return np.clip(counts, low, high), frequency


def detections_per_image(num_classes: int) -> int:
    """LVIS's per-image detection budget (300 for 1,203 classes) scaled by the class count, so that
    classes compete for places as on LVIS."""
    return max(1, round(LVIS_DETECTIONS_PER_IMAGE * num_classes / LVIS_V1_CATEGORIES))
