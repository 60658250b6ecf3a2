"""Reading, checking and registering LVIS v1 json files: the one place for the category order.

Conventions used by every stage:

* Category order: categories sorted by ``category_id``; row ``i`` of every (C, ...) matrix and
  the detector's contiguous class ``i`` is the i-th category in that order.
* Image paths: ``image_root / image["file_name"]`` when the image has ``file_name`` (an absolute
  ``file_name`` is used as is); otherwise the last two parts of ``coco_url`` (LVIS v1 style,
  e.g. ``train2017/000000391895.jpg``) under ``image_root``.
* An unlabeled image list is an LVIS-style json with ``images`` (and no annotations).

The check (:func:`find_json_problems`) covers every field of :data:`FIELDS_READ`, the fields some
stage reads, for presence, type and consistency with the geometry; tests/data/test_fields.py
removes and corrupts each in turn, and traces which fields the stages read to keep the list whole.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pycocotools.mask as mask_util

from stages.core.calibration import FREQUENCIES
from stages.data.masks import (
    area_tolerance,
    mask_area,
    mask_polygons,
    polygon_area_bounds,
    polygon_problem,
    rle_problems,
)
from stages.utils.readers import ReadError
from stages.utils.readers import read_json as read_json_file

DUPLICATE_ANNOTATION = "duplicate annotation id"  # the one annotation problem that keeps a copy (the first)

# Every field of an LVIS json that some stage reads: record kind -> field -> (required, who reads it).
# required: "yes"; "labeled" (in a json with annotations: train, val, holdout; an unlabeled image
# list does without); "optional" (checked when present); "file_name or coco_url" (one of them).
FIELDS_READ: dict[str, dict[str, tuple[str, str]]] = {
    "image": {
        "id": ("yes", "every stage"),
        "width": ("yes", "masks (polygons rasterised at this size), detectron2's size check, box bounds"),
        "height": ("yes", "as width"),
        "file_name": ("file_name or coco_url", "image_path: every image reader (validation, embedding, training)"),
        "coco_url": ("file_name or coco_url", "image_path, when there is no file_name (LVIS v1)"),
        "neg_category_ids": ("labeled", "LVISEval and the fast evaluator, judging, dataset_dicts"),
        "not_exhaustive_category_ids": ("labeled", "LVISEval and the fast evaluator, judging, dataset_dicts"),
    },
    "category": {
        "id": ("yes", "every stage (the category order)"),
        "name": ("yes", "categories.parquet, detectron2's thing_classes, the report"),
        "frequency": ("yes", "APr/APc/APf, embed_crops' query classes, shrinkage of Delta"),
    },
    "annotation": {
        "id": ("yes", "LVISEval (a match is the gt's id), embed_crops, duplicate check"),
        "image_id": ("yes", "every stage"),
        "category_id": ("yes", "every stage"),
        "bbox": ("yes", "training, embed_crops, prototypes, box evaluation and judging"),
        "segmentation": ("yes", "training (masks), mask evaluation and judging"),
        "area": ("yes", "LVISEval and the fast evaluator: the 0 < area filter and the small/medium/large ranges"),
        "ignore": ("optional", "LVISEval and the fast evaluator (an ignored gt matches but never counts)"),
    },
}
LISTS = ("neg_category_ids", "not_exhaustive_category_ids")
ID_HINT = "LVIS ids are JSON integers: convert them before use, e.g. record['id'] = int(record['id'])"


class DatasetError(ValueError):
    """An input dataset file is malformed or inconsistent; the message names file and problem."""


def read_json(path: str | Path) -> dict[str, Any]:
    """An LVIS json's top-level object; DatasetError naming the file for every way it cannot be read
    (stages.utils.readers: missing, directory, permissions, compressed, not UTF-8, not json)."""
    try:
        data = read_json_file(path)
    except ReadError as exc:
        raise DatasetError(str(exc)) from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: top level must be a JSON object, found {type(data).__name__}")
    return data


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input dataset. ``kind``: dataset | category | image | annotation;
    ``record_id``: the id of that record (None for the dataset); ``fatal``: no repair is possible
    (the structure itself is broken), as opposed to a record that can be dropped or fixed.
    ``repair``: how ``dataset.on_invalid: skip`` fixes it (stages.data.validation.REPAIRS; "" drops
    the record) and ``value`` what that needs (the field, the mask's area, the EXIF orientation)."""

    file: str
    kind: str
    record_id: Any
    reason: str
    fatal: bool = False
    repair: str = ""
    value: Any = None


