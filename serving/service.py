"""The online scoring service (BentoML): the champion churn model behind HTTP.

Three ways in: ``/score_features`` takes feature rows as the batch job builds them;
``/score_table`` the same column-wise; ``/score_history`` takes recent contract rows and
builds the features with the batch job's query. Each returns the churn probability, its
percentile and risk band, segment, spend tier, value at risk, reasons and the model version
that answered. ``/livez``, ``/readyz`` and ``/metrics`` (Prometheus) come with BentoML;
``GET /metadata`` says which models answer; ``/docs`` is the OpenAPI page (``serving.api``).

Settings are read once, when the service starts (see ``ServiceSettings``). Served from the
registry, the service checks the champion alias every ``CHURN_WATCH_SECONDS`` and swaps a
new champion in between requests.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, NoReturn

import bentoml
import duckdb
import mlflow
import numpy as np
import orjson
import pandas as pd
from bentoml.exceptions import InvalidArgument
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.responses import Response

import serving.api as api
from features.contract import MAX_ORDER_AMOUNT, TABLES
from features.errors import ChurnError
from features.point_in_time import feature_query
from features.registry import FEATURE_SET_VERSION, FEATURES, feature_names
from features.validation import frame_problems, id_problems
from models.forest import tree_evaluator
from serving.api import EXAMPLE_HISTORY, ScoreResponse, Skipped
from serving.bundle import BUNDLE, read_bundle
from serving.champion import DataCheck, LoadedModel, champion_versions, load_champion
from serving.guards import (
    BearerTokenMiddleware,
    BodySizeLimitMiddleware,
    bound_metric_labels,
    close_stalled_connections,
    redact_request_errors,
    release_finished_requests,
)
from serving.policy import DEFAULT_POLICY, SegmentPolicy
from serving.scoring import output_columns, score_matrix, tier_cuts_for

LOG = logging.getLogger("churn.service")
MAX_CUSTOMERS = 10_000
MAX_HISTORY_ROWS = 200_000
EXPLAIN = ("Give at-risk customers their reasons (LightGBM pred_contrib). Costs far more "
           "than the score itself; false leaves reasons null.")
# Any feature beyond this is a mistake (a unit, a sentinel); far beyond, sums overflow.
MAX_FEATURE = 1e12
FiniteOrNull = Annotated[float | None, Field(allow_inf_nan=False, ge=-MAX_FEATURE,
                                             le=MAX_FEATURE)]
PRIVATE = ConfigDict(extra="forbid", hide_input_in_errors=True)
# A contract row may carry more columns than the contract reads (the batch job ignores them).
ROW = ConfigDict(extra="ignore", hide_input_in_errors=True)


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
    max_in_flight_bytes: int
    stalled_seconds: float
    body_seconds: float
    compiled: bool
    bundle: Path | None
    watch_seconds: float

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
            max_in_flight_bytes=int(os.environ.get("CHURN_MAX_IN_FLIGHT_BYTES", "0")),
            stalled_seconds=float(os.environ.get("CHURN_STALLED_SECONDS", "20")),
            body_seconds=float(os.environ.get("CHURN_BODY_SECONDS", "30")),
            compiled=os.environ.get("CHURN_COMPILED_FOREST", "1") != "0",
            bundle=BUNDLE if BUNDLE.is_dir() else None,
            watch_seconds=float(os.environ.get("CHURN_WATCH_SECONDS", "60")),
        )


def _feature_field(description: str) -> object:
    return (float | None, Field(..., description=f"{description} null when unknown.",
                                allow_inf_nan=False, ge=-MAX_FEATURE, le=MAX_FEATURE))


FeatureRow = create_model(
    "FeatureRow",
    __config__=PRIVATE,
    customer_id=(str, Field(..., min_length=1, description="The customer's id.")),
    contactable=(bool, Field(True, description="False when marketing consent is withheld.")),
    **{f.name: _feature_field(f.description) for f in FEATURES},
)


class TransactionIn(BaseModel):
    """One row of the transactions table (other fields are ignored, as the batch job ignores
    other columns)."""

    model_config = ROW
    customer_id: str = Field(min_length=1, description="The customer's id.")
    order_id: str = Field(min_length=1, description="The order's id; one row per order.")
    ordered_at: datetime = Field(description="When the order was placed (ISO 8601; UTC "
                                             "when no offset is given).")
    amount: float = Field(allow_inf_nan=False, ge=-MAX_ORDER_AMOUNT, le=MAX_ORDER_AMOUNT,
                          description="Order value net of discounts; negative for a return.")
    channel: str | None = Field(None, description="web, store, app or any other name.")


class EventIn(BaseModel):
    """One row of the events table (other fields are ignored)."""

    model_config = ROW
    customer_id: str = Field(min_length=1, description="The customer's id.")
    occurred_at: datetime = Field(description="When it happened (ISO 8601).")
    event_type: str = Field(min_length=1, description="email_sent, email_open, email_click, "
                            "site_visit, app_session, cart_add, support_contact, "
                            "content_download or unsubscribe; others are ignored.")


class CustomerIn(BaseModel):
    """One row of the customers table (other fields are ignored)."""

    model_config = ROW
    customer_id: str = Field(min_length=1, description="The customer's id, once.")
    signed_up_at: datetime | None = Field(None, description="When the customer signed up.")
    profiling_consent: bool | None = Field(
        True, description="Anything but true: the customer is not scored (listed as skipped).")
    marketing_consent: bool | None = Field(
        True, description="Anything but true: scored, but contactable is false.")


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


def check_history_size(transactions: list[TransactionIn], events: list[EventIn],
                       customers: list[CustomerIn]) -> None:
    """Hold a history request to the work of one on the other endpoints: at most
    ``MAX_CUSTOMERS`` customers over all its tables, ``MAX_HISTORY_ROWS`` rows in all."""
    rows = len(transactions) + len(events) + len(customers)
    if rows > MAX_HISTORY_ROWS:
        raise InvalidArgument(f"transactions, events, customers: {rows:,} rows in all; at "
                              f"most {MAX_HISTORY_ROWS:,} per request")
    ids: set[str] = set()
    for where, rows in (("transactions", transactions), ("events", events),
                        ("customers", customers)):
        ids.update(row.customer_id for row in rows)
        if len(ids) > MAX_CUSTOMERS:
            raise InvalidArgument(f"{where}: rows of {len(ids):,} customers in this and the "
                                  f"tables before it; at most {MAX_CUSTOMERS:,} per request "
                                  f"(counting every table), as on every endpoint")


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


def row_columns(loaded: LoadedModel) -> list[str]:
    """The fields of each scored customer: the batch job's columns but ``model_versions``."""
    return [c for c in output_columns(loaded) if c != "model_versions"]


