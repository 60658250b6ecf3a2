"""Detections on disk and their contract: LVIS results json (the evaluation contract) or an
equivalent parquet table.

The contract is what lvis-api's LVISResults (lvis 0.5.3, ``results.py``) accepts, checked up front
so that a detection it would refuse -- or, worse, one it would score silently wrong -- stops the
stage with a named error (file, detection, problem), the same for both evaluators, judging and the
bootstrap:

* a list of objects, each with ``image_id`` and ``category_id`` (integers: a string ``"0001"`` or a
  float ``1.9`` is refused, never converted -- LVISResults refuses the first and a numpy cast would
  truncate the second), ``score`` (a number, finite, in [0, 1]: it is also the confidence that
  calibration judges), and ``bbox`` (four finite numbers, sides >= 0) and/or ``segmentation`` (a
  compressed or uncompressed RLE whose run lengths add up to its height x width, or polygons);
* against the ground truth (:func:`check_results`): every ``image_id`` is an image of it (LVISResults
  asserts it), every RLE has the image's [height, width], and the fields follow LVISResults' rule:
  what the *first* kept detection carries decides for all of them. With a ``bbox`` first, every
  detection needs one, and one without a mask is scored for segm with its box as the mask (the
  polygon [[x1, y1, x1, y2, x2, y2, x2, y1]]); without a ``bbox`` first, every detection needs a
  compressed RLE, its box is the mask's (``toBbox``) and its area the mask's.

Those conversions (:func:`complete_result`) are what LVISResults makes; the fast evaluator makes
them the same way, and judging gets them from :func:`complete_results`. A category id that is not
in the ground truth is kept and, as in LVISEval, never evaluated.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pycocotools.mask as mask_util

from stages.data.masks import POLYGON_MARGIN, box_polygon, mask_box, polygon_problem, rle_problems
from stages.utils.readers import ReadError, read_json, read_parquet

SHOWN_PROBLEMS = 10  # detections listed in an error; the count says how many more


class DetectionsError(ValueError):
    """A detections file breaks its contract; the message names the file, the detection and the rule."""


def results_frame(results: list[dict[str, Any]]) -> pd.DataFrame:
    """LVIS results as a table: one row per detection, box as x/y/w/h columns, mask RLE as strings."""
    boxes = np.asarray([r["bbox"] for r in results], dtype=np.float64).reshape(-1, 4)
    return pd.DataFrame({
        "image_id": np.asarray([r["image_id"] for r in results], dtype=np.int64),
        "category_id": np.asarray([r["category_id"] for r in results], dtype=np.int64),
        "score": np.asarray([r["score"] for r in results], dtype=np.float64),
        "x": boxes[:, 0], "y": boxes[:, 1], "w": boxes[:, 2], "h": boxes[:, 3],
        "rle_counts": [r["segmentation"]["counts"] if "segmentation" in r else None for r in results],
        "rle_height": [r["segmentation"]["size"][0] if "segmentation" in r else 0 for r in results],
        "rle_width": [r["segmentation"]["size"][1] if "segmentation" in r else 0 for r in results],
    })


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _shown(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _raise(path: str | Path, problems: list[tuple[int, Any, str]], what: str) -> None:
    if not problems:
        return
    lines = [f"detection #{k} (image {image!r}): {reason}" for k, image, reason in problems[:SHOWN_PROBLEMS]]
    more = f"\n  ... and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
    raise DetectionsError(f"{path}: {len(problems)} detection(s) {what}:\n  " + "\n  ".join(lines) + more)


def _detection_problem(det: Any) -> str | None:
    if not isinstance(det, dict):
        return f"is {_shown(det)}, not an object"
    for key in ("image_id", "category_id", "score"):
        if key not in det:
            return f"lacks '{key}'"
    for key in ("image_id", "category_id"):
        if not _is_int(det[key]):
            return f"{key} must be an integer, found {_shown(det[key])} (LVIS ids are JSON integers; never converted)"
    score = det["score"]
    if not _is_number(score):
        return f"score must be a number, found {_shown(score)}"
    if not (math.isfinite(score) and 0 <= score <= 1):
        return f"score {score!r} is not a probability in [0, 1]"
    if "bbox" not in det and "segmentation" not in det:
        return "has neither 'bbox' nor 'segmentation'"
    if "bbox" in det:
        box = det["bbox"]
        if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(_is_number(v) for v in box)):
            return f"bbox must be four numbers [x, y, w, h], found {box!r}"
        if not all(math.isfinite(v) for v in box) or box[2] < 0 or box[3] < 0:
            return f"bbox {list(box)} is non-finite or has a negative side"
    seg = det.get("segmentation")
    if "segmentation" in det and not isinstance(seg, dict):
        return polygon_problem(seg)
    return None


def check_detections(detections: Any, path: str | Path) -> list[dict[str, Any]]:
    """The detections contract on its own (no ground truth): every detection an object with integer
    ``image_id`` / ``category_id``, a finite ``score`` in [0, 1], a valid ``bbox`` and/or
    ``segmentation`` (RLE run lengths adding up to its size). Returns ``detections`` unchanged;
    raises DetectionsError naming the file and the first detections that break it."""
    if not isinstance(detections, list):
        raise DetectionsError(f"{path}: expected a list of LVIS results, found {type(detections).__name__}")
    problems = []
    rles, rle_of = [], []
    for k, det in enumerate(detections):
        reason = _detection_problem(det)
        if reason:
            problems.append((k, det.get("image_id") if isinstance(det, dict) else None, reason))
        elif isinstance(det.get("segmentation"), dict):
            rles.append(det["segmentation"])
            rle_of.append(k)
    for k, reason in zip(rle_of, rle_problems(rles)):
        if reason:
            problems.append((k, detections[k]["image_id"], f"segmentation: {reason}"))
    problems.sort(key=lambda p: p[0])
    _raise(path, problems, "break the LVIS results contract")
    return detections


def lvis_kept(detections: list[dict[str, Any]], max_dets: int) -> tuple[np.ndarray, int | None]:
    """(bool mask of the detections LVISResults keeps, index of the one it reads as ``result_anns[0]``)
    after its per-image cut (``limit_dets_per_image``): an image with more than ``max_dets`` detections
    keeps its ``max_dets`` best (sorted by score, stable, descending) and its list is re-sorted, so
    the first detection of the first image is then its best. None for no detections."""
    kept = np.ones(len(detections), dtype=bool)
    if not detections:
        return kept, None
    by_image: dict[Any, list[int]] = {}
    for k, det in enumerate(detections):
        by_image.setdefault(det["image_id"], []).append(k)
    first = 0
    for n, same in enumerate(by_image.values()):
        if 0 <= max_dets < len(same):
            ranked = sorted(same, key=lambda k: detections[k]["score"], reverse=True)
            kept[ranked[max_dets:]] = False
            if n == 0:
                first = ranked[0]
    return kept, first


def check_results(detections: Any, gt: dict[str, Any], path: str | Path, max_dets: int = 300) -> list[dict[str, Any]]:
    """:func:`check_detections`, then the contract against the ground truth ``gt`` (a checked LVIS
    json): image ids of ``gt``, RLEs of the image's size, and LVISResults' rule on the fields (module
    docstring) for the detections it keeps (``max_dets`` per image); a box that becomes a mask must
    lie within an image side of the image (pycocotools rasterises it). Returns ``detections`` unchanged; raises DetectionsError naming the file and the
    first detections that break it."""
    check_detections(detections, path)
    images = {img["id"]: img for img in gt["images"]}
    kept, first = lvis_kept(detections, max_dets)
    box_first = first is not None and "bbox" in detections[first]
    problems = []
    for k, det in enumerate(detections):
        image = images.get(det["image_id"])
        if image is None:
            problems.append((k, det["image_id"], "image_id is not an image of the ground truth (LVISResults refuses it)"))
            continue
        seg = det.get("segmentation")
        size = [image["height"], image["width"]]
        if isinstance(seg, dict) and list(seg["size"]) != size:
            problems.append((k, det["image_id"], f"segmentation size {list(seg['size'])} is not the image's [height, "
                                                 f"width] {size}"))
        elif isinstance(seg, list) and polygon_problem(seg, *size):
            problems.append((k, det["image_id"], f"segmentation: {polygon_problem(seg, *size)}"))
        elif not kept[k]:
            continue  # cut by the per-image limit: LVISResults never reads its fields
        elif box_first and "bbox" not in det:
            problems.append((k, det["image_id"], f"lacks 'bbox', which LVISResults takes of every detection when the "
                                                 f"first one (#{first}) has a box"))
        elif not box_first and not (isinstance(seg, dict) and isinstance(seg.get("counts"), (str, bytes))):
            problems.append((k, det["image_id"], f"needs a compressed RLE segmentation: the first detection (#{first}) "
                                                 "has no box, so LVISResults takes every box and area from the masks"))
        elif box_first and seg is None and not _box_within(det["bbox"], image):
            problems.append((k, det["image_id"], f"bbox {det['bbox']} lies more than an image side outside the image; "
                                                 "without a mask the box is rasterised as one"))
    _raise(path, problems, "do not fit the ground truth")
    return detections


def _box_within(box: list[float], image: dict[str, Any]) -> bool:
    x, y, w, h = box
    width, height = image["width"], image["height"]
    return (x >= -POLYGON_MARGIN * width and x + w <= (1 + POLYGON_MARGIN) * width
            and y >= -POLYGON_MARGIN * height and y + h <= (1 + POLYGON_MARGIN) * height)


def complete_result(det: dict[str, Any], box_first: bool) -> dict[str, Any]:
    """The detection with the fields LVISResults gives it: with a box first, a missing mask becomes
    the box polygon; without, a missing box becomes the mask's box (``toBbox``). Not modified."""
    if box_first and "segmentation" not in det:
        return {**det, "segmentation": box_polygon(det["bbox"])}
    if not box_first and "bbox" not in det:
        return {**det, "bbox": mask_box(det["segmentation"])}
    return det


