"""model.repeat_factor_threshold: a number as given, or auto from the json's r/c/f groups."""

from __future__ import annotations

import numpy as np
import pytest
from detectron2.data.samplers import RepeatFactorTrainingSampler

from stages.modeling.data import repeat_factor_threshold


def lvis_json(frequencies: dict[int, str], images_of: dict[int, list[int]], images: int) -> dict:
    return {
        "images": [{"id": i} for i in range(1, images + 1)],
        "categories": [{"id": c, "frequency": f} for c, f in frequencies.items()],
        "annotations": [{"id": 100 * c + i, "image_id": i, "category_id": c}
                        for c, ids in images_of.items() for i in ids for _ in range(2)],  # 2 instances: counted once
    }


def test_auto_is_the_image_share_of_the_largest_rare_or_common_class():
    # 10 images: frequent class 3 in 6, common class 2 in 3, rare class 1 in 1
    data = lvis_json({3: "f", 2: "c", 1: "r"}, {3: [1, 2, 3, 4, 5, 6], 2: [4, 5, 7], 1: [9]}, 10)
    assert repeat_factor_threshold("auto", data) == pytest.approx(0.3)
    # so detectron2 repeats the rare and common classes' images and leaves the frequent-only ones alone
    dicts = [{"annotations": [{"category_id": c - 1} for c, ids in {3: [1, 2, 3, 4, 5, 6], 2: [4, 5, 7], 1: [9]}.items()
                              if i in ids]} for i in range(1, 11)]
    factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(dicts, 0.3).numpy()
    np.testing.assert_allclose(factors[[0, 1, 2, 5, 7, 9]], 1.0)  # frequent-only and empty images
    np.testing.assert_allclose(factors[8], np.sqrt(0.3 / 0.1))  # the rare class's image
    np.testing.assert_allclose(factors[[3, 4, 6]], 1.0)  # the largest common class sits at the threshold


def test_a_number_is_used_as_given():
    data = lvis_json({1: "r"}, {1: [1]}, 4)
    assert repeat_factor_threshold(0.001, data) == 0.001
    assert repeat_factor_threshold(0, data) == 0.0


def test_auto_without_rare_or_common_classes_repeats_nothing():
    assert repeat_factor_threshold("auto", lvis_json({1: "f", 2: "f"}, {1: [1, 2], 2: [2]}, 3)) == 0.0


def test_auto_names_the_file_when_a_category_has_no_frequency():
    data = lvis_json({1: "r", 7: "c"}, {1: [1]}, 2)
    del data["categories"][1]["frequency"]
    with pytest.raises(ValueError, match=r"train85\.json.*categories \[7\]"):
        repeat_factor_threshold("auto", data, "results/x/split/train85.json")
