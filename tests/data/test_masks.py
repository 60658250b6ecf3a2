"""Mask checks before pycocotools (stages.data.masks): the RLE run-length decoder against a plain
decoder written here from maskApi.c's rleFrString and against pycocotools' own encoder, polygon
extents, the area tolerance against pycocotools' rasterisation, and RLE -> polygon contours."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_util
import pytest

from stages.data.masks import (
    area_tolerance,
    compressed_run_totals,
    mask_area,
    mask_polygons,
    polygon_area_bounds,
    polygon_problem,
    rle_problems,
)


def reference_runs(counts: bytes) -> list[int] | None:
    """maskApi.c rleFrString, line for line, with C's types: the run lengths as uint32, or None where
    C would read past the string (a value cut off) or overflow its int shifts (more than 6 chars)."""
    runs: list[int] = []
    p = 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            if p >= len(counts) or k >= 6:
                return None
            c = counts[p] - 48
            x |= (c & 0x1F) << 5 * k
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << 5 * k
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x & 0xFFFFFFFF if x >= 0 else None)  # a negative run: C's uint wraps it
        if runs[-1] is None:
            return None
    return runs


def test_totals_of_pycocotools_encodings_are_height_times_width() -> None:
    rng = np.random.default_rng(0)
    counts, expected = [], []
    for t in range(200):
        h, w = (int(v) for v in rng.integers(1, 200, 2))
        mask = (rng.random((h, w)) < rng.random()).astype(np.uint8) if t % 3 else np.zeros((h, w), np.uint8)
        rle = mask_util.encode(np.asfortranarray(mask))
        counts.append(rle["counts"] if t % 2 else rle["counts"].decode())
        expected.append(h * w)
    np.testing.assert_array_equal(compressed_run_totals(counts), expected)


def test_totals_of_random_strings_follow_rlefrstring() -> None:
    rng = np.random.default_rng(1)
    strings = [bytes(rng.integers(48, 112, size=int(rng.integers(0, 12))).astype(np.uint8)) for _ in range(3000)]
    strings += [b"", b"0", b"1", b"P", b"0P8", b"garbage~~", "caf\u00e9".encode(), b"\x00\x01"]
    totals = compressed_run_totals(strings)
    accepted = 0
    for s, total in zip(strings, totals.tolist()):
        runs = reference_runs(s) if all(48 <= b < 112 for b in s) else None
        if runs is None:
            assert total == -1, s
        else:
            assert total == sum(runs), s
            accepted += 1
            if 0 < total < 10**6:  # pycocotools decodes what we accept, to that many pixels
                assert mask_util.decode({"size": [1, total], "counts": s}).size == total
    assert 100 < accepted < len(strings) - 100  # both sides are exercised


def test_rle_problems_name_what_would_hang_pycocotools() -> None:
    ones = mask_util.encode(np.ones((20, 31), dtype=np.uint8, order="F"))["counts"].decode()
    good = mask_util.encode(np.ones((16, 16), dtype=np.uint8, order="F"))["counts"].decode()
    reasons = rle_problems([{"size": [16, 16], "counts": ones}, {"size": [16, 16], "counts": good},
                            {"size": [16, 16], "counts": [10, 300]}, {"size": [16, 16], "counts": [0, 256]},
                            {"size": [16, 16], "counts": "garbage~~"}, {"size": [16, 16.0], "counts": good},
                            {"size": [16, 16], "counts": [1, -1, 256]}, {"counts": good}])
    assert reasons == [
        "RLE run lengths add up to 620 pixels, not height x width = 16 x 16 = 256", None,
        "RLE run lengths add up to 310 pixels, not height x width = 16 x 16 = 256", None,
        "RLE counts is not a valid compressed RLE string (pycocotools cannot decode it)",
        "RLE size must be [height, width], two positive integers, found [16, 16.0]",
        "uncompressed RLE counts must be non-negative integers",
        "RLE segmentation needs 'counts' and 'size' [h, w]"]


def test_polygons_far_outside_their_image_are_refused() -> None:
    # pycocotools rasterises a polygon over its whole extent: 1e8 takes hours
    assert polygon_problem([[0, 0, 1e8, 0, 1e8, 1e8]], 16, 16).startswith("segmentation polygon reaches")
    assert polygon_problem([[-3, -3, 19, -3, 19, 19]], 16, 16) is None  # a little past the border is fine
    assert polygon_problem([[0, 0, 4, 4]], 16, 16).startswith("segmentation polygons need >= 3 points")
    assert polygon_problem("x").startswith("segmentation must be polygons")


def test_the_area_tolerance_holds_for_rasterised_polygons() -> None:
    """The rasterised area (LVIS's) of random polygons -- thin, small, many-sided, several parts -- lies
    within the bounds the validator allows, and an area off by the box's corners does not."""
    rng = np.random.default_rng(2)
    for _ in range(400):
        h, w = 120, 160
        parts = []
        for _ in range(int(rng.integers(1, 3))):
            n = int(rng.integers(3, 12))
            cx, cy = rng.uniform(10, w - 10), rng.uniform(10, h - 10)
            radius = rng.uniform(0.5, 40, size=n) * rng.uniform(0.2, 1.0, size=n)
            angle = np.sort(rng.uniform(0, 2 * np.pi, size=n))
            parts.append(np.column_stack([cx + radius * np.cos(angle), cy + radius * np.sin(angle)]).ravel().tolist())
        if polygon_problem(parts, h, w):
            continue
        low, high, tol = polygon_area_bounds(parts)
        assert low - tol <= mask_area(parts, h, w) <= high + tol
    circle = np.column_stack([80 + 50 * np.cos(t := np.linspace(0, 2 * np.pi, 64, endpoint=False)),
                              60 + 50 * np.sin(t)]).ravel().tolist()
    low, high, tol = polygon_area_bounds([circle])
    assert not low - tol <= 100 * 100 <= high + tol  # the box's area given as the circle's: refused
    assert area_tolerance(0) == 4


def test_rle_masks_become_contour_polygons_for_the_trainer() -> None:
    yy, xx = np.mgrid[:64, :80]
    disk = ((yy - 30) ** 2 + (xx - 40) ** 2 < 20**2).astype(np.uint8)
    ring = disk.copy()
    ring[(yy - 30) ** 2 + (xx - 40) ** 2 < 8**2] = 0
    for mask, filled in ((disk, disk), (ring, disk)):  # holes are filled
        rle = mask_util.encode(np.asfortranarray(mask))
        back = mask_util.decode(mask_util.merge(mask_util.frPyObjects(mask_polygons(rle, 64, 80), 64, 80)))
        assert (back & filled).sum() / (back | filled).sum() > 0.9
    pixel = np.zeros((64, 80), dtype=np.uint8)
    pixel[5, 7] = 1  # too small for a contour: its box
    polygons = mask_polygons(mask_util.encode(np.asfortranarray(pixel)), 64, 80)
    assert polygons == [[7.0, 5.0, 7.0, 6.0, 8.0, 6.0, 8.0, 5.0]]


@pytest.mark.parametrize("size", [(1, 1), (3, 500)])
def test_tiny_and_thin_masks(size) -> None:
    mask = np.ones(size, dtype=np.uint8, order="F")
    rle = mask_util.encode(mask)
    assert rle_problems([rle]) == [None]
    assert compressed_run_totals([rle["counts"]]).tolist() == [size[0] * size[1]]
