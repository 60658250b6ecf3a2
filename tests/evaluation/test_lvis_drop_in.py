"""A drop-in for lvis-api (issue 22): every case of the issue, fed to both evaluators of the wrapper
(``evaluate_lvis``) and to the evaluate stage, gives the official LVISEval's number -- LVISEval run
directly in this file, the reference -- or the same clear error naming the file, the record and the
problem. Cases that LVISEval scores must match it in every summary and in the whole precision and
recall arrays."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import yaml

from stages.data.detections import DetectionsError, check_results
from stages.data.lvis import DatasetError, load_lvis
from stages.evaluation.lvis_eval import METRIC_KEYS, evaluate_lvis
from tests.conftest import REPO

SIZE = 64


def _square(x: float, y: float, s: float) -> list[list[float]]:
    return [[x, y, x + s, y, x + s, y + s, x, y + s]]


def _rle(x: int, y: int, s: int, height: int = SIZE, width: int = SIZE) -> dict:
    mask = np.zeros((height, width), dtype=np.uint8, order="F")
    mask[y:y + s, x:x + s] = 1
    rle = mask_util.encode(mask)
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def make_gt() -> dict:
    """Four images; class a (f) in every image, b (r) in image 1 as an RLE and verified absent in
    image 3, c (c) annotated nowhere (its detections are never judged); image 4 lists a as not
    exhaustively annotated; image 2 is 128 px with squares of area exactly 32^2 and 96^2."""
    cats = [{"id": 1, "name": "a", "frequency": "f"}, {"id": 2, "name": "b", "frequency": "r"},
            {"id": 3, "name": "c", "frequency": "c"}]
    images = [{"id": i, "height": 128 if i == 2 else SIZE, "width": 128 if i == 2 else SIZE, "file_name": f"{i}.png",
               "neg_category_ids": [2] if i == 3 else [], "not_exhaustive_category_ids": [1] if i == 4 else []}
              for i in range(1, 5)]  # fmt: skip
    anns = []
    for image_id, x, y, s in ((1, 4, 4, 20), (2, 2, 2, 32), (2, 30, 30, 96), (3, 0, 0, 40), (4, 5, 5, 10)):
        anns.append({"image_id": image_id, "category_id": 1, "bbox": [float(x), float(y), float(s), float(s)],
                     "area": float(s * s), "segmentation": _square(x, y, s)})
    anns.append({"image_id": 1, "category_id": 2, "bbox": [30.0, 30.0, 16.0, 16.0], "area": 256.0,
                 "segmentation": _rle(30, 30, 16)})
    for k, ann in enumerate(anns, start=1):
        ann["id"] = k
    return {"images": images, "annotations": anns, "categories": cats}


def make_dets(gt: dict) -> list[dict]:
    """Each gt found twice (shifted by 0 and by a third of its side; equal scores across images), a
    detection of c (never judged), a false positive of a on image 3 and of b on image 3 (negative)."""
    sizes = {img["id"]: (img["height"], img["width"]) for img in gt["images"]}
    dets = []
    for ann in gt["annotations"]:
        x, y, s, _ = (int(v) for v in ann["bbox"])
        for shift, score in ((0, 0.9), (s // 3, 0.6)):
            dets.append({"image_id": ann["image_id"], "category_id": ann["category_id"], "score": score,
                         "bbox": [float(x + shift), float(y), float(s), float(s)],
                         "segmentation": _rle(x + shift, y, min(s, sizes[ann["image_id"]][1] - x - shift),
                                              *sizes[ann["image_id"]])})
    for image_id, cid, score in ((1, 3, 0.95), (3, 1, 0.7), (3, 2, 0.8)):
        dets.append({"image_id": image_id, "category_id": cid, "score": score, "bbox": [40.0, 2.0, 10.0, 10.0],
                     "segmentation": _rle(40, 2, 10)})
    return dets


def reference(gt_path: Path, dets: list[dict], iou_type: str):
    """LVISEval run directly, as the lvis package documents it (its own conversions included)."""
    from stages.utils.compat import ensure_numpy_aliases

    ensure_numpy_aliases()
    import lvis

    gt = lvis.LVIS(str(gt_path))
    evaluator = lvis.LVISEval(gt, lvis.LVISResults(gt, copy.deepcopy(dets), max_dets=300), iou_type)
    evaluator.run()
    return evaluator


# -- the cases: each changes the gt or the detections; "score" (LVISEval's number) or (error type, what it says)

def _drop_image_key(key: str) -> Callable:
    def change(gt, dets):
        del gt["images"][0][key]
    return change


def _set_ann(key: str, value) -> Callable:
    def change(gt, dets):
        gt["annotations"][0][key] = value
    return change


def short_rle() -> dict:
    """A compressed RLE of a 64 x 64 image whose runs cover 2,570 pixels, not 4,096: 1,950 off, then 620
    on -- over the detections of class b, so pycocotools compares them and never returns."""
    bad = mask_util.frPyObjects({"size": [SIZE, SIZE], "counts": [30 * SIZE + 30, 620]}, SIZE, SIZE)
    return {"size": [SIZE, SIZE], "counts": bad["counts"].decode()}


def _short_rle(gt, dets):
    gt["annotations"][5]["segmentation"] = short_rle()


def _garbage_rle(gt, dets):
    gt["annotations"][5]["segmentation"] = {"size": [SIZE, SIZE], "counts": "garbage~~"}


def _box_only_gt(gt, dets):
    for ann in gt["annotations"]:
        del ann["segmentation"]


def _det(key: str, value, index: int = 0) -> Callable:
    def change(gt, dets):
        dets[index][key] = value
    return change


def _mask_only(gt, dets):
    for det in dets:
        del det["bbox"]


def _box_only(gt, dets):
    for det in dets:
        del det["segmentation"]


def _mixed(gt, dets):
    del dets[3]["bbox"]


def _string_gt_ids(gt, dets):
    for img in gt["images"]:
        img["id"] = f"{img['id']:04d}"
    for ann in gt["annotations"]:
        ann["image_id"] = f"{ann['image_id']:04d}"


def _coco_url_only(gt, dets):
    for img in gt["images"]:
        img["coco_url"] = f"http://images.cocodataset.org/val2017/{img.pop('file_name')}"


def _never_detected(gt, dets):
    dets[:] = [d for d in dets if d["category_id"] != 2]


def _four_number_polygon(gt, dets):
    gt["annotations"][0]["segmentation"] = [[4.0, 4.0, 24.0, 24.0]]


def _swapped_gt_rle(gt, dets):
    gt["images"][0]["width"] = 48
    gt["annotations"][5]["segmentation"] = _rle(30, 30, 16, 48, SIZE)  # [48, 64] for a 64-high, 48-wide image


def _swapped_det_rle(gt, dets):
    dets[0]["segmentation"] = _rle(4, 4, 20, SIZE, 32) | {"size": [32, SIZE]}


CASES = {
    # issue case 1: a COCO file turned into LVIS by hand
    "neg_category_ids missing": (_drop_image_key("neg_category_ids"), DatasetError, r"image 1: neg_category_ids is missing"),
    "not_exhaustive_category_ids missing": (_drop_image_key("not_exhaustive_category_ids"), DatasetError,
                                            r"image 1: not_exhaustive_category_ids is missing"),
    # 2: area absent, or a string
    "area missing": (lambda gt, dets: gt["annotations"][0].pop("area"), DatasetError, r"annotation 1: area is missing"),
    "area a string": (_set_ann("area", "400"), DatasetError, r"annotation 1: area must be a number, found '400' \(str\)"),
    "area inconsistent": (_set_ann("area", 4000.0), DatasetError, r"annotation 1: area 4000.0 is inconsistent with the mask"),
    # 3: compressed RLEs pycocotools would loop on for ever
    "RLE run lengths short of h x w": (_short_rle, DatasetError,
                                       r"annotation 6: RLE run lengths add up to 2570 pixels, not height x width = 64 x 64"),
    "RLE garbage counts": (_garbage_rle, DatasetError, r"annotation 6: RLE counts is not a valid compressed RLE"),
    # 4: a box-only export
    "gt without segmentation": (_box_only_gt, DatasetError, r"annotation 1: segmentation is missing"),
    # 5: detections with ids of the wrong type: never converted
    "detection image_id '0001'": (_det("image_id", "0001"), DetectionsError,
                                  r"detection #0 \(image '0001'\): image_id must be an integer, found '0001' \(str\)"),
    "detection category_id '2'": (_det("category_id", "2"), DetectionsError,
                                  r"detection #0 \(image 1\): category_id must be an integer, found '2' \(str\)"),
    "detection image_id 1.9": (_det("image_id", 1.9), DetectionsError, r"image_id must be an integer, found 1.9 \(float\)"),
    "detection score '0.9'": (_det("score", "0.9"), DetectionsError, r"score must be a number, found '0.9' \(str\)"),
    "detection on an unknown image": (_det("image_id", 77), DetectionsError, r"#0 \(image 77\): image_id is not an image"),
    # 6: what LVISResults converts
    "mask-only results": (_mask_only, None, None),
    "box-only results": (_box_only, None, None),
    "box first, a later detection mask-only": (_mixed, DetectionsError, r"detection #3 \(image 2\): lacks 'bbox'"),
    # 7: ground truth with string image ids: an error that says how to convert
    "gt image ids as strings": (_string_gt_ids, DatasetError,
                                r"image #0: id must be an integer, found '0001' \(str\): LVIS ids are JSON integers"),
    # the cases that held before, kept
    "images with coco_url only": (_coco_url_only, None, None),
    "a class never detected": (_never_detected, None, None),
    "the unchanged data (areas at 32^2 and 96^2)": (lambda gt, dets: None, None, None),
    "a 4-number polygon": (_four_number_polygon, DatasetError, r"annotation 1: segmentation polygons need >= 3 points"),
    "gt RLE with height and width swapped": (_swapped_gt_rle, DatasetError, r"annotation 6: RLE size \[48, 64\] differs"),
    "detection RLE with height and width swapped": (_swapped_det_rle, DetectionsError,
                                                     r"#0 \(image 1\): segmentation size \[32, 64\] is not the image's"),
}


def _case(tmp_path: Path, name: str) -> tuple[Path, dict, list[dict]]:
    gt, dets = make_gt(), None
    dets = make_dets(gt)
    CASES[name][0](gt, dets)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return path, gt, dets


def _assert_same(ours, ref) -> None:
    assert ours.results.keys() >= set(METRIC_KEYS)
    for key in ref.results:
        assert ours.results[key] == pytest.approx(float(ref.results[key]), abs=1e-12), key
    np.testing.assert_array_equal(np.asarray(ours.eval["precision"]), ref.eval["precision"])
    np.testing.assert_array_equal(np.asarray(ours.eval["recall"]), ref.eval["recall"])


@pytest.mark.parametrize("name", list(CASES))
def test_both_evaluators_give_lviseval_or_the_same_named_error(tmp_path: Path, name: str) -> None:
    path, gt, dets = _case(tmp_path, name)
    _, error, message = CASES[name]
    for iou_type in ("bbox", "segm"):
        for evaluator in ("fast", "lvis"):
            before = copy.deepcopy(dets)
            if error is None:
                _assert_same(evaluate_lvis(path, dets, iou_type, evaluator=evaluator), reference(path, dets, iou_type))
            else:
                with pytest.raises(error, match=message) as raised:
                    evaluate_lvis(path, dets, iou_type, evaluator=evaluator)
                assert str(path if error is DatasetError else "detections") in str(raised.value)
            assert dets == before  # the caller's detections are left alone


def _evaluate_stage(tmp_path: Path, path: Path, dets: list[dict], evaluator: str, tiny_config_file: Path) -> dict:
    from stages.cli.evaluate import main

    config = yaml.safe_load(tiny_config_file.read_text())
    config["evaluation"]["evaluator"] = evaluator
    config_path = tmp_path / f"{evaluator}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    det_path = tmp_path / "detections.json"
    det_path.write_text(json.dumps(dets))
    out = tmp_path / evaluator
    main(["--config", str(config_path), "--gt", str(path), "--detections", str(det_path), "--out-metrics",
          str(out / "metrics.json"), "--out-per-class", str(out / "per_class.csv"), "--out-reliability",
          str(out / "reliability.csv")])
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("name", list(CASES))
def test_the_evaluate_stage_gives_lviseval_or_the_named_error(tmp_path: Path, tiny_config_file: Path, name: str) -> None:
    path, gt, dets = _case(tmp_path, name)
    _, error, message = CASES[name]
    for evaluator in ("fast", "lvis"):
        if error is None:
            metrics = _evaluate_stage(tmp_path, path, dets, evaluator, tiny_config_file)
            for iou_type in ("bbox", "segm"):
                ref = reference(path, dets, iou_type).results
                for key in METRIC_KEYS:
                    expected = None if ref[key] < 0 else 100 * ref[key]
                    assert metrics[iou_type][key] == pytest.approx(expected, abs=1e-9), (iou_type, key)
            # AP and the ECE count the same detections: every judged one is a detection LVISEval keeps
            assert metrics["n_detections"] == len(dets)
        else:
            with pytest.raises(error, match=message):
                _evaluate_stage(tmp_path, path, dets, evaluator, tiny_config_file)


def test_the_conversions_are_real(tmp_path: Path) -> None:
    """Mask-only results take the mask's area, not the box's: a false positive whose mask is a thin
    ring (272 px, small) in a 36 x 36 box (1,296 px, medium) counts among the small detections only,
    so APm differs from the same detections given with their boxes -- LVISEval's number is the first."""
    path, gt, dets = _case(tmp_path, "the unchanged data (areas at 32^2 and 96^2)")
    ring = np.zeros((SIZE, SIZE), dtype=np.uint8, order="F")
    ring[24:60, 24:60] = 1
    ring[26:58, 26:58] = 0
    encoded = mask_util.encode(ring)
    dets.append({"image_id": 3, "category_id": 1, "score": 0.95,
                 "segmentation": {"size": encoded["size"], "counts": encoded["counts"].decode()}})
    mask_only = [{k: v for k, v in d.items() if k != "bbox"} for d in dets]
    with_boxes = [d | {"bbox": [float(v) for v in mask_util.toBbox(d["segmentation"])]} for d in mask_only]
    assert with_boxes[-1]["bbox"] == [24.0, 24.0, 36.0, 36.0]
    for evaluator in ("fast", "lvis"):
        ours = evaluate_lvis(path, mask_only, "bbox", evaluator=evaluator)
        _assert_same(ours, reference(path, mask_only, "bbox"))
        boxed = evaluate_lvis(path, with_boxes, "bbox", evaluator=evaluator)
        assert ours.results["APm"] != pytest.approx(boxed.results["APm"])
        assert ours.results["AP50"] == pytest.approx(boxed.results["AP50"])  # area 'all': the same boxes


