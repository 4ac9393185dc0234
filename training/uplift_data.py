"""Experiment data for uplift: who was treated, what they looked like before, what they did.

Two ways in, one shape out (``Experiment``):

- contract tables: ``exposures`` (treatment 1 / randomised holdout 0) joined to the
  point-in-time features as of the exposure day and to the outcomes from ``transactions``
  in ``[exposed_at, exposed_at + H days)``;
- a flat experiment table, one row per customer, the way an A/B test is often kept: a column
  naming the group, an outcome column, and the rest as features.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from features.errors import setting
from features.point_in_time import feature_query
from features.registry import feature_names
from features.tables import LoadedTables
from training.config import ExperimentError

CONTROL = "control"
OUTCOMES = ("spend", "conversion", "orders", "aov")


@dataclass
class Experiment:
    """Features, group and outcomes of every customer in one randomised experiment.

    ``group`` holds ``CONTROL`` or an arm's name. ``outcomes`` has ``spend`` (the outcome
    modelled), ``conversion`` (1 when spend > 0, or the outcome itself when it is 0/1) and,
    when it can be told, ``aov`` (spend per order among buyers, NaN otherwise).
    """

    ids: np.ndarray
    features: pd.DataFrame
    group: np.ndarray
    outcomes: pd.DataFrame
    source: str
    outcome_name: str

    @property
    def arms(self) -> list[str]:
        return sorted(set(self.group) - {CONTROL})

    def arm(self, name: str) -> Experiment:
        """Only this arm's rows and the control rows."""
        keep = (self.group == name) | (self.group == CONTROL)
        return Experiment(self.ids[keep], self.features[keep].reset_index(drop=True),
                          self.group[keep], self.outcomes[keep].reset_index(drop=True),
                          self.source, self.outcome_name)

    def treated(self) -> np.ndarray:
        return (self.group != CONTROL).astype(np.int8)

    def outcome(self) -> np.ndarray:
        return self.outcomes["spend"].to_numpy(dtype=float)


def _derived_outcomes(spend: pd.Series, orders: pd.Series | None = None) -> pd.DataFrame:
    spend = pd.to_numeric(spend).astype(float)
    binary = bool(spend.isin([0.0, 1.0]).all())
    buyers = spend > 0
    out = pd.DataFrame({"spend": spend, "conversion": buyers.astype(float)})
    if orders is not None:
        out["orders"] = orders.astype(float)
        out["aov"] = (spend / orders.where(orders > 0)).where(buyers)
    elif not binary:
        out["aov"] = spend.where(buyers)
    return out


# --- contract tables -------------------------------------------------------------------


def campaigns(con: duckdb.DuckDBPyConnection, loaded: LoadedTables) -> list[str]:
    """The campaign ids in the exposures table."""
    table = loaded.relations["exposures"]
    return [r[0] for r in con.sql(f"SELECT DISTINCT campaign_id FROM {table} ORDER BY 1")
            .fetchall()]


def choose_campaign(con: duckdb.DuckDBPyConnection, loaded: LoadedTables,
                     campaign: str | None) -> str:
    if not loaded.has("exposures"):
        raise ExperimentError("uplift needs an exposures table (customer_id, campaign_id, "
                              "exposed_at, treatment) in the data folder")
    known = campaigns(con, loaded)
    if campaign is None:
        if len(known) != 1:
            raise ExperimentError(f"exposures holds {len(known)} campaigns; pick one with "
                                  f"{setting('campaign')}: {', '.join(known[:10])}")
        return known[0]
    if campaign not in known:
        raise ExperimentError(f"campaign {campaign!r} is not in exposures; it holds: "
                              f"{', '.join(known[:10])}")
    return campaign


def outcome_query(exposures: str, transactions: str, campaign: str, horizon_days: int) -> str:
    """Per exposed customer: spend (returns net off) and orders in the outcome window."""
    return f"""
SELECT e.customer_id, e.exposed_at, CAST(e.treatment AS INTEGER) AS treatment,
       CAST(e.exposed_at AS DATE) AS feature_day,
       coalesce(sum(t.amount), 0) AS spend,
       count(DISTINCT CASE WHEN t.amount >= 0 THEN t.order_id END) AS orders
FROM {exposures} e
LEFT JOIN {transactions} t
  ON t.customer_id = e.customer_id AND t.ordered_at >= e.exposed_at
 AND t.ordered_at < e.exposed_at + INTERVAL {int(horizon_days)} DAY
WHERE e.campaign_id = '{campaign.replace("'", "''")}'
GROUP BY ALL
ORDER BY e.customer_id"""