def _is_id(value: Any) -> bool:
    """LVIS ids are integers (a bool is not an id, though Python counts it as an int)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    """A value with its type, so that "1" (a string) and 1 (an int) read differently."""
    return f"{value!r} ({type(value).__name__})"


def _id_problem(field: str, value: Any) -> str:
    hint = f": {ID_HINT}" if isinstance(value, (str, float)) else ""
    return f"{field} must be an integer, found {_shown(value)}{hint}"


def _structure_problems(data: dict[str, Any], file: str, keys: tuple[str, ...]) -> list[Problem]:
    """Problems of the records themselves: not objects, ids that are not integers, image sizes."""
    problems = []
    kinds = {"images": "image", "categories": "category", "annotations": "annotation"}
    for key in keys:
        for position, record in enumerate(data[key]):
            kind = kinds[key]
            if not isinstance(record, dict):
                problems.append(Problem(file, kind, f"#{position}", f"record is {_shown(record)}, not an object",
                                        fatal=kind == "category"))
                continue
            if not _is_id(record.get("id")):
                problems.append(Problem(file, kind, f"#{position}", _id_problem("id", record.get("id")),
                                        fatal=kind == "category"))
            if kind == "image":
                for size in ("width", "height"):
                    value = record.get(size)
                    if not (_is_id(value) and value > 0):
                        problems.append(Problem(file, "image", record.get("id"),
                                                f"{size} must be a positive integer, found {_shown(value)}"))
            if kind == "annotation":
                for ref in ("image_id", "category_id"):
                    if not _is_id(record.get(ref)):
                        problems.append(Problem(file, "annotation", record.get("id"), _id_problem(ref, record.get(ref))))
    return problems


def image_path_problem(img: dict[str, Any]) -> str | None:
    """Why ``img`` names no readable path (no file_name or coco_url, or one of the wrong type), or None."""
    if "file_name" in img:
        name = img["file_name"]
        if not (isinstance(name, str) and name and "\x00" not in name):
            return f"file_name must be a non-empty path string, found {_shown(name)}"
        return None
    if "coco_url" not in img:
        return "neither file_name nor coco_url"
    url = img["coco_url"]
    if not (isinstance(url, str) and len([p for p in url.split("/") if p]) >= 2 and "\x00" not in url):
        return f"coco_url must be a URL ending in <folder>/<file> (there is no file_name), found {_shown(url)}"
    return None


def _image_problems(img: dict[str, Any], file: str, cat_ids: Counter, labeled: bool) -> list[Problem]:
    problems = []
    reason = image_path_problem(img)
    if reason:
        problems.append(Problem(file, "image", img["id"], reason))
    for key in LISTS:
        if key not in img:
            if labeled:
                problems.append(Problem(file, "image", img["id"], f"{key} is missing (LVIS requires it of every "
                                        "image; LVISEval stops on its absence)", repair="empty list", value=key))
            continue
        listed = img[key]
        if not isinstance(listed, list):
            problems.append(Problem(file, "image", img["id"], f"{key} must be a list, found {_shown(listed)}"))
            continue
        bad = [c for c in listed if not _is_id(c) or c not in cat_ids]
        if bad:
            problems.append(Problem(file, "image", img["id"], f"{key} names unknown categories {[_shown(c) for c in bad[:5]]}",
                                    repair="known ids", value=key))
    return problems


def _segmentation_problem(seg: Any, image: dict[str, Any] | None) -> str | None:
    size = (image["height"], image["width"]) if image is not None and _size_ok(image) else (None, None)
    if isinstance(seg, dict):
        reason = rle_problems([seg])[0]
        if reason:
            return reason
        if size[0] is not None and list(seg["size"]) != list(size):
            return f"RLE size {seg['size']} differs from the image's [height, width] {list(size)}"
        return None
    return polygon_problem(seg, *size)


def _area_problem(ann: dict[str, Any], image: dict[str, Any] | None) -> tuple[str, float | None] | None:
    """(reason, the mask's area for the repair) when ``area`` is missing, not a finite number, or
    inconsistent with the (valid) segmentation; None if it is fine."""
    if image is None or not _size_ok(image):
        return None
    height, width = image["height"], image["width"]
    seg = ann["segmentation"]
    area = ann.get("area")
    if "area" not in ann:
        return "area is missing", mask_area(seg, height, width)
    if not _is_number(area):
        return f"area must be a number, found {_shown(area)}", mask_area(seg, height, width)
    if not math.isfinite(area) or area < 0:
        return f"area must be a finite number >= 0, found {area!r}", mask_area(seg, height, width)
    if isinstance(seg, list):
        low, high, tol = polygon_area_bounds(seg)
    else:
        rle = seg if not isinstance(seg["counts"], list) else mask_util.frPyObjects(seg, height, width)
        low = high = float(mask_util.area(rle))
        _, _, w, h = mask_util.toBbox(rle).tolist()
        tol = area_tolerance(2 * (w + h))
    if not low - tol <= area <= high + tol:
        return (f"area {area!r} is inconsistent with the mask ({low:.6g}" + (f"..{high:.6g}" if high != low else "")
                + f" pixels, +-{tol:.6g} for its boundary)"), mask_area(seg, height, width)
    return None


def _ignore_problem(ann: dict[str, Any]) -> str | None:
    if "ignore" in ann and ann["ignore"] not in (0, 1):
        return f"ignore must be 0 or 1 (or false / true), found {_shown(ann['ignore'])}"
    if "ignore" in ann and isinstance(ann["ignore"], float):
        return f"ignore must be 0 or 1 (or false / true), found {_shown(ann['ignore'])}"
    return None


def _annotation_problems(ann: dict[str, Any], file: str, images: dict[int, dict], cat_ids: Counter) -> list[Problem]:
    aid = ann.get("id")
    problems = []
    image = images.get(ann.get("image_id")) if _is_id(ann.get("image_id")) else None
    if image is None and _is_id(ann.get("image_id")):
        problems.append(Problem(file, "annotation", aid, f"image_id {_shown(ann.get('image_id'))} is not an image"))
    if _is_id(ann.get("category_id")) and ann["category_id"] not in cat_ids:
        problems.append(Problem(file, "annotation", aid, f"category_id {_shown(ann.get('category_id'))} is not a category"))
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) and math.isfinite(v) for v in bbox)):
        problems.append(Problem(file, "annotation", aid, f"bbox must be 4 finite numbers, found {bbox!r}"))
    elif bbox[2] <= 0 or bbox[3] <= 0:
        problems.append(Problem(file, "annotation", aid, f"degenerate bbox {bbox} (width or height <= 0)"))
    elif image is not None and (bbox[0] >= _size(image, "width") or bbox[1] >= _size(image, "height")
                                or bbox[0] + bbox[2] <= 0 or bbox[1] + bbox[3] <= 0):  # fmt: skip
        problems.append(Problem(file, "annotation", aid, f"bbox {bbox} lies outside the image"))
    reason = _ignore_problem(ann)
    if reason:
        problems.append(Problem(file, "annotation", aid, reason))
    if "segmentation" not in ann:
        problems.append(Problem(file, "annotation", aid, "segmentation is missing (a box-only annotation: the "
                                "pipeline trains and evaluates masks)"))
        return problems
    reason = _segmentation_problem(ann["segmentation"], image)
    if reason:
        problems.append(Problem(file, "annotation", aid, reason))
        return problems  # the area is checked against a valid mask only
    area = _area_problem(ann, image)
    if area is not None:
        problems.append(Problem(file, "annotation", aid, area[0], repair="area", value=area[1]))
    return problems


def find_json_problems(
    data: dict[str, Any], path: str | Path, *, require_annotations: bool = True
) -> list[Problem]:
    """Every structural, cross-reference and geometric problem of an LVIS json (nothing read from
    disk), for every field of FIELDS_READ: presence, type, and consistency with the geometry (box
    inside the image, masks that pycocotools can decode at the image's size, area of the mask).

    Structure first: a record that is not an object, or has no integer id, is reported and then left
    out of the other checks (which would only repeat it)."""
    file = str(path)
    keys = ("images", "categories") + (("annotations",) if require_annotations or "annotations" in data else ())
    problems = [
        Problem(file, "dataset", None, f"missing or non-list '{key}'", fatal=True)
        for key in ("images", "categories") + (("annotations",) if require_annotations else ())
        if not isinstance(data.get(key), list)
    ]
    if "annotations" in data and not isinstance(data["annotations"], list):
        problems.append(Problem(file, "dataset", None, "'annotations' is not a list", fatal=True))
    if problems:
        return problems
    labeled = require_annotations or bool(data.get("annotations"))  # an image list does without LVIS's lists
    problems = _structure_problems(data, file, keys)
    valid_images = [img for img in data["images"] if isinstance(img, dict) and _is_id(img.get("id"))]
    valid_cats = [cat for cat in data["categories"] if isinstance(cat, dict) and _is_id(cat.get("id"))]
    valid_anns = [ann for ann in data.get("annotations", []) if isinstance(ann, dict) and _is_id(ann.get("id"))]
    image_ids = Counter(img["id"] for img in valid_images)
    problems += [Problem(file, "image", i, f"duplicate image id ({n} images)", fatal=True)
                 for i, n in image_ids.items() if n > 1]  # fmt: skip
    cat_ids = Counter(cat["id"] for cat in valid_cats)
    problems += [Problem(file, "category", i, f"duplicate category id ({n} categories)", fatal=True)
                 for i, n in cat_ids.items() if n > 1]  # fmt: skip
    for cat in valid_cats:
        name = cat.get("name")
        if not (isinstance(name, str) and name):
            problems.append(Problem(file, "category", cat["id"], f"name must be a non-empty string, found {_shown(name)}",
                                    repair="name"))
        if cat.get("frequency") not in FREQUENCIES:
            problems.append(Problem(file, "category", cat.get("id"),
                                    f"({name}): frequency must be one of r/c/f, found {cat.get('frequency')!r}",
                                    repair="frequency"))  # fmt: skip
    images = {img["id"]: img for img in valid_images}
    for img in valid_images:
        problems += _image_problems(img, file, cat_ids, labeled)
    ann_ids: Counter = Counter()
    for ann in valid_anns:
        aid = ann.get("id")
        ann_ids[aid] += 1
        if ann_ids[aid] == 2:
            problems.append(Problem(file, "annotation", aid, DUPLICATE_ANNOTATION))
        problems += _annotation_problems(ann, file, images, cat_ids)
    return problems


def _size_ok(image: dict[str, Any]) -> bool:
    return all(_is_id(image.get(k)) and image[k] > 0 for k in ("height", "width"))


def _size(image: dict[str, Any], key: str) -> float:
    value = image.get(key)
    return value if _is_id(value) and value > 0 else np.inf


def format_problems(problems: list[Problem], path: str | Path, limit: int = 20) -> str:
    lines = [f"{p.kind} {p.record_id}: {p.reason}" if p.record_id is not None else p.reason for p in problems]
    more = f"\n  ... and {len(lines) - limit} more" if len(lines) > limit else ""
    return f"{path}: {len(problems)} problem(s):\n  " + "\n  ".join(lines[:limit]) + more


def check_lvis(data: dict[str, Any], path: str | Path, *, require_annotations: bool = True) -> None:
    """Raise DatasetError listing the problems of an LVIS json (structure, cross references, geometry)."""
    problems = find_json_problems(data, path, require_annotations=require_annotations)
    if problems:
        raise DatasetError(format_problems(problems, path))


def load_lvis(path: str | Path, *, require_annotations: bool = True) -> dict[str, Any]:
    """Read and check an LVIS json; raises DatasetError naming the file and the problems."""
    data = read_json(path)
    check_lvis(data, path, require_annotations=require_annotations)
    return data


def segmentation_rle(seg: Any, height: int, width: int) -> dict:
    """An LVIS segmentation (polygons, uncompressed or compressed RLE) as compressed RLE, as
    LVIS.ann_to_rle makes it: polygons merged into one mask."""
    if isinstance(seg, list):
        return mask_util.merge(mask_util.frPyObjects(seg, height, width))
    if isinstance(seg["counts"], list):
        return mask_util.frPyObjects(seg, height, width)
    return seg


# LVIS v1's frequency groups by the number of training images of a category: rare <= 10, common
# <= 100, frequent above. A small data set may scale them (minilvis.rare_max_images / common_max_images).
RARE_MAX_IMAGES, COMMON_MAX_IMAGES = 10, 100


def frequency_group(image_count: int, rare_max: int = RARE_MAX_IMAGES, common_max: int = COMMON_MAX_IMAGES) -> str:
    """r, c or f of a category annotated in ``image_count`` training images."""
    return "r" if image_count <= rare_max else "c" if image_count <= common_max else "f"


def category_order(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Categories in the pipeline's order (sorted by id)."""
    return sorted(data["categories"], key=lambda c: c["id"])


def category_index(data: dict[str, Any]) -> dict[int, int]:
    """category_id -> contiguous index."""
    return {cat["id"]: i for i, cat in enumerate(category_order(data))}


def image_path(image: dict[str, Any], image_root: str | Path) -> Path:
    if "file_name" in image:
        return Path(image_root) / image["file_name"]
    return Path(image_root).joinpath(*image["coco_url"].split("/")[-2:])


def categories_frame(data: dict[str, Any]) -> pd.DataFrame:
    """The contract's categories.parquet: index, category_id, name, frequency, instance_count."""
    cats = category_order(data)
    return pd.DataFrame({
        "index": np.arange(len(cats), dtype=np.int64),
        "category_id": [c["id"] for c in cats],
        "name": [c["name"] for c in cats],
        "frequency": [c["frequency"] for c in cats],
        "instance_count": instance_counts(data),
    })


def instance_counts(data: dict[str, Any]) -> np.ndarray:
    """N_i: annotated instances per category, in category order (int64, shape (C,))."""
    index = category_index(data)
    counts = np.zeros(len(index), dtype=np.int64)
    for ann in data["annotations"]:
        counts[index[ann["category_id"]]] += 1
    return counts


def image_counts(data: dict[str, Any]) -> np.ndarray:
    """Images in which each category is annotated, in category order (int64, shape (C,))."""
    index = category_index(data)
    seen: set[tuple[int, int]] = {(a["image_id"], a["category_id"]) for a in data["annotations"]}
    counts = np.zeros(len(index), dtype=np.int64)
    for _, cat in seen:
        counts[index[cat]] += 1
    return counts


def subset(data: dict[str, Any], image_ids: set[int], *, recount: bool = True) -> dict[str, Any]:
    """The dataset restricted to ``image_ids``; category image/instance counts recomputed.

    Category ``frequency`` is kept from the source: LVIS defines r/c/f on the full train set,
    and APr/APc/APf must mean the same groups for every split.
    """
    out = {k: v for k, v in data.items() if k not in ("images", "annotations", "categories")}
    out["images"] = [img for img in data["images"] if img["id"] in image_ids]
    out["annotations"] = [a for a in data.get("annotations", []) if a["image_id"] in image_ids]
    cats = [dict(c) for c in data["categories"]]
    if recount:
        inst = Counter(a["category_id"] for a in out["annotations"])
        imgs = Counter(c for _, c in {(a["image_id"], a["category_id"]) for a in out["annotations"]})
        for c in cats:
            c["instance_count"] = int(inst.get(c["id"], 0))
            c["image_count"] = int(imgs.get(c["id"], 0))
    out["categories"] = cats
    return out


def dataset_dicts(data: dict[str, Any], image_root: str | Path) -> list[dict[str, Any]]:
    """detectron2 dataset dicts (category ids mapped to contiguous indices, XYWH_ABS boxes). The
    trainer's mapper takes masks as polygons: an RLE annotation is given as its contour polygons
    (stages.data.masks.mask_polygons; holes filled)."""
    from detectron2.structures import BoxMode

    index = category_index(data)
    by_image: dict[int, list[dict[str, Any]]] = {img["id"]: [] for img in data["images"]}
    for ann in data.get("annotations", []):
        by_image[ann["image_id"]].append(ann)
    records = []
    for img in data["images"]:
        record = {
            "file_name": str(image_path(img, image_root)),
            "height": img["height"],
            "width": img["width"],
            "image_id": img["id"],
            "neg_category_ids": [index[c] for c in img.get("neg_category_ids", [])],
            "not_exhaustive_category_ids": [index[c] for c in img.get("not_exhaustive_category_ids", [])],
            "annotations": [
                {
                    "bbox": ann["bbox"],
                    "bbox_mode": BoxMode.XYWH_ABS,
                    "category_id": index[ann["category_id"]],
                    "segmentation": (ann["segmentation"] if isinstance(ann["segmentation"], list)
                                     else mask_polygons(ann["segmentation"], img["height"], img["width"])),
                    "iscrowd": 0,
                }
                for ann in by_image[img["id"]]
            ],
        }
        records.append(record)
    return records


def register(name: str, json_path: str | Path, image_root: str | Path, *, require_annotations: bool = True) -> list[dict[str, Any]]:
    """Register an LVIS json with detectron2's catalogs (v0.6 only knows the official names).

    The metadata carries ``thing_classes`` in category order and ``class_image_count`` of this
    very split (the federated loss weights), and ``json_file`` for the LVIS evaluator.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    data = load_lvis(json_path, require_annotations=require_annotations)
    dicts = dataset_dicts(data, image_root)
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: dicts)
    cats = category_order(data)
    counts = image_counts(data) if data.get("annotations") else np.zeros(len(cats), dtype=np.int64)
    MetadataCatalog.get(name).set(
        thing_classes=[c["name"] for c in cats],
        thing_dataset_id_to_contiguous_id=category_index(data),
        class_image_count=[{"id": c["id"], "image_count": int(n)} for c, n in zip(cats, counts)],
        json_file=str(json_path),
        image_root=str(image_root),
        evaluator_type="lvis",
    )
    return dicts
