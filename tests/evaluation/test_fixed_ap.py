"""AP-Fixed and AP-Pool (Dave et al. 2021) against (a) a plain implementation of their definitions
written here with loops, (b) the official lvis-api run the way Dave et al.'s scripts run it (results
limited to the top K per class, LVISResults(max_dets=-1), params.max_dets = -1), and (c) what the
metrics are for: a per-class monotone re-scoring leaves AP-Fixed as it is but can move AP."""

from __future__ import annotations

import copy
import json
import math
from collections import defaultdict

import numpy as np
import pycocotools.mask as mask_util
import pytest

from stages.evaluation.fast_lvis_eval import fast_lvis_eval
from stages.evaluation.fixed_ap import (
    FIXED_EVALUATORS,
    METRIC_KEYS,
    detections_per_class,
    fixed_pool_metrics,
    top_per_class,
)
from stages.evaluation.lvis_eval import EVALUATORS
from tests.evaluation.test_fast_lvis_eval import make_dets

IOU_THRS = np.linspace(0.5, 0.95, 10)  # LVIS's Params (the definition's constants, bit for bit)
REC_THRS = np.linspace(0.0, 1.0, 101)


# -- (a) the definitions, plainly ----------------------------------------------------------------------------------

def _ap_of_ranking(statuses: list[list[str]], n_gt: int) -> float:
    """Mean over IoU thresholds and the 101 recall points of the interpolated precision of one ranked
    list; ``statuses[t][i]`` is 'tp', 'fp' or 'ignored' for the i-th detection at threshold t."""
    total = 0.0
    for per_det in statuses:
        tp = fp = 0
        precision, recall = [], []
        for status in per_det:
            if status == "ignored":
                continue
            tp += status == "tp"
            fp += status == "fp"
            precision.append(tp / (tp + fp))
            recall.append(tp / n_gt)
        for i in range(len(precision) - 2, -1, -1):  # interpolate: the best precision at any higher recall
            precision[i] = max(precision[i], precision[i + 1])
        for r in REC_THRS:
            first = next((i for i, rc in enumerate(recall) if rc >= r), None)
            total += precision[first] if first is not None else 0.0
    return total / (len(statuses) * len(REC_THRS))


def _gt_object(ann: dict, img: dict, iou_type: str):
    if iou_type == "bbox":
        return ann["bbox"]
    seg = ann["segmentation"]
    if isinstance(seg, list):
        return mask_util.merge(mask_util.frPyObjects(seg, img["height"], img["width"]))
    return seg


