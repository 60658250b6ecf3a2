"""Judging detections (federated rule, greedy matching), CCECE (eq. 4), ECE, and the ccece CLI.

Expected numbers are computed by hand in the comments, never with the code under test.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from stages.core.calibration import ccece_per_class, expected_calibration_error, reliability_table
from stages.evaluation.judging import judge_detections
from tests.reference_judging import judge_detections_loop


def _square(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def _gt():
    """A tiny LVIS json: image 10 has a (class 1) and b (class 2) annotated, c (3) verified absent;
    image 11 has b annotated but not exhaustively; class 3 is unverified there."""
    cats = [{"id": 1, "name": "a", "frequency": "f", "image_count": 1, "instance_count": 1, "synset": "a.n.01",
             "synonyms": ["a"], "def": "a"},
            {"id": 2, "name": "b", "frequency": "r", "image_count": 2, "instance_count": 2, "synset": "b.n.01",
             "synonyms": ["b"], "def": "b"},
            {"id": 3, "name": "c", "frequency": "c", "image_count": 0, "instance_count": 0, "synset": "c.n.01",
             "synonyms": ["c"], "def": "c"}]
    images = [
        {"id": 10, "height": 100, "width": 100, "coco_url": "http://x/val2017/000000000010.jpg",
         "neg_category_ids": [3], "not_exhaustive_category_ids": []},
        {"id": 11, "height": 100, "width": 100, "coco_url": "http://x/val2017/000000000011.jpg",
         "neg_category_ids": [], "not_exhaustive_category_ids": [2]},
    ]
    anns = [
        {"id": 1, "image_id": 10, "category_id": 1, "bbox": [0, 0, 10, 10], "segmentation": _square(0, 0, 10, 10), "area": 100},
        {"id": 2, "image_id": 10, "category_id": 2, "bbox": [50, 50, 20, 20], "segmentation": _square(50, 50, 20, 20), "area": 400},
        {"id": 3, "image_id": 11, "category_id": 2, "bbox": [0, 0, 20, 20], "segmentation": _square(0, 0, 20, 20), "area": 400},
    ]
    return {"images": images, "annotations": anns, "categories": cats}


def _det(image_id, cat, bbox, score):
    return {"image_id": image_id, "category_id": cat, "bbox": bbox, "score": score}


def _rows(judged):
    return sorted(zip(judged["image_id"], judged["category_id"], judged["score"], judged["correct"]))


# -- judging ---------------------------------------------------------------------------------

def test_federated_rule_and_greedy_matching():
    dets = [
        _det(10, 1, [0, 0, 10, 10], 0.9),     # correct
        _det(10, 1, [0, 0, 10, 10], 0.8),     # duplicate of a matched gt -> wrong
        _det(10, 3, [0, 0, 10, 10], 0.7),     # class 3 in neg_category_ids -> judged, wrong
        _det(11, 3, [0, 0, 10, 10], 0.6),     # class 3 neither annotated nor negative in 11 -> left out
        _det(11, 2, [60, 60, 10, 10], 0.5),   # unmatched, class 2 not exhaustive in 11 -> left out
        _det(11, 2, [0, 0, 20, 20], 0.4),     # matches -> correct, kept
        _det(99, 1, [0, 0, 10, 10], 0.3),     # image not in the gt -> dropped
    ]
    judged = judge_detections(dets, _gt())
    assert list(judged.columns) == ["image_id", "category_id", "score", "correct"]
    assert _rows(judged) == [(10, 1, 0.8, False), (10, 1, 0.9, True), (10, 3, 0.7, False), (11, 2, 0.4, True)]


def test_greedy_matching_goes_by_score_not_by_iou():
    # The lower-scored detection overlaps the gt better, but the higher-scored one matches first.
    dets = [_det(10, 1, [0, 0, 10, 10], 0.3), _det(10, 1, [0, 0, 10, 6], 0.6)]
    judged = judge_detections(dets, _gt()).sort_values("score")
    assert judged["correct"].tolist() == [False, True]


def test_two_ground_truths_both_matched():
    gt = _gt()
    gt["annotations"].append({"id": 4, "image_id": 10, "category_id": 1, "bbox": [30, 30, 10, 10],
                              "segmentation": _square(30, 30, 10, 10), "area": 100})
    dets = [_det(10, 1, [0, 0, 10, 10], 0.5), _det(10, 1, [30, 30, 10, 10], 0.4), _det(10, 1, [31, 31, 10, 10], 0.2)]
    assert _rows(judge_detections(dets, gt)) == [(10, 1, 0.2, False), (10, 1, 0.4, True), (10, 1, 0.5, True)]


def test_iou_threshold_boundary():
    # gt [0,0,10,10]; det [0,0,10,x] lies inside it: IoU = 10x / 100 = x / 10
    judged = judge_detections([_det(10, 1, [0, 0, 10, 5.1], 0.9)], _gt(), iou_threshold=0.5)
    assert judged["correct"].tolist() == [True]
    judged = judge_detections([_det(10, 1, [0, 0, 10, 4.9], 0.9)], _gt(), iou_threshold=0.5)
    assert judged["correct"].tolist() == [False]
    judged = judge_detections([_det(10, 1, [0, 0, 10, 5.0], 0.9)], _gt(), iou_threshold=0.5)
    assert judged["correct"].tolist() == [True]  # IoU == threshold counts as a match
    judged = judge_detections([_det(10, 1, [0, 0, 10, 7.0], 0.9)], _gt(), iou_threshold=0.75)
    assert judged["correct"].tolist() == [False]


def test_segm_iou_uses_masks():
    import pycocotools.mask as mask_util

    m = np.zeros((100, 100), dtype=np.uint8, order="F")
    m[0:10, 0:10] = 1
    rle = mask_util.encode(m)
    rle["counts"] = rle["counts"].decode()
    # The mask covers the gt square exactly; the box is far away.
    det = {"image_id": 10, "category_id": 1, "bbox": [40, 40, 10, 10], "segmentation": rle, "score": 0.5}
    assert judge_detections([det], _gt(), iou_type="segm")["correct"].tolist() == [True]
    assert judge_detections([det], _gt(), iou_type="bbox")["correct"].tolist() == [False]
    # a box-only detection under mask IoU: its box is its mask, as LVISResults converts it (and as
    # evaluation does, so that AP and calibration judge the same detections)
    assert judge_detections([_det(10, 1, [0, 0, 10, 10], 0.5)], _gt(), iou_type="segm")["correct"].tolist() == [True]
    assert judge_detections([_det(10, 1, [40, 40, 10, 10], 0.5)], _gt(), iou_type="segm")["correct"].tolist() == [False]


def test_dataframe_input_and_empty_input():
    frame = pd.DataFrame([_det(10, 1, [0, 0, 10, 10], 0.9), _det(10, 2, [0, 0, 10, 10], 0.8)], index=[5, 7])
    assert _rows(judge_detections(frame, _gt())) == [(10, 1, 0.9, True), (10, 2, 0.8, False)]
    empty = judge_detections([], _gt())
    assert list(empty.columns) == ["image_id", "category_id", "score", "correct"] and empty.empty


# -- eq. (4) -----------------------------------------------------------------------------------

def test_ccece_signs_and_hand_values():
    cats = _gt()["categories"]
    judged = pd.DataFrame({
        "image_id": [10] * 6, "category_id": [1, 1, 1, 1, 2, 2],
        "score": [0.9, 0.9, 0.8, 0.8, 0.2, 0.3], "correct": [True, False, False, False, True, True],
    })
    # class 1 (overconfident), 15 bins: 0.9 -> bin 13 (13.5), 0.8 -> bin 12 (12.0)
    #   bin 13: N=2, acc 1/2, conf 0.9 -> 2/4 * (0.5 - 0.9) = -0.2
    #   bin 12: N=2, acc 0,   conf 0.8 -> 2/4 * (0.0 - 0.8) = -0.4          Delta_1 = -0.6
    # class 2 (underconfident): 0.2 -> bin 3, 0.3 -> bin 4 (4.5), both correct
    #   1/2 * (1 - 0.2) + 1/2 * (1 - 0.3) = 0.4 + 0.35                       Delta_2 = +0.75
    table = ccece_per_class(judged, cats, bins=15)
    assert table["category_id"].tolist() == [1, 2, 3]  # category order
    assert list(table.columns) == ["category_id", "name", "frequency", "n_detections", "accuracy", "confidence", "ccece"]
    table = table.set_index("category_id")
    assert table.loc[1, "ccece"] == pytest.approx(-0.6)
    assert table.loc[2, "ccece"] == pytest.approx(0.75)
    assert table.loc[1, "n_detections"] == 4 and table.loc[1, "accuracy"] == pytest.approx(0.25)
    assert table.loc[1, "confidence"] == pytest.approx(0.85)
    # a class without detections
    assert table.loc[3, "ccece"] == 0.0 and table.loc[3, "n_detections"] == 0
    assert np.isnan(table.loc[3, "accuracy"]) and np.isnan(table.loc[3, "confidence"])


def test_ccece_from_judged_detections():
    # judged: (10,1,0.9,T), (10,1,0.8,F), (10,2,0.6,F), (10,3,0.7,F)
    # Delta_1 = 1/2 - 0.85 = -0.35; Delta_2 = 0 - 0.6 = -0.6; Delta_3 = 0 - 0.7 = -0.7
    dets = [_det(10, 1, [0, 0, 10, 10], 0.9), _det(10, 1, [0, 0, 10, 10], 0.8), _det(10, 2, [0, 0, 5, 5], 0.6),
            _det(10, 3, [0, 0, 10, 10], 0.7), _det(11, 3, [0, 0, 10, 10], 1.0)]
    table = ccece_per_class(judge_detections(dets, _gt()), _gt()["categories"]).set_index("category_id")
    assert table["ccece"].tolist() == pytest.approx([-0.35, -0.6, -0.7])
    assert table["n_detections"].tolist() == [2, 1, 1]


def test_score_one_falls_in_last_bin():
    table = reliability_table(np.array([0.0, 0.5, 1.0]), np.array([0, 1, 1]), bins=4)
    # bins [0,.25) [.25,.5) [.5,.75) [.75,1]: 0.0 -> 0, 0.5 -> 2, 1.0 -> 3
    assert table["count"].tolist() == [1, 0, 1, 1]
    assert np.isnan(table.loc[1, "accuracy"]) and np.isnan(table.loc[1, "confidence"])
    assert table["bin_lower"].tolist() == [0.0, 0.25, 0.5, 0.75]
    assert table["bin_upper"].tolist() == [0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("bins", [1, 10, 15])
def test_binned_equals_mean_difference(seed, bins):
    rng = np.random.default_rng(seed)
    n = 500
    cats = [{"id": i, "name": str(i), "frequency": "c"} for i in range(1, 9)]  # class 8 gets nothing
    judged = pd.DataFrame({"image_id": 0, "category_id": rng.integers(1, 8, n), "score": rng.random(n),
                           "correct": rng.random(n) < 0.4})
    judged.loc[:5, "score"] = 1.0  # the closed right end
    table = ccece_per_class(judged, cats, bins=bins).set_index("category_id")
    for cid, group in judged.groupby("category_id"):
        assert table.loc[cid, "ccece"] == pytest.approx(group["correct"].mean() - group["score"].mean(), abs=1e-12)
        assert table.loc[cid, "n_detections"] == len(group)
    assert table.loc[8, "ccece"] == 0.0 and table.loc[8, "n_detections"] == 0


def test_ccece_rejects_unknown_categories():
    judged = pd.DataFrame({"image_id": [1], "category_id": [42], "score": [0.5], "correct": [True]})
    with pytest.raises(ValueError, match="42"):
        ccece_per_class(judged, _gt()["categories"])


# -- ECE ----------------------------------------------------------------------------------------

def test_ece_hand_computed():
    # 2 bins: [0, .5): conf .2, .4, acc 1/2 -> |0.5 - 0.3| = 0.2 ; [.5, 1]: conf .9, 1.0, acc 1 -> |1 - 0.95| = 0.05
    ece = expected_calibration_error(np.array([0.2, 0.4, 0.9, 1.0]), np.array([1, 0, 1, 1]), bins=2)
    assert ece == pytest.approx(0.5 * 0.2 + 0.5 * 0.05)
    # 15 bins: 0.1 -> bin 1 (1.5), 0.95 -> bin 14 (14.25); |1 - 0.1| / 2 + |0 - 0.95| / 2 = 0.925
    assert expected_calibration_error(np.array([0.1, 0.95]), np.array([True, False])) == pytest.approx(0.925)
    assert expected_calibration_error(np.array([]), np.array([]), 15) == 0.0
    table = reliability_table(np.array([0.2, 0.4, 0.9, 1.0]), np.array([1, 0, 1, 1]), bins=2)
    assert table["count"].tolist() == [2, 2]
    assert table["accuracy"].tolist() == pytest.approx([0.5, 1.0])
    assert table["confidence"].tolist() == pytest.approx([0.3, 0.95])


def test_bad_scores_are_rejected():
    with pytest.raises(ValueError, match="NaN"):
        judge_detections([_det(10, 1, [0, 0, 10, 10], float("nan"))], _gt())
    with pytest.raises(ValueError, match="NaN or inf"):
        expected_calibration_error(np.array([np.inf]), np.array([1]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error(np.array([1.5]), np.array([1]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        judge_detections([_det(10, 1, [0, 0, 10, 10], -0.1)], _gt())
    judged = pd.DataFrame({"image_id": [10], "category_id": [1], "score": [np.nan], "correct": [True]})
    with pytest.raises(ValueError, match="NaN"):
        ccece_per_class(judged, _gt()["categories"])


# -- the vectorised judge against the loop --------------------------------------------------------

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
                             "segmentation": _square(x, y, w, h), "area": w * h})
        for _ in range(rng.integers(0, per_image)):
            x, y = rng.uniform(0, 60, 2)
            w, h = rng.uniform(10, 40, 2)
            # coarse scores make ties, which the two implementations must break the same way
            dets.append({"image_id": i, "category_id": int(rng.integers(1, n_classes + 1)), "bbox": [x, y, w, h],
                         "score": float(np.round(rng.random(), 1))})
    dets.append({"image_id": 999, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5})  # unknown image
    return {"images": images, "annotations": anns, "categories": cats}, dets


def _sorted(frame):
    key = ["image_id", "category_id", "score", "correct"]
    return frame.sort_values(key).reset_index(drop=True)


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_judging_equals_the_loop(seed):
    gt, dets = _random_case(seed)
    for threshold in (0.3, 0.5):
        fast = judge_detections(dets, gt, iou_threshold=threshold)
        slow = judge_detections_loop(dets, gt, iou_threshold=threshold)
        assert len(fast) > 0
        pd.testing.assert_frame_equal(_sorted(fast), _sorted(slow), check_dtype=False)


def test_vectorised_segm_judging_equals_the_loop():
    import pycocotools.mask as mask_util

    gt, dets = _random_case(7, n_images=10, per_image=10)
    for d in dets:
        rle = mask_util.merge(mask_util.frPyObjects(_square(*d["bbox"]), 100, 100))
        rle["counts"] = rle["counts"].decode()
        d["segmentation"] = rle
    fast = judge_detections(dets, gt, iou_type="segm")
    slow = judge_detections_loop(dets, gt, iou_type="segm")
    pd.testing.assert_frame_equal(_sorted(fast), _sorted(slow), check_dtype=False)


def test_detections_parquet_roundtrip(tmp_path):
    import pycocotools.mask as mask_util

    from stages.data.detections import read_detections, results_frame
    from stages.utils.atomic import write_parquet

    square = np.zeros((8, 8), dtype=np.uint8, order="F")
    square[2:6, 1:4] = 1
    rle = mask_util.encode(square)
    dets = [{"image_id": 1, "category_id": 2, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5,
             "segmentation": {"size": [8, 8], "counts": rle["counts"].decode()}},
            {"image_id": 3, "category_id": 4, "bbox": [5.0, 6.0, 7.0, 8.0], "score": 0.25}]
    write_parquet(results_frame(dets), tmp_path / "d.parquet")
    assert read_detections(tmp_path / "d.parquet") == dets


# -- the ccece CLI ------------------------------------------------------------------------------

def _cli_inputs(tmp_path):
    gt_path = tmp_path / "holdout15.json"
    gt_path.write_text(json.dumps(_gt()))
    dets = [_det(10, 1, [0, 0, 10, 10], 0.9), _det(10, 1, [0, 0, 10, 10], 0.8), _det(10, 2, [0, 0, 5, 5], 0.6),
            _det(10, 3, [0, 0, 10, 10], 0.7), _det(11, 3, [0, 0, 10, 10], 1.0)]
    det_path = tmp_path / "holdout_detections.json"
    det_path.write_text(json.dumps(dets))
    return gt_path, det_path


def test_ccece_cli_writes_the_artifacts(tmp_path, tiny_config_file, capsys):
    from stages.cli.ccece import main

    gt_path, det_path = _cli_inputs(tmp_path)
    out = tmp_path / "calibration" / "ccece.parquet"
    ece_json = tmp_path / "calibration" / "ece.json"
    reliability = tmp_path / "calibration" / "reliability.csv"
    main(["--config", str(tiny_config_file), "--detections", str(det_path), "--gt", str(gt_path), "--out", str(out),
          "--ece-json", str(ece_json), "--reliability", str(reliability)])
    table = pd.read_parquet(out)
    assert list(table.columns) == ["category_id", "name", "frequency", "n_detections", "accuracy", "confidence", "ccece",
                                   "ccece_se", "delta"]
    assert table["ccece"].tolist() == pytest.approx([-0.35, -0.6, -0.7])  # as in test_ccece_from_judged_detections
    # residuals correct - score: class a (f) .1 and -.8, its variance .405 (n - 1 = 1); b and c (one
    # detection each, alone in their groups) borrow the pooled .405: se = sqrt(.405 / n)
    assert table["ccece_se"].tolist() == pytest.approx([np.sqrt(0.405 / 2), np.sqrt(0.405), np.sqrt(0.405)])
    # one class per frequency group: nothing to shrink toward but itself
    assert table["delta"].tolist() == pytest.approx(table["ccece"].tolist())
    # judged scores .9 (T), .8 (F), .6 (F), .7 (F); 15 bins: .9 -> 13, .8 -> 12, .6 -> 9, .7 -> 10 (10.5)
    # ECE = 1/4 (|1 - .9| + .8 + .6 + .7) = 0.55
    summary = json.loads(ece_json.read_text())
    assert summary["ece"] == pytest.approx(0.55)
    assert summary["n_judged"] == 4 and summary["bins"] == 15 and summary["iou_type"] == "bbox"
    # per frequency: f = class 1: (.1 + .8) / 2 = .45; r = class 2: .6; c = class 3: .7
    assert summary["per_frequency"] == pytest.approx({"r": 0.6, "c": 0.7, "f": 0.45})
    metadata = pq.read_schema(out).metadata
    assert float(metadata[b"ece"]) == pytest.approx(0.55)
    rel = pd.read_csv(reliability)
    assert len(rel) == 15 and rel["count"].sum() == 4
    assert "ECE 0.5500" in capsys.readouterr().out
    assert not list(out.parent.glob(".*tmp*"))  # atomic writes leave no temporary file


def test_ccece_judges_the_detections_ap_judges(tmp_path, tiny_config_file):
    # the predictor may write more per image than AP's budget (for AP-Fixed): CCECE sees the budget's
    import yaml

    from stages.cli.ccece import main

    config = yaml.safe_load(tiny_config_file.read_text())
    config["evaluation"]["max_detections"] = 2
    config_path = tmp_path / "budget.yaml"
    config_path.write_text(yaml.safe_dump(config))
    gt_path, det_path = _cli_inputs(tmp_path)
    ece_json = tmp_path / "ece.json"
    main(["--config", str(config_path), "--detections", str(det_path), "--gt", str(gt_path),
          "--out", str(tmp_path / "ccece.parquet"), "--ece-json", str(ece_json)])
    summary = json.loads(ece_json.read_text())
    # image 10 keeps .9 (T) and .8 (F) of its four: ECE = (|1 - .9| + .8) / 2
    assert summary["n_judged"] == 2 and summary["n_detections"] == 3
    assert summary["ece"] == pytest.approx(0.45)


def test_ccece_judges_on_a_ground_truth_of_fewer_images(tmp_path, tiny_config_file):
    """The student's tuning judges holdout15's detections on its half a: detections of images the
    ground truth does not hold are left out (the same numbers as without them), but an image id of
    the wrong type is still refused by the detections contract, naming it."""
    from stages.cli.ccece import main
    from stages.data.detections import DetectionsError

    gt_path, det_path = _cli_inputs(tmp_path)
    main(["--config", str(tiny_config_file), "--detections", str(det_path), "--gt", str(gt_path),
          "--out", str(tmp_path / "a.parquet"), "--ece-json", str(tmp_path / "a.json")])
    more = json.loads(det_path.read_text()) + [_det(999, 1, [0, 0, 10, 10], 0.9), _det(998, 2, [0, 0, 5, 5], 0.3)]
    more_path = tmp_path / "more.json"
    more_path.write_text(json.dumps(more))
    main(["--config", str(tiny_config_file), "--detections", str(more_path), "--gt", str(gt_path),
          "--out", str(tmp_path / "b.parquet"), "--ece-json", str(tmp_path / "b.json")])
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a.parquet"), pd.read_parquet(tmp_path / "b.parquet"))
    assert json.loads((tmp_path / "a.json").read_text())["ece"] == json.loads((tmp_path / "b.json").read_text())["ece"]
    wrong = json.loads(det_path.read_text()) + [{**_det(10, 1, [0, 0, 10, 10], 0.5), "image_id": "10"}]
    wrong_path = tmp_path / "wrong.json"
    wrong_path.write_text(json.dumps(wrong))
    with pytest.raises(DetectionsError, match="image_id"):
        main(["--config", str(tiny_config_file), "--detections", str(wrong_path), "--gt", str(gt_path),
              "--out", str(tmp_path / "c.parquet"), "--ece-json", str(tmp_path / "c.json")])


def test_ccece_cli_as_a_module(tmp_path, tiny_config_file, repo):
    gt_path, det_path = _cli_inputs(tmp_path)
    out, ece_json = tmp_path / "ccece.parquet", tmp_path / "ece.json"
    proc = subprocess.run([sys.executable, "-m", "stages.cli.ccece", "--config", str(tiny_config_file), "--detections",
                           str(det_path), "--gt", str(gt_path), "--out", str(out), "--ece-json", str(ece_json)],
                          cwd=repo, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert out.exists() and ece_json.exists()
    assert "most overconfident" in proc.stdout
