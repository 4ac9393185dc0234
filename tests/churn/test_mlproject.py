"""The MLproject file is the command's: its entry points and defaults are generated from it."""

from __future__ import annotations

from pathlib import Path

from churn.mlproject import command_of, render
from training.config import CHURN, LABELS, UPLIFT

ROOT = Path(__file__).resolve().parents[2]


def test_mlproject_is_generated_from_the_command():
    assert (ROOT / "MLproject").read_text() == render(), (
        "MLproject is out of date: run `python -m churn.mlproject > MLproject`")


def test_the_command_takes_its_defaults_from_the_configs():
    train = {p.name: p.default for p in command_of(("train", "churn")).params}
    assert train["horizon_days"] == LABELS.horizon_days
    assert train["base_days"] == LABELS.base_days
    assert train["learning_rate"] == CHURN.learning_rate
    assert train["max_trees"] == CHURN.max_trees
    uplift = {p.name: p.default for p in command_of(("train", "uplift")).params}
    assert uplift["horizon_days"] == UPLIFT.horizon_days
    assert uplift["learner"] == UPLIFT.learner
