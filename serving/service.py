"""The online scoring service (BentoML): the champion churn model behind HTTP.

Two ways in: ``/score_features`` takes feature rows as the batch job builds them;
``/score_history`` takes recent contract rows and builds the features with the same query
as the batch job. Both return the churn probability, segment, spend tier, value at risk,
reasons and the model version that scored them. ``/livez``, ``/readyz`` and ``/metrics``
(Prometheus) come with BentoML; ``/metadata`` says which model is loaded.

Settings are read once, when the service starts (see ``ServiceSettings``).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated

import bentoml
import duckdb
import mlflow
import numpy as np
import orjson
import pandas as pd
from bentoml.exceptions import InvalidArgument
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.responses import Response

from features.contract import TABLES
from features.point_in_time import feature_query
from features.registry import FEATURE_SET_VERSION, FEATURES, feature_names
from features.validation import frame_problems, id_problems
from serving.bundle import BUNDLE, read_bundle
from serving.champion import DataCheck, load_champion
from serving.guards import (
    BearerTokenMiddleware,
    BodySizeLimitMiddleware,
    redact_request_errors,
    release_finished_requests,
)
from serving.policy import DEFAULT_POLICY, SegmentPolicy, tier_cut_points
from serving.scoring import OUTPUT_COLUMNS, score_matrix

MAX_CUSTOMERS = 10_000
MAX_HISTORY_ROWS = 200_000
EXPLAIN = ("Give at-risk customers their reasons (LightGBM pred_contrib). Costs far more "
           "than the score itself; false leaves reasons null.")
FiniteOrNull = Annotated[float | None, Field(allow_inf_nan=False)]
PRIVATE = ConfigDict(extra="forbid", hide_input_in_errors=True)


@dataclass(frozen=True)
class ServiceSettings:
    """What the service reads from its environment at start-up, and nowhere else."""

    tracking_uri: str | None
    model_name: str
    uplift_model_name: str
    uplift: bool
    allow_data_mismatch: bool
    policy: Path
    token: str | None
    max_request_bytes: int
    compiled: bool
    bundle: Path | None

    @classmethod
    def from_environment(cls) -> ServiceSettings:
        return cls(
            tracking_uri=os.environ.get("MLFLOW_TRACKING_URI"),
            model_name=os.environ.get("CHURN_MODEL_NAME", "churn"),
            uplift_model_name=os.environ.get("CHURN_UPLIFT_MODEL_NAME", "uplift"),
            uplift=os.environ.get("CHURN_NO_UPLIFT", "0") != "1",
            allow_data_mismatch=os.environ.get("CHURN_ALLOW_DATA_MISMATCH", "0") == "1",
            policy=Path(os.environ.get("CHURN_POLICY") or (
                BUNDLE / "segments.toml" if BUNDLE.is_dir() else DEFAULT_POLICY)),
            token=os.environ.get("CHURN_API_TOKEN") or None,
            max_request_bytes=int(os.environ.get("CHURN_MAX_REQUEST_BYTES", str(8 * 1024 * 1024))),
            compiled=os.environ.get("CHURN_COMPILED_FOREST", "1") != "0",
            bundle=BUNDLE if BUNDLE.is_dir() else None,
        )


def _feature_field(description: str) -> object:
    return (float | None, Field(..., description=f"{description} null when unknown.",
                                allow_inf_nan=False))


FeatureRow = create_model(
    "FeatureRow",
    __config__=PRIVATE,
    customer_id=(str, Field(..., min_length=1, description="The customer's id.")),
    contactable=(bool, Field(True, description="False when marketing consent is withheld.")),
    **{f.name: _feature_field(f.description) for f in FEATURES},
)


class TransactionIn(BaseModel):
    """One row of the transactions table."""

    model_config = PRIVATE
    customer_id: str = Field(min_length=1)
    order_id: str = Field(min_length=1)
    ordered_at: datetime
    amount: float = Field(allow_inf_nan=False)
    channel: str | None = None


class EventIn(BaseModel):
    """One row of the events table."""

    model_config = PRIVATE
    customer_id: str = Field(min_length=1)
    occurred_at: datetime
    event_type: str = Field(min_length=1)


class CustomerIn(BaseModel):
    """One row of the customers table."""

    model_config = PRIVATE
    customer_id: str = Field(min_length=1)
    signed_up_at: datetime | None = None
    profiling_consent: bool | None = True
    marketing_consent: bool | None = True


class ScoredCustomer(BaseModel):
    """One customer's scores, as the batch job writes them."""

    customer_id: str
    as_of: date | None
    churn_probability: float | None
    value_at_risk: float | None
    uplift_spend: float | None
    segment: str
    spend_tier: str
    contactable: bool
    reasons: str | None
    model_versions: str


