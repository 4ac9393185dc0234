"""Monitoring: earlier scoring runs checked against what customers then did, and drift.

For every scoring run (``operations.runlog``) whose label window [as_of, as_of + horizon) has
ended by the monitoring date, the scores are read back from where they were written and
compared with the orders that followed: realised ROC AUC, calibration (ECE), lift in the top
tenth, and the churn rate per segment. The newest scoring run's profile is compared with the
model's training data (PSI per feature and of the score). A verdict sums it up, the worst
that applies:

- ``retrain`` (exit 20): realised ROC AUC more than ``retrain_auc_drop`` under the model's own
  test ROC AUC, or ECE above ``retrain_ece``;
- ``degrading`` (exit 10): ROC AUC more than ``warn_auc_drop`` under it, ECE above
  ``warn_ece``, or ``at_risk`` customers churning no more than ``active`` ones;
- ``drifted`` (exit 5): the inputs or the score moved (a feature's PSI at or above 0.25 and at
  least 0.1 beyond its spread between the training cutoffs, or the score's PSI at or above
  0.1) while realised quality holds, or before any outcome can say; features that count days
  since something move with the calendar and are reported but never raise it;
- ``unchecked`` (exit 3): no scoring run's outcomes have matured yet, so nothing says the
  model is healthy;
- ``healthy`` (exit 0): none of these.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import duckdb
import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run

from features.point_in_time import connect
from features.tables import load_tables
from features.validation import OnBadRows
from models.churn_model import ARTIFACT_KEY, ChurnModel
from models.drift import PSI_LARGE, PSI_MODERATE, SCORE, Profile, psi_band
from models.store import use_experiment
from operations.runlog import PROFILE_ARTIFACT, SCORING_EXPERIMENT, read_scores
from training import plots
from training.metrics import score_metrics

MONITORING_EXPERIMENT = "monitoring"
VERDICTS = {"healthy": 0, "unchecked": 3, "drifted": 5, "degrading": 10, "retrain": 20}


def calendar_driven(name: str) -> bool:
    """A feature that counts days since something: it grows with the calendar for every
    customer who does nothing, so an ageing base moves it without anything going wrong."""
    return name.startswith("days_since_") or name in ("recency_days", "tenure_days")


@dataclass(frozen=True)
class MonitorConfig:
    """What to check, as of when, and where the verdict's lines are drawn."""

    data: Path
    as_of: date
    model_name: str = "churn"
    warn_auc_drop: float = 0.02
    retrain_auc_drop: float = 0.05
    warn_ece: float = 0.05
    retrain_ece: float = 0.10
    on_bad_rows: OnBadRows = OnBadRows.stop
    memory_limit: str | None = "4GB"


@dataclass(frozen=True)
class ScoringRun:
    """One recorded scoring run, as the run log holds it."""

    run_id: str
    as_of: date
    destination: str
    version: str
    training_run: str
    horizon_days: int
    base_days: int

    @classmethod
    def of(cls, run: Run) -> ScoringRun:
        tags, params = run.data.tags, run.data.params
        return cls(run.info.run_id, date.fromisoformat(params["as_of"]),
                   params["destination"], tags["churn_version"], tags["churn_run_id"],
                   int(params["horizon_days"]), int(params["base_days"]))

    def matures(self) -> date:
        return self.as_of + timedelta(days=self.horizon_days)


@dataclass
class RunCheck:
    """A matured scoring run's scores against what followed."""

    run: ScoringRun
    customers: int
    churn_rate: float
    roc_auc: float
    ece: float
    lift: float
    expected_auc: float
    segments: pd.DataFrame
    labels: np.ndarray = field(repr=False)
    probability: np.ndarray = field(repr=False)


@dataclass
class MonitorReport:
    """Every check, the drift of the newest run, and the verdict with its reasons."""

    checks: list[RunCheck]
    skipped: list[str]
    drift: pd.DataFrame
    drift_run: ScoringRun | None
    verdict: str
    reasons: list[str]
    run_id: str | None = None

    @property
    def exit_code(self) -> int:
        return VERDICTS[self.verdict]


