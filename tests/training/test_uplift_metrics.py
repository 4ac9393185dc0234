"""Qini, AUUC and uplift at k: hand-checked on tiny experiments, and on Hillstrom."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import shared_file
from training.uplift_metrics import (
    auuc,
    qini_coefficient,
    qini_curve,
    uplift_at,
    uplift_by_decile,
)

# Four customers, two treated: the treated one scored highest bought (10), the control one
# scored second did not; the other treated did not buy, the last control bought (4).
Y = np.array([10.0, 0.0, 0.0, 4.0])
T = np.array([1, 0, 1, 0])
SCORE = np.array([4.0, 3.0, 2.0, 1.0])


def test_qini_curve_by_hand():
    curve = qini_curve(Y, T, SCORE)
    # k=1: 10 - 0; k=2: 10 - 0*1/1; k=3: 10 - 0*2/1; k=4: 10 - 4*2/2.
    assert curve["incremental"].tolist() == [0.0, 10.0, 10.0, 10.0, 6.0]
    assert curve["fraction"].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    # Trapezoids: 0.25 * (5 + 10 + 10 + 8) = 8.25; random line area 6 / 2 = 3.
    assert qini_coefficient(Y, T, SCORE) == pytest.approx((8.25 - 3.0) / 6.0)


def test_reversing_the_ranking_flips_the_sign():
    rng = np.random.default_rng(0)
    n = 4000
    t = rng.integers(0, 2, n)
    effect = rng.uniform(0, 1, n)
    y = rng.normal(0, 0.5, n) + t * effect
    good = qini_coefficient(y, t, effect)
    assert good > 0.1
    assert qini_coefficient(y, t, -effect) == pytest.approx(-good, abs=0.02)
    random = [qini_coefficient(y, t, rng.normal(size=n)) for _ in range(20)]
    assert abs(np.mean(random)) < 0.05
    assert auuc(y, t, effect) > 0.5 > auuc(y, t, -effect)
    top, everyone = uplift_at(y, t, effect, 0.1), uplift_at(y, t, effect, 1.0)
    assert top > everyone > uplift_at(y, t, -effect, 0.1)


def test_uplift_by_decile_matches_group_means():
    rng = np.random.default_rng(1)
    t = rng.integers(0, 2, 1000)
    y = rng.normal(size=1000) + t
    score = rng.normal(size=1000)
    table = uplift_by_decile(y, t, score)
    assert table["customers"].sum() == 1000 and len(table) == 10
    top = np.argsort(-score, kind="stable")[:100]
    expected = y[top][t[top] == 1].mean() - y[top][t[top] == 0].mean()
    assert table["observed_uplift"].iloc[0] == pytest.approx(expected)


def test_tied_scores_are_one_step_whatever_the_row_order():
    rng = np.random.default_rng(3)
    n = 3000
    t = rng.integers(0, 2, n)
    y = rng.gamma(1.0, 5.0, n) * (rng.random(n) < 0.2) + t * rng.random(n)
    # A constant score is random targeting, in every row order.
    for seed in range(5):
        order = np.random.default_rng(seed).permutation(n)
        assert qini_coefficient(y[order], t[order], np.ones(n)) == pytest.approx(0.0, abs=1e-12)
        assert auuc(y[order], t[order], np.ones(n)) == pytest.approx(0.5, abs=1e-12)
    coarse = rng.integers(0, 4, n).astype(float)  # four tied groups
    first = qini_coefficient(y, t, coarse)
    order = rng.permutation(n)
    assert qini_coefficient(y[order], t[order], coarse[order]) == pytest.approx(first, abs=1e-12)
    assert len(qini_curve(y, t, coarse)) == 5  # (0, 0) and one point per distinct score


def test_qini_curve_matches_scikit_uplift_on_hillstrom():
    """The same curve as scikit-uplift's on binary outcomes, ties included (last year's spend
    repeats often), for both arms."""
    sklift_metrics = pytest.importorskip("sklift.metrics")
    data = pd.read_csv(shared_file("hillstrom/hillstrom.csv"))
    for arm in ("Womens E-Mail", "Mens E-Mail"):
        part = data[data["segment"].isin([arm, "No E-Mail"])]
        t = (part["segment"] == arm).to_numpy().astype(int)
        y = part["conversion"].to_numpy(float)
        score = part["history"].round(0).to_numpy()
        theirs_k, theirs_y = sklift_metrics.qini_curve(y, score, t)
        ours = qini_curve(y, t, score)
        np.testing.assert_allclose(ours["fraction"] * len(y), theirs_k, rtol=1e-12)
        np.testing.assert_allclose(ours["incremental"], theirs_y, rtol=1e-9, atol=1e-9)
