"""The bootstrap-bias analysis (benchmarks/bench_bootstrap_bias.py): its per-category APs average to
LVIS AP, its two parts add up to the bias, and a constructed case puts the bias where it belongs."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.bench_bootstrap_bias import bias_decomposition, per_category_ap
from stages.evaluation.bootstrap import ap_summary, draw_weights, prepare_models
from stages.evaluation.fast_lvis_eval import accumulate
from tests.evaluation.test_fast_lvis_eval import make_dets, make_gt


def _prepared(gt: dict, dets: list[dict], iou_type: str = "bbox"):
    return prepare_models(gt, {"m": dets}, iou_type=iou_type, max_dets=300, detections_per_class_setting="auto",
                          judge_iou_type="bbox", judge_iou_threshold=0.5)["m"]


def test_per_category_ap_averages_to_lvis_ap_on_the_data_and_on_a_draw() -> None:
    gt = make_gt(seed=4, n_images=30)
    e = _prepared(gt, make_dets(gt, seed=4, segm=False))
    for w in [None, *draw_weights(e.matched.n_images, 3, 0)]:
        want = ap_summary(accumulate(e.matched, w, areas=[0])[0], e.matched.freq_groups)
        got = per_category_ap(e, w)
        np.testing.assert_allclose(np.nanmean(got), want["AP"], atol=1e-9)
        np.testing.assert_allclose(np.nanmean(got[e.matched.freq_groups[0]]), want["APr"], atol=1e-9, equal_nan=True)


def test_the_draws_summary_is_that_of_the_bootstrap_stages_ap_and_the_parts_add_up() -> None:
    # mean, share above the point and interval against AP / APr computed the bootstrap stage's way
    gt = make_gt(seed=6, n_images=30)
    e = _prepared(gt, make_dets(gt, seed=6, segm=False))
    weights = draw_weights(e.matched.n_images, 40, 1)
    rows = {r["metric"]: r for r in bias_decomposition(e, weights)}
    assert set(rows) == {"AP", "APr"}
    point = ap_summary(accumulate(e.matched, None, areas=[0])[0], e.matched.freq_groups)
    drawn = [ap_summary(accumulate(e.matched, w, areas=[0])[0], e.matched.freq_groups) for w in weights]
    for metric, r in rows.items():
        values = np.array([d[metric] for d in drawn])
        values = values[np.isfinite(values)]
        assert r["point"] == pytest.approx(point[metric])
        assert r["mean_draw"] == pytest.approx(values.mean())
        assert r["above_point"] == pytest.approx((values > point[metric]).mean())
        assert (r["low"], r["high"]) == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])))
        assert r["class_mix"] + r["within_class"] == pytest.approx(r["mean_draw"] - r["point"], abs=1e-9)


def test_a_group_without_ground_truth_has_no_row() -> None:
    gt = _two_category_gt(6)
    gt["annotations"] = [a for a in gt["annotations"] if a["category_id"] == 1]  # no rare object at all
    dets = [{"image_id": i, "category_id": 1, "bbox": [10.0, 10.0, 40.0, 30.0], "score": 0.9} for i in range(1, 6)]
    rows = bias_decomposition(_prepared(gt, dets), draw_weights(6, 10, 0))
    assert [r["metric"] for r in rows] == ["AP"]


def _two_category_gt(n_images: int) -> dict:
    """Category 1 ('f') once in each of images 1..n-1, category 2 ('r') once in image n only."""
    cats = [{"id": c, "name": f"c{c}", "frequency": f, "synset": f"c{c}.n.01", "synonyms": [f"c{c}"], "def": "x",
             "image_count": 0, "instance_count": 0} for c, f in [(1, "f"), (2, "r")]]
    images = [{"id": i, "height": 100, "width": 100, "neg_category_ids": [], "not_exhaustive_category_ids": []}
              for i in range(1, n_images + 1)]
    anns = [{"id": i, "image_id": i, "category_id": 1 if i < n_images else 2, "bbox": [10.0, 10.0, 40.0, 30.0],
             "area": 1200.0, "segmentation": [[10, 10, 50, 10, 50, 40, 10, 40]]} for i in range(1, n_images + 1)]
    return {"images": images, "annotations": anns, "categories": cats}


def test_a_missed_rare_category_that_drops_out_of_draws_is_class_mix_not_within_class() -> None:
    # the model finds every category-1 object exactly and never the rare category 2: per category,
    # AP is 100 and 0 on every draw, so the whole bias is the draws that lack image n (about 1/e of
    # them), where the mean is 100 instead of 50
    n = 12
    gt = _two_category_gt(n)
    dets = [{"image_id": i, "category_id": 1, "bbox": [10.0, 10.0, 40.0, 30.0], "score": 0.9} for i in range(1, n)]
    e = _prepared(gt, dets)
    weights = draw_weights(n, 200, 0)
    rows = {r["metric"]: r for r in bias_decomposition(e, weights)}
    ap = rows["AP"]
    assert ap["point"] == pytest.approx(50.0)
    without_rare = (weights[:, n - 1] == 0).mean()
    assert 0.2 < without_rare < 0.5
    assert ap["mean_draw"] == pytest.approx(50.0 + 50.0 * without_rare)
    assert ap["class_mix"] == pytest.approx(50.0 * without_rare)
    assert ap["within_class"] == pytest.approx(0.0, abs=1e-9)
    # APr: the rare category alone, 0 wherever it is drawn; draws without it have no APr
    assert rows["APr"]["point"] == 0 and rows["APr"]["mean_draw"] == 0 and rows["APr"]["class_mix"] == 0
