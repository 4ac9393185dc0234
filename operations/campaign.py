"""Campaigns run as experiments: a randomised holdout drawn from a segment, and the readout.

``plan`` draws the holdout from the contactable customers of one segment of a scoring run:
stratified by decile of churn risk or of predicted spend uplift (each decile gives the same
share), reproducible from the seed. Given the data, it also balances every feature between
contacted and held-out customers: from the random draw, pairs of customers of the same
stratum swap groups, greedily, until no feature's standardised difference exceeds the bound
(Krieger, Azriel and Kapelner 2019, "Nearly random designs with greatly improved balance":
the design stays random, its balance far better than one draw's). Every random choice comes
from the seed, so the same seed gives the same holdout. It writes the contact list and the
exposures rows in the data contract's form (``treatment`` 1 contacted, 0 held out), which
`churn train uplift` reads.

``report`` reads a campaign's exposures and the orders in the window after each exposure and
measures, treated against holdout: spend per customer, conversion, orders, spend per buyer,
order value among buyers (their spend over their orders), and the share kept (an order
within ``kept_days``), each with a 95% interval, plus a sample-ratio check against the
planned holdout share.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from mlflow import MlflowClient
from scipy import stats

from features.contract import ARROW_TIMESTAMP, ContractError
from features.errors import ChurnError, setting
from features.point_in_time import connect, feature_query
from features.registry import feature_names
from features.tables import load_tables
from features.validation import OnBadRows
from models.store import use_experiment
from serving.batch import parse_postgres_url
from training.uplift_data import choose_campaign, outcome_query

STRATIFY = ("auto", "risk", "uplift", "none")
MAX_SMD = 0.1


@dataclass(frozen=True)
class PlanConfig:
    """What to draw from, how, and where to write it."""

    scores: str
    segment: str
    holdout: float
    campaign: str
    out: Path
    seed: int = 7
    as_of: date | None = None
    exposed_at: date | None = None
    stratify: str = "auto"
    data: Path | None = None
    max_switches: int = 2_000
    max_smd: float = MAX_SMD


# A two-sided test at 5% with 80% power: the effect must be (z_0.975 + z_0.8) standard errors.
POWER_Z = float(stats.norm.ppf(0.975) + stats.norm.ppf(0.8))


@dataclass(frozen=True)
class Power:
    """Minimum detectable effects of a campaign (80% power, 5% two-sided), next to the effect
    the uplift model predicts for the contacted customers."""

    spend: float
    conversion: float
    predicted_spend: float | None

    @property
    def enough(self) -> bool | None:
        """Whether the predicted effect on spend can be told from noise (None: no uplift)."""
        return None if self.predicted_spend is None else abs(self.predicted_spend) >= self.spend

    def as_dict(self) -> dict[str, object]:
        return {"mde_spend": self.spend, "mde_conversion": self.conversion,
                "predicted_spend_effect": self.predicted_spend, "detectable": self.enough}


def detectable(features: pd.DataFrame, uplift: pd.Series, treatment: np.ndarray) -> Power:
    """The minimum detectable effects for these groups. The outcome's spread is read off the
    segment's own last 30 days (spend per customer, and whether they ordered), the campaign
    window's length by default."""
    n_t, n_h = int((treatment == 1).sum()), int((treatment == 0).sum())
    scale = POWER_Z * np.sqrt(1.0 / n_t + 1.0 / n_h)
    spend = features["spend_30d"].fillna(0.0).to_numpy(dtype=float)
    bought = (features["orders_30d"].fillna(0.0).to_numpy() > 0).mean()
    predicted = uplift.astype(float)
    return Power(float(scale * spend.std(ddof=1)), float(scale * np.sqrt(bought * (1 - bought))),
                 float(predicted.mean()) if predicted.notna().any() else None)