def models_answering(loaded: LoadedModel) -> dict[str, str | None]:
    """The ``ScoreResponse`` fields that say which models answered."""
    out = {"model_name": loaded.name, "model_version": loaded.version}
    for kind, extra in (("uplift", loaded.uplift), ("propensity", loaded.propensity),
                        ("value", loaded.value)):
        out[f"{kind}_model_name"] = extra.name if extra else None
        out[f"{kind}_model_version"] = extra.version if extra else None
    return out


def json_response(columns: dict[str, np.ndarray], loaded: LoadedModel,
                  skipped: Sequence[Skipped]) -> Response:
    """The ``ScoreResponse`` of these score columns, serialised by orjson in one pass
    (NaN becomes null). Building 1000 pydantic objects cost more than scoring them."""
    names = row_columns(loaded)
    values = [_json_values(np.asarray(columns[name])) for name in names]
    body = {**models_answering(loaded),
            "scores": [dict(zip(names, row, strict=True))
                       for row in zip(*values, strict=True)],
            "skipped": [s.model_dump() for s in skipped]}
    return Response(orjson.dumps(body), media_type="application/json",
                    headers={"x-model-version": loaded.version})


def start_failed(err: Exception) -> NoReturn:
    """End a worker that cannot load what it serves: one line in the log (and in the file
    ``CHURN_START_FAILURE`` names, which `churn serve` watches to stop instead of letting
    BentoML start the worker again and again), no traceback."""
    text = str(err).strip().splitlines()
    line = f"the server cannot start: {text[0] if text else type(err).__name__}"
    if not isinstance(err, ChurnError):
        line = f"the server cannot start: {type(err).__name__}: {text[0] if text else ''}"
    failure = os.environ.get("CHURN_START_FAILURE")
    if failure:
        Path(failure).write_text(line + "\n")
    LOG.error(line)
    logging.shutdown()
    os._exit(3)


