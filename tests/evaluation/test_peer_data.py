"""The peer-data test (issue 22): a small LVIS-format set written here in the spirit of the test data
of lvis-api, detectron2's and mmdetection's LVIS evaluation tests and faster-coco-eval -- crowd-free,
polygons (one part and several) and RLEs (compressed and uncompressed), negative and not-exhaustive
lists, a class with no ground truth, score ties within and across images, zero-area boxes, one image
with more than 300 detections. Through the wrapper (which validates first), the fast evaluator must
equal LVISEval -- run directly, as lvis-api documents it -- on every summary and on the whole
precision and recall arrays, bit for bit, for bbox and segm."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest

from stages.data.lvis import load_lvis
from stages.evaluation.lvis_eval import evaluate_lvis

FREQUENCIES = ["f", "f", "c", "c", "c", "r", "r", "r"]  # category ids 10, 20, ..., 80; 80 has no instance


def _polygon(rng: np.random.Generator, x: float, y: float, w: float, h: float) -> list[list[float]]:
    n = int(rng.integers(3, 9))
    angle = np.sort(rng.uniform(0, 2 * np.pi, n))
    radius = rng.uniform(0.6, 1.0, n)
    parts = [np.column_stack([x + w / 2 * (1 + radius * np.cos(angle)),
                              y + h / 2 * (1 + radius * np.sin(angle))]).ravel().round(2).tolist()]
    if rng.random() < 0.2 and w > 8 and h > 8:
        parts.append([x, y, x + 4, y, x + 4, y + 4, x, y + 4])  # a second part
    return parts


def _compressed(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def _uncompressed(mask: np.ndarray) -> dict:
    flat = mask.ravel(order="F").astype(np.uint8)
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.r_[0, change, len(flat)]).tolist()
    return {"size": list(mask.shape), "counts": ([0] if flat[0] else []) + runs}


def peer_set() -> tuple[dict, list[dict]]:
    """(ground truth, detections)."""
    rng = np.random.default_rng(22)
    cats = [{"id": 10 * (k + 1), "name": f"thing{k}", "frequency": f, "synset": f"thing{k}.n.01"}
            for k, f in enumerate(FREQUENCIES)]
    images, anns = [], []
    for image_id in range(1, 13):
        height, width = int(rng.integers(90, 200)), int(rng.integers(90, 240))
        present = sorted(rng.choice([10, 20, 30, 40, 50, 60, 70], size=int(rng.integers(1, 4)), replace=False).tolist())
        for cid in present:
            for _ in range(int(rng.integers(1, 4))):
                side = float(np.exp(rng.uniform(np.log(6), np.log(min(height, width) - 4))))
                w, h = side * rng.uniform(0.7, 1.0), side * rng.uniform(0.7, 1.0)
                x, y = float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h))
                segm = _polygon(rng, x, y, w, h)
                mask = mask_util.decode(mask_util.merge(mask_util.frPyObjects(segm, height, width)))
                if not mask.any():
                    continue
                kind = rng.random()
                if kind < 0.15:
                    segm = _compressed(mask)
                elif kind < 0.25:
                    segm = _uncompressed(mask)
                bx, by, bw, bh = mask_util.toBbox(mask_util.encode(np.asfortranarray(mask))).tolist()
                anns.append({"image_id": image_id, "category_id": cid, "bbox": [bx, by, bw, bh],
                             "area": float(mask.sum()), "segmentation": segm})
        absent = [c["id"] for c in cats if c["id"] not in present]
        images.append({"id": image_id, "height": height, "width": width,
                       "coco_url": f"http://images.cocodataset.org/val2017/{image_id:012d}.jpg",
                       "neg_category_ids": sorted(rng.choice(absent, size=int(rng.integers(0, 4)), replace=False).tolist()),
                       "not_exhaustive_category_ids": [c for c in present if rng.random() < 0.3]})
    # image 13: one large object (area above 96^2), class 20 verified absent
    images.append({"id": 13, "height": 220, "width": 240, "coco_url": "http://images.cocodataset.org/val2017/13.jpg",
                   "neg_category_ids": [20], "not_exhaustive_category_ids": []})
    t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    segm = [np.column_stack([110 + 80 * np.cos(t), 95 + 75 * np.sin(t)]).ravel().round(2).tolist()]  # an ellipse
    mask = mask_util.decode(mask_util.merge(mask_util.frPyObjects(segm, 220, 240)))
    anns.append({"image_id": 13, "category_id": 10, "area": float(mask.sum()), "segmentation": segm,
                 "bbox": mask_util.toBbox(mask_util.encode(np.asfortranarray(mask))).tolist()})
    for k, ann in enumerate(anns, start=1):
        ann["id"] = k
    gt = {"images": images, "annotations": anns, "categories": cats}

    sizes = {img["id"]: (img["height"], img["width"]) for img in images}
    dets = []

    def add(image_id: int, cid: int, x: float, y: float, w: float, h: float, score: float) -> None:
        height, width = sizes[image_id]
        x, y = float(np.clip(x, 0, width - 1)), float(np.clip(y, 0, height - 1))
        w, h = float(np.clip(w, 0, width - x)), float(np.clip(h, 0, height - y))
        mask = np.zeros((height, width), dtype=np.uint8)
        mask[int(y):int(np.ceil(y + h)), int(x):int(np.ceil(x + w))] = 1
        dets.append({"image_id": image_id, "category_id": cid, "bbox": [x, y, w, h], "score": score,
                     "segmentation": _compressed(mask)})

    for ann in anns:
        x, y, w, h = ann["bbox"]
        for _ in range(int(rng.integers(0, 4))):  # found 0-3 times, sometimes as another class
            j = rng.normal(0, 0.1, 4) * [w, h, w, h]
            cid = ann["category_id"] if rng.random() < 0.85 else int(rng.choice([c["id"] for c in cats]))
            add(ann["image_id"], cid, x + j[0], y + j[1], w + j[2], h + j[3], round(float(rng.random()), 1))  # ties
    for image_id, (height, width) in sizes.items():
        crowd = 350 if image_id == 5 else int(rng.integers(2, 12))  # image 5: more than 300 detections
        for _ in range(crowd):
            w, h = rng.uniform(3, width / 2), rng.uniform(3, height / 2)
            add(image_id, int(rng.choice([c["id"] for c in cats])), rng.uniform(0, width - w), rng.uniform(0, height - h),
                w, h, round(float(rng.random()), 2))
    add(3, anns[0]["category_id"], 10.0, 10.0, 0.0, 12.0, 0.97)  # zero-area boxes
    add(anns[0]["image_id"], anns[0]["category_id"], 5.0, 5.0, 14.0, 0.0, 0.99)
    dets += copy.deepcopy(dets[:6])  # exact duplicates
    order = rng.permutation(len(dets))
    return gt, [dets[k] for k in order]


@pytest.fixture(scope="module")
def peer(tmp_path_factory) -> tuple[Path, dict, list[dict]]:
    gt, dets = peer_set()
    path = tmp_path_factory.mktemp("peer") / "lvis_peer_val.json"
    path.write_text(json.dumps(gt))
    return path, gt, dets


def lviseval(path: Path, dets: list[dict], iou_type: str, max_dets: int = 300):
    from stages.utils.compat import ensure_numpy_aliases

    ensure_numpy_aliases()
    import lvis

    gt = lvis.LVIS(str(path))
    evaluator = lvis.LVISEval(gt, lvis.LVISResults(gt, copy.deepcopy(dets), max_dets=max_dets), iou_type)
    evaluator.params.max_dets = max_dets
    evaluator.run()
    return evaluator


def test_the_set_has_what_it_claims(peer) -> None:
    path, gt, dets = peer
    load_lvis(path)  # a valid LVIS file: the wrapper's validation passes it
    segs = [a["segmentation"] for a in gt["annotations"]]
    assert sum(isinstance(s, list) for s in segs) and sum(isinstance(s, list) and len(s) > 1 for s in segs)
    assert sum(isinstance(s, dict) and isinstance(s["counts"], str) for s in segs)
    assert sum(isinstance(s, dict) and isinstance(s["counts"], list) for s in segs)
    assert any(img["neg_category_ids"] for img in gt["images"]) and any(img["not_exhaustive_category_ids"]
                                                                      for img in gt["images"])
    assert np.bincount([d["image_id"] for d in dets]).max() > 300
    assert sum(d["bbox"][2] * d["bbox"][3] == 0 for d in dets) >= 2
    scores = [d["score"] for d in dets]
    assert len(set(scores)) < len(scores) / 2  # ties everywhere
    assert 80 not in {a["category_id"] for a in gt["annotations"]}


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("form", ["boxes and masks", "masks only", "boxes only"])
def test_fast_equals_lviseval_on_every_summary_and_array(peer, iou_type: str, form: str) -> None:
    path, gt, dets = peer
    if form == "masks only":
        dets = [{k: v for k, v in d.items() if k != "bbox"} for d in dets]
    elif form == "boxes only":
        dets = [{k: v for k, v in d.items() if k != "segmentation"} for d in dets]
    reference = lviseval(path, dets, iou_type)
    for evaluator in ("fast", "lvis"):
        ours = evaluate_lvis(path, dets, iou_type, evaluator=evaluator)
        assert dict(ours.results) == dict(reference.results), evaluator
        np.testing.assert_array_equal(np.asarray(ours.eval["precision"]), reference.eval["precision"])
        np.testing.assert_array_equal(np.asarray(ours.eval["recall"]), reference.eval["recall"])
        assert list(ours.params.cat_ids) == list(reference.params.cat_ids)
    assert 0 < reference.results["AP"] < 1
    assert all(reference.results[k] >= 0 for k in ("APs", "APm", "APl", "APr", "APc", "APf"))