def plain_fixed_and_pool(gt: dict, dets: list[dict], iou_type: str, k: int) -> dict[str, float]:
    """AP-Fixed (AP, APr, APc, APf) and AP-Pool on the 0-1 scale (-1 for a group without gt), from
    the definitions: the top k detections per class (equal scores: the earlier one), no per-image
    cap; LVIS's federated rules and greedy matching per (image, class) and IoU threshold; per-class
    AP averaged (AP-Fixed) or all classes in one ranking (AP-Pool). For ground truth without an
    annotation of id 0 (LVIS counts a match to id 0 as no match)."""
    images = {img["id"]: img for img in gt["images"]}
    cats = {c["id"]: c for c in gt["categories"]}
    # the per-class limit
    by_class = defaultdict(list)
    for i, d in enumerate(dets):
        by_class[d["category_id"]].append(i)
    kept = []
    for idx in by_class.values():
        kept += sorted(idx, key=lambda i: -dets[i]["score"])[:k]  # sorted is stable
    # what LVIS evaluates: gts and detections of non-zero area; detections of a class annotated in
    # their image or verified absent there
    gts = [a for a in gt["annotations"] if a["image_id"] in images and a["category_id"] in cats and a["area"] > 0]
    positive = {(a["image_id"], a["category_id"]) for a in gts}

    def area(d):
        return d["bbox"][2] * d["bbox"][3] if "bbox" in d else float(mask_util.area(d["segmentation"]))

    evaluated = [i for i in kept if dets[i]["category_id"] in cats and area(dets[i]) > 0 and (
        (dets[i]["image_id"], dets[i]["category_id"]) in positive
        or dets[i]["category_id"] in images[dets[i]["image_id"]]["neg_category_ids"])]
    status = {i: [None] * len(IOU_THRS) for i in evaluated}
    pairs = {(dets[i]["image_id"], dets[i]["category_id"]) for i in evaluated}
    for img_id, cid in pairs:
        img = images[img_id]
        pair_gts = [a for a in gts if a["image_id"] == img_id and a["category_id"] == cid]
        pair_gts = [a for a in pair_gts if not a.get("ignore")] + [a for a in pair_gts if a.get("ignore")]
        ignored_gt = [bool(a.get("ignore")) for a in pair_gts]
        pair_dets = sorted((i for i in evaluated if (dets[i]["image_id"], dets[i]["category_id"]) == (img_id, cid)),
                           key=lambda i: -dets[i]["score"])
        if pair_gts:
            objs = [dets[i]["bbox"] if iou_type == "bbox" else dets[i]["segmentation"] for i in pair_dets]
            ious = mask_util.iou(objs, [_gt_object(a, img, iou_type) for a in pair_gts], [0] * len(pair_gts))
        for t, thr in enumerate(IOU_THRS):
            taken = [False] * len(pair_gts)
            for row, i in enumerate(pair_dets):
                best, best_iou = -1, min(thr, 1 - 1e-10)
                for g in range(len(pair_gts)):
                    if taken[g]:
                        continue
                    if best > -1 and not ignored_gt[best] and ignored_gt[g]:
                        break  # a regular gt beats every ignored one
                    if ious[row][g] < best_iou:
                        continue
                    best, best_iou = g, ious[row][g]  # an equal IoU later on wins
                if best > -1:
                    taken[best] = True
                    status[i][t] = "ignored" if ignored_gt[best] else "tp"
                else:
                    status[i][t] = "ignored" if cid in img["not_exhaustive_category_ids"] else "fp"
    counted = defaultdict(int)
    for a in gts:
        counted[a["category_id"]] += not a.get("ignore")
    out = {}
    per_class = {}
    for cid in cats:
        if counted[cid] == 0:
            continue  # no gt: no AP
        ranked = sorted((i for i in evaluated if dets[i]["category_id"] == cid),
                        key=lambda i: (-dets[i]["score"], dets[i]["image_id"], i))
        per_class[cid] = _ap_of_ranking([[status[i][t] for i in ranked] for t in range(len(IOU_THRS))], counted[cid])
    for name, group in (("AP", "rcf"), ("APr", "r"), ("APc", "c"), ("APf", "f")):
        values = [ap for cid, ap in per_class.items() if cats[cid]["frequency"] in group]
        out[name] = sum(values) / len(values) if values else -1.0
    n_gt = sum(counted.values())
    pooled = sorted(evaluated, key=lambda i: (-dets[i]["score"], dets[i]["image_id"], dets[i]["category_id"], i))
    out["AP-Pool"] = _ap_of_ranking([[status[i][t] for i in pooled] for t in range(len(IOU_THRS))], n_gt) if n_gt else -1
    return out


def _as_metrics(plain: dict[str, float]) -> dict[str, float]:
    """The plain values under metrics.json's names, 0-100, NaN for a group without gt."""
    names = {"AP": "AP-Fixed", "APr": "APr-Fixed", "APc": "APc-Fixed", "APf": "APf-Fixed", "AP-Pool": "AP-Pool"}
    return {names[k]: (math.nan if v < 0 else 100 * v) for k, v in plain.items()}


def _close(ours: dict[str, float], want: dict[str, float]) -> None:
    assert set(ours) == set(want)
    for key, value in want.items():
        if math.isnan(value):
            assert math.isnan(ours[key]), key
        else:
            assert ours[key] == pytest.approx(value, abs=1e-9), key


