"""Eq. (1): prototypes from backbone RoI features of ground-truth instances."""

from __future__ import annotations

import numpy as np
import pytest

from stages.core.prototypes import class_prototypes
from stages.data.lvis import categories_frame, load_lvis
from stages.modeling.features import instance_embeddings
from stages.utils.config import load_config


def test_class_prototypes_are_class_means_and_zero_for_empty_classes():
    emb = np.array([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0]], dtype=np.float32)
    labels = np.array([0, 0, 2])
    protos = class_prototypes(emb, labels, num_classes=4)
    np.testing.assert_allclose(protos, [[2.0, 1.0], [0, 0], [0.0, 5.0], [0, 0]])
    assert protos.dtype == np.float32


@pytest.mark.slow
def test_instance_embeddings_on_minilvis_group_same_family(tiny_minilvis):
    from stages.modeling.build import build_detector, detectron2_config

    config = load_config()
    config["model"].update(min_size=64, max_size=64)
    data = load_lvis(tiny_minilvis / "train.json")
    categories = categories_frame(data)
    assert list(categories["category_id"]) == sorted(c["id"] for c in data["categories"])
    model = build_detector(detectron2_config(config, len(categories))).eval()
    emb, labels = instance_embeddings(model, config, data, tiny_minilvis / "images")
    assert emb.shape[0] == len(data["annotations"]) == len(labels)
    assert np.all(np.isfinite(emb))
    # Pretrained features: the same instance embedded twice is identical (deterministic eval).
    emb2, _ = instance_embeddings(model, config, data, tiny_minilvis / "images")
    np.testing.assert_array_equal(emb, emb2)
