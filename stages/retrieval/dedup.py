"""The unlabeled image list = the retrieved pool images without duplicates.

From the distinct pool images in ``neighbours.parquet``, in image-id order, remove

(a) ``labeled_duplicate``: the file's sha1 equals that of a labeled (train or val) image: leakage;
(b) ``exact_duplicate``: the sha1 equals that of another retrieved pool image; the lowest id stays;
(c) ``near_duplicate``: whole-image cosine above ``dedup.near_duplicate_cosine`` to any labeled image,
    or to a pool image kept before it (greedy in image-id order, so the lowest id of a group stays).

Outputs: ``unlabeled.json`` (the kept pool images' dicts as in pool.json, plus its ``categories``; no
annotations) and ``dedup_counts.json`` (``pool``, ``retrieved``, ``removed_labeled_duplicate``,
``removed_exact_duplicate``, ``removed_near_duplicate``, ``kept``).
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
import pandas as pd

from stages.retrieval.encoders import Embeddings

SEARCH_CHUNK = 4096  # queries per range search: bounds the memory of the result lists


def max_cosine_to(reference: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """For each query row, its largest inner product with a reference row (-inf without references)."""
    if len(reference) == 0 or len(queries) == 0:
        return np.full(len(queries), -np.inf, dtype=np.float32)
    index = faiss.IndexFlatIP(reference.shape[1])
    index.add(np.ascontiguousarray(reference, dtype=np.float32))
    scores, _ = index.search(np.ascontiguousarray(queries, dtype=np.float32), 1)
    return scores[:, 0]


def greedy_near_duplicates(vectors: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean keep-mask: row i is kept unless its cosine to a kept row j < i is above ``threshold``.

    Pairs above the threshold come from an exact Faiss range search (BLAS speed, memory bounded by
    the chunk size), so the greedy pass only walks those pairs instead of an n x n matrix.
    """
    n = len(vectors)
    keep = np.ones(n, dtype=bool)
    if n < 2:
        return keep
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    earlier_similar: list[np.ndarray] = []
    for start in range(0, n, SEARCH_CHUNK):
        lims, _, ids = index.range_search(vectors[start : start + SEARCH_CHUNK], float(threshold))
        for offset in range(len(lims) - 1):
            row = start + offset
            found = ids[lims[offset] : lims[offset + 1]]
            earlier_similar.append(found[found < row])
    for row in range(n):
        if len(earlier_similar[row]) and keep[earlier_similar[row]].any():
            keep[row] = False
    return keep


def select_unlabeled(
    retrieved_ids: np.ndarray,
    pool_sha1: np.ndarray,
    pool_vectors: np.ndarray,
    labeled_sha1: set[str],
    labeled_vectors: np.ndarray,
    near_duplicate_cosine: float,
) -> tuple[np.ndarray, dict[str, int]]:
    """(kept image ids in id order, removal counts) for the retrieved pool images.

    ``pool_sha1[i]`` and ``pool_vectors[i]`` describe ``retrieved_ids[i]``; ids must be distinct.
    """
    order = np.argsort(retrieved_ids, kind="stable")
    ids, sha1, vectors = np.asarray(retrieved_ids)[order], np.asarray(pool_sha1)[order], pool_vectors[order]
    if len(np.unique(ids)) != len(ids):
        raise ValueError("select_unlabeled: retrieved image ids must be distinct")

    labeled_copy = np.array([s in labeled_sha1 for s in sha1], dtype=bool)
    remaining = ~labeled_copy
    # ids are sorted, so the first occurrence of a hash among the remaining images has the lowest id
    exact_copy = np.zeros(len(ids), dtype=bool)
    exact_copy[remaining] = pd.Series(sha1[remaining]).duplicated(keep="first").to_numpy()
    remaining &= ~exact_copy

    near_copy = np.zeros(len(ids), dtype=bool)
    rows = np.flatnonzero(remaining)
    near_labeled = max_cosine_to(labeled_vectors, vectors[rows]) > near_duplicate_cosine
    near_copy[rows[near_labeled]] = True
    rows = rows[~near_labeled]
    near_copy[rows[~greedy_near_duplicates(vectors[rows], near_duplicate_cosine)]] = True
    remaining &= ~near_copy

    counts = {
        "retrieved": int(len(ids)),
        "removed_labeled_duplicate": int(labeled_copy.sum()),
        "removed_exact_duplicate": int(exact_copy.sum()),
        "removed_near_duplicate": int(near_copy.sum()),
        "kept": int(remaining.sum()),
    }
    return ids[remaining], counts


def dedup(
    neighbours: pd.DataFrame,
    pool_data: dict[str, Any],
    pool: Embeddings,
    labeled: list[Embeddings],
    near_duplicate_cosine: float,
) -> tuple[dict[str, Any], dict[str, int]]:
    """(the unlabeled images-only json, the counts json) from the retrieval result."""
    pool_images = {img["id"]: img for img in pool_data["images"]}
    retrieved_ids = np.unique(neighbours["pool_image_id"].to_numpy(np.int64))
    row_of = pd.Series(pool.index["row"].to_numpy(), index=pool.index["image_id"].to_numpy())
    unknown = [int(i) for i in retrieved_ids if i not in row_of.index or i not in pool_images]
    if unknown:
        raise ValueError(f"neighbours name pool images missing from the pool json or index: {unknown[:10]}")
    rows = row_of.loc[retrieved_ids].to_numpy()
    labeled_sha1 = {s for emb in labeled for s in emb.index["sha1"]}
    labeled_vectors = (
        np.concatenate([emb.vectors for emb in labeled])
        if labeled
        else np.zeros((0, pool.vectors.shape[1]), dtype=np.float32)
    )
    kept_ids, counts = select_unlabeled(
        retrieved_ids,
        pool.index["sha1"].to_numpy()[rows],
        pool.vectors[rows],
        labeled_sha1,
        labeled_vectors,
        near_duplicate_cosine,
    )
    if len(kept_ids) == 0:
        raise ValueError(
            f"dedup: no retrieved pool image survives deduplication ({counts}); the unlabeled list would be empty"
        )
    unlabeled = {"images": [pool_images[int(i)] for i in kept_ids], "categories": pool_data["categories"]}
    return unlabeled, {"pool": len(pool_data["images"]), **counts}