def experiment_from_contract(con: duckdb.DuckDBPyConnection, loaded: LoadedTables,
                             campaign: str | None, horizon_days: int) -> Experiment:
    """Exposed customers of ``campaign`` with features as of their exposure day."""
    campaign = choose_campaign(con, loaded, campaign)
    rel = loaded.relations
    exposed = con.sql(outcome_query(rel["exposures"], rel["transactions"], campaign,
                                    horizon_days)).df()
    last_end = pd.Timestamp(exposed["exposed_at"].max()) + timedelta(days=horizon_days)
    if last_end.date() > loaded.end:
        raise ExperimentError(
            f"the {horizon_days}-day outcome window of campaign {campaign!r} ends "
            f"{last_end.date()}, after the data ends ({loaded.end}); use a shorter "
            f"{setting('horizon_days')} or wait for the data")
    frames = []
    for stamp in sorted(exposed["feature_day"].unique()):
        day = pd.Timestamp(stamp).date()
        frames.append(con.sql(feature_query(rel, day)).df().assign(feature_day=day))
    features = pd.concat(frames, ignore_index=True)
    exposed["feature_day"] = pd.to_datetime(exposed["feature_day"]).dt.date
    rows = exposed.merge(features, on=["customer_id", "feature_day"], how="inner")
    group = np.where(rows["treatment"] == 1, campaign, CONTROL)
    return Experiment(rows["customer_id"].to_numpy(), rows[feature_names()].reset_index(drop=True),
                      group, _derived_outcomes(rows["spend"], rows["orders"]),
                      f"exposures campaign={campaign} horizon={horizon_days}d", "spend")


# --- a flat table ----------------------------------------------------------------------


@dataclass(frozen=True)
class GroupSpec:
    """``COLUMN=VALUE``: the rows whose ``column`` equals ``value``."""

    column: str
    value: str

    @classmethod
    def parse(cls, text: str, option: str) -> GroupSpec:
        column, sep, value = text.partition("=")
        if not sep or not column or not value:
            raise ExperimentError(f"{option} takes COLUMN=VALUE, e.g. segment=No E-Mail; "
                                  f"got {text!r}")
        return cls(column.strip(), value.strip())

    def rows(self, table: pd.DataFrame) -> pd.Series:
        return table[self.column].astype(str).str.strip() == self.value


def read_table(path: Path) -> pd.DataFrame:
    """A CSV or Parquet file as a frame."""
    if not path.exists():
        raise ExperimentError(f"{path}: no such file")
    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    if path.suffix.lower() == ".csv":
        return pd.read_csv(path)
    raise ExperimentError(f"{path}: give a .csv or .parquet file")


def experiment_from_table(table: pd.DataFrame, treatments: list[GroupSpec], control: GroupSpec,
                          outcome: str, ignore: list[str], source: str) -> Experiment:
    """Arms (one per treatment spec) and control from a flat table; other rows are left out."""
    if not treatments:
        raise ExperimentError(f"give at least one {setting('treatment')} COLUMN=VALUE")
    needed = {outcome, control.column, *(t.column for t in treatments), *ignore}
    missing = sorted(needed - set(table.columns))
    if missing:
        raise ExperimentError(f"{source}: no column {', '.join(missing)}; it has "
                              f"{', '.join(map(str, table.columns))}")
    values = pd.to_numeric(table[outcome], errors="coerce")
    bad = values.isna() | ~np.isfinite(values.fillna(0))
    if bad.any():
        rows = ", ".join(str(i + 2) for i in np.flatnonzero(bad.to_numpy())[:5])
        raise ExperimentError(f"{source}: outcome column {outcome!r} needs a finite number "
                              f"on every row; not on line(s) {rows}")
    group = pd.Series(pd.NA, index=table.index, dtype=object)
    group[control.rows(table)] = CONTROL
    for spec in treatments:
        hit = spec.rows(table)
        if not hit.any():
            raise ExperimentError(f"{source}: no row has {spec.column}={spec.value}")
        group[hit & group.isna()] = spec.value
    if not (group == CONTROL).any():
        raise ExperimentError(f"{source}: no row has {control.column}={control.value}")
    keep = group.notna().to_numpy()
    drop = {outcome, control.column, *(t.column for t in treatments), *ignore}
    features = table.loc[keep, [c for c in table.columns if c not in drop]].reset_index(drop=True)
    for column in features.columns:
        if not pd.api.types.is_numeric_dtype(features[column]):
            features[column] = features[column].astype("category")
        elif pd.api.types.is_bool_dtype(features[column]):
            features[column] = features[column].astype(float)
    ids = np.asarray(table.index[keep].astype(str))
    return Experiment(ids, features, group[keep].to_numpy(dtype=object),
                      _derived_outcomes(values[keep].reset_index(drop=True)), source, outcome)
