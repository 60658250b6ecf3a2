"""k nearest pool images of every query crop (Faiss, inner product on unit vectors = cosine).

Index kinds (``retrieve.index``):

* ``flat``: exact search (IndexFlatIP). The right choice for a few thousand queries (docs/design.md).
* ``ivfpq``: IndexIVFPQ (flat inner-product coarse quantiser, ``nlist`` lists, ``pq_m`` 8-bit
  sub-quantisers), trained on a seeded sample of the database; ``nprobe`` lists are visited, and
  with ``refine_factor`` r > 1 the top r * k candidates are re-ranked exactly.
* ``ivfflat``: IndexIVFFlat (``nlist`` lists of exact vectors, ``nprobe`` visited).
* ``hnsw``: IndexHNSWFlat with METRIC_INNER_PRODUCT (M = 32, efSearch >= max(k, 128)).
* ``auto``: exact search while its predicted time (queries x pool x dim at the throughput
  benchmarks/retrieval.md measured) stays under ``retrieve.auto_exact_seconds``, above that the
  index the benchmark's recall/throughput frontier put first (``AUTO_APPROXIMATE``). The choice and
  its reason go to the log and to ``neighbours.parquet``'s metadata.

``retrieve.use_gpu: true`` moves the index to all GPUs (``gpu_shard``: split the database over them, or
replicate it), and fails loudly when faiss has no GPU; false keeps it on the CPU whatever is installed.

Output ``neighbours.parquet``: ``query_row``, ``annotation_id``, ``category_id``, ``rank`` (0 = most
similar), ``pool_row``, ``pool_image_id``, ``score`` (cosine).
"""

from __future__ import annotations

import sys
from typing import Any

import faiss
import numpy as np
import pandas as pd

HNSW_M = 32  # graph degree; Faiss's usual default for float vectors

HNSW_EF_SEARCH = 128  # search beam; raised to k when k is larger

IVF_MIN_POINTS_PER_LIST = 39  # Faiss warns below this many training points per centroid

PQ_BITS = 8

TRAIN_POINTS_PER_LIST = 256  # Faiss's upper guideline; more training points add time, not recall


# Exact inner-product search throughput of IndexFlatIP per thread, in multiply-adds per second:
# 1,000,000 x 2,000 x 384 in 8.31 s on 2 threads (benchmarks/retrieval.md, faiss section). Used only
# to predict whether exact search is fast enough; a faster machine merely keeps exact search longer.
EXACT_MADDS_PER_THREAD_SECOND = 4.6e10

# Above the exact-search budget: IVF-PQ with exact re-ranking, the only kind above recall@64 0.95 on
# both benchmark sets (benchmarks/retrieval.md): 0.999 on the clustered mixture, 0.961 at 16.7x exact
# on the manifold. HNSW is faster on the manifold (0.999 at 32x) but fell to 0.889 on the mixture.
AUTO_APPROXIMATE: dict[str, Any] = {"index": "ivfpq", "refine_factor": 4}


def resolve_index(n_pool: int, n_queries: int, dim: int, retrieve_cfg: dict[str, Any], threads: int
                  ) -> tuple[dict[str, Any], str]:
    """``retrieve_cfg`` with ``index: auto`` replaced by the kind it stands for, and why."""
    if retrieve_cfg["index"] != "auto":
        return retrieve_cfg, f"retrieve.index: {retrieve_cfg['index']} (configured)"
    predicted = n_pool * n_queries * dim / (EXACT_MADDS_PER_THREAD_SECOND * max(threads, 1))
    budget = float(retrieve_cfg["auto_exact_seconds"])
    if predicted <= budget or n_pool < 2**PQ_BITS * IVF_MIN_POINTS_PER_LIST:
        return {**retrieve_cfg, "index": "flat"}, (
            f"retrieve.index auto -> flat: exact search predicted {predicted:.1f} s "
            f"<= auto_exact_seconds {budget:g} (or a pool too small to train an approximate index)")
    return {**retrieve_cfg, **AUTO_APPROXIMATE}, (
        f"retrieve.index auto -> {AUTO_APPROXIMATE}: exact search predicted {predicted:.1f} s "
        f"> auto_exact_seconds {budget:g}")


