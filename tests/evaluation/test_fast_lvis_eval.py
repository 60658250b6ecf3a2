"""The vectorised LVIS evaluator against the official LVISEval (run through stages.lvis_eval), on
random LVIS-like data: every summary metric and the whole precision / recall arrays must agree."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pycocotools.mask as mask_util
import pytest

from stages.data.detections import read_detections, results_frame
from stages.evaluation.fast_lvis_eval import FastLVISResult, fast_lvis_eval
from stages.evaluation.lvis_eval import per_class_ap, run_lvis_eval, summary_metrics
from stages.utils.atomic import write_parquet

N_CATS = 20


def _polygon(rng, x, y, w, h):
    """A rectangle, or a hexagon inscribed in the box; sometimes with a second small part."""
    if rng.random() < 0.5:
        parts = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    else:
        cx, cy = x + w / 2, y + h / 2
        angles = np.linspace(0, 2 * np.pi, 7)[:-1] + rng.uniform(0, 1)
        parts = [np.column_stack([cx + w / 2 * np.cos(angles), cy + h / 2 * np.sin(angles)]).ravel().tolist()]
    if rng.random() < 0.15 and w > 6 and h > 6:
        parts.append([x, y, x + 3, y, x + 3, y + 3, x, y + 3])
    return [[float(v) for v in p] for p in parts]


def _rle(segm, height, width):
    rle = mask_util.merge(mask_util.frPyObjects(segm, height, width))
    rle["counts"] = rle["counts"].decode()
    return rle


def make_gt(seed: int, n_images: int = 30) -> dict:
    """Random LVIS-like gt: non-contiguous category ids with r/c/f frequencies (three without any
    instance), images listed out of id order (some without annotations), neg and not-exhaustive
    lists, polygons small to large, area boundaries 1024/9216 hit exactly, one zero-area annotation
    (dropped by LVIS), one 'ignore' flag, and for odd seeds a gt with id 0 (LVIS's dt_m == 0 quirk)."""
    rng = np.random.default_rng(seed)
    cat_ids = [3 * k + 2 for k in range(N_CATS)]
    freqs = ["r", "c", "f"] + [str(f) for f in rng.choice(["r", "c", "f"], size=N_CATS - 3)]
    cats = [{"id": c, "name": f"cat{c}", "frequency": f, "synset": f"cat{c}.n.01", "synonyms": [f"cat{c}"], "def": "x",
             "image_count": 0, "instance_count": 0} for c, f in zip(cat_ids, freqs)]
    with_instances = cat_ids[3:]
    images, anns = [], []
    for img_id in rng.permutation(np.arange(100, 100 + n_images)).tolist():
        height, width = int(rng.integers(120, 220)), int(rng.integers(120, 260))
        present = [] if img_id % 7 == 0 else rng.choice(with_instances, size=rng.integers(1, 5), replace=False).tolist()
        for cid in present:
            for _ in range(int(rng.integers(1, 5))):
                side = np.exp(rng.uniform(np.log(3), np.log(150)))
                w = float(min(side * rng.uniform(0.6, 1.5), width - 2))
                h = float(min(side * rng.uniform(0.6, 1.5), height - 2))
                x, y = float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h))
                segm = _polygon(rng, x, y, w, h)
                area = float(mask_util.area(_rle(segm, height, width)))
                anns.append({"image_id": img_id, "category_id": cid, "bbox": [x, y, w, h], "area": area,
                             "segmentation": segm})
        absent = [c for c in cat_ids if c not in present]
        images.append({"id": img_id, "height": height, "width": width, "coco_url": f"http://x/{img_id}.jpg",
                       "neg_category_ids": rng.choice(absent, size=rng.integers(0, 4), replace=False).tolist(),
                       "not_exhaustive_category_ids": [c for c in present if rng.random() < 0.25]})
    anns[1]["area"], anns[2]["area"], anns[3]["area"] = 1024.0, 9216.0, 0.0
    anns[4]["ignore"] = 1
    order = rng.permutation(len(anns))
    ids = rng.permutation(len(anns)) + (seed % 2 == 0)  # odd seeds: one annotation has id 0
    anns = [{**anns[i], "id": int(ann_id)} for i, ann_id in zip(order, ids)]
    return {"images": images, "annotations": anns, "categories": cats}


