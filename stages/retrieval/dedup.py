"""The unlabeled image list = the retrieved pool images without duplicates.

From the distinct pool images in ``neighbours.parquet``, in image-id order, remove

(a) ``labeled_duplicate``: the file's sha1 equals that of a labeled (train or val) image: leakage;
(b) ``exact_duplicate``: the sha1 equals that of another retrieved pool image; the lowest id stays;
(c) ``near_duplicate``: whole-image cosine above ``dedup.near_duplicate_cosine`` to any labeled image,
    or to a pool image kept before it (greedy in image-id order, so the lowest id of a group stays).

Outputs: ``unlabeled.json`` (the kept pool images' dicts as in pool.json, plus its ``categories``; no
annotations), ``dedup_counts.json`` (``pool``, ``retrieved``, ``removed_labeled_duplicate``,
``removed_exact_duplicate``, ``removed_near_duplicate``, ``kept``) and ``dedup_decisions.parquet``: one
row per retrieved image with what happened to it and why (DEDUP_DECISION_COLUMNS; contract in
stages.data.artifacts.read_dedup_decisions):

* ``image_id``, ``decision`` (``kept`` or one of the three reasons above);
* ``duplicate_of``: the image it copies (-1 when kept): for a labeled duplicate the first labeled image
  with that sha1, for an exact duplicate the lowest pool id with it, for a near duplicate the labeled
  or earlier kept pool image with the highest cosine;
* ``duplicate_of_set``: ``pool``, or the stem of the labeled embeddings file it was found in
  (``images_train``, ``images_val``); ``duplicate_of_file``: that image's ``file_name`` in its
  embeddings index ("" when unknown or kept);
* ``cosine``: the whole-image cosine of the two (NaN when kept).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd

from stages.data.artifacts import DEDUP_DECISION_COLUMNS
from stages.retrieval.encoders import Embeddings

SEARCH_CHUNK = 4096  # queries per range search: bounds the memory of the result lists


def nearest_to(reference: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, (its largest inner product with a reference row, that row); (-inf, -1)
    without references."""
    if len(reference) == 0 or len(queries) == 0:
        return np.full(len(queries), -np.inf, dtype=np.float32), np.full(len(queries), -1, dtype=np.int64)
    index = faiss.IndexFlatIP(reference.shape[1])
    index.add(np.ascontiguousarray(reference, dtype=np.float32))
    scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), 1)
    return scores[:, 0], rows[:, 0].astype(np.int64)


