"""Load the registered models that hold the ``champion`` alias: churn (a plain Booster) and,
when one is registered, uplift."""

from __future__ import annotations

import functools
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from features.errors import ChurnError, setting
from models.churn_model import ARTIFACT_KEY, ChurnModel
from models.forest import CompiledForest, UnsupportedModel
from models.forest import compiled as compiled_booster
from models.registry import (
    CHAMPION,
    PROPENSITY_MODEL_NAME,
    TEST_ARTIFACT,
    UPLIFT_MODEL_NAME,
    VALUE_MODEL_NAME,
)
from models.uplift_model import ARTIFACT_KEY as UPLIFT_ARTIFACT_KEY
from models.uplift_model import UpliftModel
from models.value_model import ARTIFACT_KEY as VALUE_ARTIFACT_KEY
from models.value_model import ValueModel

LOG = logging.getLogger(__name__)
WARMUP_ROWS = 8


class NoChampionError(ChurnError, LookupError):
    """The registry has no champion to score with, or none that fits the data."""


@dataclass(frozen=True)
class DataCheck:
    """The data a champion is about to score, and whether a model from other data may."""

    source: Path | None = None
    allow_mismatch: bool = False


def trained_on(version: ModelVersion) -> str | None:
    """The data source a registered version was trained on (tag, or its run's param)."""
    if version.tags and "data_source" in version.tags:
        return version.tags["data_source"]
    try:
        return MlflowClient().get_run(version.run_id).data.params.get("data_source")
    except MlflowException:
        return None


def _check_source(version: ModelVersion, wanted: str | None, check: DataCheck,
                  what: str, remedy: str) -> None:
    if check.allow_mismatch or wanted is None:
        return
    source = trained_on(version)
    if source != wanted:
        raise NoChampionError(
            f"the '{version.name}' champion v{version.version} was trained on {source}, not on "
            f"{wanted} ({what}): {remedy}, or pass {setting('allow_data_mismatch')} to use it "
            f"anyway")


@dataclass(frozen=True)
class LoadedUplift:
    """An uplift model, the arm whose effect is scored, and its registry version."""

    model: UpliftModel
    name: str
    version: str
    arm: str

    @property
    def label(self) -> str:
        return f"{self.name}:v{self.version}"


@dataclass(frozen=True)
class LoadedExtra:
    """A propensity (``ChurnModel``) or value (``ValueModel``) champion and its version."""

    model: ChurnModel | ValueModel
    name: str
    version: str

    @property
    def label(self) -> str:
        return f"{self.name}:v{self.version}"

    @property
    def horizon_days(self) -> int:
        model = self.model
        return model.label.horizon_days if isinstance(model, ChurnModel) else model.horizon_days


@dataclass(frozen=True)
class LoadedModel:
    """A churn model with where it came from in the registry, and the uplift, propensity and
    value champions when they exist."""

    model: ChurnModel
    name: str
    version: str
    run_id: str
    uplift: LoadedUplift | None = None
    warmup: pd.DataFrame | None = None
    propensity: LoadedExtra | None = None
    value: LoadedExtra | None = None

    @property
    def label(self) -> str:
        parts = [f"{self.name}:v{self.version}"]
        parts += [m.label for m in (self.uplift, self.propensity, self.value) if m is not None]
        return ",".join(parts)

    def warmup_rows(self) -> pd.DataFrame:
        """A few feature rows to run through scoring before the first request."""
        return self.warmup if self.warmup is not None else self.test_rows().head(WARMUP_ROWS)

    def test_rows(self) -> pd.DataFrame:
        """The test rows (features, label, probability) its training run logged."""
        with tempfile.TemporaryDirectory(prefix="churn-test-rows-") as tmp:
            path = mlflow.artifacts.download_artifacts(
                run_id=self.run_id, artifact_path=TEST_ARTIFACT, dst_path=tmp)
            return pd.read_parquet(path)


def _download(name: str, version: str, key: str, load):
    with tempfile.TemporaryDirectory(prefix="churn-champion-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}",
                                                    dst_path=tmp)
        return load(Path(local) / "artifacts" / key)


def _registered(name: str) -> bool:
    try:
        MlflowClient().get_registered_model(name)
    except MlflowException:
        return False
    return True


