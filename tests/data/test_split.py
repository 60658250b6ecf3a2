"""The image-level seeded 85/15 split."""

from stages.data.splits import split_dataset, split_image_ids


def test_split_is_disjoint_complete_and_seeded():
    ids = list(range(1, 101))
    train, holdout = split_image_ids(ids, 0.15, seed=0)
    assert len(holdout) == 15 and len(train) == 85
    assert train | holdout == set(ids) and not train & holdout
    assert split_image_ids(ids, 0.15, seed=0) == (train, holdout)
    assert split_image_ids(ids, 0.15, seed=1) != (train, holdout)


def test_split_recounts_categories_and_keeps_frequency():
    data = {
        "images": [{"id": i} for i in range(1, 21)],
        "annotations": [{"id": i, "image_id": i, "category_id": 1 + i % 2} for i in range(1, 21)],
        "categories": [{"id": 1, "name": "a", "frequency": "r"}, {"id": 2, "name": "b", "frequency": "f"}],
    }
    train, holdout = split_dataset(data, 0.25, seed=0)
    assert len(holdout["images"]) == 5
    for part in (train, holdout):
        ids = {img["id"] for img in part["images"]}
        assert all(a["image_id"] in ids for a in part["annotations"])
        assert [c["frequency"] for c in part["categories"]] == ["r", "f"]
        assert sum(c["instance_count"] for c in part["categories"]) == len(part["annotations"])