@pytest.mark.parametrize("seed", [0, 2])  # even seeds: no gt of id 0 (the plain version has no such quirk)
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("k", [3, 12, 100_000])
def test_matches_a_plain_implementation_of_the_definitions(data, seed, iou_type, k):
    gt, path, dets = data[seed]
    before = copy.deepcopy(dets)
    ours = fixed_pool_metrics(path, dets, iou_type, k, "fast", gt)
    assert dets == before
    _close(ours, _as_metrics(plain_fixed_and_pool(gt, dets, iou_type, k)))
    # the data exercise what they should: the limit binds (or not), every group has gt
    counts = np.bincount([d["category_id"] for d in dets])
    assert (counts.max() > k) == (k < 100_000)
    assert all(ours[key] > 0 for key in METRIC_KEYS)


def test_plain_reference_is_not_vacuous(data):
    # the plain version sees what the definitions change: the limit, and the pooling's ranking
    gt, _, dets = data[0]
    loose, tight = plain_fixed_and_pool(gt, dets, "bbox", 100_000), plain_fixed_and_pool(gt, dets, "bbox", 3)
    assert loose["AP"] > tight["AP"] + 0.01 and loose["AP-Pool"] > tight["AP-Pool"] + 0.01
    assert abs(loose["AP-Pool"] - loose["AP"]) > 0.01


# -- (b) the official lvis-api, as Dave et al. run it ------------------------------------------------------------

def _lvis():
    from stages.utils.compat import ensure_numpy_aliases

    ensure_numpy_aliases()
    import lvis

    return lvis


def _upstream_fixed(path, dets: list[dict], iou_type: str, k: int):
    """scripts/evaluate_ap_fixed.py of achalddave/large-vocab-devil, with the official lvis package:
    the top k per class (grouped by class, sorted by score), LVISResults(max_dets=-1), max_dets = -1."""
    lvis = _lvis()
    by_cat = defaultdict(list)
    for d in dets:
        by_cat[d["category_id"]].append(d)
    limited = [d for anns in by_cat.values() for d in sorted(anns, key=lambda x: x["score"], reverse=True)[:k]]
    gt = lvis.LVIS(str(path))
    evaluator = lvis.LVISEval(gt, lvis.LVISResults(gt, copy.deepcopy(limited), max_dets=-1), iou_type)
    evaluator.params.max_dets = -1
    evaluator.run()
    return evaluator


def _upstream_pooled(evaluator) -> np.ndarray:
    """LVISPooledEval.accumulate's pooled precision (T, R) of area 'all' over all classes, from the
    official run's per-image matches, written out as loops."""
    p = evaluator.params
    n_area, n_img = len(p.area_rng), len(p.img_ids)
    entries = [evaluator.eval_imgs[c * n_area * n_img + i] for i in range(n_img) for c in range(len(p.cat_ids))]
    entries = [e for e in entries if e is not None]
    n_gt = sum(int((np.asarray(e["gt_ignore"]) == 0).sum()) for e in entries)
    rows = [(score, e["dt_matches"][:, j], e["dt_ignore"][:, j]) for e in entries for j, score in enumerate(e["dt_scores"])]
    rows.sort(key=lambda r: -r[0])  # stable: image by image, class by class, as concatenated
    precision = np.zeros((len(p.iou_thrs), len(p.rec_thrs)))
    for t in range(len(p.iou_thrs)):
        statuses = ["ignored" if ig[t] else ("tp" if m[t] != 0 else "fp") for _, m, ig in rows]
        tp = fp = 0
        pr, rc = [], []
        for s in statuses:
            tp += s == "tp"
            fp += s == "fp"
            pr.append(tp / (tp + fp + np.spacing(1)))
            rc.append(tp / n_gt)
        for i in range(len(pr) - 1, 0, -1):
            pr[i - 1] = max(pr[i - 1], pr[i])
        for r_idx, pos in enumerate(np.searchsorted(rc, p.rec_thrs, side="left")):
            precision[t, r_idx] = pr[pos] if pos < len(pr) else 0.0
    return precision