def load_uplift_champion(name: str = "uplift", arm: str | None = None,
                         check: DataCheck = DataCheck(),
                         churn_source: str | None = None,
                         compiled: bool = False) -> LoadedUplift | None:
    """The uplift champion for scoring, or None when no uplift model holds the alias (the
    default name with nothing registered: scoring goes on without uplift). A name given that
    nothing is registered under is an error, not a silent switch of the win_back rule.

    Scoring feeds it the feature registry's columns, so a model trained on a flat table
    (other columns) is refused with a message saying how to get one that fits; so is one
    trained on other data than is scored (``check``), or, with no data given (the service),
    than the churn champion's (``churn_source``).
    """
    try:
        version = MlflowClient().get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        if name != UPLIFT_MODEL_NAME and not _registered(name):
            raise NoChampionError(
                f"no uplift model is registered as '{name}' (a typo?): give the name it was "
                f"registered under, or turn uplift off with {setting('no_uplift')}") from None
        return None
    load = functools.partial(UpliftModel.load, wrap=compiled_booster if compiled else None)
    model = _download(name, str(version.version), UPLIFT_ARTIFACT_KEY, load)
    if not model.uses_registry_features():
        raise NoChampionError(
            f"the '{name}' champion v{version.version} was trained on a flat table "
            f"({', '.join(model.features[:4])}, ...), not on the feature registry; train one "
            "on contract tables with exposures and promote it, or set "
            "win_back.uses_uplift = false in the policy")
    wanted = str(check.source.resolve()) if check.source else churn_source
    _check_source(version, wanted, check,
                  "the data scored" if check.source else "the churn champion's data",
                  "train one on that data under a name of its own and score with "
                  f"{setting('uplift_model_name')} NAME, turn uplift off with "
                  f"{setting('no_uplift')}")
    if arm and arm not in model.arms:
        raise NoChampionError(f"the '{name}' champion v{version.version} has arms "
                              f"{', '.join(model.arms)}; the policy asks for {arm!r}")
    return LoadedUplift(model, name, str(version.version), arm or model.arms[0])


def load_extra_champion(name: str | None, key: str, load, check: DataCheck,
                        churn_source: str | None) -> LoadedExtra | None:
    """The propensity or value champion of ``name``, or None when none holds the alias; one
    trained on other data than is scored (or than the churn champion) is refused."""
    if not name:
        return None
    try:
        version = MlflowClient().get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    wanted = str(check.source.resolve()) if check.source else churn_source
    _check_source(version, wanted, check,
                  "the data scored" if check.source else "the churn champion's data",
                  "train one on that data under a name of its own")
    return LoadedExtra(_download(name, str(version.version), key, load), name,
                       str(version.version))


def use_compiled_forest(model: ChurnModel) -> bool:
    """Score ``model`` with a ``CompiledForest`` when it gives LightGBM's exact margins;
    otherwise keep ``Booster.predict`` and say why. True when the compiled one is used."""
    try:
        forest = CompiledForest.from_booster(model.booster)
        forest.check_against(model.booster)
    except UnsupportedModel as err:
        LOG.warning("scoring with LightGBM's own predict: %s", err)
        return False
    model.evaluator = forest.margins
    return True


def use_compiled_value(model: ValueModel) -> None:
    """The value model's boosters on compiled forests, each where it gives LightGBM's
    numbers (checked on probe rows when built)."""
    model.spend = {part: compiled_booster(booster) for part, booster in model.spend.items()}
    model.orders = compiled_booster(model.orders)


def load_champion(name: str = "churn", uplift: bool = False,
                  uplift_arm: str | None = None, compiled: bool = True,
                  uplift_name: str = "uplift", check: DataCheck = DataCheck(),
                  propensity_name: str | None = PROPENSITY_MODEL_NAME,
                  value_name: str | None = VALUE_MODEL_NAME) -> LoadedModel:
    """The ``champion`` version of ``name`` (and, with ``uplift``, that of ``uplift_name``).

    ``compiled`` scores with a ``CompiledForest`` (same margins, several times faster)
    when the model allows it. With ``check.source`` set, a champion trained on other data is
    refused unless ``check.allow_mismatch``.
    """
    try:
        version = MlflowClient().get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        raise NoChampionError(
            f"no '{name}' model holds the '{CHAMPION}' alias in {mlflow.get_tracking_uri()}; "
            f"train a churn model registered as '{name}' and promote it"
        ) from None
    wanted = str(check.source.resolve()) if check.source else None
    _check_source(version, wanted, check, "the data scored",
                  f"score with the model trained on this data ({setting('model_name')} NAME)")
    model = _download(name, str(version.version), ARTIFACT_KEY, ChurnModel.load)
    if compiled:
        use_compiled_forest(model)
    source = trained_on(version)
    loaded_uplift = (load_uplift_champion(uplift_name, uplift_arm, check, source, compiled)
                     if uplift else None)
    propensity = load_extra_champion(propensity_name, ARTIFACT_KEY, ChurnModel.load, check,
                                     source)
    if propensity is not None and compiled:
        use_compiled_forest(propensity.model)  # type: ignore[arg-type]
    value = load_extra_champion(value_name, VALUE_ARTIFACT_KEY, ValueModel.load, check, source)
    if value is not None and compiled:
        use_compiled_value(value.model)  # type: ignore[arg-type]
    return LoadedModel(model, name, str(version.version), version.run_id, loaded_uplift,
                       propensity=propensity, value=value)


def champion_versions(name: str, uplift_name: str | None) -> tuple[str, str | None]:
    """The registry versions that hold the ``champion`` alias now: (churn, uplift or None).
    Cheap (no download), for noticing a new champion."""
    client = MlflowClient()
    churn = str(client.get_model_version_by_alias(name, CHAMPION).version)
    if uplift_name is None:
        return churn, None
    try:
        return churn, str(client.get_model_version_by_alias(uplift_name, CHAMPION).version)
    except MlflowException:
        return churn, None
