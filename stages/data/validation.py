"""Input validation of a user's LVIS-style dataset, before any heavy work.

Finds every problem at once (not just the first), with file, record and reason:

* json structure, cross references and geometry (stages.data.lvis.find_json_problems), for every
  field a stage reads (stages.data.lvis.FIELDS_READ): duplicate ids, annotations pointing at
  missing images or categories, degenerate or out-of-image boxes, missing, empty, too short,
  zero-area or far-away polygons, RLEs of the wrong size or whose run lengths do not add up to
  height x width, a missing or non-numeric ``area`` or one inconsistent with the mask, a missing
  ``segmentation`` (a box-only export), the image-level lists LVIS requires, category frequency
  and name;
* the image files (``dataset.image_check``): ``exists``, ``header`` (PIL can identify it and its
  size *as the pipeline reads it*, after the EXIF orientation, equals the json's width/height:
  LVIS masks are decoded at the json size), or ``decode`` (header + a full decode, which also
  catches truncated files);
* across train and val: an image file in both (leakage).

``dataset.on_invalid``: ``fail`` stops and lists every problem; ``skip`` repairs what can be repaired
and says how (:data:`REPAIRS`): an annotation with a problem is dropped; an image with a problem is
dropped with its annotations; unknown ids in neg/not_exhaustive lists are removed; an absent
neg/not_exhaustive list is read as empty; an absent, non-numeric or inconsistent ``area`` becomes
the mask's area; a missing category name becomes ``category_<id>``; a missing frequency is derived
from the train set's image count with LVIS's rule (r: at most 10 images, c: 11-100, f: more); a photo
whose json size is its size before the EXIF rotation gets the rotated size, and its annotations are
turned with it. Broken structure (missing lists, duplicate image or category ids, leakage) is fatal
in both modes.

The report (CSV: file, kind, record_id, reason, action) is written in both modes: every repair is a row.

The unlabeled pool of a user's data set is a folder of image files: :func:`pool_images` lists the
readable ones as an images-only json (with their oriented sizes) and reports the others.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pycocotools.mask as mask_util
from PIL import Image
from tqdm import tqdm

from stages.core.calibration import FREQUENCIES
from stages.data.images import SWAPS_SIDES, exif_orientation, oriented_size
from stages.data.lvis import (
    DUPLICATE_ANNOTATION,
    DatasetError,
    Problem,
    category_order,
    find_json_problems,
    format_problems,
    frequency_group,
    image_counts,
    image_path,
    image_path_problem,
    read_json,
)

IMAGE_CHECKS = ("exists", "header", "decode")


REPORT_COLUMNS = ("file", "kind", "record_id", "reason", "action")


def _image_problem(image: dict[str, Any], path: Path, check: str) -> tuple[str, int] | None:
    """(reason, EXIF orientation to repair with, or 0) when the file at ``path`` fails ``check``."""
    if not path.is_file():
        return f"image file not found: {path}", 0
    if check == "exists":
        return None
    try:
        with Image.open(path) as im:
            stored = im.size
            size = oriented_size(im)
            orientation = exif_orientation(im)
            if check == "decode":
                im.load()  # full decode: a truncated or corrupt body fails here, not in a training worker
    except Exception as exc:  # PIL raises several types for bad data
        return f"unreadable image {path} ({type(exc).__name__}: {exc})", 0
    expected = (image.get("width"), image.get("height"))
    if None in expected or tuple(size) == expected:
        return None
    if orientation in SWAPS_SIDES and tuple(stored) == expected:
        return (f"image {path} carries EXIF orientation {orientation} (turned a quarter): read as detectron2 reads it, "
                f"it is {size[0]}x{size[1]}; the json says {expected[0]}x{expected[1]}, its size before the turn"), orientation
    return f"image {path} is {size[0]}x{size[1]}, the json says {expected[0]}x{expected[1]}", 0


def outside_root_problem(image: dict[str, Any], root: Path) -> str | None:
    """Why an image's path is not a file under ``root``: an absolute file_name, or one that leaves the
    root (``..``, or a symlink to elsewhere; both sides resolved). None when it is inside."""
    name = image.get("file_name", image.get("coco_url", ""))
    if "file_name" in image and Path(str(image["file_name"])).is_absolute():
        return (f"file_name {name!r} is an absolute path (set dataset.allow_paths_outside_image_root: true to "
                "read images outside image_root)")
    path = image_path(image, root).resolve()
    if not path.is_relative_to(root.resolve()):
        return (f"file_name {name!r} resolves to {path}, outside image_root {root} (set "
                "dataset.allow_paths_outside_image_root: true to allow it)")
    return None


def image_file_problems(data: dict[str, Any], file: str, image_root: str | Path, check: str, workers: int,
                        allow_outside: bool = False) -> list[Problem]:  # fmt: skip
    """Problems of the image files of ``data`` (threads: PIL releases the GIL while decoding). Unless
    ``allow_outside``, every path must lie inside ``image_root``: a json cannot make the pipeline read
    (or, through a training job, reveal) files elsewhere."""
    if check not in IMAGE_CHECKS:
        raise ValueError(f"dataset.image_check must be one of {IMAGE_CHECKS}, found {check!r}")
    images = [img for img in data["images"] if image_path_problem(img) is None]  # the others are json problems
    problems: list[Problem] = []
    if not allow_outside:
        outside = {img["id"]: reason for img in images if (reason := outside_root_problem(img, Path(image_root)))}
        problems = [Problem(file, "image", i, reason) for i, reason in outside.items()]
        images = [img for img in images if img["id"] not in outside]
    paths = [image_path(img, image_root) for img in images]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        found = list(tqdm(pool.map(_image_problem, images, paths, [check] * len(images)), total=len(images),
                          desc=f"check images ({check})", unit="img"))  # fmt: skip
    return problems + [Problem(file, "image", img["id"], f[0], repair="orientation" if f[1] else "", value=f[1] or None)
                       for img, f in zip(images, found) if f]  # fmt: skip


def train_image_counts(data: dict[str, Any]) -> dict[int, int]:
    """category id -> images annotated with it (lvis_data.image_counts, keyed by id)."""
    return dict(zip((c["id"] for c in category_order(data)), image_counts(data).tolist()))


def _malformed(problem: Problem) -> bool:
    """A problem of a record that cannot even be addressed by its id (named by its position, #k)."""
    return isinstance(problem.record_id, str) and problem.record_id.startswith("#")


def drop_malformed(data: dict[str, Any], problems: list[Problem]) -> dict[str, Any]:
    """The dataset without the records that are not objects or have no integer id (by position), so
    that every later check and the repair see well-formed records only."""
    lists = {"image": "images", "category": "categories", "annotation": "annotations"}
    positions: dict[str, set[int]] = {key: set() for key in lists.values()}
    for p in problems:
        if _malformed(p):
            positions[lists[p.kind]].add(int(p.record_id[1:]))
    if not any(positions.values()):
        return data
    return {**data, **{key: [r for k, r in enumerate(data[key]) if k not in drop]
                       for key, drop in positions.items() if drop}}


# How skip mode repairs a Problem (its ``repair``); a problem without one drops its record.
REPAIRS = {
    "known ids": "fixed: unknown category ids removed from the list",
    "empty list": "fixed: the absent list read as empty",
    "area": "fixed: area set to the mask's area",
    "name": "fixed: name set to category_<id>",
    "orientation": "fixed: the image's EXIF turn applied to its size and annotations",
    "frequency": "fixed: frequency",  # completed with the counts once they are known
}

# Where each EXIF orientation (2-8) sends the point (x, y) of a width x height image, as PIL's
# transpose (detectron2's _apply_exif_orientation) moves its pixels.
_ORIENTED_POINT = {
    2: lambda x, y, w, h: (w - x, y),
    3: lambda x, y, w, h: (w - x, h - y),
    4: lambda x, y, w, h: (x, h - y),
    5: lambda x, y, w, h: (y, x),
    6: lambda x, y, w, h: (h - y, x),
    7: lambda x, y, w, h: (h - y, w - x),
    8: lambda x, y, w, h: (y, w - x),
}
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


def oriented_annotation(ann: dict[str, Any], orientation: int, width: int, height: int) -> dict[str, Any]:
    """``ann`` of a ``width`` x ``height`` image (as stored) moved onto the image turned by its EXIF
    ``orientation``: box corners and polygon points by the same map as the pixels, an RLE mask
    decoded, transposed by PIL as detectron2 turns the image, and encoded again. The area stays."""
    point = _ORIENTED_POINT[orientation]
    out = dict(ann)
    x, y, w, h = ann["bbox"]
    corners = np.array([point(cx, cy, width, height) for cx in (x, x + w) for cy in (y, y + h)], dtype=np.float64)
    x0, y0 = corners.min(axis=0)
    x1, y1 = corners.max(axis=0)
    out["bbox"] = [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
    seg = ann["segmentation"]
    if isinstance(seg, list):
        out["segmentation"] = [[float(c) for i in range(0, len(poly), 2) for c in point(poly[i], poly[i + 1], width, height)]
                               for poly in seg]  # fmt: skip
    else:
        rle = mask_util.frPyObjects(seg, height, width) if isinstance(seg["counts"], list) else seg
        mask = Image.fromarray(mask_util.decode(rle) * np.uint8(255)).transpose(_TRANSPOSE[orientation])
        turned = mask_util.encode(np.asfortranarray((np.asarray(mask) > 0).astype(np.uint8)))
        out["segmentation"] = {"size": turned["size"], "counts": turned["counts"].decode("ascii")}
    return out


def repair(data: dict[str, Any], problems: list[Problem], counts: dict[int, int] | None = None) -> tuple[dict, list[str]]:
    """(the dataset repaired: records with problems dropped or fixed, the action taken for each problem).

    ``counts`` (category id -> training images) decides a missing frequency; default: this
    dataset's own counts after the repair (right for the train set; pass the train counts for val).
    """
    actions: list[str] = []
    dropped_images: set[Any] = set()
    broken_anns: set[Any] = set()  # every copy dropped; of duplicated ids only the first copy stays
    fixes: dict[tuple[str, Any], list[Problem]] = {}
    for p in problems:
        if _malformed(p):
            actions.append("dropped the malformed record")  # already left out by drop_malformed
        elif p.repair:
            fixes.setdefault((p.kind, p.record_id), []).append(p)
            actions.append(REPAIRS[p.repair])
        elif p.kind == "image":
            dropped_images.add(p.record_id)
            actions.append("dropped the image and its annotations")
        elif p.kind == "annotation":
            if p.reason != DUPLICATE_ANNOTATION:
                broken_anns.add(p.record_id)
            actions.append("dropped the annotation")
        else:
            actions.append("")
    cat_ids = {c["id"] for c in data["categories"]}
    images = []
    turned: dict[int, tuple[int, int, int]] = {}  # image id -> (orientation, stored width, stored height)
    for img in data["images"]:
        if img["id"] in dropped_images:
            continue
        img = dict(img)
        for p in fixes.get(("image", img["id"]), []):
            if p.repair == "known ids":
                img[p.value] = [c for c in img[p.value] if isinstance(c, int) and not isinstance(c, bool) and c in cat_ids]
            elif p.repair == "empty list":
                img[p.value] = []
            elif p.repair == "orientation":
                turned[img["id"]] = (p.value, img["width"], img["height"])
                img["width"], img["height"] = img["height"], img["width"]
        images.append(img)
    seen_ann: set[Any] = set()
    annotations = []
    for ann in data.get("annotations", []):
        aid = ann.get("id")
        if aid not in broken_anns and aid not in seen_ann and ann.get("image_id") not in dropped_images:
            for p in fixes.get(("annotation", aid), []):
                ann = {**ann, "area": p.value}  # the only annotation repair
            if ann["image_id"] in turned:
                ann = oriented_annotation(ann, *turned[ann["image_id"]])
            annotations.append(ann)
        seen_ann.add(aid)
    cleaned = {**data, "images": images, "categories": [dict(c) for c in data["categories"]]}
    if "annotations" in data:
        cleaned["annotations"] = annotations
    for cat in cleaned["categories"]:
        if any(p.repair == "name" for p in fixes.get(("category", cat["id"]), [])):
            cat["name"] = f"category_{cat['id']}"
    if counts is None:
        counts = train_image_counts(cleaned)
    for i, p in enumerate(problems):
        if p.kind == "category" and p.repair == "frequency":
            cat = next(c for c in cleaned["categories"] if c.get("id") == p.record_id)
            cat["frequency"] = frequency_group(counts.get(p.record_id, 0))
            actions[i] = f"fixed: frequency '{cat['frequency']}' from {counts.get(p.record_id, 0)} train images"
        elif p.repair == "area":
            actions[i] = f"fixed: area set to the mask's area {p.value:g}"
        elif p.repair == "orientation":
            actions[i] = (f"fixed: EXIF orientation {p.value} applied to the image's size (width and height swapped) and "
                          "its annotations")
        elif p.repair == "empty list":
            actions[i] = f"fixed: the absent {p.value} read as empty"
    return cleaned, actions


def leakage_problems(train: dict[str, Any], val: dict[str, Any], val_file: str, image_root: str | Path) -> list[Problem]:
    train_files = {image_path(img, image_root).resolve() for img in train["images"] if image_path_problem(img) is None}
    return [
        Problem(val_file, "image", img["id"], f"the same file {image_path(img, image_root)} is in the train set (leakage)",
                fatal=True)  # fmt: skip
        for img in val["images"]
        if image_path_problem(img) is None and image_path(img, image_root).resolve() in train_files
    ]


def report_frame(problems: list[Problem], actions: list[str]) -> pd.DataFrame:
    rows = [{"file": p.file, "kind": p.kind, "record_id": "" if p.record_id is None else str(p.record_id),
             "reason": p.reason, "action": a} for p, a in zip(problems, actions)]  # fmt: skip
    return pd.DataFrame(rows, columns=list(REPORT_COLUMNS))


def validate_datasets(
    train_path: str | Path,
    val_path: str | Path | None,
    image_root: str | Path,
    dataset_cfg: dict[str, Any],
    workers: int,
) -> tuple[dict[str, Any], dict[str, Any] | None, pd.DataFrame]:
    """(train, val, report): the checked -- and in skip mode repaired -- datasets and every problem.

    Raises DatasetError naming each problem when ``dataset.on_invalid`` is fail and anything is
    wrong, or when a problem is fatal; the report is attached as ``error.report``.
    """
    on_invalid, check = dataset_cfg["on_invalid"], dataset_cfg["image_check"]
    found: dict[str, list[Problem]] = {}
    data: dict[str, dict[str, Any]] = {}
    for path in [p for p in (train_path, val_path) if p is not None]:
        data[str(path)] = read_json(path)
        problems = find_json_problems(data[str(path)], path)
        data[str(path)] = drop_malformed(data[str(path)], problems)
        if not any(p.fatal for p in problems):
            problems += image_file_problems(data[str(path)], str(path), image_root, check, workers,
                                            dataset_cfg["allow_paths_outside_image_root"])
        found[str(path)] = problems
    train_key = str(train_path)
    if val_path is not None and not any(p.fatal for ps in found.values() for p in ps):
        found[str(val_path)] += leakage_problems(data[train_key], data[str(val_path)], str(val_path), image_root)
        train_cats = {c["id"] for c in data[train_key]["categories"]}
        if train_cats != {c["id"] for c in data[str(val_path)]["categories"]}:
            found[str(val_path)].append(Problem(str(val_path), "dataset", None,
                                                f"lists other categories than {train_path}", fatal=True))  # fmt: skip
    everything = [p for ps in found.values() for p in ps]
    fatal = [p for p in everything if p.fatal]
    if fatal or (everything and on_invalid == "fail"):
        report = report_frame(everything, ["fatal" if p.fatal else "none (dataset.on_invalid: fail)" for p in everything])
        hint = "" if fatal else "\nset dataset.on_invalid: skip to drop or repair these records (every action is reported)"
        error = DatasetError("\n".join(format_problems(ps, f) for f, ps in found.items() if ps) + hint)
        error.report = report
        raise error
    train, train_actions = repair(data[train_key], found[train_key])
    train_counts = train_image_counts(train)
    val, val_actions = None, []
    if val_path is not None:
        val, val_actions = repair(data[str(val_path)], found[str(val_path)], train_counts)
        # LVIS defines r/c/f on train: val's categories carry train's frequencies
        frequency = {c["id"]: c["frequency"] for c in train["categories"]}
        for cat in val["categories"]:
            if cat.get("frequency") not in FREQUENCIES or cat["frequency"] != frequency[cat["id"]]:
                cat["frequency"] = frequency[cat["id"]]
    report = report_frame(everything, train_actions + val_actions)
    return train, val, report


def print_report(report: pd.DataFrame, limit: int = 200) -> None:
    """Every problem to stderr (the job log), up to ``limit`` lines, then the counts per action."""
    for row in report.head(limit).itertuples():
        print(f"validate: {row.file}: {row.kind} {row.record_id}: {row.reason} -> {row.action}", file=sys.stderr)
    if len(report) > limit:
        print(f"validate: ... and {len(report) - limit} more (see the report csv)", file=sys.stderr)
    if len(report):
        counts = report["action"].str.split(":").str[0].value_counts().to_dict()
        print(f"validate: {len(report)} problem(s): {counts}", file=sys.stderr)


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def pool_images(unlabeled_dir: Path, first_id: int) -> tuple[list[dict[str, Any]], list[Problem]]:
    """(the readable pool images as json dicts, with their sizes after the EXIF orientation, as every
    stage reads them; a problem per unreadable file)."""
    files = sorted(p for p in unlabeled_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(f"{unlabeled_dir}: no .jpg/.jpeg/.png images found")
    images, problems = [], []
    for offset, path in enumerate(tqdm(files, desc="pool", unit="img")):
        try:
            with Image.open(path) as im:
                width, height = oriented_size(im)
        except Exception as exc:  # PIL raises several types for bad data
            problems.append(Problem(str(unlabeled_dir), "pool image", str(path), f"unreadable image ({exc})"))
            continue
        images.append({"id": first_id + offset, "file_name": str(path.resolve()), "height": height, "width": width})
    return images, problems
