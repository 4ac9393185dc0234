"""How each training job is configured, and the defaults of every setting, in one place.

The ``churn`` command, the Python API (``churn.train_churn`` ...) and the MLproject take
their defaults from these dataclasses, so a default changes here or nowhere. The module
imports nothing heavy: the command's ``--help`` reads it.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from datetime import date
from pathlib import Path
from types import SimpleNamespace

from features.errors import ChurnError, setting
from features.labels import ChurnLabelConfig
from features.tables import DEFAULT_REJECTS
from features.validation import OnBadRows

# Monthly training cutoffs taken when none are named.
DEFAULT_TRAIN_CUTOFFS = 6
# Every uplift learner by name (``training.uplift_learners.LEARNERS`` holds their classes).
LEARNER_NAMES = ("t_learner", "x_learner", "dr_learner", "dr_linear", "transformed_outcome",
                 "two_part", "ensemble", "stacked", "ensemble_or_distilled", "adaptive")


class ExperimentError(ChurnError, ValueError):
    """The experiment cannot be read or used as asked."""


def defaults(config: type) -> SimpleNamespace:
    """The defaults of the dataclass ``config``'s fields, by name (fields without one left out):
    what the command line and the Python API offer when a setting is not given."""
    found = {}
    for f in fields(config):
        if f.default is not MISSING:
            found[f.name] = f.default
        elif f.default_factory is not MISSING:
            found[f.name] = f.default_factory()
    return SimpleNamespace(**found)


AUTO = "auto"
# The default: the learners weighted by the experiment's own held-out evidence (a learner
# that does not beat a constant effect on held-out rows gets no weight), shrunk to the
# effect scale those rows support. Judged on a suite of experiments (bench/uplift_suite.py,
# bench/RESULTS.md), where a rule fixed on two of them had lost 4x on a third.
DEFAULT_LEARNER = "adaptive"
# What ``auto`` chooses among: the single learners (the ensemble already holds them all).
SELECTABLE = ("t_learner", "x_learner", "dr_learner", "dr_linear", "transformed_outcome")


@dataclass(frozen=True)
class BaseParams:
    """LightGBM settings shared by every base model of a learner.

    The defaults are LightGBM's own (100 trees of 31 leaves, learning rate 0.1, 20 rows per
    leaf). On Hillstrom, out of fold, they ranked effects better than heavily regularised
    trees (bench/RESULTS.md): the effect lives in interactions that small trees miss.
    """

    learning_rate: float = 0.1
    num_leaves: int = 31
    min_data_in_leaf: int = 20
    rounds: int = 100
    lambda_l2: float = 0.0
    feature_fraction: float = 1.0
    seed: int = 0
    # 0: the cores free when the job starts (``job_threads``).
    threads: int = 0
    extra: dict = field(default_factory=dict)

    def lightgbm(self) -> dict:
        return {"objective": "regression", "learning_rate": self.learning_rate,
                "num_leaves": self.num_leaves, "min_data_in_leaf": self.min_data_in_leaf,
                "lambda_l2": self.lambda_l2, "feature_fraction": self.feature_fraction,
                "seed": self.seed, "num_threads": self.threads,
                "deterministic": True, "verbose": -1, **self.extra}


@dataclass(frozen=True, kw_only=True)
class CutoffTrainConfig:
    """What every model trained on cutoffs of the data shares: the data, the three roles of
    cutoffs (training, validation, test; a horizon apart), the LightGBM settings they all
    use, and how the job runs."""

    data: Path
    cutoffs: tuple[date, ...] | None = None
    validation_cutoff: date | None = None
    test_cutoff: date | None = None
    train_cutoff_count: int = DEFAULT_TRAIN_CUTOFFS
    learning_rate: float = 0.03
    num_leaves: int = 7
    min_data_in_leaf: int = 200
    max_trees: int = 3000
    early_stopping_rounds: int | None = 100
    seed: int = 7
    on_bad_rows: OnBadRows = OnBadRows.stop
    memory_limit: str | None = "4GB"
    # LightGBM and DuckDB threads; 0: the cores free when the job starts (``job_threads``).
    threads: int = 0
    # What the runs record as the data's source; by default the folder's absolute path.
    source: str | None = None

    def data_source(self) -> str:
        return self.source or str(self.data.resolve())

    def lightgbm_params(self, objective: str = "binary") -> dict[str, object]:
        return {"objective": objective, "learning_rate": self.learning_rate,
                "num_leaves": self.num_leaves, "min_data_in_leaf": self.min_data_in_leaf,
                "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1,
                "lambda_l2": 1.0, "seed": self.seed, "num_threads": self.threads,
                "verbose": -1}


@dataclass(frozen=True, kw_only=True)
class ChurnTrainConfig(CutoffTrainConfig):
    """Everything a churn (or propensity) training run needs, built from CLI flags or
    MLproject parameters."""

    labels: ChurnLabelConfig = field(default_factory=ChurnLabelConfig)
    min_class_rows: int = 50


@dataclass(frozen=True)
class UpliftTrainConfig:
    """Where the experiment comes from and how to learn from it."""

    data: Path | None = None
    campaign: str | None = None
    horizon_days: int = 30
    table: Path | None = None
    treatments: tuple[str, ...] = ()
    control: str | None = None
    outcome: str = "spend"
    ignore: tuple[str, ...] = ()
    learner: str = DEFAULT_LEARNER
    selection_folds: int = 3
    nested_folds: int = 3
    expected_share: float | None = None
    seed: int = 0
    params: BaseParams = field(default_factory=BaseParams)
    on_bad_rows: OnBadRows = OnBadRows.stop
    rejects: Path = DEFAULT_REJECTS
    # What the runs record as the data's source; by default the file's or folder's path.
    source: str | None = None

    def data_source(self) -> str:
        path = self.table or self.data
        return self.source or str(path.resolve() if path else "")

    def check(self) -> None:
        if (self.data is None) == (self.table is None):
            raise ExperimentError(f"give either {setting('data')} DIR (contract tables with "
                                  f"exposures) or {setting('table')} FILE (a flat experiment "
                                  "table)")
        if self.table is not None and (not self.treatments or not self.control):
            raise ExperimentError(f"{setting('table')} needs {setting('treatment')} COLUMN=VALUE "
                                  f"(once per arm) and {setting('control')} COLUMN=VALUE")
        if self.learner != AUTO and self.learner not in LEARNER_NAMES:
            raise ExperimentError(f"unknown learner {self.learner!r}; choose auto or one of "
                                  f"{', '.join(LEARNER_NAMES)}")
        if self.expected_share is not None and not 0.0 < self.expected_share < 1.0:
            raise ExperimentError(f"{setting('expected_share')} is the designed treated share of "
                                  "an arm plus control, between 0 and 1")
        if self.selection_folds < 2 or self.nested_folds < 2:
            raise ExperimentError(f"{setting('selection_folds')} and {setting('nested_folds')} "
                                  "must be at least 2")

    def candidates(self) -> list[str]:
        return list(SELECTABLE) if self.learner == AUTO else [self.learner]


# Propensity is P(at least one order in the horizon) for every customer who ever ordered: the
# churn label's complement over a base that reaches back through all history.
ALL_HISTORY_DAYS = 36_500
PROPENSITY_HORIZON_DAYS = 30


def propensity_labels(horizon_days: int = PROPENSITY_HORIZON_DAYS) -> ChurnLabelConfig:
    """The label a propensity model learns: no order in ``horizon_days`` (its complement is
    the purchase probability), for every customer with a past order."""
    return ChurnLabelConfig(horizon_days=horizon_days, base_days=ALL_HISTORY_DAYS)


@dataclass(frozen=True, kw_only=True)
class ValueTrainConfig(CutoffTrainConfig):
    """Everything a value training run needs: expected spend and orders over a horizon."""

    # Klaviyo's predicted-CLV horizon.
    horizon_days: int = 365
    # The spend forms compared on the validation cutoff (``models.value_model.SPEND_FORMS``).
    forms: tuple[str, ...] = ("tweedie", "two_part", "ziln")
    num_leaves: int = 15
    min_data_in_leaf: int = 100


LABELS = ChurnLabelConfig()
CHURN = defaults(ChurnTrainConfig)
UPLIFT = defaults(UpliftTrainConfig)
BASE = BaseParams()
VALUE = defaults(ValueTrainConfig)
