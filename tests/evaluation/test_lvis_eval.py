"""LVIS metrics through the official lvis package (the wrapper against LVISEval run directly), and
the evaluate CLI end to end."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pycocotools.mask as mask_util
import pytest

from stages.evaluation.fixed_ap import METRIC_KEYS as FIXED_METRIC_KEYS
from stages.evaluation.lvis_eval import METRIC_KEYS, per_class_ap, run_lvis_eval, summary_metrics

SIZE = 64


def lvis_metrics(gt_json, detections, iou_type, max_dets=300):
    """The official LVISEval's summary on the 0-100 scale (NaN for a group without ground truth)."""
    return summary_metrics(run_lvis_eval(gt_json, detections, iou_type, max_dets))


def _square(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def _cat(cid, name, frequency, images, instances):
    return {"id": cid, "name": name, "frequency": frequency, "image_count": images, "instance_count": instances,
            "synset": f"{name}.n.01", "synonyms": [name], "def": name}


@pytest.fixture
def gt_file(tmp_path):
    """Three 64x64 images; class a (f) once per image, class b (r) in image 1 and verified absent in
    image 3; class c (c) has no instance anywhere, so APc is undefined. All areas are small (< 32^2),
    so APm and APl are undefined too."""
    cats = [_cat(1, "a", "f", 3, 3), _cat(2, "b", "r", 1, 1), _cat(3, "c", "c", 0, 0)]
    images, anns = [], []
    for i in range(1, 4):
        images.append({"id": i, "height": SIZE, "width": SIZE, "neg_category_ids": [2] if i == 3 else [],
                       "not_exhaustive_category_ids": [], "coco_url": f"http://x/val2017/{i:012d}.jpg"})
        anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": [10.0, 10.0, 20.0, 20.0], "area": 400.0,
                     "segmentation": _square(10, 10, 20, 20)})
    anns.append({"id": 10, "image_id": 1, "category_id": 2, "bbox": [40.0, 40.0, 16.0, 16.0], "area": 256.0,
                 "segmentation": _square(40, 40, 16, 16)})
    path = tmp_path / "val.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def _rle(x, y, w, h):
    m = np.zeros((SIZE, SIZE), dtype=np.uint8, order="F")
    m[int(y):int(y + h), int(x):int(x + w)] = 1
    rle = mask_util.encode(m)
    rle["counts"] = rle["counts"].decode()
    return rle


def _dets_from_gt(gt_file, shift=0.0, score=1.0):
    gt = json.loads(gt_file.read_text())
    dets = []
    for ann in gt["annotations"]:
        x, y, w, h = ann["bbox"]
        dets.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                     "bbox": [x + shift, y + shift, w, h], "score": score, "segmentation": _rle(x + shift, y + shift, w, h)})
    return dets


def _reference(gt_file, dets, iou_type):
    """LVISEval run directly, the way the lvis package documents it."""
    from stages.utils.compat import ensure_numpy_aliases

    ensure_numpy_aliases()
    import lvis

    gt = lvis.LVIS(str(gt_file))
    evaluator = lvis.LVISEval(gt, lvis.LVISResults(gt, copy.deepcopy(dets), max_dets=300), iou_type)
    evaluator.run()
    return {k: (math.nan if v < 0 else 100 * v) for k, v in evaluator.results.items() if k in METRIC_KEYS}


