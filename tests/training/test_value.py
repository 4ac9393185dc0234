"""Purchase propensity and predicted value: metrics, the textbook CLV baseline, and both models
on synthetic data and on CDNOW."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

import churn
from models.value_model import SPEND_FORMS, ValueModel
from tests.conftest import shared_file
from tests.training.test_bgnbd import summary_of
from training.bgnbd import BGNBD, GammaGamma
from training.value_metrics import decile_mape, decile_table, normalised_gini, value_metrics


def test_value_metrics_on_hand_checkable_cases():
    actual = np.array([0.0, 0.0, 10.0, 30.0, 60.0])
    assert normalised_gini(actual, actual) == pytest.approx(1.0)
    assert normalised_gini(actual, -actual) < 0
    # The same order, another scale: ranking metrics unchanged, totals off by the scale.
    m = value_metrics(actual, actual * 2)
    assert m.spearman == pytest.approx(1.0) and m.normalised_gini == pytest.approx(1.0)
    assert m.total_error == pytest.approx(1.0)
    assert decile_mape(actual, actual) == 0.0
    table = decile_table(np.arange(100.0), np.arange(100.0))
    assert table["customers"].tolist() == [10] * 10
    assert table["actual"].iloc[0] == pytest.approx(94.5)  # decile 1 holds the highest


def test_gamma_gamma_reproduces_the_published_cdnow_fit():
    raw = pd.read_csv(shared_file("cdnow/CDNOW_sample.txt"), sep=r"\s+", header=None,
                      names=["master_id", "customer_id", "day", "cds", "amount"],
                      dtype={"day": str})
    raw["ordered_at"] = pd.to_datetime(raw["day"]).dt.tz_localize("UTC")
    summary = summary_of(raw, date(1997, 10, 1))
    model = GammaGamma().fit(summary)
    # Fader, Hardie & Lee (2005), "RFM and CLV": p = 6.25, q = 3.74, gamma = 15.44.
    assert [model.p_, model.q_, model.gamma_] == pytest.approx([6.25, 3.74, 15.44], abs=0.02)
    spend = model.expected_spend_per_purchase(summary)
    repeat = summary["x"].to_numpy() > 0
    # Shrunk toward the population mean: never as extreme as a customer's own mean.
    own = summary["monetary"].to_numpy()
    mean = model.p_ * model.gamma_ / (model.q_ - 1)
    assert np.all(np.abs(spend[repeat] - mean) <= np.abs(own[repeat] - mean) + 1e-9)
    assert spend[~repeat] == pytest.approx(mean)


def test_bgnbd_and_gamma_gamma_agree_with_lifetimes():
    lifetimes = pytest.importorskip("lifetimes")
    raw = pd.read_csv(shared_file("cdnow/CDNOW_sample.txt"), sep=r"\s+", header=None,
                      names=["master_id", "customer_id", "day", "cds", "amount"],
                      dtype={"day": str})
    raw["ordered_at"] = pd.to_datetime(raw["day"]).dt.tz_localize("UTC")
    summary = summary_of(raw, date(1997, 10, 1))
    mine_bg, mine_gg = BGNBD().fit(summary), GammaGamma().fit(summary)
    theirs_bg = lifetimes.BetaGeoFitter().fit(summary["x"], summary["t_x"], summary["T"])
    repeat = summary[summary["x"] > 0]
    theirs_gg = lifetimes.GammaGammaFitter().fit(repeat["x"], repeat["monetary"])
    assert [mine_bg.r_, mine_bg.alpha_, mine_bg.a_, mine_bg.b_] == pytest.approx(
        [theirs_bg.params_[k] for k in ("r", "alpha", "a", "b")], rel=2e-3)
    assert [mine_gg.p_, mine_gg.q_, mine_gg.gamma_] == pytest.approx(
        [theirs_gg.params_[k] for k in ("p", "q", "v")], rel=2e-3)
    np.testing.assert_allclose(
        mine_bg.expected_purchases(summary, 13.0),
        theirs_bg.conditional_expected_number_of_purchases_up_to_time(
            13.0, summary["x"], summary["t_x"], summary["T"]), rtol=5e-3)
    np.testing.assert_allclose(
        mine_gg.expected_spend_per_purchase(repeat),
        theirs_gg.conditional_expected_average_profit(repeat["x"], repeat["monetary"]),
        rtol=5e-3)


def test_value_model_keeps_a_form_and_saves_and_loads(value_trained, tmp_path):
    result = value_trained
    assert result.model.form in SPEND_FORMS
    assert set(result.validation) == set(SPEND_FORMS)
    kept = result.validation[result.model.form].normalised_gini
    assert kept == max(m.normalised_gini for m in result.validation.values())
    # Test rows: every customer with a past order at the test cutoff, none seen in training.
    assert (result.test["orders_total"] > 0).all()
    assert result.test["cutoff"].eq(pd.Timestamp(result.plan.test)).all()
    m = result.metrics
    assert m["model"].normalised_gini > m["last_period"].normalised_gini
    loaded = ValueModel.load(result.model.save(tmp_path / "value"))
    rows = result.test.head(50)
    np.testing.assert_array_equal(loaded.predict_spend(rows), result.model.predict_spend(rows))
    np.testing.assert_array_equal(loaded.predict_orders(rows), result.model.predict_orders(rows))
    assert (loaded.predict_spend(rows) >= 0).all()


def test_propensity_is_reported_on_the_purchase_label(propensity_trained):
    result = propensity_trained
    assert result.model.kind == "propensity" and result.model.label.horizon_days == 30
    ordered = 1 - result.test["churned"].to_numpy()
    assert (result.outcome() == ordered).all()
    p = result.model_scores()
    assert result.metrics["model"].roc_auc == pytest.approx(roc_auc_score(ordered, p))
    assert result.metrics["model"].pr_auc == pytest.approx(average_precision_score(ordered, p))
    assert set(result.metrics) == {"model", "recency_rule", "bgnbd_p_purchase"}
    assert result.metrics["model"].roc_auc > result.metrics["recency_rule"].roc_auc
    # Every customer with a past order, lapsed ones included: wider than the churn base.
    assert result.test["recency_days"].max() > 365


def test_cdnow_value_beats_last_period_and_forecasts_the_total():
    tx = pd.read_csv(shared_file("cdnow/transactions.csv"),
                     dtype={"customer_id": str, "order_id": str})
    result = churn.train_value(churn.Tables(tx, name="cdnow"), horizon_days=90,
                               cutoffs=["1997-07-01", "1997-10-01"],
                               validation_cutoff="1998-01-01", test_cutoff="1998-04-01",
                               track=False)
    table = churn.value_metrics_table(result)
    assert list(table.index) == ["model", "BG/NBD x Gamma-Gamma", "last period again"]
    assert len(result.test) == tx["customer_id"].nunique()  # all joined in early 1997
    model = table.loc["model"]
    assert model["normalised_gini"] > table.loc["last period again", "normalised_gini"]
    assert abs(model["total_error"]) < 0.2
    assert result.test["model_orders"].sum() == pytest.approx(
        result.test["future_orders"].sum(), rel=0.25)
