"""Fig. 2's labeled fractions keep every class."""

import json

from stages.data.splits import subsample_image_ids


def test_fraction_keeps_every_class(tiny_minilvis):
    data = json.loads((tiny_minilvis / "train.json").read_text())
    classes = {a["category_id"] for a in data["annotations"]}
    for fraction in (0.05, 0.2, 0.5):
        ids = subsample_image_ids(data, fraction, seed=0)
        kept = {a["category_id"] for a in data["annotations"] if a["image_id"] in ids}
        assert kept == classes
        assert len(ids) >= round(fraction * len(data["images"]))
        assert subsample_image_ids(data, fraction, seed=0) == ids
    assert subsample_image_ids(data, 1.0, seed=0) == {img["id"] for img in data["images"]}
    # at 50% the target size dominates the per-class minimum
    assert len(subsample_image_ids(data, 0.5, seed=0)) == round(0.5 * len(data["images"]))
