"""mini-LVIS: valid LVIS v1 json, long tail with real rare classes, deterministic, planted pool truth;
the lvis_shaped preset against LVIS v1's statistics it is derived from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stages.data.lvis import load_lvis
from stages.data.minilvis import make_minilvis
from stages.data.minilvis.lvis_shaped import class_table, visible_polygons
from stages.data.minilvis.lvis_statistics import (
    LVIS_V1_CATEGORIES,
    LVIS_V1_FREQUENCY_COUNTS,
    detections_per_image,
    lvis_image_counts,
    scaled_image_counts,
)
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


# --- the lvis_shaped preset (the embedded default) -------------------------------------------------

def test_lvis_curve_reproduces_lvis_v1s_frequency_split() -> None:
    """Sampled at LVIS's own 1,203 classes, the stored curve gives LVIS v1's 337 / 461 / 405 (within
    the curve's 2.5% resolution)."""
    counts = lvis_image_counts(LVIS_V1_CATEGORIES)
    got = {"r": int((counts <= 10).sum()), "c": int(((counts > 10) & (counts <= 100)).sum()), "f": int((counts > 100).sum())}
    for group, want in LVIS_V1_FREQUENCY_COUNTS.items():
        assert abs(got[group] - want) <= 12, (group, got)
    assert counts.max() == pytest.approx(1977.0, rel=0.05) and counts.min() == pytest.approx(1.0)


@pytest.mark.parametrize("classes", [60, 240, 500])
def test_scaled_counts_keep_lvis_shares_and_the_scaled_thresholds(classes: int) -> None:
    counts, frequency = scaled_image_counts(classes, 5, 25)
    shares = {g: (frequency == g).mean() for g in "rcf"}
    for group, n in LVIS_V1_FREQUENCY_COUNTS.items():
        assert shares[group] == pytest.approx(n / LVIS_V1_CATEGORIES, abs=0.03)
    assert (counts[frequency == "r"] <= 5).all() and (counts[frequency == "r"] >= 1).all()
    assert ((counts[frequency == "c"] > 5) & (counts[frequency == "c"] <= 25)).all()
    assert (counts[frequency == "f"] > 25).all()
    assert (np.diff(counts) <= 0).all()  # most images first, as the curve
    # the power law: LVIS's 1977 images -> 5 * 197.7 ** log10(5) = 201
    assert counts[0] == round(5 * (lvis_image_counts(classes)[0] / 10) ** np.log10(5))


def test_scaled_counts_refuse_inconsistent_thresholds() -> None:
    with pytest.raises(ValueError, match="rare_max_images"):
        scaled_image_counts(40, 25, 5)


def test_budget_scales_lvis_300_by_the_class_count() -> None:
    assert detections_per_image(1203) == 300
    assert detections_per_image(240) == 60
    assert detections_per_image(3) == 1


def test_every_variant_is_one_subtle_step_from_its_base() -> None:
    classes = class_table(12, 20)
    assert len({c["name"] for c in classes}) == 240
    variants = [c for c in classes if c["variant"]]
    assert len(variants) == 120
    for c in variants:
        base = classes[c["base"]]
        assert base["variant"] is None
        assert (base["shape"], base["colour"], base["pattern"]) == (c["shape"], c["colour"], c["pattern"])
        assert c["name"] == f"{base['name']}_{c['variant']}"


def test_visible_polygons_trace_the_mask_and_drop_holes() -> None:
    from PIL import Image, ImageDraw

    mask = np.zeros((40, 40), dtype=bool)
    mask[5:30, 5:35] = True
    mask[12:18, 12:18] = False  # a hole, e.g. an object on top of the middle
    polygons = visible_polygons(mask)
    assert len(polygons) == 1
    canvas = Image.new("L", (40, 40), 0)
    ImageDraw.Draw(canvas).polygon(polygons[0], fill=1)
    drawn = np.asarray(canvas, dtype=bool)
    outer = mask.copy()
    outer[12:18, 12:18] = True
    assert (drawn & outer).sum() / (drawn | outer).sum() > 0.9


def lvis_shaped_config(tmp_path: Path) -> dict:
    cfg = tiny_config(tmp_path)["minilvis"]
    cfg.update(preset="lvis_shaped", image_size=64, val_images=20, pool_images=30, rare_max_images=5,
               common_max_images=25)
    cfg["lvis_shaped"] = {**cfg["lvis_shaped"], "families": 3, "classes_per_family": 6, "val_min_images": 2}
    return cfg


@pytest.fixture(scope="module")
def lvis_shaped(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("lvis_shaped")
    cfg = lvis_shaped_config(out)
    summary = make_minilvis(cfg, 0, out / "data")
    return out / "data", summary


def test_lvis_shaped_is_valid_lvis_with_the_curves_counts(lvis_shaped) -> None:
    from stages.utils.compat import ensure_numpy_aliases

    ensure_numpy_aliases()
    import lvis

    data, summary = lvis_shaped
    for split in ("train", "val"):
        load_lvis(data / f"{split}.json")
        lvis.LVIS(str(data / f"{split}.json"))
    train = json.loads((data / "train.json").read_text())
    counts, _ = scaled_image_counts(18, 5, 25)
    got = sorted((c["image_count"] for c in train["categories"]), reverse=True)
    # every class lands in its count of images (an image left empty may add one to a class)
    assert sum(abs(a - b) for a, b in zip(got, counts)) <= 0.05 * counts.sum()
    assert summary["train_images"] == int(np.ceil(counts.sum() / 3.6033))
    for cat in train["categories"]:
        assert cat["frequency"] == ("r" if cat["image_count"] <= 5 else "c" if cat["image_count"] <= 25 else "f")
    assert summary["train_objects_per_image"] > 3  # LVIS-like clutter, not 1-3 objects


def test_lvis_shaped_rare_classes_have_more_frequent_look_alikes(lvis_shaped) -> None:
    data, _ = lvis_shaped
    train = json.loads((data / "train.json").read_text())
    by_name = {c["name"]: c for c in train["categories"]}
    rare = [c for c in train["categories"] if c["frequency"] == "r"]
    assert rare
    for cat in rare:
        base_name = cat["name"].rsplit("_", 1)[0]
        assert base_name in by_name, f"{cat['name']} is not a variant"
        assert by_name[base_name]["image_count"] > cat["image_count"]


def test_lvis_shaped_val_covers_every_class(lvis_shaped) -> None:
    data, _ = lvis_shaped
    val = json.loads((data / "val.json").read_text())
    images_per_cat: dict[int, set] = {}
    for ann in val["annotations"]:
        images_per_cat.setdefault(ann["category_id"], set()).add(ann["image_id"])
    assert {c["id"] for c in val["categories"]} == set(images_per_cat)


def test_lvis_shaped_annotations_are_the_visible_parts(lvis_shaped) -> None:
    """Boxes are the extents of the visible polygons, and areas lie within the boxes."""
    data, _ = lvis_shaped
    train = json.loads((data / "train.json").read_text())
    for ann in train["annotations"]:
        xs = np.concatenate([p[0::2] for p in ann["segmentation"]])
        ys = np.concatenate([p[1::2] for p in ann["segmentation"]])
        np.testing.assert_allclose(ann["bbox"], [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()],
                                   atol=1e-6)
        assert 0 < ann["area"] <= ann["bbox"][2] * ann["bbox"][3] + 1e-6


def test_lvis_shaped_is_deterministic(tmp_path: Path) -> None:
    cfg = lvis_shaped_config(tmp_path)
    cfg["lvis_shaped"]["families"] = 2
    make_minilvis(cfg, 3, tmp_path / "a")
    make_minilvis(cfg, 3, tmp_path / "b")
    assert (tmp_path / "a" / "train.json").read_bytes() == (tmp_path / "b" / "train.json").read_bytes()
    assert (tmp_path / "a" / "pool.json").read_bytes() == (tmp_path / "b" / "pool.json").read_bytes()
