"""The churn trainer on the synthetic base: three roles of cutoffs, no label window overlapping
a later role, a registered model measured on rows it never saw, and refusals of bad setups."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from features.labels import LabelWindowError
from models.churn_model import ChurnModel
from tests.conftest import TEST_CUTOFF, TRAIN_CUTOFFS, VALIDATION_CUTOFF, write_table
from training.cutoffs import CutoffError, plan_cutoffs
from training.train_churn import MODEL, EligibilityError, train_churn


def test_model_beats_every_baseline_on_the_test_cutoff(trained):
    model = trained.metrics[MODEL]
    for baseline in ("recency_rule", "bgnbd_p_alive", "bgnbd_expected_purchases"):
        assert model.roc_auc > trained.metrics[baseline].roc_auc + 0.02, baseline
    assert model.roc_auc > 0.85
    # Calibrated on the validation cutoff, judged on the test cutoff.
    assert model.ece < 0.04
    assert trained.model.calibrator.method in ("platt", "isotonic")


def test_cutoffs_have_three_roles_a_horizon_apart(trained, churn_config):
    assert trained.train_cutoffs == list(TRAIN_CUTOFFS)
    assert trained.validation_cutoff == VALIDATION_CUTOFF
    assert trained.test_cutoff == TEST_CUTOFF
    assert set(trained.validation["cutoff"]) == {pd.Timestamp(VALIDATION_CUTOFF)}
    assert set(trained.test["cutoff"]) == {pd.Timestamp(TEST_CUTOFF)}
    horizon = timedelta(days=churn_config.labels.horizon_days)
    # Every label window ends by the next role's cutoff.
    assert max(TRAIN_CUTOFFS) + horizon <= VALIDATION_CUTOFF
    assert VALIDATION_CUTOFF + horizon <= TEST_CUTOFF
    assert trained.plan.fitted_through() == VALIDATION_CUTOFF + horizon
    # Early stopping chose the trees; the refit has exactly that many.
    assert 0 < trained.trees < churn_config.max_trees
    assert trained.model.booster.current_iteration() == trained.trees


def test_test_metrics_are_those_of_the_registered_model(trained):
    probability = trained.model.predict_proba(trained.test)
    np.testing.assert_array_equal(probability, trained.test["churn_probability"].to_numpy())
    auc = trained.metrics[MODEL].roc_auc
    assert auc == roc_auc_score(trained.test["churned"], probability)


def test_the_model_never_sees_orders_after_it_was_fitted(trained, churn_config, tmp_path):
    """Orders from the end of the validation label window on change nothing in the model."""
    frame = pd.read_parquet(churn_config.data / "transactions.parquet")
    after = frame["ordered_at"] >= pd.Timestamp(trained.plan.fitted_through(), tz="UTC")
    # Double every later amount and drop the later orders before the test cutoff.
    gap = after & (frame["ordered_at"] < pd.Timestamp(TEST_CUTOFF, tz="UTC"))
    changed = frame.assign(amount=np.where(after, frame["amount"] * 2, frame["amount"]))[~gap]
    data = tmp_path / "data"
    write_table(data, "transactions", changed, "parquet")
    for table in ("events", "customers"):
        write_table(data, table, pd.read_parquet(churn_config.data / f"{table}.parquet"),
                    "parquet")
    again = train_churn(dataclasses.replace(churn_config, data=data))
    assert again.plan == trained.plan
    fitted = [c.isoformat() for c in (*TRAIN_CUTOFFS, VALIDATION_CUTOFF)]
    before = trained.frame[trained.frame["cutoff"].isin(fitted)]
    now = again.frame[again.frame["cutoff"].isin(fitted)]
    pd.testing.assert_series_equal(now["churned"], before["churned"])
    # The same features (up to the order DuckDB sums amounts in), so the same model.
    pd.testing.assert_frame_equal(now, before, rtol=1e-12)


def test_probabilities_are_those_of_the_saved_model(trained, tmp_path):
    folder = trained.model.save(tmp_path / "m")
    loaded = ChurnModel.load(folder)
    rows = trained.test.head(200)
    np.testing.assert_allclose(loaded.predict_proba(rows), trained.model.predict_proba(rows))
    assert list(loaded.contributions(rows).columns) == loaded.features
    assert loaded.label == trained.model.label
    assert loaded.spend_percentiles == trained.model.spend_percentiles


def test_plan_refuses_training_labels_that_overlap_validation():
    end = date(2026, 1, 1)
    with pytest.raises(CutoffError, match=r"training cutoff 2025-05-01: its 90-day label window "
                                          r"ends after the validation cutoff 2025-07-01.*"
                                          r"latest training cutoff that works is 2025-04-02"):
        plan_cutoffs(90, date(2023, 1, 1), end, train=(date(2025, 4, 1), date(2025, 5, 1)))
    with pytest.raises(CutoffError, match=r"validation cutoff 2025-08-01.*latest validation "
                                          r"cutoff that works is 2025-07-03"):
        plan_cutoffs(90, date(2023, 1, 1), end, validation=date(2025, 8, 1))


def test_plan_defaults_come_from_the_data_span():
    # CDNOW: orders from 1997-01-01 to 1998-06-30.
    plan = plan_cutoffs(90, date(1997, 1, 1), date(1998, 7, 1))
    assert plan.test == date(1998, 4, 1)
    assert plan.validation == date(1998, 1, 1)
    assert plan.train == tuple(date(1997, m, 1) for m in range(5, 11))
    # Months before the first order have an empty base: left out, with a notice.
    short = plan_cutoffs(90, date(1997, 1, 1), date(1998, 7, 1), test=date(1997, 10, 1))
    assert short.train == (date(1997, 2, 1), date(1997, 3, 1), date(1997, 4, 1))
    assert "left out training cutoffs 1996-11-01, 1996-12-01, 1997-01-01" in short.notices[0]


def test_refuses_a_test_cutoff_whose_label_window_is_not_over(churn_config):
    cfg = dataclasses.replace(churn_config, test_cutoff=date(2025, 11, 1))
    with pytest.raises(LabelWindowError, match="latest cutoff with a matured label is 2025-10-03"):
        train_churn(cfg)


def test_refuses_too_few_churners(churn_config):
    cfg = dataclasses.replace(churn_config, min_class_rows=1_000_000)
    with pytest.raises(EligibilityError, match=r"churners and .* who stayed; each needs"):
        train_churn(cfg)