@pytest.mark.parametrize("seed", [0, 1, 2, 3])  # odd seeds: a gt of id 0 (LVIS's quirk), too
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("k", [4, 10_000])
def test_matches_the_lvis_api_on_results_limited_per_class(data, seed, iou_type, k):
    gt, path, dets = data[seed]
    ours = FIXED_EVALUATORS.get("fast")(path, gt, dets, iou_type, k)
    ref = _upstream_fixed(path, dets, iou_type, k)
    np.testing.assert_allclose(ours.precision, ref.eval["precision"], rtol=0, atol=1e-12)
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"):
        assert ours.results[key] == pytest.approx(float(ref.results[key]), abs=1e-12), key
    np.testing.assert_allclose(ours.pool_precision, _upstream_pooled(ref), rtol=0, atol=1e-12)
    # and AP-Fixed is not AP: without the per-image cap, with the limit
    capped = fast_lvis_eval(gt, dets, iou_type, 20)
    assert abs(capped.results["AP"] - ours.results["AP"]) > 1e-3


def test_segm_without_boxes_as_dave_et_al_evaluate_it(data):
    # their scripts drop the boxes for segm, so that LVIS takes the mask area: the same numbers then
    gt, path, _ = data[1]
    dets = make_dets(gt, 1, crowded=4, box=False)
    ours = FIXED_EVALUATORS.get("fast")(path, gt, dets, "segm", 6)
    ref = _upstream_fixed(path, dets, "segm", 6)
    np.testing.assert_allclose(ours.precision, ref.eval["precision"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.pool_precision, _upstream_pooled(ref), rtol=0, atol=1e-12)


# -- (e) the official evaluator's path ----------------------------------------------------------------------------

def test_every_evaluator_computes_fixed_and_pool():
    assert set(FIXED_EVALUATORS.names()) == set(EVALUATORS.names())


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_the_official_path_gives_the_fast_numbers(data, iou_type):
    # evaluation.evaluator: lvis runs LVISEval on the results limited per class and pools its own
    # per-image matches; the fast path matches once and limits after
    for seed in (1, 2):
        gt, path, dets = data[seed]
        for k in (5, 10_000):
            official = fixed_pool_metrics(path, dets, iou_type, k, "lvis")
            _close(official, fixed_pool_metrics(path, dets, iou_type, k, "fast", gt))


def test_no_detections_and_no_gt(data, tmp_path):
    gt, path, _ = data[0]
    for evaluator in ("fast", "lvis"):
        empty = fixed_pool_metrics(path, [], "bbox", 10, evaluator, gt)
        assert all(empty[key] == 0.0 for key in METRIC_KEYS), evaluator
    no_gt = {**gt, "annotations": []}
    no_gt_path = tmp_path / "no_gt.json"
    no_gt_path.write_text(json.dumps(no_gt))
    _, _, dets = data[0]
    for evaluator in ("fast", "lvis"):
        assert all(math.isnan(v) for v in fixed_pool_metrics(no_gt_path, dets, "bbox", 10, evaluator, no_gt).values())


# -- (c) what AP-Fixed is for -------------------------------------------------------------------------------------

def _rescored(dets: list[dict], category_id: int, fn) -> list[dict]:
    return [{**d, "score": fn(d["score"])} if d["category_id"] == category_id else d for d in dets]


@pytest.mark.parametrize("rescore", [lambda s: s**2, lambda s: 0.1 * s, np.sqrt])
def test_a_per_class_monotone_rescoring_leaves_ap_fixed_unchanged(data, rescore):
    gt, path, dets = data[2]
    busiest = int(np.bincount([d["category_id"] for d in dets]).argmax())  # the class with the most detections
    changed = _rescored(dets, busiest, rescore)
    for iou_type in ("bbox", "segm"):
        before = fixed_pool_metrics(path, dets, iou_type, 12, "fast", gt)
        after = fixed_pool_metrics(path, changed, iou_type, 12, "fast", gt)
        for key in ("AP-Fixed", "APr-Fixed", "APc-Fixed", "APf-Fixed"):
            assert after[key] == before[key], key  # exactly: no class's ranking changed
        assert after["AP-Pool"] != pytest.approx(before["AP-Pool"], abs=1e-6)  # the cross-class ranking did
    # under a per-image budget the classes compete: the same re-scoring moves AP
    assert fast_lvis_eval(gt, changed, "bbox", 20).results["AP"] != pytest.approx(
        fast_lvis_eval(gt, dets, "bbox", 20).results["AP"], abs=1e-6)


def test_classes_competing_for_the_budget(tmp_path):
    # One image: a frequent class with 4 confident false positives, and a rare object found with a low
    # score. With a budget of 4 detections per image the rare detection is cut: APr 0. Raising the rare
    # class's scores (sqrt, monotone) puts it in the budget: APr 100 -- AP moves, AP-Fixed does not.
    def box(x):
        return {"bbox": [x, 0.0, 10.0, 10.0], "area": 100.0, "segmentation": [[x, 0, x + 10, 0, x + 10, 10, x, 10]]}

    gt = {"images": [{"id": 1, "height": 20, "width": 80, "neg_category_ids": [], "not_exhaustive_category_ids": []}],
          "categories": [{"id": 1, "name": "f", "frequency": "f"}, {"id": 2, "name": "r", "frequency": "r"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, **box(0.0)},
                          {"id": 2, "image_id": 1, "category_id": 2, **box(60.0)}]}
    path = tmp_path / "budget.json"
    path.write_text(json.dumps(gt))
    dets = [{"image_id": 1, "category_id": 1, "bbox": [0.0, 0.0, 10.0, 10.0], "score": 0.9}]
    dets += [{"image_id": 1, "category_id": 1, "bbox": [15.0 + 10 * j, 5.0, 8.0, 8.0], "score": 0.5} for j in range(3)]
    dets.append({"image_id": 1, "category_id": 2, "bbox": [60.0, 0.0, 10.0, 10.0], "score": 0.04})
    raised = _rescored(dets, 2, lambda s: s**0.125)  # 0.04 -> 0.669: above the false positives' 0.5
    for evaluator in ("fast", "lvis"):
        ap = [EVALUATORS.get(evaluator)(path, gt, d, "bbox", 4).results for d in (dets, raised)]
        assert float(ap[0]["APr"]) == 0.0 and float(ap[1]["APr"]) == pytest.approx(1.0)
        fixed = [fixed_pool_metrics(path, d, "bbox", 10, evaluator, gt) for d in (dets, raised)]
        assert fixed[0]["APr-Fixed"] == fixed[1]["APr-Fixed"] == pytest.approx(100.0)
        assert fixed[0]["AP-Fixed"] == fixed[1]["AP-Fixed"]
        assert fixed[1]["AP-Pool"] > fixed[0]["AP-Pool"]  # the rare hit now ranks above the false positives


# -- K and the limit ----------------------------------------------------------------------------------------------

def test_detections_per_class_scales_dave_et_al_by_the_images():
    assert detections_per_class("auto", 19_809) == 10_000
    assert detections_per_class("auto", 300) == 151  # 10,000 x 300 / 19,809 = 151.4
    assert detections_per_class("auto", 1) == 1
    assert detections_per_class(42, 300) == 42
    for bad in (0, -3, 1.5, True, "all"):
        with pytest.raises(ValueError, match="fixed_max_detections_per_class"):
            detections_per_class(bad, 300)


def test_the_limit_keeps_the_earlier_of_equal_scores():
    rng = np.random.default_rng(0)
    cats = rng.integers(0, 4, 200)
    scores = np.round(rng.random(200), 1)  # many ties
    for k in (1, 5, 60):
        kept = top_per_class(cats, scores, k)
        want = sorted(i for c in range(4) for i in sorted(np.flatnonzero(cats == c), key=lambda i: -scores[i])[:k])
        assert kept.tolist() == want