def test_the_rle_that_hung_pycocotools_stops_the_evaluate_stage_with_a_named_error(tmp_path: Path, tiny_config_file) -> None:
    """Before: the evaluate job waited for ever inside pycocotools.mask.iou."""
    path, gt, dets = _case(tmp_path, "RLE run lengths short of h x w")
    det_path = tmp_path / "detections.json"
    det_path.write_text(json.dumps(dets))
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "stages.cli.evaluate", "--config", str(tiny_config_file), "--gt",
                           str(path), "--detections", str(det_path), "--out-metrics", str(out / "m.json"),
                           "--out-per-class", str(out / "p.csv"), "--out-reliability", str(out / "r.csv")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert f"{path}: 1 problem(s)" in done.stderr and "annotation 6: RLE run lengths add up to 2570 pixels" in done.stderr
    assert not out.exists()


def test_detections_with_a_broken_rle_are_refused_before_pycocotools(tmp_path: Path) -> None:
    path, gt, dets = _case(tmp_path, "the unchanged data (areas at 32^2 and 96^2)")
    dets[0]["segmentation"] = short_rle()
    for evaluator in ("fast", "lvis"):
        with pytest.raises(DetectionsError, match=r"detection #0 \(image 1\): segmentation: RLE run lengths add up to 2570"):
            evaluate_lvis(path, dets, "segm", evaluator=evaluator)


