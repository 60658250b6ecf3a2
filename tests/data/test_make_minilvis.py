"""mini-LVIS: valid LVIS v1 json, long tail with real rare classes, deterministic, planted pool truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stages.data.lvis import load_lvis
from stages.data.minilvis import make_minilvis
from tests.conftest import tiny_config


def test_valid_lvis_and_loads_in_lvis_api(tiny_minilvis):
    from stages.utils.compat import ensure_numpy_aliases

    ensure_numpy_aliases()
    import lvis

    for split in ("train", "val"):
        load_lvis(tiny_minilvis / f"{split}.json")
        lvis.LVIS(str(tiny_minilvis / f"{split}.json"))
    load_lvis(tiny_minilvis / "pool.json", require_annotations=False)


def test_long_tail_frequencies_match_train_counts(tiny_minilvis):
    train = json.loads((tiny_minilvis / "train.json").read_text())
    images_per_cat: dict[int, set] = {}
    for ann in train["annotations"]:
        images_per_cat.setdefault(ann["category_id"], set()).add(ann["image_id"])
    for cat in train["categories"]:
        n = len(images_per_cat.get(cat["id"], ()))
        assert n >= 1, f"{cat['name']} has no train image"
        assert cat["image_count"] == n
        assert cat["frequency"] == ("r" if n <= 10 else "c" if n <= 100 else "f")
    assert any(c["frequency"] == "r" for c in train["categories"])


def test_boxes_inside_image_and_match_polygons(tiny_minilvis):
    train = json.loads((tiny_minilvis / "train.json").read_text())
    sizes = {img["id"]: (img["width"], img["height"]) for img in train["images"]}
    for ann in train["annotations"]:
        x, y, w, h = ann["bbox"]
        width, height = sizes[ann["image_id"]]
        assert 0 <= x and 0 <= y and x + w <= width and y + h <= height
        poly = np.asarray(ann["segmentation"][0]).reshape(-1, 2)
        np.testing.assert_allclose([poly[:, 0].min(), poly[:, 1].min(), poly[:, 0].max() - poly[:, 0].min(),
                                    poly[:, 1].max() - poly[:, 1].min()], ann["bbox"], atol=1e-6)


def test_pool_truth_duplicates_are_real(tiny_minilvis):
    truth = json.loads((tiny_minilvis / "pool_truth.json").read_text())
    pool = {str(img["id"]): img for img in json.loads((tiny_minilvis / "pool.json").read_text())["images"]}
    assert set(truth) == set(pool)
    kinds = [t["duplicate_of"]["kind"] for t in truth.values() if t["duplicate_of"]]
    assert kinds.count("val_copy") == 2 and kinds.count("exact") == 2 and kinds.count("near") == 2
    images = tiny_minilvis / "images"
    for image_id, t in truth.items():
        if t["duplicate_of"] and t["duplicate_of"]["kind"] in ("exact", "val_copy"):
            assert (images / pool[image_id]["file_name"]).read_bytes() == (images / t["duplicate_of"]["of"]).read_bytes()
    originals = [t for t in truth.values() if not t["duplicate_of"]]
    rare_share = np.mean([t["has_rare"] for t in originals])
    assert 0.05 < rare_share < 0.7  # configured 0.3 on 30 images


def test_deterministic(tmp_path: Path):
    cfg = tiny_config(tmp_path)["minilvis"] | {"val_images": 6, "pool_images": 6}
    cfg["shapes"] = cfg["shapes"] | {"train_images": 20}
    make_minilvis(cfg, 3, tmp_path / "a")
    make_minilvis(cfg, 3, tmp_path / "b")
    make_minilvis(cfg, 4, tmp_path / "c")
    assert (tmp_path / "a" / "train.json").read_bytes() == (tmp_path / "b" / "train.json").read_bytes()
    assert (tmp_path / "a/images/train/000001.png").read_bytes() == (tmp_path / "b/images/train/000001.png").read_bytes()
    assert (tmp_path / "a" / "train.json").read_bytes() != (tmp_path / "c" / "train.json").read_bytes()