@dataclass
class Plan:
    """The drawn plan: who is contacted, who is held out, and how balanced they are."""

    config: PlanConfig
    as_of: date
    exposed_at: date
    assignments: pd.DataFrame
    stratified_by: str
    switches: int
    balance: pd.DataFrame | None = None
    run_id: str | None = None
    # The smallest effects the holdout can detect (``detectable``), when the data is given.
    power: Power | None = None

    @property
    def max_smd(self) -> float:
        if self.balance is None or self.balance.empty:
            return float("nan")
        return float(self.balance["smd"].abs().max())

    def summary(self) -> dict[str, object]:
        counts = self.assignments["treatment"].value_counts()
        return {"campaign": self.config.campaign, "segment": self.config.segment,
                "scores": self.config.scores, "as_of": self.as_of.isoformat(),
                "exposed_at": self.exposed_at.isoformat(), "holdout": self.config.holdout,
                "seed": self.config.seed, "stratified_by": self.stratified_by,
                "contacted": int(counts.get(1, 0)), "held_out": int(counts.get(0, 0)),
                "switches": self.switches, "max_abs_smd": self.max_smd,
                "balance_bound": self.config.max_smd if self.balance is not None else None,
                **(self.power.as_dict() if self.power else {})}


def read_segment(scores: str, segment: str, as_of: date | None) -> tuple[pd.DataFrame, date]:
    """The contactable customers of ``segment`` in a scores file or table, and its as-of
    (a table holding several as-ofs needs ``as_of``; by default its latest)."""
    columns = ["customer_id", "as_of", "segment", "contactable", "churn_probability",
               "uplift_spend"]
    if scores.startswith(("postgresql://", "postgres://")):
        dsn, table = parse_postgres_url(scores)
        with psycopg.connect(dsn, connect_timeout=10) as con:
            day = as_of or con.execute(f"SELECT max(as_of) FROM {table}").fetchone()[0]
            rows = con.execute(f"SELECT {', '.join(columns)} FROM {table} WHERE as_of = %s "
                               f"AND segment = %s", (day, segment)).fetchall()
        frame = pd.DataFrame(rows, columns=columns)
    else:
        path = Path(scores)
        if not path.is_file():
            raise ContractError(f"{setting('scores')} {scores}: no such file")
        frame = pd.read_parquet(path, columns=columns)
        days = sorted(frame["as_of"].dropna().unique())
        day = as_of or (days[-1] if days else None)
        frame = frame[(frame["as_of"] == day) & (frame["segment"] == segment)]
    if day is None or frame.empty:
        raise ContractError(f"{setting('scores')} {scores}: no customer in segment {segment!r}"
                            + (f" as of {as_of}" if as_of else ""))
    frame = frame[frame["contactable"].astype(bool)].reset_index(drop=True)
    if frame.empty:
        raise ContractError(f"segment {segment!r}: no customer may be contacted")
    return frame, pd.Timestamp(day).date()


def strata(frame: pd.DataFrame, how: str) -> tuple[np.ndarray, str]:
    """Each customer's stratum: decile of predicted spend uplift or of churn risk."""
    if how == "auto":
        how = "uplift" if frame["uplift_spend"].notna().any() else "risk"
    if how == "none":
        return np.zeros(len(frame), dtype=int), "none"
    column = {"uplift": "uplift_spend", "risk": "churn_probability"}[how]
    values = frame[column].astype(float)
    if values.isna().all():
        raise ContractError(f"{setting('stratify')} {how}: the scores hold no {column}")
    ranks = values.rank(method="first").fillna(0).to_numpy()
    deciles = np.minimum((10 * (ranks - 1) / max(len(values), 1)).astype(int), 9)
    return np.where(values.isna(), -1, deciles), f"{how} decile"


def draw(stratum: np.ndarray, holdout: float, seed: int, k: int) -> np.ndarray:
    """Draw ``k``: 1 contacted, 0 held out, with ``holdout`` of each stratum held out."""
    rng = np.random.default_rng([seed, k])
    keys = rng.random(len(stratum))
    treatment = np.ones(len(stratum), dtype=np.int8)
    for s in np.unique(stratum):
        members = np.flatnonzero(stratum == s)
        count = round(holdout * len(members))
        treatment[members[np.argsort(keys[members])[:count]]] = 0
    return treatment