def _same(ours, ref):
    assert set(ours) == set(METRIC_KEYS)
    for key in METRIC_KEYS:
        if math.isnan(ref[key]):
            assert math.isnan(ours[key]), key
        else:
            assert ours[key] == pytest.approx(ref[key], abs=1e-6), key


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_perfect_detections_give_100(gt_file, iou_type):
    metrics = lvis_metrics(gt_file, _dets_from_gt(gt_file), iou_type)
    for key in ("AP", "AP50", "AP75", "APs", "APr", "APf"):
        assert metrics[key] == pytest.approx(100.0), key
    for key in ("APc", "APm", "APl"):  # no ground truth in these groups -> LVIS's -1 -> NaN
        assert math.isnan(metrics[key]), key


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_shifted_detections_lower_ap_and_match_lviseval(gt_file, iou_type):
    perfect = lvis_metrics(gt_file, _dets_from_gt(gt_file), iou_type)
    dets = _dets_from_gt(gt_file, shift=2.0)
    before = copy.deepcopy(dets)
    ours = lvis_metrics(gt_file, dets, iou_type)
    assert dets == before  # the caller's detections are not modified
    assert 0 < ours["AP"] < perfect["AP"]
    assert ours["AP50"] == pytest.approx(100.0)  # 2 px diagonal shift: IoU 18^2/476 (a), 14^2/316 (b), both > 0.5
    _same(ours, _reference(gt_file, dets, iou_type))


def test_mixed_scores_match_lviseval(gt_file):
    # a false positive above a true positive, and a duplicate: AP below 100, same as LVISEval
    dets = _dets_from_gt(gt_file, score=0.6)
    dets.append({"image_id": 2, "category_id": 1, "bbox": [40.0, 0.0, 20.0, 20.0], "score": 0.9,
                 "segmentation": _rle(40, 0, 20, 20)})
    dets.append({**dets[0], "score": 0.5})
    dets.append({"image_id": 3, "category_id": 2, "bbox": [0.0, 0.0, 8.0, 8.0], "score": 0.95,
                 "segmentation": _rle(0, 0, 8, 8)})  # b is verified absent in image 3: a false positive
    for iou_type in ("bbox", "segm"):
        ours = lvis_metrics(gt_file, dets, iou_type)
        assert ours["AP"] < 100
        _same(ours, _reference(gt_file, dets, iou_type))


def test_empty_detections(gt_file):
    # No detection: 0 for every group with ground truth, NaN for the others. The reference is
    # LVISEval with one detection that matches nothing (a far-away box of a verified-absent class).
    nothing = [{"image_id": 3, "category_id": 2, "bbox": [60.0, 60.0, 2.0, 2.0], "score": 0.5,
                "segmentation": _rle(60, 60, 2, 2)}]
    for iou_type in ("bbox", "segm"):
        ours = lvis_metrics(gt_file, [], iou_type)
        assert ours["AP"] == 0.0 and ours["APr"] == 0.0 and math.isnan(ours["APc"])
        _same(ours, _reference(gt_file, nothing, iou_type))
    table = per_class_ap(run_lvis_eval(gt_file, [], "segm"))
    assert table["ap"].iloc[:2].tolist() == [0.0, 0.0] and math.isnan(table["ap"].iloc[2])


def test_per_class_ap(gt_file):
    evaluator = run_lvis_eval(gt_file, _dets_from_gt(gt_file), "segm")
    table = per_class_ap(evaluator, json.loads(gt_file.read_text())["categories"])
    assert list(table.columns) == ["category_id", "name", "frequency", "ap"]
    assert table["category_id"].tolist() == [1, 2, 3]
    assert table["frequency"].tolist() == ["f", "r", "c"]
    assert table["ap"].iloc[:2].tolist() == pytest.approx([1.0, 1.0])
    assert math.isnan(table["ap"].iloc[2])  # class c has no ground truth
    # categories default to the evaluator's ground truth
    pd.testing.assert_frame_equal(per_class_ap(evaluator), table)


def test_per_class_ap_of_a_missed_class(gt_file):
    # only class a detected: b's AP is 0; the mean over the two classes with gt is LVIS's AP
    dets = [d for d in _dets_from_gt(gt_file) if d["category_id"] == 1]
    evaluator = run_lvis_eval(gt_file, dets, "bbox")
    table = per_class_ap(evaluator).set_index("category_id")
    assert table.loc[1, "ap"] == pytest.approx(1.0) and table.loc[2, "ap"] == 0.0
    assert 100 * table["ap"].mean() == pytest.approx(lvis_metrics(gt_file, dets, "bbox")["AP"])


