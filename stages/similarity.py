"""Eq. (2) and eq. (3): the class-similarity matrix S' and the smoothed classification targets.

S_ij = cosine(p_i, p_j);  S'_ij = exp(S_ij / N_j^gamma) / sum_k exp(S_ik / N_k^gamma).
Each row of S' is a distribution over target classes j; a small N_j (rare j) sharpens the
exponent and so pulls mass towards j. A class with N_j = 0 receives no mass, and its own row
is one-hot on itself (DESIGN.md).

CLI: python -m stages.similarity --config CFG --prototypes P.npy --categories C.parquet --out S.npy
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from stages.atomic import write_npy
from stages.config import load_config

SMOOTHING_KINDS = ("onehot", "uniform", "similarity")


def cosine_similarity(prototypes: np.ndarray) -> np.ndarray:
    """S: cosine between prototype rows (float64); an all-zero prototype has similarity 0."""
    protos = np.asarray(prototypes, dtype=np.float64)
    norms = np.linalg.norm(protos, axis=1, keepdims=True)
    unit = np.divide(protos, norms, out=np.zeros_like(protos), where=norms > 0)
    return unit @ unit.T


def similarity_matrix(prototypes: np.ndarray, instance_counts: np.ndarray, gamma: float) -> np.ndarray:
    """S' of eq. (2) as float32 (C, C); every row sums to 1.

    Stable for large counts and gamma: N_j^gamma is computed in log space and the softmax
    subtracts each row's maximum.
    """
    counts = np.asarray(instance_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.shape[0] != prototypes.shape[0]:
        raise ValueError(f"instance_counts has shape {counts.shape}, expected ({prototypes.shape[0]},)")
    if not np.all(np.isfinite(prototypes)):
        bad = np.unique(np.argwhere(~np.isfinite(prototypes))[:, 0])
        raise ValueError(f"prototypes contain NaN/inf in rows {bad.tolist()[:10]}")
    if np.any(counts < 0):
        raise ValueError("instance_counts must be >= 0")
    sim = cosine_similarity(prototypes)
    present = counts > 0
    # 1 / N_j^gamma = exp(-gamma * log N_j); zero-count columns are masked out below.
    inv_temperature = np.zeros_like(counts)
    inv_temperature[present] = np.exp(-gamma * np.log(counts[present]))
    logits = sim * inv_temperature[None, :]
    logits[:, ~present] = -np.inf
    out = np.zeros_like(sim)
    if present.any():
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        out = weights / weights.sum(axis=1, keepdims=True)
    absent = np.flatnonzero(~present)
    out[absent, :] = 0.0
    out[absent, absent] = 1.0
    return out.astype(np.float32)


def smoothed_targets(similarity: np.ndarray, eps: float, smoothing: str) -> np.ndarray:
    """Eq. (3) for every class at once: row c is the target of an instance of class c.

    ``similarity``: (1 - eps) onehot(c) + eps * S'[c, :]; ``uniform``: mixing with 1/C;
    ``onehot``: the identity (eps ignored). Rows sum to 1 (float32, (C, C)).
    """
    if smoothing not in SMOOTHING_KINDS:
        raise ValueError(f"smoothing must be one of {SMOOTHING_KINDS}, found {smoothing!r}")
    num_classes = similarity.shape[0]
    onehot = np.eye(num_classes, dtype=np.float64)
    if smoothing == "onehot":
        return onehot.astype(np.float32)
    if smoothing == "uniform":
        mix = np.full((num_classes, num_classes), 1.0 / num_classes)
    else:
        mix = np.asarray(similarity, dtype=np.float64)
    return ((1.0 - eps) * onehot + eps * mix).astype(np.float32)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Eq. (2): the class similarity matrix S'")
    parser.add_argument("--config", required=True)
    parser.add_argument("--prototypes", required=True)
    parser.add_argument("--categories", required=True)
    parser.add_argument("--gamma", type=float, default=None, help="override teacher.gamma")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    gamma = config["teacher"]["gamma"] if args.gamma is None else args.gamma
    prototypes = np.load(args.prototypes, allow_pickle=False)
    categories = pd.read_parquet(args.categories)
    matrix = similarity_matrix(prototypes, categories["instance_count"].to_numpy(), gamma)
    write_npy(matrix, args.out)
    print(f"similarity: {matrix.shape[0]} classes, gamma={gamma} -> {args.out}")


if __name__ == "__main__":
    main()
