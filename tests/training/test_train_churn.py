"""The churn trainer on the synthetic base: it must beat its baselines and refuse bad setups."""

from __future__ import annotations

import dataclasses
from datetime import date

import numpy as np
import pandas as pd
import pytest

from features.labels import LabelWindowError
from tests.conftest import CUTOFFS
from training.churn_model import ChurnModel
from training.train_churn import MODEL, EligibilityError, train_churn


def test_model_beats_both_baselines(trained):
    model = trained.metrics[MODEL]
    for baseline in ("recency_rule", "bgnbd_p_alive", "bgnbd_expected_purchases"):
        assert model.roc_auc > trained.metrics[baseline].roc_auc + 0.02, baseline
    assert model.roc_auc > 0.85
    # Calibrated on validation data without seeing the rows it is judged on.
    assert model.ece < 0.03
    assert trained.model.calibrator.method in ("platt", "isotonic")


def test_validates_on_the_latest_cutoff_and_trains_on_the_earlier(trained, churn_config):
    assert trained.validation_cutoff == max(CUTOFFS)
    assert trained.train_cutoffs == sorted(CUTOFFS)[:-1]
    assert set(trained.validation["cutoff"]) == {pd.Timestamp(max(CUTOFFS))}
    assert set(trained.frame["cutoff"]) == {pd.Timestamp(c) for c in CUTOFFS}
    # Early stopping chose the trees; the refit has exactly that many.
    assert 0 < trained.trees < churn_config.max_trees
    assert trained.model.booster.current_iteration() == trained.trees


def test_probabilities_are_those_of_the_saved_model(trained, tmp_path):
    folder = trained.model.save(tmp_path / "m")
    loaded = ChurnModel.load(folder)
    rows = trained.validation.head(200)
    np.testing.assert_allclose(loaded.predict_proba(rows), trained.model.predict_proba(rows))
    contributions = loaded.contributions(rows)
    assert list(contributions.columns) == loaded.features


def test_refuses_a_cutoff_whose_label_window_is_not_over(churn_config):
    cfg = dataclasses.replace(churn_config, cutoffs=(date(2025, 9, 1), date(2025, 11, 1)))
    with pytest.raises(LabelWindowError, match="latest cutoff with a matured label is 2025-10-03"):
        train_churn(cfg)


def test_refuses_a_single_cutoff(churn_config):
    with pytest.raises(EligibilityError, match="at least two dates"):
        train_churn(dataclasses.replace(churn_config, cutoffs=(date(2025, 9, 1),)))


def test_refuses_too_few_churners(churn_config):
    cfg = dataclasses.replace(churn_config, min_class_rows=1_000_000)
    with pytest.raises(EligibilityError, match=r"churners and .* who stayed; each needs"):
        train_churn(cfg)
