"""The Python API: what the `churn` command does, on pandas DataFrames or a data folder.

Every function takes its data as a folder of contract tables (``str`` or ``Path``), a
DataFrame of transactions, or ``Tables`` (transactions plus optional events, customers and
exposures). DataFrames go through the same contract validation as files: they are written
to a temporary folder as Parquet and read by the same code as ``churn features --data``.

    >>> import pandas as pd, churn
    >>> tx = pd.read_csv("cdnow/transactions.csv", dtype={"customer_id": str, "order_id": str})
    >>> features = churn.features_at(tx, as_of="1998-01-01")
    >>> result = churn.train_churn(tx, cutoffs=6, test_cutoff="1998-04-01")
    >>> churn.metrics_table(result)            # the model beside its baselines
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow as pa

from features.contract import TABLES, ContractError
from features.job import FeaturesJobConfig, features_frame
from features.labels import LABEL, ChurnLabelConfig, check_matured
from features.point_in_time import connect
from features.tables import DEFAULT_REJECTS, load_tables
from features.validation import OnBadRows
from models.registry import (
    CHURN_MODEL_NAME,
    PROPENSITY_MODEL_NAME,
    UPLIFT_MODEL_NAME,
    VALUE_MODEL_NAME,
)
from models.store import check_store, now_ms
from serving.batch import ScoreJobConfig, score_frame
from serving.champion import LoadedModel
from serving.champion import load_champion as _load_champion
from serving.policy import DEFAULT_POLICY, SegmentPolicy
from training.backtest import BacktestResult, run_backtest
from training.config import (
    CHURN,
    DEFAULT_TRAIN_CUTOFFS,
    LABELS,
    PROPENSITY_HORIZON_DAYS,
    UPLIFT,
    VALUE,
    ChurnTrainConfig,
    UpliftTrainConfig,
    ValueTrainConfig,
)
from training.dataset import snapshot as _snapshot
from training.promote import Promotion
from training.promote import promote as _promote
from training.propensity import as_propensity, propensity_config
from training.tracking import LoggedRun, log_backtest_run, log_churn_run, metrics_table
from training.train_churn import ChurnTrainResult, train_on_tables
from training.train_uplift import UpliftResult, evaluation_metrics, summarize_evaluation
from training.train_uplift import evaluate_uplift as _evaluate_uplift
from training.train_uplift import train_uplift as _train_uplift
from training.train_value import ValueTrainResult
from training.train_value import metrics_table as _value_table
from training.train_value import train_value as _train_value
from training.uplift_learners import LEARNERS, UpliftLearner
from training.uplift_tracking import log_uplift_run
from training.value_tracking import log_value_run

__all__ = [
    "BacktestResult", "ChurnTrainResult", "LoadedModel", "LoggedRun", "Promotion", "Tables",
    "UpliftEvaluation", "UpliftResult", "backtest_churn", "churn_labels", "evaluate_uplift",
    "features_at", "load_champion", "metrics_table", "promote", "score", "snapshot",
    "train_churn", "train_propensity", "train_uplift", "train_value", "uplift_learners",
    "value_metrics_table",
]

Day = date | str


@dataclass(frozen=True)
class Tables:
    """Contract tables held in memory, as pandas DataFrames.

    Parameters
    ----------
    transactions : DataFrame
        One row per order line: ``customer_id``, ``order_id``, ``ordered_at``, ``amount``
        and optionally ``channel`` (see the data contract). Timestamps may be datetimes or
        ISO strings; naive ones are read as UTC.
    events, customers, exposures : DataFrame, optional
        The optional contract tables.
    name : str
        What runs call this data in their names, e.g. ``churn-NAME-test-1998-04-01``.
    """

    transactions: pd.DataFrame
    events: pd.DataFrame | None = None
    customers: pd.DataFrame | None = None
    exposures: pd.DataFrame | None = None
    name: str = "dataframes"

    def frames(self) -> dict[str, pd.DataFrame]:
        """The tables given, by contract name."""
        given = {name: getattr(self, name) for name in TABLES}
        for name, frame in given.items():
            if frame is not None and not isinstance(frame, pd.DataFrame):
                raise TypeError(f"{name}: expected a pandas DataFrame, got "
                                f"{type(frame).__name__}")
        return {name: frame for name, frame in given.items() if frame is not None}

    def digest(self) -> str:
        """A short digest of the tables' content (recorded as the runs' data source)."""
        h = hashlib.sha256()
        for name, frame in self.frames().items():
            h.update(name.encode())
            h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
        return h.hexdigest()[:16]

    @property
    def source(self) -> str:
        return f"dataframes:{self.name}:{self.digest()}"

    @contextmanager
    def folder(self) -> Iterator[Path]:
        """The tables written as ``NAME.parquet`` files in a temporary folder."""
        with tempfile.TemporaryDirectory(prefix="churn-tables-") as tmp:
            folder = Path(tmp) / self.name
            folder.mkdir()
            for name, frame in self.frames().items():
                _write_table(frame, folder / f"{name}.parquet", name)
            yield folder


def _write_table(frame: pd.DataFrame, path: Path, name: str) -> None:
    try:
        frame.to_parquet(path, index=False)
    except (pa.ArrowException, ValueError, TypeError) as err:
        raise ContractError(f"{name}: cannot be read as a table ({err}); give each column "
                            f"one type") from None


@contextmanager
def _folder(data: str | Path | pd.DataFrame | Tables) -> Iterator[tuple[Path, str | None]]:
    """The data as a folder of contract tables, and the source runs should record (None:
    the folder's own path)."""
    if isinstance(data, pd.DataFrame):
        data = Tables(transactions=data)
    if isinstance(data, Tables):
        with data.folder() as folder:
            yield folder, data.source
        return
    if isinstance(data, (str, Path)):
        yield Path(data), None
        return
    raise TypeError(f"data: expected a folder path, a DataFrame of transactions or Tables, "
                    f"got {type(data).__name__}")


def _day(value: Day, what: str) -> date:
    if isinstance(value, pd.Timestamp):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ContractError(f"{what}: '{value}' is not a date such as 2026-06-01") from None


def _steps(verbose: bool) -> Callable[[str], None] | None:
    """A step reporter printing what is being done and the time so far, or nothing."""
    if not verbose:
        return None
    started = time.perf_counter()
    return lambda text: print(f"[{time.perf_counter() - started:6.1f} s] {text}", flush=True)


def _checked_store() -> None:
    check_store(mlflow.get_tracking_uri())


@contextmanager
def _quiet_downloads() -> Iterator[None]:
    """No per-file download bars from MLflow (unless the caller asked for them)."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    if key in os.environ:
        yield
        return
    os.environ[key] = "false"
    try:
        yield
    finally:
        os.environ.pop(key, None)


# --- features and labels -------------------------------------------------------------------


def features_at(transactions: str | Path | pd.DataFrame | Tables,
                events: pd.DataFrame | None = None, customers: pd.DataFrame | None = None,
                *, as_of: Day, on_bad_rows: str = CHURN.on_bad_rows.value,
                rejects: str | Path = DEFAULT_REJECTS) -> pd.DataFrame:
    """Point-in-time features of every customer as of ``as_of``, from rows before it only.

    Parameters
    ----------
    transactions : DataFrame, Tables, str or Path
        The transactions table, or ``Tables``, or a folder holding the contract tables.
    events, customers : DataFrame, optional
        Engagement events and customers, when ``transactions`` is a DataFrame.
    as_of : date or str
        The cutoff: the features see only rows stamped before its midnight (UTC).
    on_bad_rows : {"stop", "quarantine"}
        Whether rows that break the contract stop the call (the default, naming the rule
        and the rows) or are set aside in ``rejects``.

    Returns
    -------
    DataFrame
        One row per customer: ``customer_id``, ``as_of`` and the features of
        docs/FEATURES.md, exactly what ``churn features`` writes for the same data.

    Examples
    --------
    >>> tx = pd.read_csv("transactions.csv", dtype={"customer_id": str, "order_id": str})
    >>> churn.features_at(tx, as_of="1998-01-01").set_index("customer_id")["recency_days"]
    """
    if isinstance(transactions, pd.DataFrame):
        transactions = Tables(transactions, events, customers)
    elif events is not None or customers is not None:
        raise TypeError("events and customers go with a DataFrame of transactions; put them "
                        "in Tables or in the folder instead")
    with _folder(transactions) as (folder, _):
        cfg = FeaturesJobConfig(data=folder, as_of=_day(as_of, "as_of"), out=Path("unused"),
                                on_bad_rows=OnBadRows(on_bad_rows), rejects=Path(rejects))
        return features_frame(cfg)


def _labels(horizon_days: int, base_days: int) -> ChurnLabelConfig:
    return ChurnLabelConfig(horizon_days=horizon_days, base_days=base_days)


def snapshot(data: str | Path | pd.DataFrame | Tables, cutoff: Day, *,
             horizon_days: int = LABELS.horizon_days,
             base_days: int = LABELS.base_days) -> pd.DataFrame:
    """The churn base at ``cutoff`` with its features and its label, one row per customer.

    The base is every customer with an order in the ``base_days`` before ``cutoff`` (and
    profiling consent); ``churned`` is 1 when they ordered nothing in the ``horizon_days``
    from it. This is one training snapshot, as ``train_churn`` stacks them.
    """
    day = _day(cutoff, "cutoff")
    with _folder(data) as (folder, _), tempfile.TemporaryDirectory() as work, \
            connect(temp_dir=Path(work) / "spill") as con:
        loaded = load_tables(con, folder, Path(work))
        check_matured([day], horizon_days, loaded.end)
        return _snapshot(con, loaded.relations, day, _labels(horizon_days, base_days))


def churn_labels(data: str | Path | pd.DataFrame | Tables, cutoff: Day, *,
                 horizon_days: int = LABELS.horizon_days,
                 base_days: int = LABELS.base_days) -> pd.DataFrame:
    """``customer_id`` and ``churned`` (0/1) for the churn base at ``cutoff``: the labels of
    ``snapshot`` without the features (customers without profiling consent are left out).

    See ``snapshot`` for the definitions; the label window must have ended in the data.
    """
    frame = snapshot(data, cutoff, horizon_days=horizon_days, base_days=base_days)
    return frame[["customer_id", LABEL]]


# --- the churn model -----------------------------------------------------------------------


def _cutoff_dates(cutoffs: int | Sequence[Day] | None
                  ) -> tuple[tuple[date, ...] | None, int]:
    """Training cutoffs as dates, or a count of monthly ones."""
    if isinstance(cutoffs, int):
        return None, cutoffs
    if cutoffs is not None:
        return tuple(sorted(_day(c, "cutoffs") for c in cutoffs)), DEFAULT_TRAIN_CUTOFFS
    return None, DEFAULT_TRAIN_CUTOFFS


def _churn_config(folder: Path, source: str | None, cutoffs: int | Sequence[Day] | None,
                  validation_cutoff: Day | None, test_cutoff: Day | None, horizon_days: int,
                  base_days: int, **options: object) -> ChurnTrainConfig:
    dates, count = _cutoff_dates(cutoffs)
    return ChurnTrainConfig(
        data=folder, source=source, cutoffs=dates, train_cutoff_count=count,
        validation_cutoff=_day(validation_cutoff, "validation_cutoff")
        if validation_cutoff else None,
        test_cutoff=_day(test_cutoff, "test_cutoff") if test_cutoff else None,
        labels=_labels(horizon_days, base_days), **options)  # type: ignore[arg-type]


def train_churn(data: str | Path | pd.DataFrame | Tables, *,
                cutoffs: int | Sequence[Day] | None = None,
                validation_cutoff: Day | None = None, test_cutoff: Day | None = None,
                horizon_days: int = LABELS.horizon_days, base_days: int = LABELS.base_days,
                learning_rate: float = CHURN.learning_rate,
                num_leaves: int = CHURN.num_leaves, max_trees: int = CHURN.max_trees,
                seed: int = CHURN.seed,
                on_bad_rows: str = CHURN.on_bad_rows.value, track: bool = True,
                experiment: str = "churn",
                model_name: str = CHURN_MODEL_NAME, verbose: bool = False) -> ChurnTrainResult:
    """Train the churn model as ``churn train churn`` does, and (``track``) log and register it.

    Parameters
    ----------
    data : str, Path, DataFrame or Tables
        A folder of contract tables, a DataFrame of transactions, or ``Tables``.
    cutoffs : int or list of dates, optional
        Training cutoffs: how many monthly ones (default 6), or the dates themselves.
    validation_cutoff, test_cutoff : date or str, optional
        The validation cutoff stops the trees early and picks the calibration; the test
        cutoff, which neither saw, measures the model. By default both come from the data's
        span, a label horizon apart.
    horizon_days, base_days : int
        The churn label: no order within ``horizon_days`` of the cutoff, for customers with an
        order in the ``base_days`` before it.
    track : bool
        Log the run to the current MLflow tracking store (``mlflow.get_tracking_uri()``) and
        register the model as ``model_name``; the run starts when training starts.
    verbose : bool
        Print each step with the time so far.

    Returns
    -------
    ChurnTrainResult
        ``model`` (predicts churn probabilities from features), ``metrics`` of the model and
        the baselines on the test cutoff (``metrics_table(result)`` as a DataFrame), the
        ``test`` rows with their ``churn_probability``, and ``run`` (a ``LoggedRun`` with
        ``run_id`` and ``model_version``) when tracked.
    """
    if track:
        _checked_store()
    started = now_ms()
    with _folder(data) as (folder, source):
        cfg = _churn_config(folder, source, cutoffs, validation_cutoff, test_cutoff,
                            horizon_days, base_days, learning_rate=learning_rate,
                            num_leaves=num_leaves, max_trees=max_trees, seed=seed,
                            on_bad_rows=OnBadRows(on_bad_rows))
        with tempfile.TemporaryDirectory(prefix="churn-train-") as work, \
                connect(cfg.memory_limit, Path(work) / "spill") as con:
            loaded = load_tables(con, folder, Path(work), cfg.on_bad_rows)
            result = train_on_tables(cfg, con, loaded, _steps(verbose))
        if track:
            with _quiet_downloads():
                result.run = log_churn_run(cfg, result, experiment, model_name, started)
    return result


def train_propensity(data: str | Path | pd.DataFrame | Tables, *,
                     horizon_days: int = PROPENSITY_HORIZON_DAYS,
                     cutoffs: int | Sequence[Day] | None = None,
                     validation_cutoff: Day | None = None, test_cutoff: Day | None = None,
                     seed: int = CHURN.seed, on_bad_rows: str = CHURN.on_bad_rows.value,
                     track: bool = True, experiment: str = "propensity",
                     model_name: str = PROPENSITY_MODEL_NAME,
                     verbose: bool = False) -> ChurnTrainResult:
    """Train the purchase propensity model, as ``churn train propensity`` does: P(an order
    within ``horizon_days``) for every customer with a past order, lapsed ones included.

    Cutoffs as for ``train_churn``. The result is reported on the purchase label:
    ``metrics`` (ROC AUC, PR AUC, ECE, ...) of the model, the recency rule and BG/NBD's P(at
    least one order in the horizon) on the same customers (``metrics_table(result)``);
    ``result.model_scores()`` are the purchase probabilities of the test rows. With ``track``
    the run is logged and the model registered as ``model_name``.
    """
    if track:
        _checked_store()
    started = now_ms()
    with _folder(data) as (folder, source):
        cfg = propensity_config(_churn_config(
            folder, source, cutoffs, validation_cutoff, test_cutoff, horizon_days,
            LABELS.base_days, seed=seed, on_bad_rows=OnBadRows(on_bad_rows)), horizon_days)
        with tempfile.TemporaryDirectory(prefix="churn-train-") as work, \
                connect(cfg.memory_limit, Path(work) / "spill") as con:
            loaded = load_tables(con, folder, Path(work), cfg.on_bad_rows)
            result = as_propensity(train_on_tables(cfg, con, loaded, _steps(verbose)))
        if track:
            with _quiet_downloads():
                result.run = log_churn_run(cfg, result, experiment, model_name, started)
    return result


def train_value(data: str | Path | pd.DataFrame | Tables, *,
                horizon_days: int = VALUE.horizon_days,
                cutoffs: int | Sequence[Day] | None = None,
                validation_cutoff: Day | None = None, test_cutoff: Day | None = None,
                forms: Sequence[str] = VALUE.forms, seed: int = VALUE.seed,
                on_bad_rows: str = VALUE.on_bad_rows.value, track: bool = True,
                experiment: str = "value", model_name: str = VALUE_MODEL_NAME,
                verbose: bool = False) -> ValueTrainResult:
    """Train the value model, as ``churn train value`` does: expected spend and orders over
    ``horizon_days`` for every customer with a past order.

    The spend ``forms`` (tweedie, two_part, ziln) are compared on the validation cutoff and
    the one with the higher normalised Gini kept. ``result.metrics`` holds Spearman,
    normalised Gini, decile MAPE and total forecast error of the model, BG/NBD x Gamma-Gamma
    and last period's spend repeated on the test cutoff (``value_metrics_table``);
    ``result.model.predict_spend(features)`` forecasts. Three roles of cutoffs a horizon
    apart need three horizons of history: on short data pass a shorter ``horizon_days``.
    """
    if track:
        _checked_store()
    started = now_ms()
    with _folder(data) as (folder, source):
        dates, count = _cutoff_dates(cutoffs)
        cfg = ValueTrainConfig(
            data=folder, source=source, cutoffs=dates, train_cutoff_count=count,
            validation_cutoff=_day(validation_cutoff, "validation_cutoff")
            if validation_cutoff else None,
            test_cutoff=_day(test_cutoff, "test_cutoff") if test_cutoff else None,
            horizon_days=horizon_days, forms=tuple(forms), seed=seed,
            on_bad_rows=OnBadRows(on_bad_rows))
        result = _train_value(cfg, on_step=_steps(verbose))
        if track:
            with _quiet_downloads():
                result.run = log_value_run(cfg, result, experiment, model_name, started)
    return result


def value_metrics_table(result: ValueTrainResult) -> pd.DataFrame:
    """The value model's and its baselines' metrics on the test cutoff, one row each."""
    return _value_table(result.metrics)


def backtest_churn(data: str | Path | pd.DataFrame | Tables, origins: Sequence[Day], *,
                   cutoffs: int = CHURN.train_cutoff_count,
                   horizon_days: int = LABELS.horizon_days, base_days: int = LABELS.base_days,
                   learning_rate: float = CHURN.learning_rate, num_leaves: int = CHURN.num_leaves,
                   max_trees: int = CHURN.max_trees,
                   seed: int = CHURN.seed, on_bad_rows: str = CHURN.on_bad_rows.value,
                   track: bool = True,
                   experiment: str = "churn-backtest", verbose: bool = False
                   ) -> BacktestResult:
    """Rolling-origin backtest, as ``churn backtest churn``: the figure to quote.

    At each origin the model is trained as ``train_churn`` would have been then (the origin
    as its test cutoff) and measured on the base at the origin beside the recency rule and
    BG/NBD. ``result.per_origin`` has one row per origin and scorer; ``result.summary()``
    the mean and standard deviation over origins. With ``track`` the backtest is one MLflow
    run (nothing is registered).
    """
    if track:
        _checked_store()
    started = now_ms()
    days = tuple(_day(o, "origins") for o in origins)
    with _folder(data) as (folder, source):
        cfg = _churn_config(folder, source, cutoffs, None, None, horizon_days, base_days,
                            learning_rate=learning_rate, num_leaves=num_leaves,
                            max_trees=max_trees, seed=seed, on_bad_rows=OnBadRows(on_bad_rows))
        result = run_backtest(cfg, days, on_step=_steps(verbose))
        if track:
            with _quiet_downloads():
                result.run = log_backtest_run(cfg, result, experiment, started)
    return result


def promote(kind: str = "churn", *, name: str | None = None, run_id: str | None = None,
            min_gain: float = 0.0) -> Promotion:
    """Make the newest registered version (or ``run_id``'s) of ``name`` champion if it wins.

    ``kind`` is ``churn`` or ``uplift``; ``name`` defaults to it. A first champion must beat
    the recency rule (churn) or random targeting (uplift) on its own held-out rows; a later
    one must beat the champion on rows neither trained on. ``Promotion.message()`` says
    what was decided; a candidate that cannot be judged raises ``PromotionError``.
    """
    _checked_store()
    with _quiet_downloads():
        return _promote(name or kind, run_id, min_gain, kind)


# --- uplift ----------------------------------------------------------------------------------


@contextmanager
def _uplift_config(data: str | Path | pd.DataFrame | Tables | None,
                   table: str | Path | pd.DataFrame | None, name: str,
                   **options: object) -> Iterator[UpliftTrainConfig]:
    if isinstance(table, pd.DataFrame):
        with tempfile.TemporaryDirectory(prefix="churn-experiment-") as tmp:
            path = Path(tmp) / f"{name}.parquet"
            _write_table(table, path, "table")
            digest = hashlib.sha256(pd.util.hash_pandas_object(table, index=False)
                                    .to_numpy().tobytes()).hexdigest()[:16]
            cfg = UpliftTrainConfig(table=path, source=f"dataframe:{digest}", **options)
            cfg.check()
            yield cfg
        return
    if table is not None:
        cfg = UpliftTrainConfig(table=Path(table), **options)  # type: ignore[arg-type]
        cfg.check()
        yield cfg
        return
    if data is None:
        yield UpliftTrainConfig(**options)  # type: ignore[arg-type]
        return
    with _folder(data) as (folder, source):
        yield UpliftTrainConfig(data=folder, source=source, **options)  # type: ignore[arg-type]


def train_uplift(data: str | Path | pd.DataFrame | Tables | None = None, *,
                 table: str | Path | pd.DataFrame | None = None,
                 treatments: Sequence[str] = (), control: str | None = None,
                 outcome: str = UPLIFT.outcome, ignore: Sequence[str] = (),
                 campaign: str | None = None, horizon_days: int = UPLIFT.horizon_days,
                 learner: str = UPLIFT.learner, seed: int = UPLIFT.seed, name: str = "dataframe",
                 track: bool = True,
                 experiment: str = "uplift", model_name: str = UPLIFT_MODEL_NAME,
                 verbose: bool = False) -> UpliftResult:
    """Fit the spend-uplift model, as ``churn train uplift``, and (``track``) register it.

    Give either ``data`` (contract tables with exposures: a randomised campaign) or
    ``table`` (a flat experiment table, one row per customer, e.g. Hillstrom) with
    ``treatments`` (``"COLUMN=VALUE"`` per arm) and ``control`` (``"COLUMN=VALUE"``).

    ``learner`` is ``adaptive`` (the default: the learners weighted by their skill on
    held-out rows, unskilled ones left out, shrunk to the effect scale those rows support;
    see ``training.uplift_learners.AdaptiveLearner``), ``ensemble`` (all averaged),
    ``ensemble_or_distilled``, ``stacked``, ``auto`` (one chosen per arm by out-of-fold
    Qini) or one of t_learner, x_learner, dr_learner, dr_linear, transformed_outcome,
    two_part. ``name`` is what runs call a
    DataFrame ``table`` (``uplift-NAME-spend``). The result's ``arms`` hold per arm the
    average effects, the learners' Qini and the nested out-of-fold metrics;
    ``model.predict(features)`` gives each customer's spend uplift and, for a spend
    outcome, ``uplift_conversion_<arm>`` and ``uplift_order_value_<arm>``.
    """
    if track:
        _checked_store()
    started = now_ms()
    with _uplift_config(data, table, name, treatments=tuple(treatments), control=control,
                        outcome=outcome, ignore=tuple(ignore), campaign=campaign,
                        horizon_days=horizon_days, learner=learner, seed=seed) as cfg:
        result = _train_uplift(cfg, progress=_steps(verbose))
        if track:
            with _quiet_downloads():
                result.run = log_uplift_run(cfg, result, experiment, model_name, started)
    return result


def uplift_learners() -> dict[str, UpliftLearner]:
    """Every uplift learner by name, unfitted, with LightGBM's default settings.

    Each is a scikit-learn meta-estimator: ``fit(X, y, treatment)`` (``treatment`` 1 for
    treated rows, 0 for the randomised control), ``predict(X)`` the effect per row,
    ``get_params``/``set_params``, and ``sklearn.base.clone`` for an unfitted copy.
    """
    return {name: learner() for name, learner in LEARNERS.items()}


@dataclass
class UpliftEvaluation:
    """Out-of-fold uplift ``scores`` per customer, arm and repeat, and their ``summary``:
    Qini (mean, spread), AUUC and uplift in the top 10/20/30% per arm, outcome and scorer."""

    scores: pd.DataFrame
    summary: pd.DataFrame


def evaluate_uplift(data: str | Path | pd.DataFrame | Tables | None = None, *,
                    table: str | Path | pd.DataFrame | None = None,
                    treatments: Sequence[str] = (), control: str | None = None,
                    outcome: str = UPLIFT.outcome, ignore: Sequence[str] = (),
                    campaign: str | None = None, horizon_days: int = UPLIFT.horizon_days,
                    learner: str = UPLIFT.learner, folds: int = 5, repeats: int = 1,
                    seed: int = UPLIFT.seed, name: str = "dataframe",
                    verbose: bool = False) -> UpliftEvaluation:
    """Honest out-of-fold evaluation of the uplift trainer, as ``churn evaluate uplift``.

    Each outer fold is scored by a model whose learner was chosen and fitted without it;
    ``repeats`` reshuffles the folds to show the spread. Arguments as for ``train_uplift``.
    """
    with _uplift_config(data, table, name, treatments=tuple(treatments), control=control,
                        outcome=outcome, ignore=tuple(ignore), campaign=campaign,
                        horizon_days=horizon_days, learner=learner, seed=seed) as cfg:
        scores = _evaluate_uplift(cfg, folds, repeats, progress=_steps(verbose))
    return UpliftEvaluation(scores, summarize_evaluation(evaluation_metrics(scores)))


# --- scoring ---------------------------------------------------------------------------------


def load_champion(name: str = CHURN_MODEL_NAME, *,
                  uplift_name: str | None = UPLIFT_MODEL_NAME) -> LoadedModel:
    """The registered ``champion`` of ``name``, with the ``uplift_name`` champion when one
    exists (``None``: without uplift), ready for ``score``."""
    _checked_store()
    with _quiet_downloads():
        return _load_champion(name, uplift=uplift_name is not None,
                              uplift_name=uplift_name or "uplift")


def score(data: str | Path | pd.DataFrame | Tables, *, as_of: Day,
          model: LoadedModel | None = None, policy: SegmentPolicy | str | Path | None = None,
          explain: bool = True, on_bad_rows: str = CHURN.on_bad_rows.value) -> pd.DataFrame:
    """Score every consenting customer as of ``as_of`` into lifecycle segments.

    Returns what ``churn score`` writes, one row per customer: ``churn_probability``,
    ``churn_percentile``, ``risk_band``, ``value_at_risk``, ``uplift_spend``, ``segment``,
    ``spend_tier``, ``contactable`` and (``explain``) the ``reasons`` behind the score.
    ``model`` defaults to ``load_champion()``; ``policy`` to the packaged segments.toml
    (or a path to your own). Warnings about the data (stale as-of) are issued as
    ``UserWarning``.
    """
    loaded = model or load_champion()
    rules = (policy if isinstance(policy, SegmentPolicy)
             else SegmentPolicy.load(Path(policy or DEFAULT_POLICY)))
    if not rules.uses_uplift or loaded.uplift is None:
        loaded = replace(loaded, uplift=None)
    with _folder(data) as (folder, _):
        cfg = ScoreJobConfig(data=folder, as_of=_day(as_of, "as_of"), out="", policy=rules,
                             on_bad_rows=OnBadRows(on_bad_rows), reasons=explain)
        scores, notes = score_frame(cfg, loaded)
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    return scores
