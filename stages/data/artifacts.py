"""The pipeline's own artifacts, read and checked against their contracts (docs/design.md).

Every stage that reads one of these files reads it through this module, so a broken artifact stops
the reader with the file's name and the rule it breaks, instead of training on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stages.utils.readers import read_json, read_npy, read_parquet

ROW_SUM_TOLERANCE = 1e-4  # float32 rows of S' sum to 1 up to rounding


class ArtifactError(ValueError):
    """An artifact breaks its contract; the message names the file and the rule."""


def _finite_rows(array: np.ndarray, path: Path | str, what: str) -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        rows = np.unique(np.argwhere(bad)[:, 0])[:10].tolist()
        raise ArtifactError(f"{path}: {what} must be finite; NaN or inf in rows {rows}")


def read_similarity(path: Path | str, num_classes: int) -> np.ndarray:
    """S' of eq. (2): float (C, C), finite, entries in [0, 1], every row summing to 1."""
    matrix = read_npy(path)
    if matrix.shape != (num_classes, num_classes):
        raise ArtifactError(f"{path}: similarity must be ({num_classes}, {num_classes}) for {num_classes} "
                            f"categories, found shape {matrix.shape}")
    _finite_rows(matrix, path, "similarity")
    if matrix.min() < 0 or matrix.max() > 1:
        raise ArtifactError(f"{path}: similarity entries must lie in [0, 1], found [{matrix.min():.4g}, {matrix.max():.4g}]")
    sums = matrix.sum(axis=1, dtype=np.float64)
    off = np.flatnonzero(np.abs(sums - 1.0) > ROW_SUM_TOLERANCE)
    if off.size:
        raise ArtifactError(f"{path}: every similarity row must sum to 1; rows {off[:10].tolist()} sum to "
                            f"{np.round(sums[off[:10]], 4).tolist()}")
    return matrix


def read_prototypes(path: Path | str, num_classes: int) -> np.ndarray:
    """Eq. (1) prototypes: float (C, D), finite."""
    protos = read_npy(path)
    if protos.ndim != 2 or protos.shape[0] != num_classes:
        raise ArtifactError(f"{path}: prototypes must be (C, D) with C = {num_classes} categories, found {protos.shape}")
    _finite_rows(protos, path, "prototypes")
    return protos


def read_categories(path: Path | str) -> pd.DataFrame:
    """categories.parquet: index 0..C-1, category_id increasing, frequency r/c/f, instance_count >= 0."""
    frame = read_parquet(path)
    missing = [c for c in ("index", "category_id", "name", "frequency", "instance_count") if c not in frame.columns]
    if missing:
        raise ArtifactError(f"{path}: missing columns {missing}")
    if not np.array_equal(frame["index"].to_numpy(), np.arange(len(frame))):
        raise ArtifactError(f"{path}: column 'index' must be 0..{len(frame) - 1} in order")
    if not frame["category_id"].is_monotonic_increasing or frame["category_id"].duplicated().any():
        raise ArtifactError(f"{path}: category ids must be distinct and increasing (the category order)")
    if (frame["instance_count"] < 0).any():
        raise ArtifactError(f"{path}: instance_count must be >= 0")
    return frame


CCECE_COLUMNS = ("category_id", "name", "frequency", "n_detections", "accuracy", "confidence", "ccece", "ccece_se",
                 "delta")


def read_ccece(path: Path | str, category_ids: list[int]) -> pd.DataFrame:
    """ccece.parquet: the contract's columns, one row per category of ``category_ids`` (in that order),
    ``ccece`` and ``delta`` finite in [-1, 1], ``ccece_se`` finite and >= 0 wherever the class has
    judged detections."""
    frame = read_parquet(path)
    missing = [c for c in CCECE_COLUMNS if c not in frame.columns]
    if missing:
        raise ArtifactError(f"{path}: missing columns {missing}")
    ids = list(category_ids)
    if frame["category_id"].duplicated().any():
        raise ArtifactError(f"{path}: more than one row for categories "
                            f"{frame.loc[frame['category_id'].duplicated(), 'category_id'].tolist()[:10]}")
    absent = sorted(set(ids) - set(frame["category_id"]))
    if absent:
        raise ArtifactError(f"{path}: no row for categories {absent[:10]}")
    frame = frame.set_index("category_id").loc[ids].reset_index()
    for column in ("ccece", "delta"):
        values = frame[column].to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            bad = frame.loc[~np.isfinite(values), "category_id"].tolist()
            raise ArtifactError(f"{path}: {column} must be finite; NaN or inf for categories {bad[:10]}")
        if np.abs(values).max(initial=0.0) > 1:
            raise ArtifactError(f"{path}: {column} is a difference of probabilities and must lie in [-1, 1]")
    se = frame.loc[frame["n_detections"] > 0, "ccece_se"].to_numpy(dtype=np.float64)
    if not (np.isfinite(se).all() and (se >= 0).all()):
        raise ArtifactError(f"{path}: ccece_se must be finite and >= 0 for every class with judged detections")
    return frame