def scoring_runs(model_name: str, before: date) -> list[ScoringRun]:
    """Finished scoring runs of ``model_name`` with an as-of before ``before``, oldest first;
    of several runs with the same as-of and destination, the newest."""
    client = MlflowClient()
    experiment = client.get_experiment_by_name(SCORING_EXPERIMENT)
    if experiment is None:
        return []
    found = client.search_runs(
        [experiment.experiment_id],
        f"tags.churn_model = '{model_name}' AND attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"], max_results=50_000)
    latest: dict[tuple[date, str], ScoringRun] = {}
    for run in found:
        scoring = ScoringRun.of(run)
        if scoring.as_of < before:
            latest[(scoring.as_of, scoring.destination)] = scoring
    return sorted(latest.values(), key=lambda r: r.as_of)


class Outcomes:
    """Who ordered in a window after an as-of, from the transactions in ``data``."""

    def __init__(self, con: duckdb.DuckDBPyConnection, relation: str) -> None:
        self.con, self.relation = con, relation

    def churned(self, scores: pd.DataFrame, as_of: date, horizon_days: int) -> np.ndarray:
        """1 for each scored customer with no order in [as_of, as_of + horizon), else 0."""
        start = f"TIMESTAMPTZ '{as_of.isoformat()} 00:00:00+00'"
        ids = scores[["customer_id"]]  # noqa: F841 (read by DuckDB below)
        found = self.con.sql(f"""
            SELECT ids.customer_id, count(o.customer_id) = 0 AS churned
            FROM ids LEFT JOIN {self.relation} o
              ON o.customer_id = ids.customer_id AND o.amount >= 0
             AND o.ordered_at >= {start}
             AND o.ordered_at < {start} + INTERVAL {int(horizon_days)} DAY
            GROUP BY ids.customer_id""").df().set_index("customer_id")["churned"]
        return found.reindex(scores["customer_id"]).to_numpy(dtype=float)


class ModelCache:
    """Each model version's test metrics and reference profile, fetched once."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.metrics: dict[str, dict[str, float]] = {}
        self.references: dict[str, Profile | None] = {}

    def test_metric(self, run: ScoringRun, key: str) -> float:
        if run.training_run not in self.metrics:
            self.metrics[run.training_run] = MlflowClient().get_run(
                run.training_run).data.metrics
        return float(self.metrics[run.training_run].get(key, np.nan))

    def reference(self, version: str) -> Profile | None:
        if version not in self.references:
            with tempfile.TemporaryDirectory(prefix="churn-monitor-") as tmp:
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{self.name}/{version}", dst_path=tmp)
                model = ChurnModel.load(Path(local) / "artifacts" / ARTIFACT_KEY)
            self.references[version] = model.reference
        return self.references[version]


def check_run(run: ScoringRun, scores: pd.DataFrame, outcomes: Outcomes,
              models: ModelCache) -> RunCheck:
    """Realised ROC AUC, ECE, lift and churn per segment of one matured run."""
    churned = outcomes.churned(scores, run.as_of, run.horizon_days)
    segments = (scores.assign(churned=churned).groupby("segment")["churned"]
                .agg(customers="size", churn_rate="mean"))
    base = scores["churn_probability"].notna().to_numpy()
    y, p = churned[base], scores["churn_probability"].to_numpy()[base]
    usable = len(y) and 0 < y.sum() < len(y)
    metrics = score_metrics(y, p, True) if usable else None
    nan = float("nan")
    return RunCheck(run, int(base.sum()), float(y.mean()) if len(y) else nan,
                    metrics.roc_auc if metrics else nan, metrics.ece if metrics else nan,
                    metrics.top_decile_lift if metrics else nan,
                    models.test_metric(run, "test_roc_auc"), segments, y, p)


def run_profile(run_id: str) -> Profile | None:
    """The scored base's profile a scoring run logged."""
    with tempfile.TemporaryDirectory(prefix="churn-monitor-") as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=PROFILE_ARTIFACT,
                                                   dst_path=tmp)
        return Profile.from_dict(json.loads(Path(path).read_text())["profile"])