def max_cosine_to(reference: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """For each query row, its largest inner product with a reference row (-inf without references)."""
    return nearest_to(reference, queries)[0]


def greedy_near_duplicate_of(vectors: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keep-mask, the row each dropped row duplicates (-1 when kept), that cosine (NaN when kept)).

    Row i is kept unless its cosine to a kept row j < i is above ``threshold``; a dropped row names
    the kept earlier row of highest cosine. Pairs above the threshold come from an exact Faiss range
    search (BLAS speed, memory bounded by the chunk size), so the greedy pass only walks those pairs
    instead of an n x n matrix.
    """
    n = len(vectors)
    keep = np.ones(n, dtype=bool)
    of = np.full(n, -1, dtype=np.int64)
    cosine = np.full(n, np.nan, dtype=np.float32)
    if n < 2:
        return keep, of, cosine
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    earlier_similar: list[tuple[np.ndarray, np.ndarray]] = []
    for start in range(0, n, SEARCH_CHUNK):
        lims, scores, ids = index.range_search(vectors[start : start + SEARCH_CHUNK], float(threshold))
        for offset in range(len(lims) - 1):
            row = start + offset
            found, found_scores = ids[lims[offset] : lims[offset + 1]], scores[lims[offset] : lims[offset + 1]]
            earlier = found < row
            earlier_similar.append((found[earlier], found_scores[earlier]))
    for row in range(n):
        found, found_scores = earlier_similar[row]
        kept = keep[found]
        if kept.any():
            best = int(np.argmax(np.where(kept, found_scores, -np.inf)))
            keep[row], of[row], cosine[row] = False, found[best], found_scores[best]
    return keep, of, cosine


def greedy_near_duplicates(vectors: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean keep-mask: row i is kept unless its cosine to a kept row j < i is above ``threshold``
    (:func:`greedy_near_duplicate_of`)."""
    return greedy_near_duplicate_of(vectors, threshold)[0]


def labeled_reference(labeled: list[Embeddings], dim: int) -> tuple[np.ndarray, pd.DataFrame]:
    """The labeled images' vectors stacked, and per row: ``image_id``, ``set`` (the embeddings file's
    stem), ``file_name`` ("" when the index has none), ``sha1``."""
    if not labeled:
        return np.zeros((0, dim), dtype=np.float32), pd.DataFrame(columns=["image_id", "set", "file_name", "sha1"])
    vectors = np.concatenate([emb.vectors for emb in labeled])
    rows = pd.concat([pd.DataFrame({
        "image_id": emb.index["image_id"].to_numpy(np.int64),
        "set": Path(emb.source).stem,
        "file_name": emb.index["file_name"].astype(str) if "file_name" in emb.index else "",
        "sha1": emb.index["sha1"].astype(str),
    }) for emb in labeled], ignore_index=True)  # fmt: skip
    return vectors, rows


def select_unlabeled(
    retrieved_ids: np.ndarray,
    pool_sha1: np.ndarray,
    pool_vectors: np.ndarray,
    labeled_sha1: set[str],
    labeled_vectors: np.ndarray,
    near_duplicate_cosine: float,
    pool_files: np.ndarray | None = None,
    labeled_rows: pd.DataFrame | None = None,
) -> tuple[np.ndarray, dict[str, int], pd.DataFrame]:
    """(kept image ids in id order, removal counts, the decisions table) for the retrieved pool images.

    ``pool_sha1[i]``, ``pool_vectors[i]`` (and ``pool_files[i]``) describe ``retrieved_ids[i]``; ids must
    be distinct. ``labeled_rows`` describes ``labeled_vectors`` row by row (:func:`labeled_reference`);
    without it a duplicate's labeled image is not named (``duplicate_of`` -1). The decisions table has
    DEDUP_DECISION_COLUMNS, one row per retrieved image in id order (module docstring).
    """
    order = np.argsort(retrieved_ids, kind="stable")
    ids, sha1, vectors = np.asarray(retrieved_ids)[order], np.asarray(pool_sha1)[order], pool_vectors[order]
    files = np.asarray(pool_files if pool_files is not None else [""] * len(ids), dtype=object)[order]
    if len(np.unique(ids)) != len(ids):
        raise ValueError("select_unlabeled: retrieved image ids must be distinct")
    decision = np.full(len(ids), "kept", dtype=object)
    of = np.full(len(ids), -1, dtype=np.int64)
    of_set = np.full(len(ids), "", dtype=object)
    of_file = np.full(len(ids), "", dtype=object)
    cosine = np.full(len(ids), np.nan, dtype=np.float32)

    def name_labeled(rows_here: np.ndarray, labeled_row: np.ndarray) -> None:
        if labeled_rows is None or not len(rows_here):
            return
        found = labeled_row >= 0
        rows_here, labeled_row = rows_here[found], labeled_row[found]
        of[rows_here] = labeled_rows["image_id"].to_numpy()[labeled_row]
        of_set[rows_here] = labeled_rows["set"].to_numpy()[labeled_row]
        of_file[rows_here] = labeled_rows["file_name"].to_numpy()[labeled_row]
        cosine[rows_here] = np.einsum("ij,ij->i", vectors[rows_here], labeled_vectors[labeled_row])

    labeled_copy = np.array([s in labeled_sha1 for s in sha1], dtype=bool)
    decision[labeled_copy] = "labeled_duplicate"
    if labeled_rows is not None:
        first_row = pd.Series(np.arange(len(labeled_rows)), index=labeled_rows["sha1"].to_numpy())
        first_row = first_row[~first_row.index.duplicated()]
        rows = np.flatnonzero(labeled_copy)
        name_labeled(rows, first_row.reindex(sha1[rows]).fillna(-1).to_numpy(np.int64))
    remaining = ~labeled_copy
    # ids are sorted, so the first occurrence of a hash among the remaining images has the lowest id
    exact_copy = np.zeros(len(ids), dtype=bool)
    exact_copy[remaining] = pd.Series(sha1[remaining]).duplicated(keep="first").to_numpy()
    decision[exact_copy] = "exact_duplicate"
    first_pool = pd.Series(np.flatnonzero(remaining), index=sha1[remaining]).groupby(level=0).first()
    rows = np.flatnonzero(exact_copy)
    original = first_pool.loc[sha1[rows]].to_numpy(np.int64) if len(rows) else np.zeros(0, dtype=np.int64)
    of[rows], of_set[rows], of_file[rows] = ids[original], "pool", files[original]
    cosine[rows] = np.einsum("ij,ij->i", vectors[rows], vectors[original])
    remaining &= ~exact_copy

    near_copy = np.zeros(len(ids), dtype=bool)
    rows = np.flatnonzero(remaining)
    nearest_cosine, nearest_row = nearest_to(labeled_vectors, vectors[rows])
    near_labeled = nearest_cosine > near_duplicate_cosine
    near_copy[rows[near_labeled]] = True
    name_labeled(rows[near_labeled], nearest_row[near_labeled])
    rows = rows[~near_labeled]
    keep, of_row, of_cosine = greedy_near_duplicate_of(vectors[rows], near_duplicate_cosine)
    dropped, original = rows[~keep], rows[of_row[~keep]]
    near_copy[dropped] = True
    of[dropped], of_set[dropped], of_file[dropped], cosine[dropped] = ids[original], "pool", files[original], of_cosine[~keep]
    decision[near_copy] = "near_duplicate"
    remaining &= ~near_copy

    counts = {
        "retrieved": int(len(ids)),
        "removed_labeled_duplicate": int(labeled_copy.sum()),
        "removed_exact_duplicate": int(exact_copy.sum()),
        "removed_near_duplicate": int(near_copy.sum()),
        "kept": int(remaining.sum()),
    }
    decisions = pd.DataFrame({"image_id": ids.astype(np.int64), "decision": pd.Series(decision, dtype=str),
                              "duplicate_of": of, "duplicate_of_set": pd.Series(of_set, dtype=str),
                              "duplicate_of_file": pd.Series(of_file, dtype=str), "cosine": cosine})  # fmt: skip
    return ids[remaining], counts, decisions[list(DEDUP_DECISION_COLUMNS)]


def dedup(
    neighbours: pd.DataFrame,
    pool_data: dict[str, Any],
    pool: Embeddings,
    labeled: list[Embeddings],
    near_duplicate_cosine: float,
) -> tuple[dict[str, Any], dict[str, int], pd.DataFrame]:
    """(the unlabeled images-only json, the counts json, the decisions table) from the retrieval result."""
    pool_images = {img["id"]: img for img in pool_data["images"]}
    retrieved_ids = np.unique(neighbours["pool_image_id"].to_numpy(np.int64))
    row_of = pd.Series(pool.index["row"].to_numpy(), index=pool.index["image_id"].to_numpy())
    unknown = [int(i) for i in retrieved_ids if i not in row_of.index or i not in pool_images]
    if unknown:
        raise ValueError(f"neighbours name pool images missing from the pool json or index: {unknown[:10]}")
    rows = row_of.loc[retrieved_ids].to_numpy()
    labeled_vectors, labeled_rows = labeled_reference(labeled, pool.vectors.shape[1])
    pool_files = pool.index["file_name"].astype(str).to_numpy()[rows] if "file_name" in pool.index else None
    kept_ids, counts, decisions = select_unlabeled(
        retrieved_ids,
        pool.index["sha1"].to_numpy()[rows],
        pool.vectors[rows],
        set(labeled_rows["sha1"]),
        labeled_vectors,
        near_duplicate_cosine,
        pool_files,
        labeled_rows,
    )
    if len(kept_ids) == 0:
        raise ValueError(
            f"dedup: no retrieved pool image survives deduplication ({counts}); the unlabeled list would be empty"
        )
    unlabeled = {"images": [pool_images[int(i)] for i in kept_ids], "categories": pool_data["categories"]}
    return unlabeled, {"pool": len(pool_data["images"]), **counts}, decisions
