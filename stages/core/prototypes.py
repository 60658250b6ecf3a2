"""Eq. (1): a class prototype is the mean embedding of the class's instances.

The embeddings themselves (the backbone's pooled instance features) come from
stages.modeling.features; this is the arithmetic on them.
"""

from __future__ import annotations

import numpy as np


def class_prototypes(embeddings: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Eq. (1): row i = mean of class i's embeddings; an all-zero row where N_i = 0."""
    sums = np.zeros((num_classes, embeddings.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, embeddings)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    protos = np.divide(sums, counts[:, None], out=np.zeros_like(sums), where=counts[:, None] > 0)
    return protos.astype(np.float32)