def drift_of(run: ScoringRun, models: ModelCache) -> pd.DataFrame:
    """PSI of every feature and of the score in ``run`` against its model's training data
    (``psi``), beside how far each moved between the training cutoffs (``spread``); a column
    ``moved`` when its PSI is large and beyond that spread by at least a moderate PSI (0.1).
    Largest PSI first."""
    reference = models.reference(run.version)
    current = run_profile(run.run_id)
    if reference is None or current is None:
        return drift_of_nothing()
    values = current.psi(reference)
    spread = pd.Series(reference.spread, dtype=float).reindex(values.index)
    moved = (values >= PSI_LARGE) & (values >= spread.fillna(0.0) + PSI_MODERATE)
    calendar = pd.Series([calendar_driven(str(n)) for n in values.index], index=values.index)
    return pd.DataFrame({"psi": values, "spread": spread, "moved": moved & ~calendar,
                         "calendar": calendar})


def drift_of_nothing() -> pd.DataFrame:
    return pd.DataFrame(columns=["psi", "spread", "moved", "calendar"], dtype=float)


def _segment_rate(check: RunCheck, name: str) -> float:
    rates = check.segments["churn_rate"]
    return float(rates[name]) if name in rates.index else float("nan")


def judge(cfg: MonitorConfig, checks: list[RunCheck],
          drift: pd.DataFrame) -> tuple[str, list[str]]:
    """The verdict and every reason for it, worst first."""
    reasons: list[tuple[str, str]] = []
    if checks:
        last = checks[-1]
        when = f"scores of {last.run.as_of}"
        drop = last.expected_auc - last.roc_auc
        auc = (f"realised ROC AUC {last.roc_auc:.3f} on the {when} against {last.expected_auc:.3f}"
               f" on the model's test cutoff (down {drop:.3f})")
        if drop > cfg.retrain_auc_drop:
            reasons.append(("retrain", auc))
        elif drop > cfg.warn_auc_drop:
            reasons.append(("degrading", auc))
        ece = f"calibration error (ECE) {last.ece:.3f} on the {when}"
        if last.ece > cfg.retrain_ece:
            reasons.append(("retrain", ece))
        elif last.ece > cfg.warn_ece:
            reasons.append(("degrading", ece))
        at_risk, active = _segment_rate(last, "at_risk"), _segment_rate(last, "active")
        if at_risk <= active:
            reasons.append(("degrading", (f"at_risk customers churned no more than active ones "
                                         f"({at_risk:.1%} against {active:.1%}) on the {when}")))
    else:
        reasons.append(("unchecked", (f"no scoring run's outcomes have matured by {cfg.as_of} "
                                      "(and the data's end): nothing checks quality yet")))
    score = drift["psi"].get(SCORE, np.nan)
    if score >= PSI_MODERATE:
        reasons.append(("drifted", f"the churn score's distribution moved (PSI {score:.2f})"))
    features = drift.drop(SCORE, errors="ignore")
    moved = features.loc[features["moved"].astype(bool), "psi"]
    if len(moved):
        listed = ", ".join(f"{name} ({value:.2f})" for name, value in moved.head(8).items())
        reasons.append(("drifted", (f"{len(moved)} feature(s) drifted from the training data "
                                     f"(PSI >= {PSI_LARGE}, and {PSI_MODERATE} beyond how far "
                                     f"they moved between training cutoffs): {listed}")))
    if not reasons:
        return "healthy", []
    order = {"retrain": 0, "degrading": 1, "drifted": 2, "unchecked": 3}
    reasons.sort(key=lambda r: order[r[0]])
    return reasons[0][0], [text for _, text in reasons]


def monitor(cfg: MonitorConfig, on_step=None) -> MonitorReport:
    """Check every matured scoring run of ``cfg.model_name`` and the newest run's drift."""
    step = on_step or (lambda _: None)
    runs = scoring_runs(cfg.model_name, cfg.as_of)
    models = ModelCache(cfg.model_name)
    checks, skipped = [], []
    with tempfile.TemporaryDirectory(prefix="churn-monitor-") as work, \
            connect(cfg.memory_limit, Path(work) / "spill") as con:
        tables = load_tables(con, cfg.data, Path(work), cfg.on_bad_rows,
                             only=("transactions",))
        known = min(cfg.as_of, tables.end)
        outcomes = Outcomes(con, tables.relations["transactions"])
        for run in runs:
            if run.matures() > known:
                continue
            step(f"scores of {run.as_of} against the orders that followed")
            scores = read_scores(run.destination, run.as_of)
            if scores is None:
                skipped.append(f"{run.as_of}: its scores are no longer at {run.destination} "
                               f"(removed, or replaced by a later run)")
                continue
            checks.append(check_run(run, scores, outcomes, models))
    drift_run = runs[-1] if runs else None
    step("drift of the newest scoring run")
    drift = drift_of(drift_run, models) if drift_run else drift_of_nothing()
    verdict, reasons = judge(cfg, checks, drift)
    return MonitorReport(checks, skipped, drift, drift_run, verdict, reasons)


