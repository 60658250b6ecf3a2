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


def test_the_split_stage_names_the_key_when_the_holdout_cannot_be_halved(tmp_path):
    """A user's LVIS train set is counted by the split stage: too few holdout images to halve is a
    ConfigError naming split.holdout_fraction (the config check cannot count a user's file)."""
    import json

    import pytest
    import yaml

    from stages.cli.split import main
    from stages.utils.config import ConfigError
    from tests.conftest import REPO

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["split"]["holdout_fraction"] = 0.05
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
    images = [{"id": i, "file_name": f"{i}.png", "height": 8, "width": 8, "neg_category_ids": [],
               "not_exhaustive_category_ids": []} for i in range(1, 11)]
    (tmp_path / "train.json").write_text(json.dumps({"images": images, "annotations": [],
                                                     "categories": [{"id": 1, "name": "a", "frequency": "r"}]}))
    out = [str(tmp_path / n) for n in ("t.json", "h.json", "a.json", "b.json")]
    with pytest.raises(ConfigError, match=r"config key 'split.holdout_fraction' \(.*train.json\): 0.05 of 10 train "
                                          r"image\(s\) is a holdout of 1 image\(s\)"):
        main(["--config", str(tmp_path / "cfg.yaml"), "--train-json", str(tmp_path / "train.json"), "--out-train", out[0],
              "--out-holdout", out[1], "--out-halves", out[2], out[3]])
    assert not any((tmp_path / n).exists() for n in ("t.json", "h.json"))