def make_dets(gt: dict, seed: int, crowded: int = 0, segm: bool = True, box: bool = True) -> list[dict]:
    """Jittered gt (some missed, some duplicated with the same score, some with a wrong class), random
    false positives of any class (many neither positive nor negative in their image), coarse scores
    (ties), images and classes without any detection, one empty box, and ``crowded`` images with 40
    extra detections each (beyond a small max_dets)."""
    rng = np.random.default_rng(1000 + seed)
    images = {img["id"]: img for img in gt["images"]}
    cat_ids = [c["id"] for c in gt["categories"]]
    never = set(rng.choice(cat_ids, size=2, replace=False).tolist())  # classes nobody detects
    silent = {img_id for k, img_id in enumerate(sorted(images)) if k % 6 == 1}  # images without detections
    raw = []

    def add(img_id, cid, x, y, w, h, score):
        if cid in never or img_id in silent:
            return
        img = images[img_id]
        x, y = float(np.clip(x, 0, img["width"] - 1)), float(np.clip(y, 0, img["height"] - 1))
        w, h = float(np.clip(w, 0, img["width"] - x)), float(np.clip(h, 0, img["height"] - y))
        raw.append((img_id, int(cid), [x, y, w, h], float(score)))

    for ann in gt["annotations"]:
        if rng.random() < 0.2:
            continue
        x, y, w, h = ann["bbox"]
        for _ in range(int(rng.integers(1, 4))):
            j = rng.normal(0, 0.12, size=4) * [w, h, w, h]
            cid = ann["category_id"] if rng.random() < 0.9 else int(rng.choice(cat_ids))
            add(ann["image_id"], cid, x + j[0], y + j[1], w + j[2], h + j[3], np.round(rng.random(), 1))
    for img_id, img in images.items():
        extra = int(rng.integers(0, 9)) + (40 if img_id in sorted(images)[2:2 + crowded] else 0)
        for _ in range(extra):
            w, h = rng.uniform(2, 120, size=2)
            add(img_id, int(rng.choice(cat_ids)), rng.uniform(0, img["width"] - w), rng.uniform(0, img["height"] - h),
                w, h, np.round(rng.random(), 2))
    raw += raw[:5]  # exact duplicates: equal scores in one image
    raw.append((raw[0][0], raw[0][1], [raw[0][2][0], raw[0][2][1], 0.0, 5.0], 0.99))  # empty box: area 0
    dets = []
    for k in rng.permutation(len(raw)).tolist():
        img_id, cid, bbox, score = raw[k]
        det = {"image_id": img_id, "category_id": cid, "score": score}
        if box:
            det["bbox"] = bbox
        if segm:
            x, y, w, h = bbox
            img = images[img_id]
            det["segmentation"] = _rle(_polygon(rng, x, y, w, h) if w > 0 else [[x, y, x, y + h, x, y]], img["height"],
                                       img["width"])
        dets.append(det)
    return dets