def checks_table(report: MonitorReport) -> pd.DataFrame:
    """One row per matured run: customers, churn, realised metrics, churn per segment."""
    rows = []
    for c in report.checks:
        row = {"as_of": c.run.as_of, "model": f"v{c.run.version}", "customers": c.customers,
               "churn_rate": c.churn_rate, "roc_auc": c.roc_auc, "test_roc_auc": c.expected_auc,
               "ece": c.ece, "lift_top_10": c.lift}
        row.update({f"churn_{s}": r for s, r in c.segments["churn_rate"].items()})
        rows.append(row)
    return pd.DataFrame(rows)


def drift_table(report: MonitorReport) -> pd.DataFrame:
    """Per column: PSI, its band, the spread between training cutoffs, and whether it moved."""
    return report.drift.assign(band=[psi_band(v) for v in report.drift["psi"]]).rename_axis(
        "column").reset_index()


def log_monitor_run(cfg: MonitorConfig, report: MonitorReport) -> str:
    """A run under ``monitoring`` with the checks (one step per matured run), the drift, the
    verdict, and plots; the model version gets the verdict as a tag."""
    exp = use_experiment(MONITORING_EXPERIMENT, "Monitoring runs: matured scoring runs against "
                                                "what customers did, and drift.")
    latest = report.checks[-1].run if report.checks else report.drift_run
    description = f"Verdict: {report.verdict}. " + ("; ".join(report.reasons) or
                                                     "every check within its bounds.")
    with mlflow.start_run(experiment_id=exp.experiment_id,
                          run_name=f"monitor-{cfg.model_name}-{cfg.as_of.isoformat()}",
                          tags={"mlflow.note.content": description}) as run:
        mlflow.log_params({"as_of": cfg.as_of.isoformat(), "data_source": str(cfg.data.resolve()),
                           "model_name": cfg.model_name, "matured_runs": len(report.checks),
                           "warn_auc_drop": cfg.warn_auc_drop,
                           "retrain_auc_drop": cfg.retrain_auc_drop, "warn_ece": cfg.warn_ece,
                           "retrain_ece": cfg.retrain_ece})
        for i, c in enumerate(report.checks):
            mlflow.log_metrics({k: v for k, v in {
                "roc_auc": c.roc_auc, "ece": c.ece, "lift_top_10": c.lift,
                "churn_rate": c.churn_rate, "auc_drop": c.expected_auc - c.roc_auc}.items()
                if np.isfinite(v)}, step=i)
        mlflow.log_metrics({f"psi_{k}": float(v) for k, v in report.drift["psi"].items()
                            if np.isfinite(v)})
        mlflow.set_tags({"verdict": report.verdict, "model_name": cfg.model_name,
                         "model_version": latest.version if latest else "",
                         "scoring_runs": ",".join(c.run.run_id for c in report.checks)})
        mlflow.log_text(checks_table(report).to_csv(index=False, float_format="%.5f"),
                        "checks.csv")
        mlflow.log_text(drift_table(report).to_csv(index=False, float_format="%.5f"), "drift.csv")
        if report.checks:
            last = report.checks[-1]
            mlflow.log_figure(plots.reliability_figure(last.labels, last.probability),
                              "plots/reliability.png")
            mlflow.log_figure(plots.monitor_figure(checks_table(report)),
                              "plots/realised_auc.png")
        if len(report.drift):
            mlflow.log_figure(plots.psi_figure(report.drift["psi"], PSI_MODERATE, PSI_LARGE),
                              "plots/drift_psi.png")
    if latest is not None:
        MlflowClient().set_model_version_tag(
            cfg.model_name, latest.version, "monitor_verdict",
            f"{report.verdict} as of {cfg.as_of} (monitoring run {run.info.run_id})")
    report.run_id = run.info.run_id
    return run.info.run_id
