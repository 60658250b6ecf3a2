"""Eq. (2): the class-similarity matrix S' from class prototypes and instance counts.

S_ij = cosine(p_i, p_j);  S'_ij = exp(S_ij / N_j^gamma) / sum_k exp(S_ik / N_k^gamma).
Each row of S' is a distribution over target classes j; a small N_j (rare j) sharpens the
exponent and so pulls mass towards j. A class with N_j = 0 receives no mass, and its own row
is one-hot on itself (docs/design.md).
"""

from __future__ import annotations

import numpy as np


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
