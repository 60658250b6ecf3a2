"""The validator covers every field a stage reads (stages.data.lvis.FIELDS_READ).

Generated from that list, not hand-listed: each field of each record kind is removed, and set to
values of the wrong type or range, in turn. In fail mode the validator must either accept the file
or stop with a DatasetError that names the file, the record and the field; in skip mode it must
repair or drop and report. Whatever it accepts, the stages that read LVIS files must then run on
without an exception: detectron2's dataset dicts, the split, the categories table, the crop
queries, both evaluators and judging. A second test traces which fields those stages actually read
and holds them to the list."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

from stages.data.lvis import (
    FIELDS_READ,
    DatasetError,
    categories_frame,
    dataset_dicts,
    find_json_problems,
    image_counts,
    instance_counts,
    segmentation_rle,
)
from stages.data.splits import split_dataset
from stages.data.validation import validate_datasets
from stages.evaluation.fast_lvis_eval import fast_lvis_eval
from stages.evaluation.judging import judge_detections
from stages.evaluation.lvis_eval import evaluate_lvis, run_lvis_eval
from stages.retrieval.crops import query_crops
from tests.conftest import tiny_config

pytestmark = pytest.mark.fault_injection

SIZE = 48
DELETE = object()  # "remove the field"
WRONG_VALUES = [DELETE, None, "x", "0001", True, 1.5, -3, float("nan"), [], {}, [[]]]
KINDS = {"image": "images", "category": "categories", "annotation": "annotations"}


def _rle(x: int, y: int, s: int) -> dict:
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8, order="F")
    mask[y:y + s, x:x + s] = 1
    rle = mask_util.encode(mask)
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def make_dataset(root: Path) -> dict:
    """Three images (image 2 named by coco_url only), three categories, polygons, an RLE, an ignore
    flag; the image files written under ``root``."""
    images = [{"id": 1, "file_name": "a/1.png"}, {"id": 2, "coco_url": "http://x/val2017/2.png"},
              {"id": 3, "file_name": "a/3.png"}]
    for img, folder in zip(images, ("a", "val2017", "a")):
        img.update(height=SIZE, width=SIZE, neg_category_ids=[3] if img["id"] == 1 else [],
                   not_exhaustive_category_ids=[2] if img["id"] == 3 else [])
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (SIZE, SIZE), (img["id"] * 40, 90, 30)).save(root / folder / f"{img['id']}.png")
    cats = [{"id": 1, "name": "cup", "frequency": "f"}, {"id": 2, "name": "kettle", "frequency": "c"},
            {"id": 3, "name": "yak", "frequency": "r"}]
    anns = []
    for image_id, cid, x, y, s in ((1, 1, 2, 2, 20), (1, 2, 24, 24, 16), (2, 1, 5, 5, 30), (3, 2, 10, 10, 12),
                                   (3, 3, 30, 4, 10)):
        anns.append({"image_id": image_id, "category_id": cid, "bbox": [float(x), float(y), float(s), float(s)],
                     "area": float(s * s), "segmentation": [[x, y, x + s, y, x + s, y + s, x, y + s]]})
    anns[1]["segmentation"] = _rle(24, 24, 16)
    anns[3]["ignore"] = 0
    for k, ann in enumerate(anns, start=1):
        ann["id"] = k
    return {"images": images, "annotations": anns, "categories": cats}


def _target(data: dict, kind: str, field: str) -> dict:
    """The record whose ``field`` is broken: one that has it (coco_url: the image without file_name)."""
    records = data[KINDS[kind]]
    return next((r for r in records if field in r), records[0])


def _detections(data: dict) -> list[dict]:
    """The dataset's own annotations as results (score by id), each with a box and a compressed RLE."""
    images = {img["id"]: img for img in data["images"]}
    dets = []
    for ann in data["annotations"]:
        img = images[ann["image_id"]]
        rle = segmentation_rle(ann["segmentation"], img["height"], img["width"])
        counts = rle["counts"].decode() if isinstance(rle["counts"], bytes) else rle["counts"]
        dets.append({"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": list(ann["bbox"]),
                     "score": 0.5 + 0.01 * (ann["id"] % 40), "segmentation": {"size": rle["size"], "counts": counts}})
    return dets


def run_the_stages(data: dict, path: Path, root: Path) -> None:
    """Every reader of an LVIS json the pipeline has, on ``data`` (written at ``path``): detectron2's
    training mappers (labeled and unlabeled) on every record included."""
    from stages.modeling.data import WeakStrongMapper, train_mapper

    config = tiny_config(root / "results")
    labeled, unlabeled = train_mapper(config), WeakStrongMapper(config)
    for record in dataset_dicts(data, root):
        labeled(copy.deepcopy(record))
        unlabeled(copy.deepcopy(record))
    categories_frame(data)
    instance_counts(data)
    image_counts(data)
    if len(data["images"]) >= 2:
        split_dataset(data, 0.5, 0)
    query_crops(data, root, ["r", "c", "f"])
    dets = _detections(data)
    for iou_type in ("bbox", "segm"):
        for evaluator in ("fast", "lvis"):
            evaluate_lvis(path, dets, iou_type, evaluator=evaluator, gt=data)
        judge_detections(dets, data, iou_type)


def _settings(on_invalid: str) -> dict:
    return {"on_invalid": on_invalid, "image_check": "header", "allow_paths_outside_image_root": False}


def _shown(value: Any) -> str:
    return "removed" if value is DELETE else repr(value)


