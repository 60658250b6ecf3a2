"""Checks of LVIS masks before pycocotools sees them: RLE run lengths, polygon extent, mask areas.

pycocotools trusts its input. A compressed RLE whose run lengths do not add up to height x width
(``counts`` cut short, or a garbage string) makes ``pycocotools.mask.iou`` loop for ever, and a
polygon with a coordinate of 1e8 makes ``frPyObjects`` rasterise for hours; neither raises. So
every mask is checked here first -- ground truth by the validator (stages.data.lvis), detections
by their contract (stages.data.detections) -- with the decoding pycocotools itself uses
(``rleFrString`` of maskApi.c, reproduced in numpy for whole lists of detections at once).

Mask area (LVIS's ``area``): the number of pixels of the rasterised mask (``pycocotools.mask.area``
of LVIS.ann_to_rle), which differs from a polygon's own (shoelace) area by at most the pixels its
boundary crosses: :func:`area_tolerance` bounds that by twice the boundary length plus 4 pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pycocotools.mask as mask_util

# A polygon point may lie this many image sides outside the image (annotation tools draw a little
# past the border; pycocotools' rasterising time grows with the extent, so 1e8 would hang it).
POLYGON_MARGIN = 1.0
UINT32_LIMIT = 2**32  # rleFrString stores run lengths as C uint


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def compressed_run_totals(counts: Sequence[str | bytes]) -> np.ndarray:
    """int64 (n,): the sum of the run lengths of each compressed RLE ``counts`` string, decoded as
    pycocotools' ``rleFrString`` (maskApi.c) decodes it; -1 where the string is not a valid
    encoding: a character outside '0'..'o', a value cut off by the end of the string, a value of
    more than 6 characters (past C's 32-bit shifts), or a run length that is negative or does not
    fit a uint32 (C would wrap it).

    The encoding: a value is 1-6 characters c - 48, 5 bits each, least significant first; bit 0x20
    says another character follows, bit 0x10 of the last one is the sign. From the fourth value on
    (index m > 2), value m is stored as the difference to value m - 2."""
    n = len(counts)
    totals = np.full(n, -1, dtype=np.int64)
    valid = np.ones(n, dtype=bool)
    encoded = []
    for i, c in enumerate(counts):
        if isinstance(c, str):
            if not c.isascii():
                valid[i] = False
                c = ""
            encoded.append(c.encode("ascii"))
        elif isinstance(c, (bytes, bytearray)):
            encoded.append(bytes(c))
        else:
            valid[i] = False
            encoded.append(b"")
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=n)
    if not lengths.sum():
        totals[valid & (lengths == 0)] = 0
        return totals
    chars = np.frombuffer(b"".join(encoded), dtype=np.uint8).astype(np.int64) - 48
    string_of = np.repeat(np.arange(n), lengths)
    bad = (chars < 0) | (chars > 63)
    valid[string_of[bad]] = False
    chars[bad] = 0
    more = (chars & 0x20) != 0
    nonempty = np.flatnonzero(lengths > 0)
    last_char = (np.cumsum(lengths) - 1)[nonempty]
    valid[nonempty[more[last_char]]] = False  # the last value is cut off
    end = ~more
    end[last_char] = True  # values never run into the next string
    value_start = np.r_[0, np.flatnonzero(end)[:-1] + 1]
    value_of = np.cumsum(end) - end
    k = np.arange(len(chars)) - value_start[value_of]
    valid[string_of[k >= 6]] = False
    k = np.minimum(k, 5)
    value = np.add.reduceat((chars & 0x1F) << (5 * k), value_start)
    ends = np.flatnonzero(end)
    negative = (chars[ends] & 0x10) != 0
    value = np.where(negative, value - (np.int64(1) << (5 * (k[ends] + 1))), value)
    # the position m of each value in its string, and the run lengths: m > 2 adds value m - 2
    value_string = string_of[ends]
    per_string = np.bincount(value_string, minlength=n)
    first_value = np.cumsum(per_string) - per_string
    m = np.arange(len(value)) - first_value[value_string]
    group = value_string * 3 + np.where(m == 0, 0, 1 + m % 2)  # m = 0 alone; odd m; even m >= 2
    order = np.argsort(group, kind="stable")
    running = np.cumsum(value[order])
    starts = np.r_[0, np.flatnonzero(group[order][1:] != group[order][:-1]) + 1]
    before = np.repeat(running[starts] - value[order][starts], np.diff(np.r_[starts, len(order)]))
    runs = np.empty_like(value)
    runs[order] = running - before
    valid[value_string[(runs < 0) | (runs >= UINT32_LIMIT)]] = False
    summed = np.zeros(n, dtype=np.int64)
    np.add.at(summed, value_string, runs)
    totals[valid] = summed[valid]
    return totals


def _size_problem(size: Any) -> str | None:
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                       and v > 0 for v in size)):
        return f"RLE size must be [height, width], two positive integers, found {size!r}"
    return None


def rle_problems(segmentations: Sequence[dict[str, Any]]) -> list[str | None]:
    """For each RLE (``{"size": [h, w], "counts": ...}``, compressed or uncompressed) the reason it
    cannot be given to pycocotools, or None: a size that is not two positive integers, counts of
    the wrong type, or run lengths that do not add up to exactly h x w."""
    reasons: list[str | None] = [None] * len(segmentations)
    compressed, strings = [], []
    for i, seg in enumerate(segmentations):
        if not isinstance(seg, dict) or "counts" not in seg or "size" not in seg:
            reasons[i] = "RLE segmentation needs 'counts' and 'size' [h, w]"
            continue
        reasons[i] = _size_problem(seg["size"])
        if reasons[i]:
            continue
        counts = seg["counts"]
        if isinstance(counts, list):
            if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
                reasons[i] = "uncompressed RLE counts must be non-negative integers"
            elif sum(counts) != seg["size"][0] * seg["size"][1]:
                h, w = seg["size"]
                reasons[i] = (f"RLE run lengths add up to {sum(counts)} pixels, not height x width = {h} x {w} = "
                              f"{h * w}")
        elif isinstance(counts, (str, bytes)):
            compressed.append(i)
            strings.append(counts)
        else:
            reasons[i] = f"RLE counts must be a string (compressed) or a list of integers, found {type(counts).__name__}"
    totals = compressed_run_totals(strings)
    for i, total in zip(compressed, totals.tolist()):
        h, w = segmentations[i]["size"]
        if total < 0:
            reasons[i] = "RLE counts is not a valid compressed RLE string (pycocotools cannot decode it)"
        elif total != h * w:
            reasons[i] = f"RLE run lengths add up to {total} pixels, not height x width = {h} x {w} = {h * w}"
    return reasons


def polygon_problem(seg: Any, height: int | None = None, width: int | None = None) -> str | None:
    """Why a polygon segmentation (a list of parts, each [x1, y1, x2, y2, ...]) cannot be a mask, or
    None: no parts, a part with fewer than 3 points or an odd count, coordinates that are not finite
    numbers, a part of zero area, or (given the image size) a point more than an image side outside."""
    if not isinstance(seg, list):
        return f"segmentation must be polygons (a list of [x1, y1, x2, y2, ...]) or an RLE, found {seg!r:.60}"
    if not seg:
        return "segmentation is an empty polygon list"
    for poly in seg:
        if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
            return "segmentation polygons need >= 3 points (an even count >= 6 of coordinates) each"
        if not all(_is_number(v) for v in poly):
            return f"segmentation polygon coordinates must be numbers, found {poly[:6]!r}"
        coords = np.asarray(poly, dtype=float)
        if not np.isfinite(coords).all():
            return "segmentation polygon has non-finite coordinates"
        x, y = coords[0::2], coords[1::2]
        if abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) < 1e-9:  # shoelace
            return "segmentation polygon has zero area"
        if height is not None and width is not None:
            if (x.min() < -POLYGON_MARGIN * width or x.max() > (1 + POLYGON_MARGIN) * width
                    or y.min() < -POLYGON_MARGIN * height or y.max() > (1 + POLYGON_MARGIN) * height):
                return (f"segmentation polygon reaches ({x.min():.6g}..{x.max():.6g}, {y.min():.6g}..{y.max():.6g}), "
                        f"more than an image side outside the {width}x{height} image")
    return None


def polygon_area_bounds(seg: list[list[float]]) -> tuple[float, float, float]:
    """(lowest, highest, tolerance) of the rasterised area of a valid polygon segmentation: its
    parts' shoelace areas (the union lies between the largest part and their sum) and the
    boundary allowance of :func:`area_tolerance` from the parts' total perimeter."""
    areas, perimeter = [], 0.0
    for poly in seg:
        coords = np.asarray(poly, dtype=np.float64)
        x, y = coords[0::2], coords[1::2]
        areas.append(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
        perimeter += float(np.hypot(np.roll(x, -1) - x, np.roll(y, -1) - y).sum())
    return max(areas), sum(areas), area_tolerance(perimeter)


def area_tolerance(perimeter: float) -> float:
    """Pixels by which a rasterised mask's area may differ from its outline's area: every boundary
    pixel may fall either way, within sqrt(2)/2 of a boundary of that length on each side."""
    return 2.0 * perimeter + 4.0


def mask_area(seg: Any, height: int, width: int) -> float:
    """LVIS's area of a valid segmentation: pixels of its rasterised mask (polygons merged, as
    LVIS.ann_to_rle and pycocotools make it)."""
    if isinstance(seg, list):
        rle = mask_util.merge(mask_util.frPyObjects(seg, height, width))
    elif isinstance(seg["counts"], list):
        rle = mask_util.frPyObjects(seg, height, width)
    else:
        rle = seg
    return float(mask_util.area(rle))


def mask_polygons(seg: dict[str, Any], height: int, width: int) -> list[list[float]]:
    """The outer contours of a valid RLE mask as polygons (OpenCV, through the pixel centres as
    detectron2's GenericMask draws them; holes filled): the form detectron2's polygon mask targets
    take. A mask too thin for a contour of 3 points becomes its box."""
    import cv2

    rle = mask_util.frPyObjects(seg, height, width) if isinstance(seg["counts"], list) else seg
    mask = np.ascontiguousarray(mask_util.decode(rle).astype(np.uint8))
    contours = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[-2]
    polygons = [(c.reshape(-1).astype(np.float64) + 0.5).tolist() for c in contours if len(c) >= 3]
    if polygons:
        return polygons
    x, y, w, h = mask_box(rle)
    return box_polygon([x, y, max(w, 1.0), max(h, 1.0)])


def box_polygon(bbox: Sequence[float]) -> list[list[float]]:
    """The polygon LVISResults gives a box-only detection: [[x1, y1, x1, y2, x2, y2, x2, y1]]."""
    x1, y1, w, h = bbox
    x2, y2 = x1 + w, y1 + h
    return [[x1, y1, x1, y2, x2, y2, x2, y1]]


def mask_box(rle: dict[str, Any]) -> list[float]:
    """The box LVISResults gives a mask-only detection: pycocotools ``toBbox`` of its compressed RLE (XYWH)."""
    return [float(v) for v in mask_util.toBbox(rle)]