def _assert_same(ours: FastLVISResult, ref) -> None:
    assert list(ours.results) == list(ref.results)
    for key, value in ref.results.items():
        if value < 0 or np.isnan(value):
            assert ours.results[key] == -1 or np.isnan(ours.results[key]), key
        else:
            assert ours.results[key] == pytest.approx(float(value), abs=1e-4), key
    assert ours.cat_ids == ref.params.cat_ids
    assert ours.precision.shape == ref.eval["precision"].shape
    np.testing.assert_allclose(ours.precision, ref.eval["precision"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.recall, ref.eval["recall"], rtol=0, atol=1e-6)


def _compare(gt, path, dets, iou_type, max_dets):
    before = copy.deepcopy(dets)
    ours = fast_lvis_eval(gt, dets, iou_type, max_dets)
    assert dets == before  # the caller's detections are left alone
    ref = run_lvis_eval(path, dets, iou_type, max_dets)
    _assert_same(ours, ref)
    return ours, ref


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("max_dets", [300, 20])
def test_matches_lviseval(data, seed, iou_type, max_dets):
    gt, path, dets = data[seed]
    ours, ref = _compare(gt, path, dets, iou_type, max_dets)
    # the data exercise what they should: all area ranges and the r/c/f groups have gt, and a real AP
    assert all(ours.results[k] > 0 for k in ("AP", "APs", "APm", "APl", "APr", "APc", "APf"))
    assert (ours.precision[:, :, :3] == -1).all()  # the three classes without instances
    per_image = np.bincount([d["image_id"] for d in dets])
    assert (per_image > max_dets).any() == (max_dets == 20)


def test_segm_without_boxes_uses_mask_area(data):
    # without 'bbox' LVISResults takes the mask area (with a box: w * h, even for segm)
    gt, path, _ = data[1]
    dets = make_dets(gt, 1, crowded=4, box=False)
    _compare(gt, path, dets, "segm", 300)
    _compare(gt, path, dets, "segm", 20)


def _uncompressed(rle: dict) -> dict:
    """The same mask as an uncompressed RLE (run lengths in column-major order, starting with 0s)."""
    flat = mask_util.decode(rle).ravel(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.r_[0, change, len(flat)])
    return {"size": rle["size"], "counts": ([0] if flat[0] else []) + runs.tolist()}


def test_segm_in_every_lvis_form(data, tmp_path):
    # gt as polygons (one part or several), uncompressed and compressed RLE; detections as compressed RLE,
    # uncompressed RLE and polygons: the fast path converts each as LVIS.ann_to_rle does, whatever the
    # form of its neighbours (gt polygons of one image are rasterised together)
    gt, _, dets = copy.deepcopy(data[3])
    images = {img["id"]: img for img in gt["images"]}
    for k, ann in enumerate(gt["annotations"]):
        img = images[ann["image_id"]]
        rle = _rle(ann["segmentation"], img["height"], img["width"])
        if k % 5 == 1:
            ann["segmentation"] = _uncompressed(rle)
        elif k % 5 == 2:
            ann["segmentation"] = rle
    assert sum(isinstance(a["segmentation"], list) and len(a["segmentation"]) > 1 for a in gt["annotations"]) > 3
    for k, det in enumerate(dets):
        x, y, w, h = det["bbox"]
        if k % 4 == 1:
            det["segmentation"] = _uncompressed(det["segmentation"])
        elif k % 4 == 2 and w > 0:
            det["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    path = tmp_path / "forms.json"
    path.write_text(json.dumps(gt))
    ours, _ = _compare(gt, path, dets, "segm", 300)
    assert ours.results["AP"] > 0


def test_parquet_detections_and_stage_helpers(data, tmp_path):
    # detections stored as the parquet table give the same numbers, and the lvis_eval helpers accept the result
    gt, path, dets = data[2]
    write_parquet(results_frame(dets), tmp_path / "dets.parquet")
    for iou_type in ("bbox", "segm"):
        ours = fast_lvis_eval(gt, read_detections(tmp_path / "dets.parquet"), iou_type, 20)
        ref = run_lvis_eval(path, dets, iou_type, 20)
        _assert_same(ours, ref)
        assert summary_metrics(ours) == pytest.approx(summary_metrics(ref), nan_ok=True)
        ours_ap, ref_ap = per_class_ap(ours, gt["categories"]), per_class_ap(ref, gt["categories"])
        np.testing.assert_allclose(ours_ap["ap"], ref_ap["ap"], atol=1e-9)
        np.testing.assert_allclose(per_class_ap(ours)["ap"], ref_ap["ap"], atol=1e-9)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_a_detections_table_gives_the_numbers_of_the_dicts(data, tmp_path, iou_type):
    # the columnar input (results_frame, read back from parquet) is the same evaluation as the dicts it
    # was made from -- LVISEval's numbers -- including the per-image cap and the mask areas
    gt, path, dets = data[1]
    write_parquet(results_frame(dets), tmp_path / "dets.parquet")
    tables = [pd.read_parquet(tmp_path / "dets.parquet"), pd.read_parquet(tmp_path / "dets.parquet", dtype_backend="pyarrow")]
    for table, max_dets in zip(tables, (300, 20)):
        ours = fast_lvis_eval(gt, table, iou_type, max_dets)
        ref = run_lvis_eval(path, dets, iou_type, max_dets)
        _assert_same(ours, ref)
        from_dicts = fast_lvis_eval(gt, dets, iou_type, max_dets)
        np.testing.assert_array_equal(ours.precision, from_dicts.precision)
        assert ours.results == from_dicts.results


def test_a_detections_table_refuses_what_it_lacks(data):
    gt, _, dets = data[0]
    table = results_frame(dets)
    with pytest.raises(ValueError, match="columns.*score"):
        fast_lvis_eval(gt, table.drop(columns=["score"]), "bbox")
    no_masks = table.assign(rle_counts=None)
    assert fast_lvis_eval(gt, no_masks, "bbox").results == fast_lvis_eval(gt, dets, "bbox").results
    with pytest.raises(ValueError, match="segm"):
        fast_lvis_eval(gt, no_masks, "segm")
    with pytest.raises(ValueError, match="segm"):  # a missing mask in an Arrow-backed column is pd.NA
        fast_lvis_eval(gt, table.assign(rle_counts=pd.array([None] * len(table), dtype="string[pyarrow]")), "segm")


def test_empty_and_useless_detections(data):
    gt, path, dets = data[0]
    for iou_type in ("bbox", "segm"):
        ours, _ = _compare(gt, path, [], iou_type, 300)
        assert ours.results["AP"] == 0.0 and (ours.precision[ours.precision > -1] == 0).all()
        # detections of classes neither annotated nor verified absent in their image: all dropped
        pos = {(a["image_id"], a["category_id"]) for a in gt["annotations"]}
        neg = {(img["id"], c) for img in gt["images"] for c in img["neg_category_ids"]}
        dropped = [d for d in dets if (d["image_id"], d["category_id"]) not in pos | neg]
        assert dropped
        ours, _ = _compare(gt, path, dropped, iou_type, 300)
        assert ours.results["AP"] == 0.0


def test_comparison_is_not_vacuous(data):
    # shifting the boxes of the best detections changes AP, and both evaluators see the change
    gt, path, dets = data[3]
    changed = copy.deepcopy(dets)
    for det in sorted(changed, key=lambda d: -d["score"])[: len(changed) // 3]:
        det["bbox"] = [det["bbox"][0] + 0.3 * det["bbox"][2], det["bbox"][1], det["bbox"][2], det["bbox"][3]]
    original = fast_lvis_eval(gt, dets, "bbox")
    ours, ref = _compare(gt, path, changed, "bbox", 300)
    assert abs(ours.results["AP"] - original.results["AP"]) > 1e-3
    assert abs(float(ref.results["AP"]) - original.results["AP"]) > 1e-3
    assert np.abs(ours.precision - original.precision).max() > 1e-3


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_iou_tie_goes_to_the_later_gt(tmp_path, iou_type):
    # A overlaps both gts with IoU 2/3 exactly; LVIS gives it the later gt, so B (= the later gt's box)
    # finds only the earlier one at IoU 3/7 and is a false positive. Which gt is later changes AP.
    def square(x):
        return {"bbox": [x, 0.0, 10.0, 10.0], "area": 100.0, "segmentation": [[x, 0, x + 10, 0, x + 10, 10, x, 10]]}

    img = {"id": 1, "height": 20, "width": 20, "neg_category_ids": [], "not_exhaustive_category_ids": []}
    cat = {"id": 1, "name": "a", "frequency": "f"}
    dets = []
    for x, score in ((2.0, 0.9), (4.0, 0.8)):
        rle = _rle([[x, 0, x + 10, 0, x + 10, 10, x, 10]], 20, 20)
        dets.append({"image_id": 1, "category_id": 1, "bbox": [x, 0.0, 10.0, 10.0], "score": score, "segmentation": rle})
    aps = []
    for xs in ((0.0, 4.0), (4.0, 0.0)):
        gt = {"images": [img], "categories": [cat],
              "annotations": [{"id": k + 1, "image_id": 1, "category_id": 1, **square(x)} for k, x in enumerate(xs)]}
        path = tmp_path / "tie.json"
        path.write_text(json.dumps(gt))
        ours, _ = _compare(gt, path, dets, iou_type, 300)
        aps.append(ours.results["AP50"])
    assert aps[0] == pytest.approx(0.5, abs=0.01) and aps[1] == pytest.approx(1.0)


def test_recall_counts_are_lvis_searchsorted():
    # LVIS reads precision at searchsorted(tp / n, REC_THRS, 'left') with float recall points
    # (0.35000000000000003 ...); the integer form must land on the same index for every n
    from stages.evaluation.fast_lvis_eval import REC_THRS, _recall_counts

    n_gt = np.arange(1, 1001)
    m = _recall_counts(n_gt)
    for n, row in zip(n_gt.tolist(), m):
        tp = np.arange(n + 1, dtype=np.float64)
        np.testing.assert_array_equal(np.searchsorted(tp / n, REC_THRS, side="left"), row)


def test_refuses_bad_input(data):
    gt, _, dets = data[0]
    with pytest.raises(ValueError, match="iou_type"):
        fast_lvis_eval(gt, dets, "keypoints")
    with pytest.raises(ValueError, match="image ids"):
        fast_lvis_eval(gt, [{**dets[0], "image_id": 7}], "bbox")
    # a detection with neither a box nor a mask (mask-only and box-only ones are converted as LVISResults
    # converts them: tests/evaluation/test_lvis_drop_in.py)
    with pytest.raises(ValueError, match="neither 'bbox' nor 'segmentation'"):
        fast_lvis_eval(gt, [{k: v for k, v in d.items() if k not in ("bbox", "segmentation")} for d in dets], "segm")
