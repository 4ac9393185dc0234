"""A forest built to machine code gives LightGBM's margins exactly, takes over from the array
walk once a forest has walked enough rows, and leaves the walk in charge where it cannot be
built."""

from __future__ import annotations

import logging
import pickle
import time

import lightgbm as lgb
import numpy as np
import pytest

from models import forest_native
from models.forest import CompiledForest, tree_evaluator
from tests.models.test_forest import _awkward_rows, _data, _early_stopped, _train


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CHURN_FOREST_CACHE", str(tmp_path / "forests"))
    monkeypatch.delenv("CHURN_NATIVE_FORESTS", raising=False)
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("CHURN_NATIVE_MIN_ROWS", raising=False)


def _native(booster: lgb.Booster) -> CompiledForest:
    forest = CompiledForest.from_booster(booster)
    assert forest.build_native()
    return forest


def _models() -> dict[str, lgb.Booster]:
    X, y = _data()
    stopped = _early_stopped(X, y)
    return {"nan learned": _train(X, y),
            "nan read as zero": _train(np.nan_to_num(X, nan=0.5), y),
            "seven leaves": _train(X, y, num_leaves=7),
            "sixty-four leaves": _train(X, y, rounds=10, num_leaves=64, min_data_in_leaf=2),
            "best iteration": stopped,
            "single leaves": _train(X[:200], y[:200], rounds=5, min_data_in_leaf=150)}


@pytest.mark.parametrize("bits_max_leaves", [0, 64], ids=["branches", "leaf bits"])
def test_machine_code_gives_lightgbm_margins_exactly(bits_max_leaves, monkeypatch):
    monkeypatch.setattr(forest_native, "BITS_MAX_LEAVES", bits_max_leaves)
    X, _ = _data()
    rows = _awkward_rows(X, np.random.default_rng(4))
    for name, booster in _models().items():
        forest = _native(booster)
        for n in (1, 5, 257, 1003):
            expected = booster.predict(rows[:n], raw_score=True)
            assert np.array_equal(forest.margins(rows[:n], threads=1), expected), (name, n)
        assert np.array_equal(forest.margins(rows, threads=2),
                              booster.predict(rows, raw_score=True)), name


def _wait_for_build(forest: CompiledForest, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while forest.native.function is None and not forest.native.failed:
        assert time.monotonic() < deadline, "the build did not finish"
        time.sleep(0.05)


def test_the_walk_hands_over_once_enough_rows_were_walked(monkeypatch):
    monkeypatch.setenv("CHURN_NATIVE_MIN_ROWS", "2500")
    X, y = _data()
    booster = _train(X, y)
    forest = CompiledForest.from_booster(booster)
    expected = booster.predict(X, raw_score=True)
    assert np.array_equal(forest.margins(X[:1000]), expected[:1000])
    assert not forest.native.started  # 1,000 rows walked: not yet worth a build
    assert np.array_equal(forest.margins(X[1000:2000]), expected[1000:2000])
    assert np.array_equal(forest.margins(X[2000:]), expected[2000:])  # 3,000 walked
    assert forest.native.started
    _wait_for_build(forest)
    assert forest.native.function is not None
    assert np.array_equal(forest.margins(X), expected)


def test_a_built_forest_is_loaded_from_the_cache_and_not_pickled(tmp_path, monkeypatch):
    X, y = _data()
    booster = _train(X, y)
    stale = tmp_path / "forests" / "build-left-by-a-job-that-ended"
    stale.mkdir(parents=True)
    _native(booster)
    assert len(list((tmp_path / "forests").glob("forest-*.so"))) == 1
    assert not stale.exists()
    monkeypatch.setenv("CC", "false")  # a compiler that fails: only the cache can serve
    again = pickle.loads(pickle.dumps(CompiledForest.from_booster(booster)))
    assert again.native.function is None and not again.native.started
    assert again.build_native()
    assert np.array_equal(again.margins(X), booster.predict(X, raw_score=True))


def test_a_forest_already_in_the_cache_uses_it_from_its_first_row(monkeypatch):
    X, y = _data()
    booster = _train(X, y)
    other = _train(X, y, rounds=7)
    _native(booster)
    monkeypatch.setenv("CC", "false")  # nothing can be built: only the cache serves
    again = pickle.loads(pickle.dumps(CompiledForest.from_booster(booster)))  # a Spark task's
    assert np.array_equal(again.margins(X[:10]), booster.predict(X[:10], raw_score=True))
    assert again.native.function is not None and not again.native.started
    never_built = CompiledForest.from_booster(other)
    assert np.array_equal(never_built.margins(X[:10]), other.predict(X[:10], raw_score=True))
    assert never_built.native.function is None


def test_a_cache_this_user_may_not_read_is_no_cache(monkeypatch):
    def unreadable(forest):
        raise PermissionError(13, "Permission denied", "/shared/churn-forests/forest-x.so")

    monkeypatch.setattr(forest_native, "_target", unreadable)
    X, y = _data()
    booster = _train(X, y)
    forest = CompiledForest.from_booster(booster)
    assert np.array_equal(forest.margins(X[:10]), booster.predict(X[:10], raw_score=True))
    assert forest.native.function is None


def test_where_the_compiler_fails_the_walk_goes_on_and_says_why(monkeypatch, caplog):
    monkeypatch.setenv("CC", "false")
    X, y = _data()
    booster = _train(X, y)
    forest = CompiledForest.from_booster(booster)
    with caplog.at_level(logging.WARNING):
        assert not forest.build_native()
    assert "stays on the array walk" in caplog.text
    assert np.array_equal(forest.margins(X), booster.predict(X, raw_score=True))


def test_switched_off_it_never_builds(monkeypatch):
    monkeypatch.setenv("CHURN_NATIVE_FORESTS", "0")
    monkeypatch.setenv("CHURN_NATIVE_MIN_ROWS", "10")
    X, y = _data()
    forest = CompiledForest.from_booster(_train(X, y))
    forest.margins(X)
    assert not forest.native.started


def test_metadata_names_the_evaluator_that_answers():
    X, y = _data()
    forest = CompiledForest.from_booster(_train(X, y, rounds=5))
    assert tree_evaluator(None) == "lightgbm"
    assert tree_evaluator(forest.margins) == "compiled forest"
    forest.build_native()
    assert tree_evaluator(forest.margins) == "compiled forest, machine code"
