"""Uplift learners are scikit-learn meta-estimators."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

import churn
from training.config import LEARNER_NAMES, BaseParams


def experiment(rows: int = 800, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Spend that is mostly zero; treatment raises it where ``a`` is high."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(rows, 3)), columns=["a", "b", "c"])
    treatment = rng.integers(0, 2, rows)
    buys = rng.random(rows) < 0.3 + 0.2 * treatment * (X["a"] > 0)
    y = np.where(buys, 20 + 5 * rng.random(rows), 0.0)
    return X, y, treatment


def test_every_learner_is_offered_by_name_unfitted():
    learners = churn.uplift_learners()
    assert tuple(learners) == LEARNER_NAMES
    for learner in learners.values():
        assert not hasattr(learner, "terms_")


@pytest.mark.parametrize("name", LEARNER_NAMES)
def test_a_clone_fits_and_predicts_like_the_original(name):
    X, y, treatment = experiment()
    original = churn.uplift_learners()[name].set_params(params=BaseParams(rounds=15))
    copy = clone(original)
    assert copy is not original and copy.get_params()["params"] == BaseParams(rounds=15)
    first = original.fit(X, y, treatment).predict(X)
    second = copy.fit(X, y, treatment).predict(X)
    assert np.allclose(first, second)
    assert not hasattr(clone(original), "terms_")  # a clone of a fitted learner is unfitted