def complete_results(detections: list[dict[str, Any]], gt: dict[str, Any], max_dets: int = 300) -> list[dict[str, Any]]:
    """Checked detections (:func:`check_results`) with every field LVISResults would give them
    (:func:`complete_result`) and every mask a compressed RLE at its image's size (polygons and
    uncompressed RLEs converted as LVIS.ann_to_rle does): what judging reads."""
    _, first = lvis_kept(detections, max_dets)
    box_first = first is not None and "bbox" in detections[first]
    images = {img["id"]: img for img in gt["images"]}
    out = []
    for det in detections:
        det = complete_result(det, box_first)
        seg = det["segmentation"]
        image = images.get(det["image_id"])
        if image is not None and not (isinstance(seg, dict) and isinstance(seg["counts"], (str, bytes))):
            h, w = image["height"], image["width"]
            rle = mask_util.merge(mask_util.frPyObjects(seg, h, w)) if isinstance(seg, list) else mask_util.frPyObjects(seg, h, w)
            det = {**det, "segmentation": rle}
        out.append(det)
    return out


def _table_problems(frame: pd.DataFrame, path: Path) -> None:
    missing = [c for c in ("image_id", "category_id", "score", "x", "y", "w", "h") if c not in frame.columns]
    if missing:
        raise DetectionsError(f"{path}: the detections table lacks the columns {missing} (stages.data.detections.results_frame)")
    for column in ("image_id", "category_id"):
        if not pd.api.types.is_integer_dtype(frame[column]):
            raise DetectionsError(f"{path}: column {column} must hold integers, found {frame[column].dtype} "
                                  "(LVIS ids are integers; never converted)")
    for column in ("score", "x", "y", "w", "h"):
        if pd.api.types.is_bool_dtype(frame[column]) or not pd.api.types.is_numeric_dtype(frame[column]):
            raise DetectionsError(f"{path}: column {column} must hold numbers, found {frame[column].dtype}")


def read_detections(path: str | Path) -> list[dict[str, Any]]:
    """Detections from an LVIS results json or from the parquet table of :func:`results_frame`,
    checked against the contract (:func:`check_detections`). Raises DetectionsError naming the file
    for a file that cannot be read (stages.utils.readers) or a detection that breaks the contract."""
    path = Path(path)
    try:
        if path.suffix != ".parquet":
            return check_detections(read_json(path), path)
        frame = read_parquet(path)
    except ReadError as exc:
        raise DetectionsError(str(exc)) from None
    _table_problems(frame, path)
    out = []
    for row in frame.itertuples(index=False):
        det = {"image_id": int(row.image_id), "category_id": int(row.category_id), "score": float(row.score),
               "bbox": [float(row.x), float(row.y), float(row.w), float(row.h)]}
        if isinstance(row.rle_counts, str):
            det["segmentation"] = {"size": [int(row.rle_height), int(row.rle_width)], "counts": row.rle_counts}
        out.append(det)
    return check_detections(out, path)
