"""The predictor's output cap is its own (``model.detections_per_image``), not AP's budget
(``evaluation.max_detections``): AP-Fixed needs the detections that the per-image budget cuts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from stages.data.lvis import category_order, load_lvis
from stages.modeling.build import build_detector, detectron2_config
from stages.modeling.predictor import predict
from tests.conftest import tiny_config


def test_the_predictor_writes_up_to_its_own_cap_not_the_ap_budget(tiny_minilvis: Path, tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "results")
    # an untrained detector with no score threshold detects plenty
    config["model"].update(test_score_threshold=0.0)
    config["evaluation"]["max_detections"] = 5
    data = load_lvis(tiny_minilvis / "val.json")
    ids = [c["id"] for c in category_order(data)]
    images = sorted(data["images"], key=lambda img: img["id"])[:2]
    counts = {}
    for cap in (40, 3):
        config["model"]["detections_per_image"] = cap
        model = build_detector(detectron2_config(config, len(ids), solver=config["teacher"])).eval()
        counts[cap] = Counter(d["image_id"] for d in predict(model, config, images, tiny_minilvis / "images", ids))
    assert set(counts[40].values()) == {40}  # beyond AP's budget of 5: the evaluator cuts for AP itself
    assert set(counts[3].values()) == {3}