def standardised(features: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Features scaled to unit spread, missing values at the mean, plus a missing flag for
    each feature that has any: what the balance check compares."""
    columns, names = [], []
    for name in features.columns:
        values = features[name].to_numpy(dtype=float)
        missing = np.isnan(values)
        for label, column in ((name, values), (f"{name} missing", missing.astype(float))):
            if label != name and not missing.any():
                continue
            filled = np.where(np.isnan(column), np.nanmean(column) if (~np.isnan(column)).any()
                              else 0.0, column)
            spread = filled.std()
            if spread > 0:
                columns.append((filled - filled.mean()) / spread)
                names.append(label)
    return np.column_stack(columns) if columns else np.zeros((len(features), 0)), names


def smd(z: np.ndarray, treatment: np.ndarray) -> np.ndarray:
    """Standardised difference (contacted minus held out) of each column of ``z``, in units
    of the column's spread over the whole segment (``z`` is already scaled by it), the
    usual yardstick for balance at the design stage."""
    treated, held = treatment == 1, treatment == 0
    if not treated.any() or not held.any():
        return np.zeros(z.shape[1])
    return z[treated].mean(axis=0) - z[held].mean(axis=0)


def excess(difference: np.ndarray, bound: float) -> np.ndarray:
    """How far differences (last axis: features) stand beyond half the bound, squared and
    summed: what a switch must lower (zero once every feature is well inside the bound)."""
    return (np.maximum(np.abs(difference) - bound / 2, 0.0) ** 2).sum(axis=-1)


def switch_for_balance(z: np.ndarray, treatment: np.ndarray, stratum: np.ndarray,
                       rng: np.random.Generator, bound: float, max_switches: int,
                       candidates: int = 256) -> tuple[np.ndarray, int]:
    """Greedy pair switching from a random draw (Krieger, Azriel and Kapelner 2019): while
    some feature's standardised difference exceeds ``bound``, swap the held-out and the
    contacted customer of the same stratum whose swap lowers the ``excess`` most, among
    ``candidates`` of each drawn at random. Returns the assignment and the swaps made."""
    treatment = treatment.copy()
    n = len(treatment)

    def worst(t: np.ndarray) -> float:
        return float(np.abs(smd(z, t)).max(initial=0.0))

    total = z.sum(axis=0)
    switches = 0
    while switches < max_switches and worst(treatment) > bound:
        held = np.flatnonzero(treatment == 0)
        treated = np.flatnonzero(treatment == 1)
        k = len(held)
        h = rng.choice(held, min(candidates, k), replace=False)
        t = rng.choice(treated, min(candidates, n - k), replace=False)
        held_sum = z[held].sum(axis=0)
        # Held-out sums after swapping h[i] out and t[j] in: (i, j, feature).
        after = held_sum[None, None, :] - z[h][:, None, :] + z[t][None, :, :]
        gap = excess((total - after) / (n - k) - after / k, bound)
        gap[stratum[h][:, None] != stratum[t][None, :]] = np.inf
        i, j = np.unravel_index(np.argmin(gap), gap.shape)
        if not gap[i, j] < excess((total - held_sum) / (n - k) - held_sum / k, bound):
            break
        treatment[h[i]], treatment[t[j]] = 1, 0
        switches += 1
    return treatment, switches


def segment_features(data: Path, ids: pd.Series, as_of: date) -> pd.DataFrame:
    """The registry's features of ``ids`` as of ``as_of``, in ``ids``' order."""
    with tempfile.TemporaryDirectory(prefix="churn-plan-") as work, \
            connect("2GB", Path(work) / "spill") as con:
        tables = load_tables(con, data, Path(work), OnBadRows.stop)
        frame = con.sql(feature_query(tables.relations, as_of)).df()
    found = frame.set_index("customer_id").reindex(ids)
    if found[feature_names()].isna().all(axis=1).any():
        missing = ids[found[feature_names()].isna().all(axis=1).to_numpy()].iloc[0]
        raise ContractError(f"{setting('data')} {data}: customer {missing} of the scores has no "
                            f"features "
                            f"as of {as_of}; is it the data the scores came from?")
    return found[feature_names()].reset_index(drop=True)


def plan_campaign(cfg: PlanConfig) -> Plan:
    """Draw the holdout (re-drawing for balance when ``cfg.data`` is given)."""
    if not 0 < cfg.holdout < 1:
        raise ContractError(f"{setting('holdout')} must be between 0 and 1 (e.g. 0.1)")
    frame, as_of = read_segment(cfg.scores, cfg.segment, cfg.as_of)
    stratum, stratified_by = strata(frame, cfg.stratify)
    treatment = draw(stratum, cfg.holdout, cfg.seed, 0)
    if (treatment == 0).sum() == 0 or (treatment == 1).sum() == 0:
        raise ContractError(f"segment {cfg.segment!r} has {len(frame)} contactable customers: "
                            f"too few to hold out {cfg.holdout:.0%} of each stratum")
    switches, balance, power = 0, None, None
    if cfg.data is not None:
        features = segment_features(cfg.data, frame["customer_id"], as_of)
        z, names = standardised(features)
        rng = np.random.default_rng([cfg.seed, 1])
        treatment, switches = switch_for_balance(z, treatment, stratum, rng, cfg.max_smd,
                                                 cfg.max_switches)
        balance = pd.DataFrame({"feature": names, "smd": smd(z, treatment)}).sort_values(
            "smd", key=np.abs, ascending=False, ignore_index=True)
        power = detectable(features, frame["uplift_spend"], treatment)
    exposed_at = cfg.exposed_at or as_of
    assignments = frame.assign(stratum=stratum, treatment=treatment)
    return Plan(cfg, as_of, exposed_at, assignments, stratified_by, switches, balance,
                power=power)


def write_plan(plan: Plan) -> dict[str, Path]:
    """``contacts.csv``, ``exposures/<campaign>.parquet`` and ``plan.json`` in ``out``;
    each written under a temporary name and renamed, so a failure leaves nothing half made."""
    out, cfg = plan.config.out, plan.config
    (out / "exposures").mkdir(parents=True, exist_ok=True)
    rows = plan.assignments
    exposed = datetime(plan.exposed_at.year, plan.exposed_at.month, plan.exposed_at.day,
                       tzinfo=UTC)
    # The contract's types, as the generator writes them (UTC microsecond timestamps).
    exposures = pa.table({
        "customer_id": pa.array(rows["customer_id"].astype(str).tolist(), pa.string()),
        "campaign_id": pa.array([cfg.campaign] * len(rows), pa.string()),
        "exposed_at": pa.array([exposed] * len(rows), ARROW_TIMESTAMP),
        "treatment": pa.array(rows["treatment"].to_numpy(dtype=np.int8))})
    contacts = rows.loc[rows["treatment"] == 1, ["customer_id", "segment", "churn_probability",
                                                 "uplift_spend", "stratum"]]
    paths = {"contacts": out / "contacts.csv",
             "exposures": out / "exposures" / f"{cfg.campaign}.parquet",
             "plan": out / "plan.json"}
    writers = {"contacts": lambda p: contacts.to_csv(p, index=False),
               "exposures": lambda p: pq.write_table(exposures, p),
               "plan": lambda p: p.write_text(json.dumps(plan.summary(), indent=2))}
    for key, path in paths.items():
        tmp = path.with_name(f".{path.name}.tmp")
        writers[key](tmp)
        tmp.replace(path)
    return paths


# --- the readout -----------------------------------------------------------------------


@dataclass(frozen=True)
class ReportConfig:
    data: Path
    campaign: str
    horizon_days: int = 30
    kept_days: int = 90
    expected_holdout: float | None = None
    on_bad_rows: OnBadRows = OnBadRows.stop


@dataclass
class Report:
    """Per outcome: treated and holdout means, difference and its 95% interval."""

    config: ReportConfig
    effects: pd.DataFrame
    treated: int
    held_out: int
    exposed_from: date
    exposed_to: date
    srm_p: float | None = None
    expected_holdout: float | None = None
    notes: list[str] = field(default_factory=list)
    run_id: str | None = None

    @property
    def sample_ratio_ok(self) -> bool | None:
        return None if self.srm_p is None else self.srm_p >= 0.001

    def summary(self) -> dict[str, object]:
        return {"campaign": self.config.campaign, "treated": self.treated,
                "held_out": self.held_out, "horizon_days": self.config.horizon_days,
                "kept_days": self.config.kept_days, "srm_p": self.srm_p,
                "expected_holdout": self.expected_holdout,
                "exposed_from": self.exposed_from.isoformat(),
                "exposed_to": self.exposed_to.isoformat(), "notes": self.notes}


def difference(treated: np.ndarray, held: np.ndarray) -> dict[str, float]:
    """Means, their difference and its 95% interval (Welch's standard error)."""
    treated, held = treated[~np.isnan(treated)], held[~np.isnan(held)]
    nan = float("nan")
    if len(treated) < 2 or len(held) < 2:
        return {"treated": nan, "holdout": nan, "difference": nan, "low": nan, "high": nan,
                "relative": nan, "treated_n": len(treated), "holdout_n": len(held)}
    a, b = treated.mean(), held.mean()
    se = np.sqrt(treated.var(ddof=1) / len(treated) + held.var(ddof=1) / len(held))
    z = stats.norm.ppf(0.975)
    return {"treated": a, "holdout": b, "difference": a - b, "low": a - b - z * se,
            "high": a - b + z * se, "relative": (a - b) / b if b else nan,
            "treated_n": len(treated), "holdout_n": len(held)}


OUTCOMES = {
    "spend": "spend per customer",
    "conversion": "conversion (bought at all)",
    "orders": "orders per customer",
    "spend_per_buyer": "spend per buyer",
    "order_value": "order value (buyers)",
    "kept": "kept (an order within the kept window)",
}


def campaign_outcomes(cfg: ReportConfig) -> tuple[pd.DataFrame, date]:
    """Per exposed customer: treatment, exposure, and the outcomes; with the data's end."""
    with tempfile.TemporaryDirectory(prefix="churn-report-") as work, \
            connect("2GB", Path(work) / "spill") as con:
        tables = load_tables(con, cfg.data, Path(work), cfg.on_bad_rows,
                             only=("transactions", "exposures"))
        campaign = choose_campaign(con, tables, cfg.campaign)
        rel = tables.relations
        rows = con.sql(outcome_query(rel["exposures"], rel["transactions"], campaign,
                                     cfg.horizon_days)).df()
        kept = con.sql(outcome_query(rel["exposures"], rel["transactions"], campaign,
                                     cfg.kept_days)).df()[["customer_id", "orders"]]
        end = tables.end
    rows = rows.merge(kept.rename(columns={"orders": "kept_orders"}), on="customer_id")
    return rows, end


class NotMaturedError(ChurnError):
    """The campaign's outcome window has not ended in the data yet: not a failure, not yet."""


def report_campaign(cfg: ReportConfig, expected_holdout: float | None = None) -> Report:
    """Treated against holdout on every outcome, once the campaign's window has matured."""
    rows, end = campaign_outcomes(cfg)
    exposed = pd.to_datetime(rows["exposed_at"], utc=True)
    first, last = exposed.min().date(), exposed.max().date()
    matures = last + timedelta(days=cfg.horizon_days)
    if matures > end:
        raise NotMaturedError(
            f"campaign {cfg.campaign!r}: its {cfg.horizon_days}-day window matures on "
            f"{matures}, and the data's last day is {end - timedelta(days=1)}; report once "
            f"the data covers it")
    notes = []
    kept_ready = last + timedelta(days=cfg.kept_days) <= end
    if not kept_ready:
        notes.append(f"kept: the {cfg.kept_days}-day window is not over until "
                     f"{last + timedelta(days=cfg.kept_days)}, so it is left out")
    outcomes = pd.DataFrame({
        "spend": rows["spend"].astype(float),
        "conversion": (rows["orders"] > 0).astype(float),
        "orders": rows["orders"].astype(float),
        "spend_per_buyer": rows["spend"].where(rows["orders"] > 0).astype(float),
        "order_value": (rows["spend"] / rows["orders"].where(rows["orders"] > 0)).astype(float),
        "kept": (rows["kept_orders"] > 0).astype(float) if kept_ready else np.nan})
    treated = rows["treatment"].to_numpy() == 1
    effects = pd.DataFrame([{"outcome": name, "label": OUTCOMES[name],
                             **difference(outcomes[name].to_numpy(float)[treated],
                                          outcomes[name].to_numpy(float)[~treated])}
                            for name in OUTCOMES])
    share = expected_holdout if expected_holdout is not None else cfg.expected_holdout
    n_treated, n_held = int(treated.sum()), int((~treated).sum())
    srm = None
    if share is not None:
        expected = np.array([1 - share, share]) * (n_treated + n_held)
        srm = float(stats.chisquare([n_treated, n_held], expected).pvalue)
    else:
        notes.append("no planned holdout share known (no recorded plan and no expected "
                     "holdout given): the sample-ratio check is skipped")
    return Report(cfg, effects, n_treated, n_held, first, last, srm, share, notes)


# --- the record in MLflow --------------------------------------------------------------

CAMPAIGN_EXPERIMENT = "campaigns"


def _campaign_run(kind: str, campaign: str, description: str) -> mlflow.ActiveRun:
    """A run of ``kind`` (plan or report) in the ``campaigns`` experiment, tagged with the
    campaign and described."""
    experiment = use_experiment(CAMPAIGN_EXPERIMENT, "Campaigns run as experiments: each plan "
                                                     "(who is contacted, who is held out) and "
                                                     "each readout (treated against holdout).")
    return mlflow.start_run(experiment_id=experiment.experiment_id,
                            run_name=f"{kind}-{campaign}",
                            tags={"kind": kind, "campaign_id": campaign,
                                  "mlflow.note.content": description})


def log_plan(plan: Plan, paths: dict[str, Path]) -> str:
    """A run holding the plan's settings, counts and balance, tagged with the campaign."""
    summary = plan.summary()
    cfg = plan.config
    with _campaign_run("plan", cfg.campaign,
                       f"Holdout of {cfg.holdout:.0%} drawn from segment {cfg.segment} of "
                       f"{cfg.scores} as of {plan.as_of}, stratified by "
                       f"{plan.stratified_by}.") as run:
        mlflow.log_params({k: v for k, v in summary.items()
                           if k not in ("contacted", "held_out", "switches", "max_abs_smd")})
        mlflow.log_metrics({k: float(summary[k]) for k in ("contacted", "held_out",
                                                           "switches")})
        if plan.balance is not None:
            mlflow.log_metric("max_abs_smd", plan.max_smd)
            mlflow.log_text(plan.balance.to_csv(index=False, float_format="%.5f"),
                            "balance.csv")
        mlflow.log_artifact(str(paths["plan"]))
        mlflow.log_artifact(str(paths["exposures"]), "exposures")
    plan.run_id = run.info.run_id
    return run.info.run_id


def planned_holdout(campaign: str) -> float | None:
    """The holdout share the newest recorded plan of ``campaign`` drew, if any."""
    experiment = MlflowClient().get_experiment_by_name(CAMPAIGN_EXPERIMENT)
    if experiment is None:
        return None
    runs = MlflowClient().search_runs(
        [experiment.experiment_id],
        f"tags.kind = 'plan' AND tags.campaign_id = '{campaign.replace(chr(39), '')}'",
        order_by=["attributes.start_time DESC"], max_results=1)
    return float(runs[0].data.params["holdout"]) if runs else None


def log_report(report: Report) -> str:
    """A run holding every outcome's effect and interval, tagged with the campaign."""
    spend = report.effects.set_index("outcome").loc["spend"]
    with _campaign_run("report", report.config.campaign,
                       f"Spend per customer {spend['difference']:+.2f} (95% "
                       f"{spend['low']:+.2f} .. {spend['high']:+.2f}), {report.treated:,} "
                       f"treated against {report.held_out:,} held out.") as run:
        mlflow.log_params({"campaign": report.config.campaign,
                           "horizon_days": report.config.horizon_days,
                           "kept_days": report.config.kept_days,
                           "data_source": str(report.config.data.resolve()),
                           "expected_holdout": report.expected_holdout})
        metrics = {"treated": report.treated, "held_out": report.held_out}
        if report.srm_p is not None:
            metrics["srm_p"] = report.srm_p
        for _, row in report.effects.iterrows():
            for key in ("difference", "low", "high", "treated", "holdout"):
                if np.isfinite(row[key]):
                    metrics[f"{row['outcome']}_{key}"] = float(row[key])
        mlflow.log_metrics(metrics)
        mlflow.log_text(report.effects.to_csv(index=False, float_format="%.5f"), "effects.csv")
        mlflow.log_dict(report.summary(), "report.json")
    report.run_id = run.info.run_id
    return run.info.run_id
