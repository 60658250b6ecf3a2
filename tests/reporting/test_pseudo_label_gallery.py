"""The pseudo-label gallery: kept / ignored / dropped as the student's selection decides, the targets
of each variant as eq. (5) gives them (worked by hand here), the JSON's documented keys, and images
without detections drawn without a crash."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances

from stages.reporting.drawing import run_metadata
from stages.reporting.pseudo_label_gallery import (
    BOX_KEYS,
    DETECTION_KEYS,
    IMAGE_KEYS,
    PSEUDO_LABEL_KEYS,
    SETTINGS_KEYS,
    TARGET_KEYS,
    gallery_data,
    gallery_figure,
    pseudo_labelling_variants,
    select_images,
)
from tests.conftest import tiny_config
from tests.reporting.tiny_lvis import CATEGORIES, SIZE, write_dataset

DELTA = torch.tensor([0.1, -0.05, 0.2])


def detections(rows: list[tuple[int, list[float], tuple[int, int, int, int]]]) -> Instances:
    """Teacher detections: (class, class_scores (C,), XYXY box); score = the class's own probability."""
    inst = Instances((SIZE, SIZE))
    inst.pred_classes = torch.tensor([r[0] for r in rows], dtype=torch.int64)
    inst.class_scores = torch.tensor([r[1] for r in rows], dtype=torch.float32).reshape(len(rows), len(CATEGORIES))
    inst.scores = inst.class_scores[torch.arange(len(rows)), inst.pred_classes]
    inst.pred_boxes = Boxes(torch.tensor([r[2] for r in rows], dtype=torch.float32).reshape(-1, 4))
    masks = torch.zeros((len(rows), SIZE, SIZE), dtype=torch.bool)
    for k, (_, _, (x0, y0, x1, y1)) in enumerate(rows):
        masks[k, y0:y1, x0:x1] = True
    inst.pred_masks = masks
    return inst


# image 1: a kept teapot, its NMS-suppressed twin, a kettle in the ignore band (0.3, 0.5], a chair below
# everything; image 2: no detection; image 3: only a dropped detection
IMAGE_1 = detections([(0, [0.8, 0.1, 0.05], (5, 5, 25, 25)), (0, [0.6, 0.1, 0.1], (6, 6, 25, 25)),
                      (1, [0.1, 0.4, 0.1], (40, 40, 60, 60)), (2, [0.0, 0.0, 0.1], (0, 40, 10, 60))])  # fmt: skip
IMAGE_3 = detections([(2, [0.1, 0.1, 0.25], (10, 10, 30, 30))])


@pytest.fixture
def config(tmp_path: Path) -> dict:
    config = tiny_config(tmp_path / "results")
    config["student"].update(variants=["labeled_only", "onehot", "soft", "soft_corrected"], score_threshold=0.5,
                             ignore_threshold=0.3, select_on="teacher_score", correction_scope="detected_class")
    config["student"]["lambda"] = 2.0
    config["model"]["classifier_loss"] = "sigmoid"
    config["figures"].update(display_score=0.2, detections_shown=5, pseudo_label_boxes=3, panel_size=128)
    return config


