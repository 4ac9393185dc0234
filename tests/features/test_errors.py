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


STOPPED_MID_JOB = ("An error occurred while calling o88.count.\n: org.apache.spark."
                   "SparkException: Job 10 cancelled because SparkContext was shut down\n"
                   "\tat org.apache.spark.scheduler.DAGScheduler.cleanUpAfterSchedulerStop")


def test_a_spark_context_that_died_mid_job_is_one_line_saying_what_to_try(monkeypatch):
    """What a 10M base on a 4g driver raised from the clean events table's count."""
    from features import spark_session  # noqa: PLC0415
    from features.spark_session import SparkStopped, spark_job_errors  # noqa: PLC0415

    monkeypatch.setattr(spark_session, "_driver_memory", {})  # no session running here
    monkeypatch.setenv("SPARK_DRIVER_MEMORY", "6g")
    with pytest.raises(SparkStopped) as stopped, spark_job_errors():
        raise RuntimeError(STOPPED_MID_JOB)
    message = stopped.value.for_command_line()
    assert "\n" not in message and "6g here" in message
    assert "SPARK_DRIVER_MEMORY" in message and "at org.apache" not in message
    with pytest.raises(ValueError, match="another error"), spark_job_errors():
        raise ValueError("another error")  # passes on as it is