class Skipped(BaseModel):
    """A customer asked for but not scored, and why."""

    customer_id: str
    reason: str


class ScoreResponse(BaseModel):
    """Scores of every customer that could be scored, and the model version used."""

    model_version: str
    scores: list[ScoredCustomer]
    skipped: list[Skipped] = []


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _frame(rows: list[BaseModel], columns: list[str], times: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.DataFrame([r.model_dump() for r in rows], columns=columns)
    for column in times:
        frame[column] = pd.to_datetime([_utc(v) for v in frame[column]], utc=True)
    return frame


def history_features(as_of: date, transactions: list[TransactionIn], events: list[EventIn],
                     customers: list[CustomerIn]) -> pd.DataFrame:
    """Features as of ``as_of`` from contract rows, by the batch job's own query.

    The rows are checked by the contract's own rules first (the ones batch files meet), so
    what a batch job would reject is rejected here too: ``InvalidArgument`` (a 400) naming the
    table, column, rule and row numbers, never the values.
    """
    tables = {
        "transactions": _frame(transactions, list(TransactionIn.model_fields), ("ordered_at",)),
        "events": _frame(events, list(EventIn.model_fields), ("occurred_at",)),
        "customers": _frame(customers, list(CustomerIn.model_fields), ("signed_up_at",)),
    }
    problems = [line for name, frame in tables.items()
                for line in frame_problems(frame, TABLES[name])]
    if problems:
        raise InvalidArgument("rows break the data contract: " + "; ".join(problems))
    with duckdb.connect() as con:
        con.sql("SET TimeZone = 'UTC'")
        for name, frame in tables.items():
            con.register(f"request_{name}", frame)
        relations = {name: f"request_{name}" for name in tables}
        features = con.sql(feature_query(relations, as_of)).df()
        contact = con.sql("SELECT customer_id, bool_and(marketing_consent IS TRUE) AS c "
                          "FROM request_customers GROUP BY customer_id").df()
    consent = dict(zip(contact["customer_id"], contact["c"], strict=True))
    # Without a customers row, a customer is contactable (consent handled upstream).
    features["contactable"] = [bool(consent.get(c, True)) for c in features["customer_id"]]
    return features


def check_customer_ids(ids: list[str], field: str) -> None:
    """The customers table's key rules (not blank, each once), as batch files meet them."""
    problems = id_problems(ids, TABLES["customers"])
    if problems:
        raise InvalidArgument(f"{field}: " + "; ".join(
            p.removeprefix("customers: ") for p in problems))


def _json_values(column: np.ndarray) -> list:
    """Plain Python values: NaN stays a float (JSON null), a datetime64 becomes a date."""
    if column.dtype.kind == "M":
        column = column.astype("datetime64[D]").astype(object)
    return column.tolist()


def json_response(columns: dict[str, np.ndarray], model_version: str,
                  skipped: Sequence[Skipped]) -> Response:
    """The ``ScoreResponse`` of these score columns, serialised by orjson in one pass
    (NaN becomes null). Building 1000 pydantic objects cost more than scoring them."""
    names = list(OUTPUT_COLUMNS)
    values = [_json_values(np.asarray(columns[name])) for name in names]
    body = {"model_version": model_version,
            "scores": [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)],
            "skipped": [s.model_dump() for s in skipped]}
    return Response(orjson.dumps(body), media_type="application/json")