def test_the_first_kept_detection_decides_as_in_lvisresults(tmp_path: Path) -> None:
    """LVISResults reads result_anns[0] after its per-image cut: with max_dets 1 the first image's
    list is cut to its best detection, so a mask-only detection listed first may not be 'first'."""
    path, gt, dets = _case(tmp_path, "the unchanged data (areas at 32^2 and 96^2)")
    dets = [d for d in dets if d["image_id"] == 1][:2] + [d for d in dets if d["image_id"] != 1]
    dets[0] = {k: v for k, v in dets[0].items() if k != "bbox"} | {"score": 0.1}  # mask-only, and cut away
    gt_data = load_lvis(path)
    check_results(dets, gt_data, "dets", max_dets=1)  # the first kept one has a box: all but #0 have one
    with pytest.raises(DetectionsError, match=r"#1 \(image 1\): needs a compressed RLE"):
        check_results([dets[0]] + [{k: v for k, v in d.items() if k != "segmentation"} for d in dets[1:]], gt_data,
                      "dets", max_dets=300)


@pytest.mark.fault_injection
@pytest.mark.parametrize("where", ["fast", "lvis", "judging"])
def test_a_hung_pycocotools_call_is_stopped_naming_the_image(tmp_path: Path, where: str) -> None:
    """The wall-clock guard: an RLE that slipped past every check (the checks are bypassed here) makes
    pycocotools loop for ever; the guard ends the process within its limit and names the image."""
    path, gt, dets = _case(tmp_path, "RLE run lengths short of h x w")
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    call = {
        "fast": "from stages.evaluation.fast_lvis_eval import fast_lvis_eval; fast_lvis_eval(gt, dets, 'segm')",
        "lvis": "from stages.evaluation.lvis_eval import run_lvis_eval; run_lvis_eval(gt, dets, 'segm')",
        "judging": "from stages.evaluation.judging import judge_detections; judge_detections(dets, gt, 'segm')",
    }[where]
    script = (f"import json; from stages.utils import watchdog; watchdog.configure(2)\n"
              f"gt = json.load(open({str(path)!r})); dets = json.load(open({str(tmp_path / 'dets.json')!r}))\n"
              f"{call}\nprint('finished')")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode != 0 and "finished" not in done.stdout
    assert "wall-clock guard:" in done.stderr and "ran past 2 s (evaluation.guard_seconds)" in done.stderr
    assert "image 1" in done.stderr
    assert "annotation" in done.stderr and "6" in done.stderr.split("wall-clock guard:")[1]
