"""The premise statistics (P1-P4): each against an independent computation on small data."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stages.data.lvis import segmentation_rle
from stages.evaluation.bootstrap import bootstrap_metrics, intervals, prepare_models
from stages.evaluation.lvis_eval import evaluate_lvis
from stages.reporting.premise import (
    budget_share,
    ccece_gap,
    group_ccece,
    premise_markdown,
    premise_table,
    rare_gap,
    rare_share,
)
from stages.reporting.table1 import check_intervals
from tests.evaluation.test_fast_lvis_eval import make_dets, make_gt


def _p1(gt: dict, dets: list[dict], draws: int, seed: int) -> tuple[dict[str, float], pd.DataFrame]:
    """P1 as the pipeline computes it: the bootstrap job's intervals (teacher rows), read by rare_gap."""
    models = prepare_models(gt, {"teacher": dets}, iou_type="segm", max_dets=300, detections_per_class_setting="auto",
                            judge_iou_type="segm", judge_iou_threshold=0.5)
    draws_table = bootstrap_metrics(models, draws, seed, ece_bins=10)
    table = check_intervals(intervals(draws_table, [], 0.95), ["teacher"], "intervals.csv")
    return rare_gap(table), draws_table


def test_p1_point_is_the_official_aprs_minus_ap(tmp_path: Path) -> None:
    """The point value is LVISEval's APr minus its AP on the same detections (segm, 300 per image)."""
    gt = make_gt(seed=2, n_images=30)
    dets = make_dets(gt, seed=2)
    got, _ = _p1(gt, copy.deepcopy(dets), draws=50, seed=0)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    official = evaluate_lvis(path, copy.deepcopy(dets), "segm", 300, "lvis", gt).results
    assert got["AP"] == pytest.approx(100 * official["AP"], abs=1e-9)
    assert got["APr"] == pytest.approx(100 * official["APr"], abs=1e-9)
    assert got["value"] == pytest.approx(100 * (official["APr"] - official["AP"]), abs=1e-9)
    assert got["low"] <= got["high"]


def test_p1_interval_is_paired_on_the_same_draws() -> None:
    """The interval is the percentile interval of each draw's APr minus the same draw's AP (both on one
    resample of the images)."""
    gt = make_gt(seed=3, n_images=40)
    got, draws = _p1(gt, make_dets(gt, seed=3), draws=200, seed=5)
    boot = draws[draws["draw"] >= 0].sort_values("draw")
    paired = (boot["APr"] - boot["AP"]).to_numpy()
    paired = paired[np.isfinite(paired)]
    assert (got["low"], got["high"]) == pytest.approx((np.percentile(paired, 2.5), np.percentile(paired, 97.5)))


def test_p1_interval_is_below_zero_when_rare_classes_are_missed() -> None:
    """Perfect on c/f classes, every rare detection dropped: APr (0) is far below AP in every draw."""
    gt = make_gt(seed=4, n_images=40)
    rare = {c["id"] for c in gt["categories"] if c["frequency"] == "r"}
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9,
             "segmentation": a["segmentation"]} for a in gt["annotations"] if a["category_id"] not in rare]
    sizes = {img["id"]: (img["height"], img["width"]) for img in gt["images"]}
    for d in dets:
        d["segmentation"] = segmentation_rle(d["segmentation"], *sizes[d["image_id"]])
    got, _ = _p1(gt, dets, draws=200, seed=1)
    assert got["APr"] == 0.0
    assert got["high"] < 0 and got["value"] < 0


def _judged() -> tuple[pd.DataFrame, list[dict]]:
    categories = [{"id": 1, "frequency": "r"}, {"id": 2, "frequency": "r"}, {"id": 3, "frequency": "c"},
                  {"id": 4, "frequency": "f"}]
    judged = pd.DataFrame({
        "image_id": [10, 10, 11, 12, 12, 13, 13, 14],
        "category_id": [1, 2, 2, 3, 4, 4, 4, 4],
        "score": [0.2, 0.4, 0.1, 0.5, 0.9, 0.8, 0.7, 0.9],
        "correct": [True, True, False, True, False, True, False, True],
    })
    return judged, categories