def test_status_targets_and_keys(config: dict) -> None:
    images = [{"id": i, "file_name": f"u/{i}.png", "height": SIZE, "width": SIZE} for i in (1, 2, 3)]
    data = gallery_data(images, [IMAGE_1, detections([]), IMAGE_3], DELTA, CATEGORIES, config)
    assert tuple(data) == PSEUDO_LABEL_KEYS and tuple(data["settings"]) == SETTINGS_KEYS
    assert data["settings"]["variants"] == ["onehot", "soft", "soft_corrected"]  # the control makes none
    assert data["settings"]["selecting_variant"] == "soft_corrected"
    first, empty, third = data["images"]
    assert tuple(first) == IMAGE_KEYS and all(tuple(d) == DETECTION_KEYS for d in first["detections"])
    # drawn: kept and ignored always, dropped ones only from the display score (0.2) on; by teacher score
    assert [(d["index"], d["status"]) for d in first["detections"]] == [(0, "kept"), (1, "dropped"), (2, "ignored")]
    assert first["detections"][0]["category"] == "teapot" and first["detections"][0]["category_id"] == 1
    assert first["detections"][0]["box"] == [5.0, 5.0, 25.0, 25.0]
    assert empty["detections"] == [] and [d["status"] for d in third["detections"]] == ["dropped"]
    # boxes: the kept pseudo-label of image 1; image 3 has none kept, so its drawn detection
    assert [(b["image_id"], b["index"], b["status"]) for b in data["boxes"]] == [(1, 0, "kept"), (3, 0, "dropped")]
    box = data["boxes"][0]
    assert tuple(box) == BOX_KEYS and all(tuple(t) == TARGET_KEYS for v in box["targets"].values() for t in v)
    values = {v: [(t["category"], round(t["value"], 6)) for t in top] for v, top in box["targets"].items()}
    assert values["onehot"][0] == ("teapot", 1.0) and [x for _, x in values["onehot"][1:]] == [0.0, 0.0]
    assert values["soft"] == [("teapot", 0.8), ("kettle", 0.1), ("chair", 0.05)]
    # eq. (5) on the detected class only: clip(0.8 + 2 * 0.1) = 1; the other classes keep the teacher's
    assert values["soft_corrected"] == [("teapot", 1.0), ("kettle", 0.1), ("chair", 0.05)]
    assert [t["delta"] for t in box["targets"]["soft"]] == pytest.approx([0.1, -0.05, 0.2])
    json.dumps(data, allow_nan=False)  # the data file is plain JSON


def test_images_are_a_seeded_random_draw_in_id_order() -> None:
    unlabeled = {"images": [{"id": i} for i in range(20, 0, -1)]}
    chosen = [img["id"] for img in select_images(unlabeled, 4, seed=0)]
    assert len(chosen) == 4 and chosen == sorted(chosen)
    assert chosen == [img["id"] for img in select_images(unlabeled, 4, seed=0)]
    assert len({tuple(i["id"] for i in select_images(unlabeled, 4, s)) for s in range(5)}) > 1
    assert [img["id"] for img in select_images(unlabeled, 50, seed=0)] == list(range(1, 21))


def test_without_pseudo_labelling_variants_everything_is_dropped(config: dict) -> None:
    config["student"]["variants"] = ["labeled_only"]
    assert pseudo_labelling_variants(config["student"]["variants"]) == []
    images = [{"id": 1, "file_name": "u/1.png", "height": SIZE, "width": SIZE}]
    data = gallery_data(images, [IMAGE_1], DELTA, CATEGORIES, config)
    assert {d["status"] for d in data["images"][0]["detections"]} == {"dropped"}
    assert all(b["targets"] == {} for b in data["boxes"])


def test_figure_draws_every_image_and_box(config: dict, tmp_path: Path) -> None:
    path = write_dataset(tmp_path, "u", [1, 2, 3], [])
    images = json.loads(path.read_text())["images"]
    data = gallery_data(images, [IMAGE_1, detections([]), IMAGE_3], DELTA, CATEGORIES, config)
    metadata = run_metadata("test_pseudo_label_gallery", path, tmp_path / "images", require_annotations=False)
    fig = gallery_figure(data, tmp_path / "images", metadata, panel_size=128)
    titles = [ax.get_title().replace("\n", " ") for ax in fig.axes]  # panel titles wrap at TITLE_WIDTH
    assert titles[:3] == ["image 1: kept 1, ignored 1, dropped (drawn) 1", "image 2: kept 0, ignored 0, dropped (drawn) 0",
                          "image 3: kept 0, ignored 0, dropped (drawn) 1"]  # fmt: skip
    bars = [ax for ax in fig.axes if ax.get_title().endswith("target (top 3)")]
    assert len(bars) == 2 * 3  # two boxes, three variants each
    corrected = next(ax for ax in bars if ax.get_title().startswith("soft_corrected"))
    heights = [patch.get_width() for patch in corrected.patches]
    np.testing.assert_allclose(sorted(heights), [0.05, 0.1, 1.0], atol=1e-6)
    assert any(patch.get_hatch() == "//" for patch in corrected.patches)  # the detected class
