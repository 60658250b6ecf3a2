"""How much Delta knows: CCECE's standard error and its empirical-Bayes shrinkage toward the
frequency group (stages.core.calibration)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stages.core.calibration import (
    ccece_per_class,
    ccece_standard_errors,
    random_effects_prior,
    shrink_to_groups,
)


def _categories(frequencies: list[str]) -> list[dict]:
    return [{"id": k + 1, "name": f"c{k + 1}", "frequency": f} for k, f in enumerate(frequencies)]


def test_the_prior_is_recovered_from_synthetic_classes_with_known_variance() -> None:
    rng = np.random.default_rng(0)
    true_mean, true_tau = 0.12, 0.08
    truth = rng.normal(true_mean, true_tau, size=4000)
    se = rng.uniform(0.03, 0.3, size=truth.size)
    observed = truth + rng.normal(0, se)
    mean, tau2 = random_effects_prior(observed, se)
    assert mean == pytest.approx(true_mean, abs=0.01)
    assert np.sqrt(tau2) == pytest.approx(true_tau, rel=0.1)
    # no spread beyond the noise: tau^2 is estimated as (about) 0
    _, tau2_none = random_effects_prior(true_mean + rng.normal(0, se), se)
    assert tau2_none < 0.0005


def test_shrinkage_limits() -> None:
    groups = np.array(["r", "r", "r", "r", "c"])
    ccece = np.array([0.5, -0.1, 0.2, 0.0, 0.3])
    n = np.array([10**9, 5, 5, 0, 7])
    se = np.where(n > 0, 0.4 / np.sqrt(np.maximum(n, 1)), np.nan)
    se[0] = 1e-9  # n -> infinity
    shrunk = shrink_to_groups(ccece, se, n, groups)
    mean, tau2 = random_effects_prior(ccece[:3], se[:3])
    assert tau2 > 0
    assert shrunk[0] == pytest.approx(0.5, abs=1e-9)  # a class that knows its value keeps it
    assert shrunk[3] == pytest.approx(mean)  # no detection: the group's value
    for k in (1, 2):  # in between: pulled toward the group, never past it
        assert min(ccece[k], mean) - 1e-12 <= shrunk[k] <= max(ccece[k], mean) + 1e-12
        assert abs(shrunk[k] - mean) < abs(ccece[k] - mean)
    assert shrunk[4] == pytest.approx(0.3)  # alone in its group
    # a group without any judged detection keeps Delta = 0
    assert shrink_to_groups(np.zeros(2), np.full(2, np.nan), np.zeros(2), np.array(["f", "f"])).tolist() == [0, 0]


def test_more_detections_mean_less_shrinkage() -> None:
    groups = np.array(["r"] * 6)
    ccece = np.array([0.6, 0.1, -0.2, 0.3, 0.0, 0.2])
    pulls = []
    for n_first in (2, 20, 2000):
        n = np.array([n_first, 10, 10, 10, 10, 10])
        se = 0.45 / np.sqrt(n)
        shrunk = shrink_to_groups(ccece, se, n, groups)
        pulls.append(abs(shrunk[0] - ccece[0]))
    assert pulls[0] > pulls[1] > pulls[2]


def test_standard_errors_pool_the_residual_variance_within_the_group() -> None:
    categories = _categories(["r", "r", "c", "f"])
    judged = pd.DataFrame({
        "category_id": [1, 1, 1, 2, 3, 3],
        "score": [0.9, 0.8, 0.6, 0.3, 0.5, 0.5],
        "correct": [True, False, True, True, False, True],
    })
    se = ccece_standard_errors(judged, categories)
    # class 1 (r): residuals .1, -.8, .4 around -.1: squares .04 + .49 + .25 = .78 over 2 dof = .39, pooled for r
    assert se[0] == pytest.approx(np.sqrt(0.39 / 3))
    assert se[1] == pytest.approx(np.sqrt(0.39 / 1))  # one detection: the group's variance
    # class 3 (c): residuals -.5, .5: variance .5 (1 dof)
    assert se[2] == pytest.approx(np.sqrt(0.5 / 2))
    assert np.isnan(se[3])  # no detection, no estimate
    # the CCECE itself (eq. 4) is untouched by all this
    table = ccece_per_class(judged, categories, bins=15)
    assert table["ccece"].tolist()[:3] == pytest.approx([(2 - 2.3) / 3, 1 - 0.3, 0.5 - 0.5])
