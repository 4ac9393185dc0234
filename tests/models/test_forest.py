"""The compiled forest gives LightGBM's margins exactly, or refuses the model."""

from __future__ import annotations

import pickle

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from models.forest import (
    CompiledBooster,
    CompiledForest,
    UnsupportedModel,
    compiled,
    shared_inputs,
)


def _data(rows: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 8))
    X[:, 0] = np.round(X[:, 0] * 2)  # many exact zeros
    X[:, 1] = rng.exponential(size=rows)
    X[rng.random((rows, 8)) < 0.15] = np.nan
    signal = np.nan_to_num(X[:, 0]) + np.isnan(X[:, 2]) - np.nan_to_num(X[:, 1])
    y = (signal + rng.normal(size=rows) > 0).astype(int)
    return X, y


def _train(X: np.ndarray, y: np.ndarray, rounds: int = 60, **params) -> lgb.Booster:
    return lgb.train({"objective": "binary", "num_leaves": 31, "min_data_in_leaf": 5,
                      "verbose": -1, "seed": 1, **params}, lgb.Dataset(X, y), rounds)


def _awkward_rows(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rows with NaN, zeros, values LightGBM reads as zero, huge values, and the odd sizes
    that leave some of the six lanes empty."""
    rows = X[rng.integers(0, len(X), 1003)].copy()
    cells = rng.random(rows.shape)
    rows[cells < 0.05] = 0.0
    rows[(cells >= 0.05) & (cells < 0.08)] = 1e-36
    rows[(cells >= 0.08) & (cells < 0.10)] = -float(np.float32(1e-35))
    rows[(cells >= 0.10) & (cells < 0.12)] = 1e301
    rows[(cells >= 0.12) & (cells < 0.20)] = np.nan
    return rows


def test_same_margins_as_lightgbm_for_nan_zero_and_tiny_values():
    X, y = _data()
    booster = _train(X, y)
    forest = CompiledForest.from_booster(booster)
    rows = _awkward_rows(X, np.random.default_rng(1))
    for n in (1, 5, 6, 7, 1003):
        expected = booster.predict(rows[:n], raw_score=True)
        assert np.array_equal(forest.margins(rows[:n]), expected), n
    assert np.array_equal(forest.margins(rows, threads=1), forest.margins(rows, threads=2))
    assert forest.margins(rows[:0]).shape == (0,)


def test_features_trained_without_missing_values_read_nan_as_zero():
    X, y = _data()
    dense = np.nan_to_num(X, nan=0.5)
    booster = _train(dense, y)
    forest = CompiledForest.from_booster(booster)
    rows = _awkward_rows(X, np.random.default_rng(2))
    assert np.array_equal(forest.margins(rows), booster.predict(rows, raw_score=True))


def _early_stopped(X: np.ndarray, y: np.ndarray) -> lgb.Booster:
    """A regression that early stopping cut short of its 300 rounds."""
    target = np.nan_to_num(X[:, 0]) * 3 + y
    train = lgb.Dataset(X[:2000], target[:2000])
    valid = lgb.Dataset(X[2000:], target[2000:], reference=train)
    return lgb.train({"objective": "regression", "num_leaves": 63, "verbose": -1,
                      "min_data_in_leaf": 400}, train, 300, valid_sets=[valid],
                     callbacks=[lgb.early_stopping(5, verbose=False)])


def test_regression_stumps_and_best_iteration():
    X, y = _data()
    booster = _early_stopped(X, y)
    assert 0 < booster.best_iteration < 300
    forest = CompiledForest.from_booster(booster)
    assert forest.trees == booster.best_iteration
    rows = _awkward_rows(X, np.random.default_rng(3))
    assert np.array_equal(forest.margins(rows), booster.predict(rows, raw_score=True))


def test_probe_rows_pass_on_a_supported_model():
    X, y = _data()
    booster = _train(X, y)
    forest = CompiledForest.from_booster(booster)
    forest.check_against(booster)
    probes = forest.probe_rows(500)
    assert np.isnan(probes).any() and (probes == 0).any()


@pytest.mark.parametrize(("params", "categorical", "reason"), [
    ({"zero_as_missing": True}, None, "missing_type Zero"),
    ({}, [3], "categorical"),
    ({"objective": "multiclass", "num_class": 3}, None, "multiclass"),
])
def test_unsupported_models_are_refused(params, categorical, reason):
    X, y = _data()
    X[:, 3] = np.abs(np.round(np.nan_to_num(X[:, 3]) * 3))
    if params.get("num_class"):
        y = np.asarray(y + (np.nan_to_num(X[:, 0]) > 1), dtype=int)
    booster = lgb.train({"objective": "binary", "verbose": -1, "min_data_in_leaf": 5,
                         "min_data_per_group": 5, "cat_smooth": 1, **params},
                        lgb.Dataset(X, y, categorical_feature=categorical or "auto"), 20)
    with pytest.raises(UnsupportedModel, match=reason):
        CompiledForest.from_booster(booster)


def test_wrong_shape_is_refused():
    X, y = _data()
    forest = CompiledForest.from_booster(_train(X, y, rounds=5))
    with pytest.raises(ValueError, match="8 columns"):
        forest.margins(X[:, :7])


def test_trees_of_a_single_leaf():
    X, y = _data(rows=200)
    booster = _train(X, y, rounds=5, min_data_in_leaf=150)
    assert {t["num_leaves"] for t in booster.dump_model()["tree_info"]} == {1}
    forest = CompiledForest.from_booster(booster)
    assert np.array_equal(forest.margins(X), booster.predict(X, raw_score=True))


@pytest.mark.parametrize("objective", ["binary", "poisson", "tweedie", "regression", "huber"])
def test_compiled_booster_predicts_what_lightgbm_predicts(objective):
    X, y = _data()
    target = y if objective == "binary" else np.abs(np.nan_to_num(X[:, 1])) * (1 + y)
    booster = _train(X, target, objective=objective)
    fast = compiled(booster)
    assert isinstance(fast, CompiledBooster)
    rows = _awkward_rows(X, np.random.default_rng(3))
    assert np.array_equal(fast.predict(rows), booster.predict(rows))
    frame = pd.DataFrame(rows, columns=booster.feature_name())
    assert np.array_equal(fast.predict(frame), booster.predict(frame))
    # Keywords and other columns go to LightGBM itself.
    assert np.array_equal(fast.predict(rows, raw_score=True),
                          booster.predict(rows, raw_score=True))
    assert fast.num_trees() == booster.num_trees()


def test_an_objective_it_does_not_know_keeps_the_booster():
    X, y = _data()
    booster = _train(X, y * 0.8, objective="cross_entropy_lambda")
    assert compiled(booster) is booster


def test_a_compiled_booster_pickles_and_saves_as_its_booster(tmp_path):
    X, y = _data()
    booster = _train(X, y)
    fast = compiled(booster)
    again = pickle.loads(pickle.dumps(fast))
    rows = _awkward_rows(X, np.random.default_rng(4))
    assert np.array_equal(again.predict(rows), booster.predict(rows))
    fast.save_model(tmp_path / "model.txt")
    assert np.array_equal(lgb.Booster(model_file=tmp_path / "model.txt").predict(rows),
                          booster.predict(rows))


def test_boosters_sharing_one_frame_in_a_block_predict_what_they_predict_alone():
    X, y = _data()
    first, second = (CompiledBooster(_train(X, y, rounds=r)) for r in (20, 40))
    frame = pd.DataFrame(_awkward_rows(X, np.random.default_rng(3)),
                         columns=first.feature_name())
    alone = [first.predict(frame), second.predict(frame)]
    with shared_inputs():
        together = [first.predict(frame), second.predict(frame)]
    assert all(np.array_equal(a, b) for a, b in zip(alone, together, strict=True))
    # Outside the block nothing is kept: changed rows give new predictions.
    frame.iloc[:, :] = 0.0
    assert not np.array_equal(first.predict(frame), alone[0])
