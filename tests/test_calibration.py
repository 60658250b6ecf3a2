"""Judging detections (federated rule, greedy matching), CCECE (eq. 4), ECE."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stages.calibration import (
    ccece_per_class,
    expected_calibration_error,
    judge_detections,
    reliability_table,
)


def _gt():
    cats = [{"id": 1, "name": "a", "frequency": "f"}, {"id": 2, "name": "b", "frequency": "r"},
            {"id": 3, "name": "c", "frequency": "c"}]
    images = [
        {"id": 10, "height": 100, "width": 100, "neg_category_ids": [3], "not_exhaustive_category_ids": []},
        {"id": 11, "height": 100, "width": 100, "neg_category_ids": [], "not_exhaustive_category_ids": [2]},
    ]
    anns = [
        {"id": 1, "image_id": 10, "category_id": 1, "bbox": [0, 0, 10, 10], "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]], "area": 100},
        {"id": 2, "image_id": 10, "category_id": 2, "bbox": [50, 50, 20, 20], "segmentation": [[50, 50, 70, 50, 70, 70, 50, 70]], "area": 400},
        {"id": 3, "image_id": 11, "category_id": 2, "bbox": [0, 0, 20, 20], "segmentation": [[0, 0, 20, 0, 20, 20, 0, 20]], "area": 400},
    ]
    return {"images": images, "annotations": anns, "categories": cats}


def _det(image_id, cat, bbox, score):
    return {"image_id": image_id, "category_id": cat, "bbox": bbox, "score": score}


def test_federated_rule_and_greedy_matching():
    dets = [
        _det(10, 1, [0, 0, 10, 10], 0.9),     # correct
        _det(10, 1, [0, 0, 10, 10], 0.8),     # duplicate of a matched gt -> wrong
        _det(10, 3, [0, 0, 10, 10], 0.7),     # class 3 in neg_category_ids -> judged, wrong
        _det(11, 3, [0, 0, 10, 10], 0.6),     # class 3 neither annotated nor negative in 11 -> left out
        _det(11, 2, [60, 60, 10, 10], 0.5),   # unmatched, class 2 not exhaustive in 11 -> left out
        _det(11, 2, [0, 0, 20, 20], 0.4),     # matches -> correct, kept
    ]
    judged = judge_detections(dets, _gt())
    got = sorted(zip(judged["image_id"], judged["category_id"], judged["score"], judged["correct"]))
    assert got == [(10, 1, 0.8, False), (10, 1, 0.9, True), (10, 3, 0.7, False), (11, 2, 0.4, True)]


def test_iou_threshold_boundary():
    # gt [0,0,10,10]; det [0,0,10,x]: IoU = x/10 for x <= 10
    judged = judge_detections([_det(10, 1, [0, 0, 10, 5.1], 0.9)], _gt(), iou_threshold=0.5)
    assert judged["correct"].tolist() == [True]
    judged = judge_detections([_det(10, 1, [0, 0, 10, 4.9], 0.9)], _gt(), iou_threshold=0.5)
    assert judged["correct"].tolist() == [False]


def test_segm_iou_uses_masks():
    import pycocotools.mask as mask_util

    m = np.zeros((100, 100), dtype=np.uint8, order="F")
    m[0:10, 0:10] = 1
    rle = mask_util.encode(m)
    rle["counts"] = rle["counts"].decode()
    det = {"image_id": 10, "category_id": 1, "bbox": [40, 40, 10, 10], "segmentation": rle, "score": 0.5}
    assert judge_detections([det], _gt(), iou_type="segm")["correct"].tolist() == [True]
    assert judge_detections([det], _gt(), iou_type="bbox")["correct"].tolist() == [False]


def test_ccece_signs_and_hand_values():
    cats = _gt()["categories"]
    judged = pd.DataFrame({
        # class 1: overconfident: scores 0.9, 0.9, 0.8, 0.8; correct 1 of 4 -> 0.25 - 0.85 = -0.6
        # class 2: underconfident: scores 0.2, 0.3; both correct -> 1 - 0.25 = +0.75
        "image_id": [10] * 6, "category_id": [1, 1, 1, 1, 2, 2],
        "score": [0.9, 0.9, 0.8, 0.8, 0.2, 0.3], "correct": [True, False, False, False, True, True],
    })
    table = ccece_per_class(judged, cats, bins=15).set_index("category_id")
    assert table.loc[1, "ccece"] == pytest.approx(-0.6)
    assert table.loc[2, "ccece"] == pytest.approx(0.75)
    assert table.loc[3, "ccece"] == 0.0 and table.loc[3, "n_detections"] == 0
    assert np.isnan(table.loc[3, "accuracy"])
    assert table.loc[1, "n_detections"] == 4 and table.loc[1, "accuracy"] == pytest.approx(0.25)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_binned_equals_mean_difference(seed):
    rng = np.random.default_rng(seed)
    n = 500
    cats = [{"id": i, "name": str(i), "frequency": "c"} for i in range(1, 8)]
    judged = pd.DataFrame({"image_id": 0, "category_id": rng.integers(1, 8, n), "score": rng.random(n),
                           "correct": rng.random(n) < 0.4})
    table = ccece_per_class(judged, cats, bins=15).set_index("category_id")
    for cid, group in judged.groupby("category_id"):
        assert table.loc[cid, "ccece"] == pytest.approx(group["correct"].mean() - group["score"].mean())


def test_ece_hand_computed():
    # 2 bins: [0, .5): conf .2, .4 acc 0.5 -> |0.5 - 0.3| = 0.2 ; [.5, 1]: conf .9, 1.0 acc 1 -> 0.05
    ece = expected_calibration_error(np.array([0.2, 0.4, 0.9, 1.0]), np.array([1, 0, 1, 1]), bins=2)
    assert ece == pytest.approx(0.5 * 0.2 + 0.5 * 0.05)
    assert expected_calibration_error(np.array([]), np.array([]), 15) == 0.0
    table = reliability_table(np.array([0.2, 0.4, 0.9, 1.0]), np.array([1, 0, 1, 1]), bins=2)
    assert table["count"].tolist() == [2, 2]


def test_nan_scores_are_rejected():
    with pytest.raises(ValueError, match="NaN"):
        judge_detections([_det(10, 1, [0, 0, 10, 10], float("nan"))], _gt())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error(np.array([1.5]), np.array([1]))


def _random_case(seed: int, n_images: int = 30, n_classes: int = 8, per_image: int = 25):
    rng = np.random.default_rng(seed)
    cats = [{"id": c, "name": str(c), "frequency": "rcf"[c % 3]} for c in range(1, n_classes + 1)]
    images, anns, dets = [], [], []
    for i in range(1, n_images + 1):
        present = set(rng.choice(np.arange(1, n_classes + 1), size=rng.integers(0, 4), replace=False).tolist())
        absent = [c for c in range(1, n_classes + 1) if c not in present]
        neg = rng.choice(absent, size=min(2, len(absent)), replace=False).tolist() if absent else []
        ne = [int(rng.choice(sorted(present)))] if present and rng.random() < 0.3 else []
        images.append({"id": i, "height": 100, "width": 100, "neg_category_ids": neg, "not_exhaustive_category_ids": ne})
        for c in present:
            for _ in range(rng.integers(1, 4)):
                x, y = rng.uniform(0, 60, 2)
                w, h = rng.uniform(10, 40, 2)
                anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c), "bbox": [x, y, w, h],
                             "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]], "area": w * h})
        for _ in range(rng.integers(0, per_image)):
            x, y = rng.uniform(0, 60, 2)
            w, h = rng.uniform(10, 40, 2)
            # coarse scores make ties, which the two implementations must break the same way
            dets.append({"image_id": i, "category_id": int(rng.integers(1, n_classes + 1)), "bbox": [x, y, w, h],
                         "score": float(np.round(rng.random(), 1))})
    dets.append({"image_id": 999, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5})  # unknown image
    return {"images": images, "annotations": anns, "categories": cats}, dets


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_judging_equals_the_loop(seed):
    from stages.calibration import judge_detections_loop

    gt, dets = _random_case(seed)
    for threshold in (0.3, 0.5):
        fast = judge_detections(dets, gt, iou_threshold=threshold)
        slow = judge_detections_loop(dets, gt, iou_threshold=threshold)
        key = ["image_id", "category_id", "score", "correct"]
        pd.testing.assert_frame_equal(fast.sort_values(key).reset_index(drop=True),
                                      slow.sort_values(key).reset_index(drop=True), check_dtype=False)


def test_vectorised_segm_judging_equals_the_loop():
    import pycocotools.mask as mask_util

    from stages.calibration import judge_detections_loop

    gt, dets = _random_case(7, n_images=10, per_image=10)
    for d in dets:
        x, y, w, h = d["bbox"]
        rle = mask_util.merge(mask_util.frPyObjects([[x, y, x + w, y, x + w, y + h, x, y + h]], 100, 100))
        rle["counts"] = rle["counts"].decode()
        d["segmentation"] = rle
    fast = judge_detections(dets, gt, iou_type="segm")
    slow = judge_detections_loop(dets, gt, iou_type="segm")
    key = ["image_id", "category_id", "score", "correct"]
    pd.testing.assert_frame_equal(fast.sort_values(key).reset_index(drop=True),
                                  slow.sort_values(key).reset_index(drop=True), check_dtype=False)


def test_detections_parquet_roundtrip(tmp_path):
    from stages.atomic import write_parquet
    from stages.detections_io import read_detections, results_frame

    dets = [{"image_id": 1, "category_id": 2, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5,
             "segmentation": {"size": [8, 8], "counts": "abc"}},
            {"image_id": 3, "category_id": 4, "bbox": [5.0, 6.0, 7.0, 8.0], "score": 0.25}]
    write_parquet(results_frame(dets), tmp_path / "d.parquet")
    assert read_detections(tmp_path / "d.parquet") == dets
