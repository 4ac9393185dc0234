"""The Python API names models the same way everywhere, and a name it does not know is a clear
error (never a KeyError, never a command-line flag)."""

from __future__ import annotations

import inspect

import pytest

import churn
from features.errors import ChurnError


def test_promote_and_load_champion_take_the_same_name_argument():
    for function in (churn.promote, churn.load_champion):
        assert "name" in inspect.signature(function).parameters


def test_unknown_names_and_kinds_are_clear_errors(mlflow_store):
    with pytest.raises(ChurnError, match="unknown kind of model 'nosuch'") as kind:
        churn.promote("nosuch")
    with pytest.raises(ChurnError, match="no registered 'nosuch' model") as name:
        churn.promote(name="nosuch")
    with pytest.raises(ChurnError, match="no 'nosuch' model holds the 'champion' alias") as load:
        churn.load_champion(name="nosuch")
    for caught in (kind, name, load):
        assert not isinstance(caught.value, KeyError)
        assert "--" not in str(caught.value)