def _ivf_nlist(n: int, retrieve_cfg: dict[str, Any]) -> int:
    nlist = int(retrieve_cfg["nlist"])
    usable = max(1, n // IVF_MIN_POINTS_PER_LIST)
    if nlist > usable:
        print(
            f"retrieve: nlist {nlist} -> {usable} for {n} database vectors "
            f"(at least {IVF_MIN_POINTS_PER_LIST} training points per list)",
            file=sys.stderr,
        )
        nlist = usable
    return nlist


def _train_sample(vectors: np.ndarray, n_train: int, seed: int) -> np.ndarray:
    n = len(vectors)
    sample = np.random.default_rng(seed).choice(n, size=n_train, replace=False) if n_train < n else np.arange(n)
    return np.ascontiguousarray(vectors[np.sort(sample)])


def _ivfflat(vectors: np.ndarray, retrieve_cfg: dict[str, Any], seed: int) -> faiss.Index:
    """A trained, still empty IndexIVFFlat (trained on a seeded sample of ``vectors``)."""
    n, d = vectors.shape
    nlist = _ivf_nlist(n, retrieve_cfg)
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.train(_train_sample(vectors, min(n, TRAIN_POINTS_PER_LIST * nlist), seed))
    index.nprobe = min(int(retrieve_cfg["nprobe"]), nlist)
    return index


def _ivfpq(vectors: np.ndarray, retrieve_cfg: dict[str, Any], seed: int) -> faiss.Index:
    """A trained, still empty IndexIVFPQ (trained on a seeded sample of ``vectors``)."""
    n, d = vectors.shape
    m = int(retrieve_cfg["pq_m"])
    if d % m:
        raise ValueError(f"retrieve.pq_m = {m} must divide the embedding size {d}")
    if n < 2**PQ_BITS:
        raise ValueError(
            f"retrieve.index ivfpq needs at least {2**PQ_BITS} database vectors to train its "
            f"{PQ_BITS}-bit product quantiser, the pool has {n}; use retrieve.index: flat"
        )
    nlist = _ivf_nlist(n, retrieve_cfg)
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFPQ(quantizer, d, nlist, m, PQ_BITS, faiss.METRIC_INNER_PRODUCT)
    index.train(_train_sample(vectors, min(n, TRAIN_POINTS_PER_LIST * max(nlist, 2**PQ_BITS)), seed))
    index.nprobe = min(int(retrieve_cfg["nprobe"]), nlist)
    return index


def build_index(vectors: np.ndarray, retrieve_cfg: dict[str, Any], seed: int = 0) -> faiss.Index:
    """A Faiss inner-product index over ``vectors`` (float32 (N, D), unit rows) of kind ``retrieve_cfg['index']``.

    ivfpq with ``refine_factor`` r > 1 re-ranks the top r * k PQ candidates by their exact inner
    product (IndexRefineFlat, on the CPU): PQ's quantisation error, not nprobe, is what bounds its
    recall (benchmarks/retrieval.md), and the exact vectors are at hand anyway.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) == 0:
        raise ValueError(f"build_index: need a non-empty (N, D) database, got shape {vectors.shape}")
    kind = retrieve_cfg["index"]
    d = vectors.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivfpq":
        index = _ivfpq(vectors, retrieve_cfg, seed)
    elif kind == "ivfflat":
        index = _ivfflat(vectors, retrieve_cfg, seed)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = HNSW_EF_SEARCH
    else:
        raise ValueError(f"retrieve.index: unknown index kind {kind!r} (flat | ivfflat | ivfpq | hnsw; "
                         "resolve auto with resolve_index first)")
    if retrieve_cfg.get("use_gpu"):
        index = _to_gpus(index, kind, shard=bool(retrieve_cfg.get("gpu_shard", True)))
    refine = int(retrieve_cfg["refine_factor"]) if kind == "ivfpq" else 0  # no default of its own: config.yaml's
    if refine > 1:
        index = faiss.IndexRefineFlat(index)
        index.k_factor = float(refine)
    index.add(vectors)
    return index


# GPU IVFPQ keeps its lookup tables in shared memory: beyond this many 8-bit sub-quantisers they only
# fit in float16 (Faiss refuses the copy otherwise).
GPU_FLOAT32_PQ_M_MAX = 48


def gpu_cloner_options(index: faiss.Index, shard: bool) -> faiss.GpuMultipleClonerOptions:
    """How the CPU index is copied to the GPUs: ``shard`` splits the database over them (memory
    scales with the GPU count), otherwise each GPU holds a full replica (queries are split)."""
    options = faiss.GpuMultipleClonerOptions()
    options.shard = shard
    pq = getattr(faiss.downcast_index(index), "pq", None)
    if pq is not None and pq.M > GPU_FLOAT32_PQ_M_MAX:
        options.useFloat16 = True
    return options


def _to_gpus(index: faiss.Index, kind: str, shard: bool) -> faiss.Index:
    n_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if not hasattr(faiss, "StandardGpuResources") or n_gpus == 0:
        raise RuntimeError(
            f"retrieve.use_gpu is true but this faiss build ({faiss.__version__}) has no GPU "
            f"support or sees no GPU (faiss.get_num_gpus() = {n_gpus}); install faiss-gpu or set "
            "retrieve.use_gpu: false"
        )
    if kind == "hnsw":
        raise RuntimeError("retrieve.use_gpu: faiss has no GPU HNSW index; use index flat or ivfpq on GPU")
    return faiss.index_cpu_to_all_gpus(index, co=gpu_cloner_options(index, shard))


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids), each (Q, min(k, index.ntotal)); best first. An id of -1 means no neighbour found
    (approximate indexes can return fewer than k)."""
    if index.ntotal == 0:
        raise ValueError("search: the index is empty")
    k = min(int(k), int(index.ntotal))
    hnsw = getattr(faiss.downcast_index(index), "hnsw", None) if hasattr(faiss, "downcast_index") else None
    if hnsw is not None and hnsw.efSearch < k:
        hnsw.efSearch = k  # HNSW returns at most efSearch results
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


NEIGHBOUR_COLUMNS = ("query_row", "annotation_id", "category_id", "rank", "pool_row", "pool_image_id", "score")


def neighbours_table(
    scores: np.ndarray, ids: np.ndarray, query_index: pd.DataFrame, pool_index: pd.DataFrame
) -> pd.DataFrame:
    """One row per (query, found neighbour); rows with id -1 (not found) are left out."""
    n_queries, k = ids.shape
    query_rows = np.repeat(np.arange(n_queries, dtype=np.int64), k)
    ranks = np.tile(np.arange(k, dtype=np.int64), n_queries)
    pool_rows = ids.reshape(-1).astype(np.int64)
    found = pool_rows >= 0
    query_rows, ranks, pool_rows = query_rows[found], ranks[found], pool_rows[found]
    return pd.DataFrame(
        {
            "query_row": query_rows,
            "annotation_id": query_index["annotation_id"].to_numpy(np.int64)[query_rows],
            "category_id": query_index["category_id"].to_numpy(np.int64)[query_rows],
            "rank": ranks,
            "pool_row": pool_rows,
            "pool_image_id": pool_index["image_id"].to_numpy(np.int64)[pool_rows],
            "score": scores.reshape(-1)[found].astype(np.float32),
        }
    )
