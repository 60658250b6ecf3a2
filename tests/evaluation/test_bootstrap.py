"""The paired image-level bootstrap: weighted accumulation equals evaluating the resampled data set,
identical models differ by exactly 0, and intervals narrow with more images."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from stages.evaluation.bootstrap import ap_summary, bootstrap_metrics, draw_weights, intervals, match_models
from stages.evaluation.fast_lvis_eval import accumulate, fast_lvis_eval, match_detections
from tests.evaluation.test_fast_lvis_eval import make_dets, make_gt


def _resampled(gt: dict, dets: list[dict], weights: np.ndarray) -> tuple[dict, list[dict]]:
    """The data set with image i copied weights[i] times (new ids), detections copied with it."""
    images = sorted(gt["images"], key=lambda img: img["id"])
    new_gt = {k: v for k, v in gt.items() if k not in ("images", "annotations")}
    new_gt["images"], new_gt["annotations"], new_dets = [], [], []
    anns_of, dets_of = {}, {}
    for a in gt["annotations"]:
        anns_of.setdefault(a["image_id"], []).append(a)
    for d in dets:
        dets_of.setdefault(d["image_id"], []).append(d)
    next_ann = 1
    for img, w in zip(images, weights):
        for copy_index in range(int(w)):
            new_id = img["id"] * 100 + copy_index
            new_gt["images"].append({**img, "id": new_id})
            for a in anns_of.get(img["id"], []):
                new_gt["annotations"].append({**copy.deepcopy(a), "id": next_ann, "image_id": new_id})
                next_ann += 1
            new_dets += [{**d, "image_id": new_id} for d in dets_of.get(img["id"], [])]
    return new_gt, new_dets


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
    draws = bootstrap_metrics(match_models(gt, {"a": dets, "b": list(dets)}, "bbox", 300), draws=50, seed=0)
    table = intervals(draws, [("a", "b")])
    diff = table[table["what"] == "a - b"]
    assert (diff[["value", "low", "high"]].to_numpy() == 0).all()


def test_intervals_narrow_with_more_images() -> None:
    widths = []
    for n_images in (20, 160):
        gt = make_gt(seed=8, n_images=n_images)
        dets = make_dets(gt, seed=8)
        draws = bootstrap_metrics(match_models(gt, {"m": dets}, "bbox", 300), draws=200, seed=0)
        row = intervals(draws, []).query("metric == 'AP'").iloc[0]
        assert row["low"] <= row["value"] <= row["high"]
        widths.append(row["high"] - row["low"])
    assert widths[1] < 0.6 * widths[0], widths


def test_draws_are_seeded_resamples() -> None:
    weights = draw_weights(10, 5, seed=7)
    assert weights.shape == (5, 10) and (weights.sum(axis=1) == 10).all()
    np.testing.assert_array_equal(weights, draw_weights(10, 5, seed=7))
    assert not np.array_equal(weights, draw_weights(10, 5, seed=8))