CASES = [(kind, field, value) for kind, fields in FIELDS_READ.items() for field in fields for value in WRONG_VALUES]


def test_the_base_dataset_is_valid_and_the_stages_run(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "images")
    path = tmp_path / "train.json"
    path.write_text(json.dumps(data))
    train, _, report = validate_datasets(path, None, tmp_path / "images", _settings("fail"), 1)
    assert report.empty
    run_the_stages(train, path, tmp_path / "images")


@pytest.mark.parametrize("kind, field, value", CASES, ids=[f"{k}.{f}={_shown(v)}" for k, f, v in CASES])
def test_every_field_removed_or_corrupted_is_named_or_harmless(tmp_path: Path, kind: str, field: str, value) -> None:
    root = tmp_path / "images"
    data = make_dataset(root)
    record = _target(data, kind, field)
    record_id = record.get("id")
    position = data[KINDS[kind]].index(record)
    if value is DELETE:
        record.pop(field, None)
    else:
        record[field] = value
    path = tmp_path / "train.json"
    path.write_text(json.dumps(data))
    required = FIELDS_READ[kind][field][0] in ("yes", "labeled")
    for mode in ("fail", "skip"):
        try:
            train, _, report = validate_datasets(path, None, root, _settings(mode), 1)
        except DatasetError as error:  # the only exception allowed: it names the file, the record, the field
            message = str(error)
            assert str(path) in message
            named = f"{kind} {record_id}" in message or f"{kind} #{position}" in message
            # a record given another valid id: the records that pointed at the old one are named
            orphaned = field == "id" and f"_id {record_id} (int) is not a{'n' if kind == 'image' else ''} {kind}" in message
            assert named or orphaned, message
            assert field in message or (value is not DELETE and str(value) in message), message
            assert mode == "fail" or "fatal" in set(error.report["action"]), message
            continue
        if mode == "fail":
            assert not (value is DELETE and required), f"removing the required {kind}.{field} passed validation"
        else:
            rows = report[report["reason"].str.contains(field, regex=False)]
            assert report.empty or len(rows) or (value is not DELETE and report["reason"].str.contains(
                str(value), regex=False).any()), report
            assert all(report["action"].str.len() > 0)  # every problem says what was done
        # what the validator accepted (as it is, or repaired) every stage reads without an exception
        accepted = tmp_path / f"accepted_{mode}.json"
        accepted.write_text(json.dumps(train))
        run_the_stages(train, accepted, root)


def test_removing_any_required_field_is_refused_in_fail_mode(tmp_path: Path) -> None:
    # the generated test above lets "accepted" through; here every required field must be missed
    root = tmp_path / "images"
    required = [(kind, field) for kind, fields in FIELDS_READ.items() for field, (need, _) in fields.items()
                if need in ("yes", "labeled")]
    assert len(required) >= 14
    for kind, field in required:
        data = make_dataset(root)
        _target(data, kind, field).pop(field)
        assert find_json_problems(data, "train.json"), f"{kind}.{field} removed, nothing found"
    data = make_dataset(root)
    for img in data["images"]:  # one of file_name / coco_url must be there
        img.pop("file_name", None)
        img.pop("coco_url", None)
    assert len([p for p in find_json_problems(data, "t.json") if "neither file_name nor coco_url" in p.reason]) == 3


class Recording(dict):
    """A record that notes every field read from it, per record kind (a class attribute: deep copies,
    as LVISResults makes, keep noting)."""

    seen: dict[str, set[str]] = {}

    def __init__(self, kind: str, data: dict) -> None:
        super().__init__(data)
        self.kind = kind

    def _note(self, key: Any) -> None:
        Recording.seen.setdefault(self.kind, set()).add(key)

    def __getitem__(self, key):
        self._note(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self._note(key)
        return super().get(key, default)

    def __contains__(self, key) -> bool:
        self._note(key)
        return super().__contains__(key)


def test_the_stages_read_no_field_the_validator_does_not_check(tmp_path: Path) -> None:
    root = tmp_path / "images"
    data = make_dataset(root)
    path = tmp_path / "train.json"
    path.write_text(json.dumps(data))
    traced = {key: [Recording(kind, r) for r in data[key]] for kind, key in KINDS.items()}
    Recording.seen = {}
    dets = _detections(data)
    dataset_dicts(traced, root)
    categories_frame(traced)
    instance_counts(traced)
    image_counts(traced)
    query_crops(traced, root, ["r", "c", "f"])
    for iou_type in ("bbox", "segm"):
        fast_lvis_eval(traced, dets, iou_type)
        run_lvis_eval(traced, copy.deepcopy(dets), iou_type)
        judge_detections(dets, traced, iou_type)
    split_dataset(traced, 0.5, 0)
    seen = {kind: {k for k in keys if isinstance(k, str)} for kind, keys in Recording.seen.items()}
    # LVISEval writes fields of its own into its copies of the annotations and reads them back
    seen["annotation"] -= {"_ignore"}
    for kind, fields in seen.items():
        assert fields <= set(FIELDS_READ[kind]), f"{kind}: {sorted(fields - set(FIELDS_READ[kind]))} are read, not checked"
    # and the trace is not vacuous: the fields the issue found unchecked are among those read
    assert {"area", "segmentation", "bbox", "ignore"} <= seen["annotation"]
    assert {"neg_category_ids", "not_exhaustive_category_ids", "height", "width"} <= seen["image"]
    assert {"frequency", "name"} <= seen["category"]