def test_bad_detections_are_refused(gt_file):
    dets = _dets_from_gt(gt_file)
    for d in dets:
        d.pop("segmentation")
    # box-only results are scored for segm with the box as the mask, as LVISResults does: the gt are squares
    assert lvis_metrics(gt_file, dets, "segm")["AP"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="image ids"):
        lvis_metrics(gt_file, [{**dets[0], "image_id": 77}], "bbox")
    with pytest.raises(ValueError, match="iou_type"):
        lvis_metrics(gt_file, dets, "keypoints")


# -- the evaluate CLI -----------------------------------------------------------------------------

def _cli_detections(gt_file, tmp_path, extra_per_image=0):
    dets = _dets_from_gt(gt_file, score=0.9)
    # low-scored junk of class a on image 1 (judged wrong: a is annotated there)
    for k in range(extra_per_image):
        dets.append({"image_id": 1, "category_id": 1, "bbox": [0.0, 40.0 + k % 10, 5.0, 5.0], "score": 0.01,
                     "segmentation": _rle(0, 40 + k % 10, 5, 5)})
    path = tmp_path / "eval" / "teacher" / "detections.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dets))
    return path, dets


def _outputs(tmp_path):
    out = tmp_path / "eval" / "teacher"
    return out / "metrics.json", out / "per_class_ap.csv", out / "reliability.csv"


@pytest.mark.parametrize("evaluator", ["fast", "lvis"])
def test_evaluate_cli(gt_file, tmp_path, tiny_config_file, capsys, evaluator):
    import yaml

    from stages.cli.evaluate import main

    config = yaml.safe_load(tiny_config_file.read_text())
    config["evaluation"]["evaluator"] = evaluator  # both give the hand-computed numbers below
    config_path = tmp_path / f"{evaluator}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    det_path, _ = _cli_detections(gt_file, tmp_path, extra_per_image=2)
    metrics_path, per_class_path, reliability_path = _outputs(tmp_path)
    main(["--config", str(config_path), "--gt", str(gt_file), "--detections", str(det_path),
          "--out-metrics", str(metrics_path), "--out-per-class", str(per_class_path),
          "--out-reliability", str(reliability_path)])
    metrics = json.loads(metrics_path.read_text())
    for iou_type in ("segm", "bbox"):
        assert set(metrics[iou_type]) == set(METRIC_KEYS) | set(FIXED_METRIC_KEYS)
        assert metrics[iou_type]["APc"] is None  # undefined -> null
        assert metrics[iou_type]["AP50"] == pytest.approx(100.0)
        # AP-Fixed keeps K = round(10,000 x 3 images / 19,809) = 2 detections per class: class a keeps two
        # of its three hits at 0.9 (the earlier ones), recall 2/3 reaches 67 of the 101 recall points;
        # class b keeps its hit. AP-Pool: the 3 hits of both classes against their 4 gts: 76 points.
        assert metrics[iou_type]["APf-Fixed"] == pytest.approx(100 * 67 / 101)
        assert metrics[iou_type]["APr-Fixed"] == pytest.approx(100.0)
        assert metrics[iou_type]["AP-Fixed"] == pytest.approx(100 * (67 / 101 + 1) / 2)
        assert metrics[iou_type]["APc-Fixed"] is None
        assert metrics[iou_type]["AP-Pool"] == pytest.approx(100 * 76 / 101)
    assert metrics["detections_per_class"] == 2 and metrics["n_cut_per_class"] == 3
    assert metrics["n_detections"] == 6
    # judged: four hits at 0.9 (bin 13) and two misses at 0.01 (bin 0), 15 bins:
    # ECE = 4/6 * |1 - 0.9| + 2/6 * |0 - 0.01| = 0.4/6 + 0.02/6 = 0.07
    assert metrics["ece"] == pytest.approx(0.07)
    # f (class a): 3/5 * 0.1 + 2/5 * 0.01 = 0.064; r (class b): 0.1; c: nothing judged -> 0
    assert metrics["ece_per_frequency"] == pytest.approx({"r": 0.1, "c": 0.0, "f": 0.064})
    per_class = pd.read_csv(per_class_path)
    assert per_class["category_id"].tolist() == [1, 2, 3] and per_class["ap"].iloc[1] == pytest.approx(1.0)
    reliability = pd.read_csv(reliability_path)
    assert list(reliability.columns) == ["bin_lower", "bin_upper", "count", "accuracy", "confidence"]
    assert reliability["count"].tolist()[0] == 2 and reliability["count"].tolist()[13] == 4
    assert "kept the top" not in capsys.readouterr().out


