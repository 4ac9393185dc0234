"""Metrics checked against numbers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import decile_table, expected_calibration_error, score_metrics, verdict


def test_ece_by_hand():
    y = np.array([1, 0, 0, 0, 1, 1])
    p = np.array([0.05, 0.05, 0.15, 0.15, 0.95, 0.85])
    # bin [0, .1): 2 rows, rate .5 vs mean .05; bin [.1, .2): rate 0 vs .15;
    # bin [.8, .9): rate 1 vs .85; bin [.9, 1]: rate 1 vs .95.
    want = (2 * 0.45 + 2 * 0.15 + 1 * 0.15 + 1 * 0.05) / 6
    assert expected_calibration_error(y, p) == pytest.approx(want)


def test_deciles_lift_and_capture():
    y = np.array([1] * 10 + [0] * 90)
    perfect = decile_table(y, np.arange(100)[::-1].astype(float))
    assert perfect.loc[0, "lift"] == pytest.approx(10.0)
    assert perfect.loc[0, "capture"] == pytest.approx(1.0)
    assert perfect["customers"].sum() == 100
    assert perfect["capture"].iloc[-1] == pytest.approx(1.0)


def test_rank_scores_have_no_probability_metrics():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    m = score_metrics(y, y + rng.normal(0, 1, 500), is_probability=False)
    assert 0.6 < m.roc_auc < 0.8
    assert "log_loss" not in m.as_dict()
    assert np.isnan(m.ece)


@pytest.mark.parametrize(("auc", "word"), [(0.95, "excellent"), (0.85, "good"),
                                           (0.72, "fair"), (0.55, "poor")])
def test_verdict_bands(auc, word):
    assert verdict(auc) == word