@bentoml.service(name="churn", http={"port": 3000}, traffic={"timeout": 30})
class ChurnService:
    """Scores customers with the champion churn (and, when registered, uplift) models."""

    def __init__(self) -> None:
        redact_request_errors()
        settings = ServiceSettings.from_environment()
        if settings.tracking_uri:
            mlflow.set_tracking_uri(settings.tracking_uri)
        self.policy = SegmentPolicy.load(settings.policy)
        # A bento built by `churn build` carries its champions; otherwise ask the registry.
        self.loaded = read_bundle(settings.bundle, settings.compiled) if settings.bundle else \
            load_champion(settings.model_name, uplift=settings.uplift and self.policy.uses_uplift,
                          uplift_arm=self.policy.uplift_arm or None, compiled=settings.compiled,
                          uplift_name=settings.uplift_model_name,
                          check=DataCheck(allow_mismatch=settings.allow_data_mismatch))
        self.tier_cuts = tier_cut_points(self.loaded.model.spend_percentiles, self.policy)
        # One scoring pass first, so what the first request would load (compiled code,
        # lazy imports) is loaded now.
        sample = self.loaded.warmup_rows()
        self._respond(list(map(str, range(len(sample)))), None,
                      sample[feature_names()].to_numpy(dtype=np.float64), True, explain=True)
        # Everything loaded so far lives as long as the server: keep it out of the garbage
        # collector's full passes, which otherwise stall requests for 40-250 ms at a time.
        gc.collect()
        gc.freeze()

    def _respond(self, ids: list[str], as_of: np.ndarray | None, matrix: np.ndarray,
                 contactable: list[bool] | np.ndarray | bool, explain: bool,
                 skipped: Sequence[Skipped] = ()) -> Response:
        """A ``ScoreResponse`` as JSON, written straight from the score arrays. The API
        methods keep ``ScoreResponse`` as their declared type, which is what the OpenAPI
        schema shows; BentoML passes a ``Response`` through as it is."""
        columns = score_matrix(np.asarray(ids, dtype=object), as_of, matrix, contactable,
                               self.loaded, self.policy, self.tier_cuts, explain)
        return json_response(columns, self.loaded.label, skipped)

    @bentoml.api
    def score_features(
        self, customers: Annotated[list[FeatureRow], Field(min_length=1,  # type: ignore[valid-type]
                                                           max_length=MAX_CUSTOMERS)],
        explain: Annotated[bool, Field(description=EXPLAIN)] = True,
    ) -> ScoreResponse:
        """Score 1..N customers given their feature rows (null for an unknown value)."""
        names = feature_names()
        ids = [c.customer_id for c in customers]
        check_customer_ids(ids, "customers")
        matrix = np.array([[getattr(c, n) for n in names] for c in customers], dtype=np.float64)
        return self._respond(ids, None, matrix, [c.contactable for c in customers], explain)

    @bentoml.api
    def score_table(
        self,
        customer_ids: Annotated[list[Annotated[str, Field(min_length=1)]],
                                Field(min_length=1, max_length=MAX_CUSTOMERS)],
        columns: list[str],
        data: Annotated[list[list[FiniteOrNull]], Field(min_length=1, max_length=MAX_CUSTOMERS)],
        contactable: Annotated[list[bool] | None, Field(max_length=MAX_CUSTOMERS)] = None,
        explain: Annotated[bool, Field(description=EXPLAIN)] = True,
    ) -> ScoreResponse:
        """Score 1..N customers sent column-wise: the fastest way in for large batches.

        ``columns`` names every registry feature once, in any order; ``data`` holds one row
        of that many numbers (null when unknown) per customer in ``customer_ids``.
        """
        names = feature_names()
        if sorted(columns) != sorted(names) or len(set(columns)) != len(columns):
            missing = sorted(set(names) - set(columns))
            extra = sorted(set(columns) - set(names))
            raise InvalidArgument(f"columns: need each of the {len(names)} features once; "
                                  f"missing {missing[:5]}, unknown {extra[:5]}")
        if len(data) != len(customer_ids) or (contactable and len(contactable) != len(data)):
            raise InvalidArgument("customer_ids, data and contactable must have one entry "
                                  "per customer")
        check_customer_ids(customer_ids, "customer_ids")
        if any(len(row) != len(columns) for row in data):
            raise InvalidArgument(f"data: every row needs {len(columns)} values")
        matrix = np.array(data, dtype=np.float64)
        if columns != names:
            matrix = matrix[:, [columns.index(name) for name in names]]
        return self._respond(customer_ids, None, matrix,
                             contactable if contactable else True, explain)

    @bentoml.api
    def score_history(
        self,
        as_of: date,
        transactions: Annotated[list[TransactionIn], Field(max_length=MAX_HISTORY_ROWS)],
        events: Annotated[list[EventIn], Field(max_length=MAX_HISTORY_ROWS)] = [],  # noqa: B006
        customers: Annotated[list[CustomerIn], Field(max_length=MAX_CUSTOMERS)] = [],  # noqa: B006
        customer_ids: Annotated[list[str] | None, Field(max_length=MAX_CUSTOMERS)] = None,
        explain: Annotated[bool, Field(description=EXPLAIN)] = True,
    ) -> ScoreResponse:
        """Score customers from their recent history (contract rows) as of a date.

        Only rows before ``as_of`` count. ``customer_ids`` limits the answer to those
        customers; any of them without a usable row is listed under ``skipped``.
        """
        if as_of > datetime.now(UTC).date() + timedelta(days=1):
            raise InvalidArgument(f"as_of: {as_of} is in the future; scores describe customers "
                                  f"as of a day that has happened")
        features = history_features(as_of, transactions, events, customers)
        wanted = list(dict.fromkeys(customer_ids)) if customer_ids else list(
            features["customer_id"])
        known = set(features["customer_id"])
        withheld = {c.customer_id for c in customers if c.profiling_consent is not True}
        skipped = [Skipped(customer_id=c, reason="no profiling consent" if c in withheld
                           else f"no rows before {as_of} in this request")
                   for c in wanted if c not in known]
        features = features[features["customer_id"].isin(set(wanted))]
        return self._respond(list(features["customer_id"]),
                             features["as_of"].to_numpy().astype("datetime64[D]"),
                             features[feature_names()].to_numpy(dtype=np.float64),
                             features["contactable"].to_numpy(dtype=bool), explain, skipped)

    @bentoml.api(route="/metadata")
    def metadata(self) -> dict:
        """The model that answers: registry name and version, feature set, policy."""
        return {"model_name": self.loaded.name, "model_version": self.loaded.version,
                "model_versions": self.loaded.label, "feature_set_version": FEATURE_SET_VERSION,
                "features": feature_names(), "policy": self.policy.__dict__,
                "tree_evaluator": "lightgbm" if self.loaded.model.evaluator is None
                else "compiled forest",
                "spend_tier_cuts": list(self.tier_cuts),
                "uplift_model": None if self.loaded.uplift is None else {
                    "name": self.loaded.uplift.name, "version": self.loaded.uplift.version,
                    "arm": self.loaded.uplift.arm},
                "max_customers_per_request": MAX_CUSTOMERS}


_settings = ServiceSettings.from_environment()
release_finished_requests()
ChurnService.add_asgi_middleware(BodySizeLimitMiddleware, max_bytes=_settings.max_request_bytes)
ChurnService.add_asgi_middleware(BearerTokenMiddleware, token=_settings.token)
