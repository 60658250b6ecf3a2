"""The paired image-level bootstrap: weighted accumulation equals evaluating the resampled data set
(AP, AP-Fixed with its per-class limit re-applied, AP-Pool and ECE), identical models differ by
exactly 0, and intervals narrow with more images."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from pycocotools import mask as mask_util

from stages.core.calibration import expected_calibration_error
from stages.data.lvis import segmentation_rle
from stages.evaluation.bootstrap import (
    METRICS,
    ap_summary,
    bootstrap_metrics,
    draw_metrics,
    draw_weights,
    intervals,
    prepare_models,
    weighted_ece,
)
from stages.evaluation.fast_lvis_eval import accumulate, fast_lvis_eval, match_detections
from stages.evaluation.fixed_ap import fixed_pool_metrics
from stages.evaluation.judging import judge_detections
from stages.evaluation.metrics import evaluate_detections, top_detections
from tests.evaluation.test_fast_lvis_eval import make_dets, make_gt


def _resampled(gt: dict, dets: list[dict], weights: np.ndarray) -> tuple[dict, list[dict]]:
    """The data set with image i copied weights[i] times (new ids that sort as the copies of i), each
    detection copied with its image and its copies listed where it stood."""
    images = sorted(gt["images"], key=lambda img: img["id"])
    weight_of = {img["id"]: int(w) for img, w in zip(images, weights)}
    new_gt = {k: v for k, v in gt.items() if k not in ("images", "annotations")}
    new_gt["images"], new_gt["annotations"] = [], []
    anns_of = {}
    for a in gt["annotations"]:
        anns_of.setdefault(a["image_id"], []).append(a)
    next_ann = 1
    for img in images:
        for copy_index in range(weight_of[img["id"]]):
            new_id = img["id"] * 100 + copy_index
            new_gt["images"].append({**img, "id": new_id})
            for a in anns_of.get(img["id"], []):
                new_gt["annotations"].append({**copy.deepcopy(a), "id": next_ann, "image_id": new_id})
                next_ann += 1
    new_dets = [{**d, "image_id": d["image_id"] * 100 + j} for d in dets for j in range(weight_of[d["image_id"]])]
    return new_gt, new_dets


def _prepared(gt: dict, dets: dict[str, list[dict]], iou_type: str = "segm", per_class: int | str = "auto"):
    return prepare_models(gt, dets, iou_type=iou_type, max_dets=300, detections_per_class_setting=per_class,
                          judge_iou_type="bbox", judge_iou_threshold=0.5)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_weighted_accumulation_equals_the_resampled_data_set(iou_type: str) -> None:
    gt = make_gt(seed=4, n_images=30)  # an even seed: no annotation with id 0 (the copies renumber them)
    dets = make_dets(gt, seed=4, crowded=1, segm=iou_type == "segm")
    matched = match_detections(gt, dets, iou_type, 300)
    rng = np.random.default_rng(1)
    for _ in range(3):
        weights = np.bincount(rng.integers(0, matched.n_images, matched.n_images), minlength=matched.n_images)
        got = ap_summary(accumulate(matched, weights, areas=[0])[0], matched.freq_groups)
        new_gt, new_dets = _resampled(gt, dets, weights)
        want = fast_lvis_eval(new_gt, new_dets, iou_type, 300).results
        for key in ("AP", "APr", "APc", "APf"):
            expected = 100 * want[key] if want[key] > -1 else np.nan
            np.testing.assert_allclose(got[key], expected, atol=1e-9, equal_nan=True, err_msg=key)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("per_class", [5, 40])
def test_every_metric_of_a_draw_is_that_of_the_resampled_data_set(iou_type: str, per_class: int) -> None:
    # AP-Fixed re-applies its per-class limit on the draw (an image drawn twice brings its detections
    # twice), AP-Pool pools the draw's detections, the ECE judges the draw's images
    gt = make_gt(seed=4, n_images=30)
    dets = make_dets(gt, seed=4, crowded=1, segm=iou_type == "segm")
    model = _prepared(gt, {"m": dets}, iou_type, per_class)["m"]
    rng = np.random.default_rng(2)
    for _ in range(3):
        weights = np.bincount(rng.integers(0, 30, 30), minlength=30)
        got = draw_metrics(model, weights, ece_bins=15)
        new_gt, new_dets = _resampled(gt, dets, weights)
        want = {k: 100 * v if v > -1 else np.nan for k, v in fast_lvis_eval(new_gt, new_dets, iou_type, 300).results.items()}
        want |= fixed_pool_metrics("unused.json", new_dets, iou_type, per_class, "fast", new_gt)
        judged = judge_detections(top_detections(new_dets, 300)[0], new_gt, "bbox", 0.5)
        want["ECE"] = expected_calibration_error(judged["score"], judged["correct"], 15)
        for key in METRICS:
            np.testing.assert_allclose(got[key], want[key], atol=1e-9, equal_nan=True, err_msg=key)
    # the limit binds at 5 per class: the draws are not what cutting once, then resampling, would give
    assert max(np.bincount([d["category_id"] for d in dets])) > 5


def test_the_unresampled_draw_is_metrics_json(tmp_path) -> None:
    # draw -1 of the bootstrap (intervals.csv's value) is what evaluate writes to metrics.json
    import json

    gt = make_gt(seed=2, n_images=25)
    dets = make_dets(gt, seed=2, crowded=3)
    # evaluate validates its ground truth: make_gt's planted boundary areas (1024, 9216, 0) would be
    # refused as inconsistent with their masks, so every area here is its mask's
    sizes = {img["id"]: (img["height"], img["width"]) for img in gt["images"]}
    for ann in gt["annotations"]:
        ann["area"] = float(mask_util.area(segmentation_rle(ann["segmentation"], *sizes[ann["image_id"]])))
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    config = {"evaluation": {"max_detections": 20, "ece_bins": 15, "evaluator": "fast", "fixed_max_detections_per_class": 7},
              "calibration": {"iou_type": "bbox", "iou_threshold": 0.5}}
    metrics, _, _ = evaluate_detections(config, path, dets)
    model = prepare_models(gt, {"m": dets}, iou_type="segm", max_dets=20, detections_per_class_setting=7,
                           judge_iou_type="bbox", judge_iou_threshold=0.5)["m"]
    got = draw_metrics(model, None, ece_bins=15)
    for key in METRICS:
        want = metrics["ece"] if key == "ECE" else metrics["segm"][key]
        assert got[key] == pytest.approx(want, abs=1e-9), key
    assert metrics["n_cut"] > 0 and metrics["n_cut_per_class"] > 0 and metrics["detections_per_class"] == 7


def test_weighted_ece_is_the_ece_of_the_repeated_detections() -> None:
    rng = np.random.default_rng(3)
    score, correct = rng.random(300), rng.random(300) < 0.6
    weights = rng.integers(0, 4, 300)
    want = expected_calibration_error(np.repeat(score, weights), np.repeat(correct, weights), 15)
    assert weighted_ece(score, correct, weights, 15) == pytest.approx(want, abs=1e-12)
    assert weighted_ece(score, correct, np.zeros(300), 15) == 0.0


def test_unit_weights_give_the_evaluation_itself() -> None:
    gt = make_gt(seed=2, n_images=20)
    dets = make_dets(gt, seed=2)
    matched = match_detections(gt, dets, "bbox", 300)
    full = fast_lvis_eval(gt, dets, "bbox", 300)
    got = ap_summary(accumulate(matched, np.ones(matched.n_images, dtype=int), areas=[0])[0], matched.freq_groups)
    assert got["AP"] == pytest.approx(100 * full.results["AP"], abs=1e-12)


def test_identical_models_differ_by_exactly_zero() -> None:
    gt = make_gt(seed=6, n_images=25)
    dets = make_dets(gt, seed=6)
    draws = bootstrap_metrics(_prepared(gt, {"a": dets, "b": list(dets)}, "bbox", 6), draws=50, seed=0, ece_bins=15)
    table = intervals(draws, [("a", "b")])
    diff = table[table["what"] == "a - b"]
    assert set(diff["metric"]) == set(METRICS)
    assert (diff[["value", "low", "high"]].to_numpy() == 0).all()
    # and every metric of every model has an interval around its value
    rows = table[table["what"] == "a"]
    assert set(rows["metric"]) == set(METRICS) | {"APr - AP"}
    rows = rows[rows["metric"].isin(METRICS)]
    assert (rows["low"] <= rows["value"]).all() and (rows["value"] <= rows["high"]).all()
    # and its gap APr - AP (the premise's P1) is the difference of the two values
    value = table[table["what"] == "a"].set_index("metric")["value"]
    assert value["APr - AP"] == value["APr"] - value["AP"]


def test_intervals_narrow_with_more_images() -> None:
    widths = []
    for n_images in (20, 160):
        gt = make_gt(seed=8, n_images=n_images)
        dets = make_dets(gt, seed=8)
        draws = bootstrap_metrics(_prepared(gt, {"m": dets}, "bbox"), draws=200, seed=0, ece_bins=15)
        table = intervals(draws, []).set_index("metric")
        widths.append(table["high"] - table["low"])
    for metric in ("AP", "AP-Fixed", "AP-Pool", "ECE"):
        assert widths[1][metric] < 0.6 * widths[0][metric], metric


def test_draws_are_seeded_resamples() -> None:
    weights = draw_weights(10, 5, seed=7)
    assert weights.shape == (5, 10) and (weights.sum(axis=1) == 10).all()
    np.testing.assert_array_equal(weights, draw_weights(10, 5, seed=7))
    assert not np.array_equal(weights, draw_weights(10, 5, seed=8))
