"""Input validation of a user's LVIS-style dataset, before any heavy work.

Finds every problem at once (not just the first), with file, record and reason:

* json structure and cross references (stages.data.lvis.find_json_problems): duplicate ids,
  annotations pointing at missing images or categories, degenerate or out-of-image boxes, empty,
  too short or zero-area polygons, RLE of the wrong size, category frequency missing, unknown
  category ids in neg/not_exhaustive lists;
* the image files (``dataset.image_check``): ``exists``, ``header`` (PIL can identify it and its
  size equals the json's width/height: LVIS masks are decoded at the json size), or ``decode``
  (header + a full decode, which also catches truncated files);
* across train and val: an image file in both (leakage).

``dataset.on_invalid``: ``fail`` stops and lists every problem; ``skip`` repairs what can be repaired
and says how: an annotation with a problem is dropped; an image with a problem is dropped with its
annotations; unknown ids in neg/not_exhaustive lists are removed; a missing frequency is derived
from the train set's image count with LVIS's rule (r: at most 10 images, c: 11-100, f: more). Broken
structure (missing lists, duplicate image or category ids, leakage) is fatal in both modes.

The report (CSV: file, kind, record_id, reason, action) is written in both modes.

The unlabeled pool of a user's data set is a folder of image files: :func:`pool_images` lists the
readable ones as an images-only json and reports the others.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image
from tqdm import tqdm

from stages.core.calibration import FREQUENCIES
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
    read_json,
)

IMAGE_CHECKS = ("exists", "header", "decode")


REPORT_COLUMNS = ("file", "kind", "record_id", "reason", "action")


def _image_problem(image: dict[str, Any], path: Path, check: str) -> str | None:
    if not path.is_file():
        return f"image file not found: {path}"
    if check == "exists":
        return None
    try:
        with Image.open(path) as im:
            size = im.size
            if check == "decode":
                im.load()  # full decode: a truncated or corrupt body fails here, not in a training worker
    except Exception as exc:  # PIL raises several types for bad data
        return f"unreadable image {path} ({type(exc).__name__}: {exc})"
    expected = (image.get("width"), image.get("height"))
    if None not in expected and tuple(size) != expected:
        return f"image {path} is {size[0]}x{size[1]}, the json says {expected[0]}x{expected[1]}"
    return None


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
    images = [img for img in data["images"] if "file_name" in img or "coco_url" in img]
    problems: list[Problem] = []
    if not allow_outside:
        outside = {img["id"]: reason for img in images if (reason := outside_root_problem(img, Path(image_root)))}
        problems = [Problem(file, "image", i, reason) for i, reason in outside.items()]
        images = [img for img in images if img["id"] not in outside]
    paths = [image_path(img, image_root) for img in images]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        reasons = list(tqdm(pool.map(_image_problem, images, paths, [check] * len(images)), total=len(images),
                            desc=f"check images ({check})", unit="img"))  # fmt: skip
    return problems + [Problem(file, "image", img["id"], reason) for img, reason in zip(images, reasons) if reason]


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


def repair(data: dict[str, Any], problems: list[Problem], counts: dict[int, int] | None = None) -> tuple[dict, list[str]]:
    """(the dataset without the records that have problems, the action taken for each problem).

    ``counts`` (category id -> training images) decides a missing frequency; default: this
    dataset's own counts after the repair (right for the train set; pass the train counts for val).
    """
    actions: list[str] = []
    dropped_images: set[Any] = set()
    broken_anns: set[Any] = set()  # every copy dropped; of duplicated ids only the first copy stays
    cat_ids = {c["id"] for c in data["categories"]}
    for p in problems:
        if _malformed(p):
            actions.append("dropped the malformed record")  # already left out by drop_malformed
        elif p.kind == "image" and ("neg_category_ids" in p.reason or "not_exhaustive_category_ids" in p.reason):
            actions.append("fixed: unknown category ids removed from the list")
        elif p.kind == "image":
            dropped_images.add(p.record_id)
            actions.append("dropped the image and its annotations")
        elif p.kind == "annotation":
            if p.reason != DUPLICATE_ANNOTATION:
                broken_anns.add(p.record_id)
            actions.append("dropped the annotation")
        else:
            actions.append("")  # categories: filled in below, once the counts are known
    seen_ann: set[Any] = set()
    annotations = []
    for ann in data.get("annotations", []):
        aid = ann.get("id")
        if aid not in broken_anns and aid not in seen_ann and ann.get("image_id") not in dropped_images:
            annotations.append(ann)
        seen_ann.add(aid)
    images = []
    for img in data["images"]:
        if img["id"] in dropped_images:
            continue
        img = dict(img)
        for key in ("neg_category_ids", "not_exhaustive_category_ids"):
            if key in img:
                img[key] = [c for c in img[key] if c in cat_ids] if isinstance(img[key], list) else []
        images.append(img)
    cleaned = {**data, "images": images, "categories": [dict(c) for c in data["categories"]]}
    if "annotations" in data:
        cleaned["annotations"] = annotations
    if counts is None:
        counts = train_image_counts(cleaned)
    for i, p in enumerate(problems):
        if p.kind == "category":
            cat = next(c for c in cleaned["categories"] if c.get("id") == p.record_id)
            cat["frequency"] = frequency_group(counts.get(p.record_id, 0))
            actions[i] = f"fixed: frequency '{cat['frequency']}' from {counts.get(p.record_id, 0)} train images"
    return cleaned, actions


def leakage_problems(train: dict[str, Any], val: dict[str, Any], val_file: str, image_root: str | Path) -> list[Problem]:
    train_files = {image_path(img, image_root).resolve() for img in train["images"] if "file_name" in img or "coco_url" in img}
    return [
        Problem(val_file, "image", img["id"], f"the same file {image_path(img, image_root)} is in the train set (leakage)",
                fatal=True)  # fmt: skip
        for img in val["images"]
        if ("file_name" in img or "coco_url" in img) and image_path(img, image_root).resolve() in train_files
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
    """(the readable pool images as json dicts, a problem per unreadable file)."""
    files = sorted(p for p in unlabeled_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(f"{unlabeled_dir}: no .jpg/.jpeg/.png images found")
    images, problems = [], []
    for offset, path in enumerate(tqdm(files, desc="pool", unit="img")):
        try:
            with Image.open(path) as im:
                width, height = im.size
        except Exception as exc:  # PIL raises several types for bad data
            problems.append(Problem(str(unlabeled_dir), "pool image", str(path), f"unreadable image ({exc})"))
            continue
        images.append({"id": first_id + offset, "file_name": str(path.resolve()), "height": height, "width": width})
    return images, problems
