"""Fixtures shared by the evaluator tests (the fast evaluator and AP-Fixed / AP-Pool)."""

from __future__ import annotations

import json

import pytest

from tests.evaluation.test_fast_lvis_eval import make_dets, make_gt


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """gt dict, its json path and detections per seed (with negatives, not-exhaustive classes, coarse
    scores with ties, classes without instances and classes nobody detects), built once per module."""
    out = {}
    root = tmp_path_factory.mktemp("lvis_eval_data")
    for seed in (0, 1, 2, 3):
        gt = make_gt(seed)
        path = root / f"gt{seed}.json"
        path.write_text(json.dumps(gt))
        out[seed] = (gt, path, make_dets(gt, seed, crowded=4))
    return out
