"""One error base for everything a user can fix; settings named as keywords in Python and as
flags on the command line."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import churn
from features.errors import ChurnError, setting
from training.config import ExperimentError, UpliftTrainConfig

PACKAGES = ("features", "models", "training", "serving", "operations")


def project_exceptions() -> list[type]:
    found = []
    for package in PACKAGES:
        for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
            module = importlib.import_module(f"{package}.{info.name}")
            found += [cls for _, cls in inspect.getmembers(module, inspect.isclass)
                      if issubclass(cls, Exception) and cls.__module__ == module.__name__]
    return found


def test_every_error_of_the_project_is_a_churn_error():
    errors = project_exceptions()
    assert len(errors) >= 10
    assert [cls.__name__ for cls in errors if not issubclass(cls, ChurnError)] == []


def test_a_setting_reads_as_the_keyword_in_python_and_as_the_flag_on_the_command_line():
    err = ExperimentError(f"{setting('expected_share')} must be between 0 and 1")
    assert str(err) == "expected_share must be between 0 and 1"
    assert err.for_command_line() == "--expected-share must be between 0 and 1"


def test_errors_raised_to_python_name_keywords_not_flags(tmp_path):
    with pytest.raises(ExperimentError) as caught:
        UpliftTrainConfig(table=tmp_path / "x.csv").check()
    assert "--" not in str(caught.value) and "treatment" in str(caught.value)
    with pytest.raises(ChurnError) as caught:
        churn.features_at(tmp_path / "missing", as_of="2025-01-01")
    assert "--" not in str(caught.value)
