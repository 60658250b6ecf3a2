"""Eq. (2) and eq. (3) against hand-computed cases."""

import math

import numpy as np
import pytest

from stages.core.similarity import cosine_similarity, similarity_matrix
from stages.core.smoothing import smoothed_targets


def test_eq2_hand_computed_three_classes():
    # p0 = (1, 0), p1 = (0, 1), p2 = (1, 1)/sqrt2 ; N = (1, 4, 9), gamma = 0.5 -> N^gamma = (1, 2, 3)
    protos = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    counts = np.array([1, 4, 9])
    s = math.sqrt(0.5)
    cos = np.array([[1, 0, s], [0, 1, s], [s, s, 1]])
    logits = cos / np.array([1.0, 2.0, 3.0])[None, :]
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    got = similarity_matrix(protos, counts, gamma=0.5)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-6)
    # row 1 (class with N=4): exp(0/1)=1, exp(1/2), exp(s/3)
    row1 = np.array([1.0, math.exp(0.5), math.exp(s / 3)])
    np.testing.assert_allclose(got[1], row1 / row1.sum(), rtol=1e-6)


def test_rare_target_gets_more_mass_with_gamma():
    protos = np.array([[1.0, 0.1], [1.0, 0.0], [0.9, 0.2]])
    counts = np.array([100, 1000, 2])  # class 2 rare
    flat = similarity_matrix(protos, counts, gamma=0.0)
    corrected = similarity_matrix(protos, counts, gamma=1.5)
    assert corrected[0, 2] > flat[0, 2]
    assert corrected[1, 2] > corrected[1, 0]


def test_zero_count_class_gets_no_mass_and_own_row_is_onehot():
    protos = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    counts = np.array([3, 5, 0])
    got = similarity_matrix(protos, counts, gamma=1.5)
    assert np.all(got[:2, 2] == 0)
    np.testing.assert_array_equal(got[2], [0, 0, 1])
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-6)


def test_stable_for_large_counts_and_gamma():
    rng = np.random.default_rng(0)
    protos = rng.normal(size=(50, 16))
    counts = rng.integers(1, 10**6, size=50)
    got = similarity_matrix(protos, counts, gamma=3.0)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)


def test_nan_prototype_is_an_error():
    protos = np.array([[1.0, np.nan], [0.0, 1.0]])
    with pytest.raises(ValueError, match="NaN"):
        similarity_matrix(protos, np.array([1, 1]), 1.0)


def test_cosine_of_zero_prototype_is_zero():
    sim = cosine_similarity(np.array([[0.0, 0.0], [1.0, 0.0]]))
    assert sim[0, 1] == 0 and sim[0, 0] == 0 and sim[1, 1] == pytest.approx(1.0)


def test_eq3_targets_rows():
    sprime = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.0, 0.0, 1.0]], dtype=np.float32)
    got = smoothed_targets("similarity", sprime, eps=0.1)
    np.testing.assert_allclose(got[0], [0.9 + 0.05, 0.03, 0.02], rtol=1e-6)
    np.testing.assert_allclose(got[1], [0.01, 0.9 + 0.06, 0.03], rtol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-6)
    uniform = smoothed_targets("uniform", sprime, eps=0.3)
    np.testing.assert_allclose(uniform[2], [0.1, 0.1, 0.8], rtol=1e-6)
    np.testing.assert_array_equal(smoothed_targets("onehot", sprime, 0.5), np.eye(3))
    with pytest.raises(ValueError, match="smoothing"):
        smoothed_targets("bogus", sprime, 0.1)