def read_delta(path: Path | str, categories: list[dict[str, Any]]) -> np.ndarray:
    """The Delta vector of eq. (5) (the ``delta`` column), float32 in category order."""
    return read_ccece(path, [c["id"] for c in categories])["delta"].to_numpy(dtype=np.float32)


def read_manifest(path: Path | str, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """A target's manifest (written by the workflow's ``manifest`` rule): a json list of records,
    each with at least ``keys``. Grid points travel as these structured values, never as strings
    parsed back. Raises ArtifactError naming the file, the record and the missing key."""
    records = read_json(path)  # a named error for a file that is not json
    if not isinstance(records, list) or not records:
        raise ArtifactError(f"{path}: a manifest is a non-empty json list of records")
    for i, record in enumerate(records):
        missing = [k for k in keys if not isinstance(record, dict) or k not in record]
        if missing:
            raise ArtifactError(f"{path}: record {i} lacks {missing} (every record needs {list(keys)})")
    return records


DEDUP_DECISIONS = ("kept", "labeled_duplicate", "exact_duplicate", "near_duplicate")
DEDUP_DECISION_COLUMNS = ("image_id", "decision", "duplicate_of", "duplicate_of_set", "duplicate_of_file", "cosine")


def read_dedup_decisions(path: Path | str, unlabeled_ids: list[int] | None = None) -> pd.DataFrame:
    """dedup_decisions.parquet (stages.retrieval.dedup): DEDUP_DECISION_COLUMNS, one row per retrieved
    pool image (distinct ``image_id``), ``decision`` one of DEDUP_DECISIONS, ``duplicate_of`` -1 exactly
    when kept, ``cosine`` in [-1, 1] (up to rounding) wherever ``duplicate_of`` names an image. With
    ``unlabeled_ids`` (unlabeled.json's images), the kept images are exactly those."""
    frame = read_parquet(path)
    missing = [c for c in DEDUP_DECISION_COLUMNS if c not in frame.columns]
    if missing:
        raise ArtifactError(f"{path}: missing columns {missing}")
    if frame["image_id"].duplicated().any():
        raise ArtifactError(f"{path}: more than one row for images "
                            f"{frame.loc[frame['image_id'].duplicated(), 'image_id'].tolist()[:10]}")
    unknown = sorted(set(frame["decision"]) - set(DEDUP_DECISIONS))
    if unknown:
        raise ArtifactError(f"{path}: decision must be one of {list(DEDUP_DECISIONS)}, found {unknown[:10]}")
    kept = frame["decision"] == "kept"
    named = frame["duplicate_of"] >= 0
    if (kept & named).any():
        raise ArtifactError(f"{path}: kept images name no duplicate_of; images {frame.loc[kept & named, 'image_id'].tolist()[:10]}")
    cosine = frame.loc[named, "cosine"].to_numpy(dtype=np.float64)
    if not (np.isfinite(cosine).all() and (np.abs(cosine) <= 1 + 1e-4).all()):
        raise ArtifactError(f"{path}: cosine must be finite in [-1, 1] wherever duplicate_of names an image")
    if unlabeled_ids is not None and set(frame.loc[kept, "image_id"]) != set(unlabeled_ids):
        extra = sorted(set(frame.loc[kept, "image_id"]) ^ set(unlabeled_ids))
        raise ArtifactError(f"{path}: the kept images are not unlabeled.json's images (differ in {extra[:10]})")
    return frame
