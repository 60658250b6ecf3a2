"""Every artifact contract, each with a broken artifact: the reading stage stops naming the file and
the rule it breaks, before any work is done on it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from stages.data.artifacts import ArtifactError, read_categories, read_ccece, read_prototypes, read_similarity
from stages.data.detections import DetectionsError, read_detections, results_frame
from stages.retrieval.encoders import load_embeddings
from stages.utils.atomic import write_parquet
from tests.conftest import REPO, tiny_config, write_ccece

pytestmark = pytest.mark.fault_injection


def _similarity(path: Path, matrix: np.ndarray) -> Path:
    np.save(path, matrix.astype(np.float32))
    return path


@pytest.mark.parametrize("defect, match", [
    ("nan", r"similarity must be finite; NaN or inf in rows \[1\]"),
    ("negative", r"entries must lie in \[0, 1\]"),
    ("rows", r"every similarity row must sum to 1; rows \[2\]"),
    ("shape", r"must be \(3, 3\) for 3 categories, found shape \(3, 4\)"),
])  # fmt: skip
def test_similarity_contract(tmp_path: Path, defect: str, match: str) -> None:
    good = np.full((3, 3), 1 / 3)
    assert read_similarity(_similarity(tmp_path / "ok.npy", good), 3).shape == (3, 3)
    broken = good.copy()
    if defect == "nan":
        broken[1, 2] = np.nan
    elif defect == "negative":
        broken[0] = [1.2, -0.1, -0.1]
    elif defect == "rows":
        broken[2] = [0.5, 0.5, 0.5]
    else:
        broken = np.full((3, 4), 0.25)
    path = _similarity(tmp_path / "similarity.npy", broken)
    with pytest.raises(ArtifactError, match=match) as err:
        read_similarity(path, 3)
    assert str(path) in str(err.value)


def test_prototypes_contract(tmp_path: Path) -> None:
    np.save(tmp_path / "p.npy", np.ones((4, 8), dtype=np.float32))
    assert read_prototypes(tmp_path / "p.npy", 4).shape == (4, 8)
    with pytest.raises(ArtifactError, match=r"p\.npy: prototypes must be \(C, D\) with C = 5"):
        read_prototypes(tmp_path / "p.npy", 5)
    bad = np.ones((4, 8), dtype=np.float32)
    bad[3, 0] = np.inf
    np.save(tmp_path / "q.npy", bad)
    with pytest.raises(ArtifactError, match=r"q\.npy: prototypes must be finite; NaN or inf in rows \[3\]"):
        read_prototypes(tmp_path / "q.npy", 4)


def test_categories_contract(tmp_path: Path) -> None:
    frame = pd.DataFrame({"index": [0, 1], "category_id": [3, 2], "name": ["a", "b"], "frequency": ["r", "f"],
                          "instance_count": [1, 5]})
    frame.to_parquet(tmp_path / "c.parquet")
    with pytest.raises(ArtifactError, match="c.parquet: category ids must be distinct and increasing"):
        read_categories(tmp_path / "c.parquet")


CATEGORIES = [{"id": 1, "name": "a", "frequency": "r"}, {"id": 2, "name": "b", "frequency": "f"}]


@pytest.mark.parametrize("defect, match", [
    ("column", r"missing columns \['delta'\]"),
    ("nan", r"ccece must be finite; NaN or inf for categories \[2\]"),
    ("range", r"delta is a difference of probabilities and must lie in \[-1, 1\]"),
    ("missing", r"no row for categories \[2\]"),
    ("twice", r"more than one row for categories \[1\]"),
    ("se", r"ccece_se must be finite and >= 0 for every class with judged detections"),
])  # fmt: skip
def test_ccece_contract(tmp_path: Path, defect: str, match: str) -> None:
    path = write_ccece(tmp_path / "ccece.parquet", CATEGORIES, [0.1, -0.2])
    assert read_ccece(path, [1, 2])["delta"].tolist() == pytest.approx([0.1, -0.2])
    frame = pd.read_parquet(path)
    if defect == "column":
        frame = frame.drop(columns=["delta"])
    elif defect == "nan":
        frame.loc[1, "ccece"] = np.nan
    elif defect == "range":
        frame.loc[0, "delta"] = 1.5
    elif defect == "missing":
        frame = frame.iloc[:1]
    elif defect == "twice":
        frame = pd.concat([frame, frame.iloc[:1]])
    else:
        frame.loc[0, "n_detections"] = 3  # judged detections, but no standard error
    frame.to_parquet(path)
    with pytest.raises(ArtifactError, match=match) as err:
        read_ccece(path, [1, 2])
    assert str(path) in str(err.value)


def test_embeddings_contract(tmp_path: Path) -> None:
    vectors = np.eye(3, dtype=np.float32) * 2.0  # not unit length
    np.save(tmp_path / "e.npy", vectors)
    write_parquet(pd.DataFrame({"row": np.arange(3)}), tmp_path / "e.parquet")
    with pytest.raises(ValueError, match=r"e\.npy: rows are not unit length"):
        load_embeddings(tmp_path / "e.npy", tmp_path / "e.parquet")


@pytest.mark.parametrize("suffix", [".json", ".parquet"])
@pytest.mark.parametrize("defect, match", [
    ("nan_score", r"detection #1 \(image 7\): score nan is not a probability in \[0, 1\]"),
    ("big_score", r"detection #1 \(image 7\): score 1.5 is not a probability in \[0, 1\]"),
    ("nan_box", r"detection #0 \(image 7\): bbox \[1.0, 2.0, inf, 4.0\] is non-finite or has a negative side"),
])  # fmt: skip
def test_detections_contract(tmp_path: Path, suffix: str, defect: str, match: str) -> None:
    dets = [{"image_id": 7, "category_id": 1, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5},
            {"image_id": 7, "category_id": 2, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.25}]
    if defect == "nan_score":
        dets[1]["score"] = float("nan")
    elif defect == "big_score":
        dets[1]["score"] = 1.5
    else:
        dets[0]["bbox"][2] = float("inf")
    path = tmp_path / f"detections{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(dets))
    else:
        write_parquet(results_frame(dets), path)
    with pytest.raises(DetectionsError, match=match) as err:
        read_detections(path)
    assert str(path) in str(err.value)


def test_a_nan_in_similarity_stops_the_teacher_before_training(tiny_minilvis: Path, tmp_path: Path) -> None:
    """Before: one NaN cell trained 13 iterations and stopped with 'non-finite loss', naming no file."""
    num_classes = len(json.loads((tiny_minilvis / "train.json").read_text())["categories"])
    matrix = np.full((num_classes, num_classes), 1 / num_classes)
    matrix[2, 4] = np.nan
    path = _similarity(tmp_path / "similarity.npy", matrix)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tmp_path / "results")))
    done = subprocess.run([sys.executable, "-m", "stages.cli.train_teacher", "--config", str(cfg), "--train-json",
                           str(tiny_minilvis / "train.json"), "--image-root", str(tiny_minilvis / "images"),
                           "--similarity", str(path), "--out", str(tmp_path / "t.pth"), "--checkpoint-dir",
                           str(tmp_path / "ckpt")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert f"{path}: similarity must be finite; NaN or inf in rows [2]" in done.stderr
    assert "iter:" not in done.stderr + done.stdout  # stopped before the first iteration