@dataclass(frozen=True)
class Scorer:
    """What answers a request: the models and the spend tier cuts read off them. Replaced
    whole when a new champion arrives, so a request sees one or the other, never a mix."""

    loaded: LoadedModel
    tier_cuts: tuple[float, float]


@bentoml.service(name="churn", http={"port": 3000}, traffic={"timeout": 30})
class ChurnService:
    """Scores customers with the champion churn (and, when registered, uplift) models."""

    def __init__(self) -> None:
        redact_request_errors()
        settings = ServiceSettings.from_environment()
        if settings.tracking_uri:
            mlflow.set_tracking_uri(settings.tracking_uri)
        self.settings = settings
        try:
            self.policy = SegmentPolicy.load(settings.policy)
            # A bento built by `churn build` carries its champions; otherwise ask the registry.
            self.scorer = self._ready(read_bundle(settings.bundle, settings.compiled)
                                      if settings.bundle else self._load())
        except Exception as err:  # any failure here ends the worker
            start_failed(err)
        self.docs: tuple[str, dict] | None = None
        _SERVICE["instance"] = self
        self.watching = settings.bundle is None and settings.watch_seconds > 0
        if self.watching:
            threading.Thread(target=self._watch, name="champion-watch", daemon=True).start()
        # Everything loaded so far lives as long as the server: keep it out of the garbage
        # collector's full passes, which otherwise stall requests for 40-250 ms at a time.
        gc.collect()
        gc.freeze()

    def _load(self) -> LoadedModel:
        settings = self.settings
        return load_champion(
            settings.model_name, uplift=settings.uplift and self.policy.uses_uplift,
            uplift_arm=self.policy.uplift_arm or None, compiled=settings.compiled,
            uplift_name=settings.uplift_model_name,
            check=DataCheck(allow_mismatch=settings.allow_data_mismatch))

    def _ready(self, loaded: LoadedModel) -> Scorer:
        """A ``Scorer`` for ``loaded``, run once on a few rows, so what the first request
        would load (compiled code, lazy imports) is loaded now."""
        scorer = Scorer(loaded, tier_cuts_for(loaded, self.policy))
        sample = loaded.warmup_rows()
        self._respond(list(map(str, range(len(sample)))), None,
                      sample[feature_names()].to_numpy(dtype=np.float64), True, explain=True,
                      scorer=scorer)
        return scorer

    def _watch(self) -> None:
        """Every ``watch_seconds``: if another version holds a champion alias, load it, warm
        it up and swap it in. A failure keeps the models that answer now, and says why."""
        settings, stop = self.settings, threading.Event()
        uplift_name = settings.uplift_model_name if settings.uplift and \
            self.policy.uses_uplift else None
        while not stop.wait(settings.watch_seconds):
            now = self.scorer.loaded
            serving = (now.version, now.uplift.version if now.uplift else None)
            try:
                if champion_versions(settings.model_name, uplift_name) == serving:
                    continue
                self.scorer = self._ready(self._load())
            except Exception as err:  # keep serving what works
                LOG.warning("champion check failed, still serving %s: %s", now.label, err)
                continue
            LOG.warning("new champion: now serving %s (was %s)", self.scorer.loaded.label,
                        now.label)

    def _respond(self, ids: list[str], as_of: np.ndarray | None, matrix: np.ndarray,
                 contactable: list[bool] | np.ndarray | bool, explain: bool,
                 skipped: Sequence[Skipped] = (), scorer: Scorer | None = None) -> Response:
        """A ``ScoreResponse`` as JSON, written straight from the score arrays. The API
        methods keep ``ScoreResponse`` as their declared type, which is what the OpenAPI
        schema shows; BentoML passes a ``Response`` through as it is."""
        scorer = scorer or self.scorer  # read once: a swap mid-request changes nothing here
        columns = score_matrix(np.asarray(ids, dtype=object), as_of, matrix, contactable,
                               scorer.loaded, self.policy, scorer.tier_cuts, explain)
        return json_response(columns, scorer.loaded, skipped)

    @bentoml.api
    def score_features(
        self, customers: Annotated[list[FeatureRow], Field(  # type: ignore[valid-type]
            min_length=1, max_length=MAX_CUSTOMERS,
            description="One row per customer: every feature (null when unknown).")],
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
                                Field(min_length=1, max_length=MAX_CUSTOMERS,
                                      description="The customers, in the order of data.")],
        columns: Annotated[list[str], Field(description="Every feature's name once, in the "
                                                        "order of each data row.")],
        data: Annotated[list[list[FiniteOrNull]], Field(
            min_length=1, max_length=MAX_CUSTOMERS,
            description="One row per customer: a number (null when unknown) per column.")],
        contactable: Annotated[list[bool] | None, Field(
            max_length=MAX_CUSTOMERS,
            description="Per customer, false when marketing consent is withheld; all true "
                        "when left out.")] = None,
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
        as_of: Annotated[date, Field(description="The day to score as of: only rows before it "
                                                  "count. Not after today (UTC).")],
        transactions: Annotated[list[TransactionIn], Field(
            max_length=MAX_HISTORY_ROWS, description="The customers' orders (all you have, "
                                                     "or at least the last year's).")],
        events: Annotated[list[EventIn], Field(
            max_length=MAX_HISTORY_ROWS,
            description="Engagement events (optional).")] = [],  # noqa: B006
        customers: Annotated[list[CustomerIn], Field(
            max_length=MAX_CUSTOMERS,
            description="Sign-up and consent (optional).")] = [],  # noqa: B006
        customer_ids: Annotated[list[str] | None, Field(
            max_length=MAX_CUSTOMERS,
            description="Answer for these customers only; those without a row before as_of "
                        "are listed under skipped.")] = None,
        explain: Annotated[bool, Field(description=EXPLAIN)] = True,
    ) -> ScoreResponse:
        """Score customers from their recent history (contract rows) as of a date.

        Only rows before ``as_of`` count. ``customer_ids`` limits the answer to those
        customers; any of them without a usable row is listed under ``skipped``.
        """
        return self._score_history(as_of, transactions, events, customers, customer_ids,
                                   explain)

    def _score_history(self, as_of: date, transactions: list[TransactionIn],
                       events: list[EventIn], customers: list[CustomerIn],
                       customer_ids: list[str] | None, explain: bool) -> Response:
        if as_of > datetime.now(UTC).date():
            raise InvalidArgument(f"as_of: {as_of} is in the future (after today, UTC); scores "
                                  f"describe customers as of a day that has happened")
        check_history_size(transactions, events, customers)
        if customer_ids:
            check_customer_ids(list(dict.fromkeys(customer_ids)), "customer_ids")
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
    def metadata(self) -> api.Metadata:
        """The models that answer (registry names and versions), feature set and policy.

        Also answers GET. ``model_version`` is the churn model's registry version, as in
        every score answer.
        """
        scorer = self.scorer
        loaded = scorer.loaded
        return api.Metadata(
            service_version=api.package_version(), model_name=loaded.name,
            model_version=loaded.version, feature_set_version=FEATURE_SET_VERSION,
            features=feature_names(), policy=self.policy.__dict__,
            tree_evaluator=tree_evaluator(loaded.model.evaluator),
            spend_tier_cuts=list(scorer.tier_cuts),
            uplift_model=None if loaded.uplift is None else {
                "name": loaded.uplift.name, "version": loaded.uplift.version,
                "arm": loaded.uplift.arm},
            propensity_model=None if loaded.propensity is None else {
                "name": loaded.propensity.name, "version": loaded.propensity.version,
                "horizon_days": loaded.propensity.horizon_days},
            value_model=None if loaded.value is None else {
                "name": loaded.value.name, "version": loaded.value.version,
                "horizon_days": loaded.value.horizon_days,
                "spend_form": loaded.value.model.form},
            score_columns=row_columns(loaded),
            watching_champion=self.watching, max_customers_per_request=MAX_CUSTOMERS)

    def openapi_document(self) -> dict:
        """``/docs.json``: the generated document made the service's own, with worked
        examples answered by the models that answer now (rebuilt when they change)."""
        loaded = self.scorer.loaded
        if self.docs is None or self.docs[0] != loaded.label:
            spec = ChurnService.openapi_spec.asdict()
            self.docs = (loaded.label, api.customise(spec, self._examples(), loaded.label,
                                                     self.settings.token is not None))
        return self.docs[1]

    def _examples(self) -> dict[str, tuple[object, object]]:
        """(request, answer) per scoring endpoint, the answers computed by this service."""
        history = {k: v for k, v in EXAMPLE_HISTORY.items() if k != "as_of"}
        as_of = date.fromisoformat(EXAMPLE_HISTORY["as_of"])
        rows = [TransactionIn(**r) for r in history["transactions"]], \
            [EventIn(**r) for r in history["events"]], \
            [CustomerIn(**r) for r in history["customers"]]
        features = history_features(as_of, *rows).head(1)
        names = feature_names()
        values = [None if pd.isna(v) else float(v) for v in features[names].iloc[0]]
        ids = list(features["customer_id"])
        requests = {
            "/score_history": EXAMPLE_HISTORY,
            "/score_features": {"customers": [{"customer_id": ids[0], "contactable": True,
                                               **dict(zip(names, values, strict=True))}],
                                "explain": True},
            "/score_table": {"customer_ids": ids, "columns": names, "data": [values],
                             "contactable": [True], "explain": True},
        }
        answers = {
            "/score_history": self._score_history(as_of, *rows, None, True),
            "/score_features": self._respond(ids, None, np.array([values], dtype=np.float64),
                                             True, True),
        }
        answers["/score_table"] = answers["/score_features"]
        return {path: (request, orjson.loads(answers[path].body))
                for path, request in requests.items()}


_SERVICE: dict[str, ChurnService] = {}


def _document() -> dict:
    return _SERVICE["instance"].openapi_document()


_settings = ServiceSettings.from_environment()
release_finished_requests()
bound_metric_labels(api.KNOWN_PATHS)
close_stalled_connections(_settings.stalled_seconds)
# Outermost first: docs and error shape, then the token (before any body is read), then the
# body limits.
ChurnService.add_asgi_middleware(api.ApiSurface, document=_document)
ChurnService.add_asgi_middleware(BearerTokenMiddleware, token=_settings.token)
ChurnService.add_asgi_middleware(BodySizeLimitMiddleware, max_bytes=_settings.max_request_bytes,
                                 max_in_flight=_settings.max_in_flight_bytes,
                                 body_seconds=_settings.body_seconds)