def test_p2_group_means_by_hand() -> None:
    judged, categories = _judged()
    got = group_ccece(judged, {c["id"]: c["frequency"] for c in categories})
    # class 1: 1 - 0.2 = 0.8; class 2: 0.5 - 0.25 = 0.25 -> r 0.525; class 3: 1 - 0.5 = 0.5;
    # class 4: 2/4 - 3.3/4 = -0.325
    assert got["r"] == pytest.approx(0.525)
    assert got["c"] == pytest.approx(0.5)
    assert got["f"] == pytest.approx(-0.325)


def test_p2_weights_equal_the_resampled_frame() -> None:
    """A draw's multiplicities give the same group means as the frame with images copied."""
    judged, categories = _judged()
    frequency = {c["id"]: c["frequency"] for c in categories}
    images, index = np.unique(judged["image_id"].to_numpy(), return_inverse=True)
    weights = np.array([2, 0, 1, 3, 1])
    copied = pd.concat([judged[judged["image_id"] == img] for img, w in zip(images, weights) for _ in range(w)])
    got = group_ccece(judged, frequency, weights, index)
    want = group_ccece(copied, frequency)
    for g in ("r", "c", "f"):
        assert got[g] == pytest.approx(want[g], nan_ok=True)


def test_p2_interval_and_direction() -> None:
    judged, categories = _judged()
    got = ccece_gap(judged, categories, draws=300, seed=0, level=0.95)
    assert got["value"] == pytest.approx(0.525 - (-0.325))
    assert got["low"] <= got["value"] <= got["high"]


def test_p3_counts_detections_above_the_threshold_per_image() -> None:
    detections = pd.DataFrame({"image_id": [1] * 5 + [2] * 3 + [3] * 2, "score": [0.9, 0.5, 0.3, 0.03, 0.01,
                                                                                  0.9, 0.8, 0.7, 0.5, 0.5]})
    got = budget_share(detections, [1, 2, 3, 4], budget=2, score_threshold=0.02)
    # image 1: 4 above 0.02 (> 2), image 2: 3 (> 2), image 3: 2 (not > 2), image 4: none
    assert got["value"] == pytest.approx(0.5)
    assert got["mean"] == pytest.approx((4 + 3 + 2 + 0) / 4)
    assert got["max"] == 4


def test_p4_rare_share_of_image_class_pairs() -> None:
    truth = {"1": {"category_ids": [1, 3]}, "2": {"category_ids": [3]}, "3": {"category_ids": [1, 2, 4]},
             "4": {"category_ids": []}}
    frequency = {1: "r", 2: "r", 3: "c", 4: "f"}
    assert rare_share([1, 3], truth, frequency) == pytest.approx(3 / 5)
    assert rare_share([1, 2, 3, 4], truth, frequency) == pytest.approx(3 / 6)
    assert np.isnan(rare_share([4], truth, frequency))


def test_table_states_what_holds_and_renders() -> None:
    p1 = {"AP": 40.0, "APr": 30.0, "value": -10.0, "low": -14.0, "high": -6.0}
    p2 = {"r": 0.3, "c": 0.1, "f": -0.05, "value": 0.35, "low": -0.02, "high": 0.6}
    p3 = {"value": 0.7, "mean": 80.0, "max": 200, "budget": 60}
    table = premise_table(p1, p2, p3, {"unlabeled": 0.2, "pool": 0.05})
    holds = table.dropna(subset=["holds"]).set_index("premise")["holds"].to_dict()
    assert holds == {"P1": True, "P2": False, "P3": True, "P4": True}
    text = premise_markdown(table, 0.95)
    assert "| P1 | teacher APr - AP (val, points) | -10.000 | [-14.000, -6.000] | yes | -7.0 |" in text
    assert "95% paired" in text
    assert "P4" not in set(premise_table(p1, p2, p3, None)["premise"])
