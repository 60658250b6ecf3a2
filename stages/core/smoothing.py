"""Eq. (3): the teacher's smoothed classification targets, one registered kind per smoothing.

Row c of a kind's (C, C) target matrix is the target of an instance of class c; every row sums
to 1. The kinds are the teacher's ``teacher.smoothing`` values and the variants of the Fig. 2 sweep
(``sweep.variants``), so one name means one thing everywhere:

* ``onehot``: the identity (eps ignored).
* ``uniform``: (1 - eps) onehot(c) + eps / C.
* ``similarity``: (1 - eps) onehot(c) + eps S'[c, :], with S' of eq. (2) at gamma = 0 (class
  similarity only).
* ``similarity_frequency``: the same with S' at gamma = ``teacher.gamma`` (similarity and the
  frequency term N_j^gamma): the paper's teacher.

A new kind is one decorated function here; its registry entry also carries its label in Fig. 2's
legend, so the sweep (``sweep.variants``) and the figure need nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from stages.core.registry import Registry

TargetsFn = Callable[[np.ndarray, float], np.ndarray]


@dataclass(frozen=True)
class SmoothingKind:
    """``targets(similarity, eps)`` -> (C, C) float64; ``similarity`` is S' of eq. (2) computed with
    ``teacher.gamma`` when ``frequency_term``, else with gamma = 0 (kinds that ignore it get it too,
    for its size). ``label``: the kind in Fig. 2's legend."""

    targets: TargetsFn
    frequency_term: bool = False
    label: str = ""


SMOOTHING: Registry[SmoothingKind] = Registry("teacher.smoothing")


def smoothing(name: str, *, label: str, frequency_term: bool = False) -> Callable[[TargetsFn], TargetsFn]:
    """Register ``fn(similarity, eps)`` as the smoothing kind ``name`` (``label``: its name in Fig. 2)."""

    def decorator(fn: TargetsFn) -> TargetsFn:
        SMOOTHING.register(name)(SmoothingKind(fn, frequency_term, label))
        return fn

    return decorator


def smoothing_label(kind: str) -> str:
    """A smoothing kind's label in Fig. 2 (its name where it registered none)."""
    return SMOOTHING.get(kind).label or kind


@smoothing("onehot", label="one-hot")
def onehot_targets(similarity: np.ndarray, eps: float) -> np.ndarray:
    return np.eye(similarity.shape[0], dtype=np.float64)


@smoothing("uniform", label="uniform smoothing")
def uniform_targets(similarity: np.ndarray, eps: float) -> np.ndarray:
    num_classes = similarity.shape[0]
    return (1.0 - eps) * np.eye(num_classes) + eps * np.full((num_classes, num_classes), 1.0 / num_classes)


@smoothing("similarity", label="similarity smoothing")
def similarity_targets(similarity: np.ndarray, eps: float) -> np.ndarray:
    return (1.0 - eps) * np.eye(similarity.shape[0]) + eps * np.asarray(similarity, dtype=np.float64)


# Same formula: the frequency term lives in S' (computed with teacher.gamma for this kind).
smoothing("similarity_frequency", label="similarity + frequency smoothing", frequency_term=True)(similarity_targets)


def similarity_gamma(kind: str, gamma: float) -> float:
    """The gamma of eq. (2) that ``kind`` needs S' at: ``gamma`` with the frequency term, else 0."""
    return float(gamma) if SMOOTHING.get(kind).frequency_term else 0.0


def smoothed_targets(kind: str, similarity: np.ndarray, eps: float) -> np.ndarray:
    """Eq. (3) for every class at once (float32, (C, C), rows sum to 1)."""
    similarity = np.asarray(similarity)
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"similarity must be a square (C, C) matrix, found shape {similarity.shape}")
    return SMOOTHING.get(kind).targets(similarity, float(eps)).astype(np.float32)