def test_evaluate_cli_cuts_to_max_detections(gt_file, tmp_path, tiny_config_file, repo):
    import yaml

    config = yaml.safe_load(tiny_config_file.read_text())
    config["evaluation"]["max_detections"] = 3
    config_path = tmp_path / "cut.yaml"
    config_path.write_text(yaml.safe_dump(config))
    det_path, _ = _cli_detections(gt_file, tmp_path, extra_per_image=5)  # image 1: 2 + 5 detections
    metrics_path, per_class_path, reliability_path = _outputs(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "stages.cli.evaluate", "--config", str(config_path), "--gt", str(gt_file),
                           "--detections", str(det_path), "--out-metrics", str(metrics_path),
                           "--out-per-class", str(per_class_path), "--out-reliability", str(reliability_path)],
                          cwd=repo, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "kept the top 3 detections per image for AP, cut 4 of 9" in proc.stdout
    metrics = json.loads(metrics_path.read_text())
    assert metrics["n_detections"] == 9 - 4 and metrics["n_cut"] == 4
    # the two 0.9 detections of image 1 survive the cut: perfect AP still
    assert metrics["segm"]["AP"] == pytest.approx(100.0)
    assert per_class_path.exists() and reliability_path.exists()


@pytest.mark.parametrize("evaluator", ["fast", "lvis"])
def test_ap_fixed_sees_the_detections_the_budget_cuts(gt_file, tmp_path, tiny_config_file, evaluator):
    # The predictor wrote 7 detections on image 1: 5 false positives of class a at 0.95 and the hits of
    # a and b at 0.9. AP's budget of 3 per image keeps the false positives only; AP-Fixed (K = 100 per
    # class, no per-image cap) keeps all.
    import yaml

    from stages.cli.evaluate import main

    config = yaml.safe_load(tiny_config_file.read_text())
    config["evaluation"].update(max_detections=3, fixed_max_detections_per_class=100, evaluator=evaluator)
    config_path = tmp_path / "cut.yaml"
    config_path.write_text(yaml.safe_dump(config))
    det_path, dets = _cli_detections(gt_file, tmp_path, extra_per_image=5)
    dets = [{**d, "score": 0.95} if d["score"] == 0.01 else d for d in dets]
    det_path.write_text(json.dumps(dets))
    metrics_path, per_class_path, reliability_path = _outputs(tmp_path)
    main(["--config", str(config_path), "--gt", str(gt_file), "--detections", str(det_path),
          "--out-metrics", str(metrics_path), "--out-per-class", str(per_class_path),
          "--out-reliability", str(reliability_path)])
    metrics = json.loads(metrics_path.read_text())
    assert metrics["n_cut"] == 4 and metrics["n_cut_per_class"] == 0 and metrics["detections_per_class"] == 100
    for iou_type in ("segm", "bbox"):
        m = metrics[iou_type]
        # AP, class a: 3 false positives, then 2 of 3 hits: precision 2/5 up to recall 2/3 (67 points)
        assert m["APr"] == 0.0 and m["APf"] == pytest.approx(100 * 0.4 * 67 / 101)
        # AP-Fixed, class a: 5 false positives, then its 3 hits: precision 3/8 at every recall point
        assert m["APr-Fixed"] == pytest.approx(100.0) and m["APf-Fixed"] == pytest.approx(37.5)
        # AP-Pool: 5 false positives at 0.95, then the 4 hits at 0.9 (4 gts): 4/9 at every recall point
        assert m["AP-Pool"] == pytest.approx(100 * 4 / 9)
