"""LVIS metrics through the official lvis package; the stage wrapper against LVISEval directly."""

from __future__ import annotations

import json

import numpy as np
import pycocotools.mask as mask_util
import pytest

from stages.lvis_eval import lvis_metrics, per_class_ap, run_lvis_eval


@pytest.fixture
def gt_file(tmp_path):
    cats = [{"id": 1, "name": "a", "frequency": "f", "image_count": 3, "instance_count": 3, "synset": "a", "synonyms": ["a"], "def": ""},
            {"id": 2, "name": "b", "frequency": "r", "image_count": 1, "instance_count": 1, "synset": "b", "synonyms": ["b"], "def": ""}]
    images, anns = [], []
    for i in range(1, 4):
        images.append({"id": i, "height": 64, "width": 64, "neg_category_ids": [2] if i == 3 else [],
                       "not_exhaustive_category_ids": [], "coco_url": f"http://x/val2017/{i:012d}.jpg"})
        anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": [10.0, 10.0, 20.0, 20.0], "area": 400.0,
                     "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30]]})
    anns.append({"id": 10, "image_id": 1, "category_id": 2, "bbox": [40.0, 40.0, 16.0, 16.0], "area": 256.0,
                 "segmentation": [[40, 40, 56, 40, 56, 56, 40, 56]]})
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def _dets_from_gt(gt_file, shift=0.0):
    gt = json.loads(gt_file.read_text())
    dets = []
    for ann in gt["annotations"]:
        x, y, w, h = ann["bbox"]
        m = np.zeros((64, 64), dtype=np.uint8, order="F")
        m[int(y + shift):int(y + h + shift), int(x + shift):int(x + w + shift)] = 1
        rle = mask_util.encode(m)
        rle["counts"] = rle["counts"].decode()
        dets.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                     "bbox": [x + shift, y + shift, w, h], "score": 1.0, "segmentation": rle})
    return dets


def test_perfect_detections_give_100(gt_file):
    dets = _dets_from_gt(gt_file)
    for iou_type in ("bbox", "segm"):
        metrics = lvis_metrics(gt_file, dets, iou_type)
        assert metrics["AP"] == pytest.approx(100.0)
        assert metrics["APr"] == pytest.approx(100.0)
        assert np.isnan(metrics["APc"])  # no common class in this gt


def test_shifted_boxes_lower_ap_and_match_lveval(gt_file):
    dets = _dets_from_gt(gt_file, shift=2.0)
    ours = lvis_metrics(gt_file, dets, "bbox")
    assert 0 < ours["AP"] < 100
    # the reference: LVISEval run directly
    from stages.compat import ensure_numpy_aliases

    ensure_numpy_aliases()
    import lvis

    gt = lvis.LVIS(str(gt_file))
    ref = lvis.LVISEval(gt, lvis.LVISResults(gt, [{k: v for k, v in d.items() if k != "segmentation"} for d in dets],
                                             max_dets=300), "bbox")
    ref.run()
    assert ours["AP"] == pytest.approx(100 * ref.results["AP"], abs=1e-4)
    assert ours["AP50"] == pytest.approx(100 * ref.results["AP50"], abs=1e-4)


def test_empty_detections(gt_file):
    assert lvis_metrics(gt_file, [], "segm")["AP"] == 0.0


def test_per_class_ap(gt_file):
    evaluator = run_lvis_eval(gt_file, _dets_from_gt(gt_file), "segm")
    table = per_class_ap(evaluator, json.loads(gt_file.read_text())["categories"])
    assert table.set_index("category_id")["ap"].to_dict() == pytest.approx({1: 1.0, 2: 1.0})
