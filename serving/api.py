"""The service's HTTP surface around the scoring methods: the answer's models, the OpenAPI
document (``/docs.json``) and its page (``/docs``), ``GET /metadata``, and one error shape.

Every error, whoever raises it (a field that fails its schema, a rule of the data contract,
an unknown path, a missing token, a body over the limit), answers as ``ErrorResponse``:
``{"error": "...", "detail": [{"loc": [...], "msg": "..."}]}``.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import logging
import re
from collections import Counter
from collections.abc import Callable
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema
from starlette.concurrency import run_in_threadpool

from serving.guards import (
    App,
    Message,
    Receive,
    Scope,
    Send,
    reply_error,
    restore_path,
    send_body,
)
from serving.policy import RISK_BANDS, SEGMENTS, SPEND_TIERS

LOG = logging.getLogger("churn.service")
TITLE = "Churn and propensity scoring"
SCORING_ROUTES = ("/score_features", "/score_table", "/score_history", "/metadata")
KNOWN_PATHS = frozenset((*SCORING_ROUTES, "/", "/docs", "/docs.json", "/schema.json", "/livez",
                         "/readyz", "/healthz", "/metrics"))
REF = "#/components/schemas/{model}"


def package_version() -> str:
    try:
        return importlib.metadata.version("churn-propensity")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class Reason(BaseModel):
    """A feature that raised this customer's churn score."""

    feature: str = Field(description="The feature's column name (see /metadata).")
    label: str = Field(description="The feature in words, for a marketer.")
    value: float | None = Field(description="The customer's value; null when unknown.")
    unit: str = Field(description="What the value counts: days, orders, in spend, ...")
    typical: float | None = Field(description="The median over the rows the model was fitted "
                                              "on; null for a model recorded without it.")
    contribution: float = Field(
        description="How much it added to the churn log-odds (LightGBM pred_contrib); the "
                    "list is ordered by it, largest first.")
    text: str = Field(description="The reason as a sentence, e.g. 'Days since last order: "
                                  "212 days (typical customer: 35)'.")


class ScoredCustomer(BaseModel):
    """One customer's scores, as the batch job writes them.

    With a propensity champion, also ``purchase_probability_<H>d`` (P(an order within its
    horizon of H days)); with a value champion, ``predicted_orders_<H>d``,
    ``predicted_spend_<H>d``, ``p_alive`` (BG/NBD) and ``next_order_expected_by`` (a date, null
    when no order is expected within the horizon). Null for customers without a past order.
    /metadata lists the columns that answer now.
    """

    model_config = ConfigDict(extra="allow")

    customer_id: str
    as_of: date | None = Field(
        description="The day the features describe (the request's as_of for /score_history; "
                    "null for rows sent as features).")
    churn_probability: float | None = Field(
        description="Calibrated probability of no order within the model's horizon; null "
                    "outside the model's base (no order within its base window).")
    churn_percentile: float | None = Field(
        description="Where the probability falls among the customers of the model's base at "
                    "its test cutoff: 0 = lowest risk, 100 = highest.")
    risk_band: Literal[RISK_BANDS] | None = Field(
        description="low / medium / high by the policy's risk_band.cuts; null with no "
                    "probability.")
    value_at_risk: float | None = Field(
        description="churn_probability x expected spend over the policy's horizon.")
    uplift_spend: float | None = Field(
        description="Predicted incremental spend if contacted (the uplift champion); null "
                    "without one.")
    uplift_spend_low: float | None = Field(
        description="Lower bound of the 95% interval of the average incremental spend among "
                    "customers ranked like this one (their fifth of the uplift ranking), "
                    "measured on rows the model never saw; null without an uplift model "
                    "that keeps intervals.")
    uplift_spend_high: float | None = Field(
        description="Upper bound of that interval (see uplift_spend_low).")
    uplift_conversion: float | None = Field(
        description="Predicted change in the probability of buying in the campaign window if "
                    "contacted; null without an uplift model of spend.")
    uplift_order_value: float | None = Field(
        description="Predicted change in spend among buyers if contacted: what treated "
                    "buyers spend minus what control buyers spend, for customers like this "
                    "one. The two groups' buyers may differ (the offer brings in new ones), "
                    "so this is an observable difference, not the effect on one basket; "
                    "null without an uplift model of spend.")
    segment: Literal[SEGMENTS] = Field(description="The lifecycle segment (policy rules).")
    spend_tier: Literal[SPEND_TIERS] = Field(
        description="Last year's spend against the model's base: low, medium or high.")
    contactable: bool = Field(description="False when marketing consent is withheld.")
    reasons: list[Reason] | None = Field(
        description="For at-risk customers (explain=true): the features that raised the "
                    "score most. Null otherwise.")


class Skipped(BaseModel):
    """A customer asked for but not scored, and why."""

    customer_id: str
    reason: str


class ScoreResponse(BaseModel):
    """Scores of every customer that could be scored, and the models that gave them."""

    model_name: str = Field(description="The churn model's name in the registry.")
    model_version: str = Field(
        description="The churn model's registry version that answered (as in /metadata).")
    uplift_model_name: str | None = Field(description="The uplift model's name, if one is used.")
    uplift_model_version: str | None = Field(
        description="The uplift model's registry version, if one is used.")
    propensity_model_name: str | None = Field(None, description="The propensity model's "
                                                                "name, if one is used.")
    propensity_model_version: str | None = Field(None, description="Its registry version.")
    value_model_name: str | None = Field(None, description="The value model's name, if one "
                                                           "is used.")
    value_model_version: str | None = Field(None, description="Its registry version.")
    scores: list[ScoredCustomer]
    skipped: list[Skipped] = []


class ErrorDetail(BaseModel):
    loc: list[str | int] = Field(
        description="Where in the request: field names and row numbers; empty for the whole "
                    "request.")
    msg: str = Field(description="What is wrong there.")
    type: str | None = Field(None, description="The rule broken, for a schema error "
                                               "(missing, too_short, float_parsing, ...).")


class ErrorResponse(BaseModel):
    """The one shape of every error answer."""

    error: str = Field(description="What went wrong, in one line.")
    detail: list[ErrorDetail] = Field(description="Each problem and where it is.")


class ModelInfo(BaseModel):
    name: str
    version: str


class Metadata(BaseModel):
    """The models and settings that answer."""

    service_version: str = Field(description="The churn-propensity package version.")
    model_name: str
    model_version: str = Field(description="The churn model's registry version.")
    uplift_model: dict | None = Field(description="name, version and arm of the uplift model.")
    propensity_model: dict | None = Field(
        None, description="name, version and horizon_days of the propensity model.")
    value_model: dict | None = Field(
        None, description="name, version, horizon_days and spend_form of the value model.")
    score_columns: list[str] = Field(
        default_factory=list, description="The fields of each scored customer, in order.")
    feature_set_version: str
    features: list[str]
    policy: dict
    tree_evaluator: str
    spend_tier_cuts: list[float]
    watching_champion: bool = Field(
        description="True when the service checks the registry for a new champion.")
    max_customers_per_request: int


# ---- the OpenAPI document -------------------------------------------------------------

DESCRIPTION = """\
Scores customers with the champion churn model (and, when one is registered, the uplift
model) into lifecycle segments: `new`, `active`, `at_risk`, `lapsed`, `win_back`.

**Three ways in.** `/score_history` takes recent rows of the data contract (transactions,
and optionally events and customers) and builds the features with the batch job's own query;
`/score_features` takes feature rows as the batch job writes them; `/score_table` takes the
same features column-wise, the fastest way for large batches.

**Answers.** Each customer gets `churn_probability`, `churn_percentile`, `risk_band`,
`value_at_risk`, `uplift_spend` (with an uplift model of spend, also `uplift_conversion` and
`uplift_order_value`), `segment`, `spend_tier`, `contactable` and, for those at risk,
`reasons`. `model_version` is the churn model's registry version that answered; a new
champion is picked up without a restart (see `GET /metadata`).

**Errors** always look like `{"error": "...", "detail": [{"loc": [...], "msg": "..."}]}`:
400 for a request that breaks the schema or the data contract (values are never echoed) or
sends a header such as `Content-Type` twice, 401 for a missing or wrong bearer token,
404 / 405 for a wrong path or method, 408 for a body that does not arrive in time, 413 for a
body over the limit, 415 for a body that is not JSON or is compressed.

**Auth.** With `CHURN_API_TOKEN` set, every call but the probes, `/metrics` and these docs
needs `Authorization: Bearer <token>`.
"""

ERRORS = {400: "The request breaks the schema or the data contract.",
          401: "Missing or wrong bearer token.", 408: "The body did not arrive in time.",
          413: "Body over the size limit.", 415: "Body is not JSON, or is compressed.",
          500: "The service failed; see its log.",
          503: "The service is starting (models not loaded yet) or shutting down."}
# BentoML names request schemas after the method (``score_history__Input``): named for what
# they are here.
REQUEST_SCHEMAS = {"/score_features": "ScoreFeaturesRequest", "/score_table": "ScoreTableRequest",
                   "/score_history": "ScoreHistoryRequest", "/metadata": "MetadataRequest"}
BEARER = {"type": "http", "scheme": "bearer",
          "description": "The token the server was started with (CHURN_API_TOKEN), sent as "
                         "`Authorization: Bearer <token>`. Probes, metrics and the docs need "
                         "none."}

EXAMPLE_HISTORY = {
    "as_of": "2025-10-01",
    "transactions": [
        {"customer_id": "C-1042", "order_id": "O-50017", "ordered_at": "2024-11-20T18:03:00Z",
         "amount": 84.5, "channel": "web"},
        {"customer_id": "C-1042", "order_id": "O-61230", "ordered_at": "2025-02-11T09:41:00Z",
         "amount": 42.0, "channel": "app"},
        {"customer_id": "C-2213", "order_id": "O-70451", "ordered_at": "2025-09-14T12:30:00Z",
         "amount": 129.9, "channel": "store"},
    ],
    "events": [
        {"customer_id": "C-1042", "occurred_at": "2025-09-02T07:15:00Z",
         "event_type": "email_sent"},
        {"customer_id": "C-2213", "occurred_at": "2025-09-28T19:02:00Z",
         "event_type": "site_visit"},
    ],
    "customers": [
        {"customer_id": "C-1042", "signed_up_at": "2024-06-01T00:00:00Z",
         "profiling_consent": True, "marketing_consent": True},
        {"customer_id": "C-2213", "signed_up_at": "2023-03-15T00:00:00Z",
         "profiling_consent": True, "marketing_consent": False},
    ],
    "explain": True,
}


def _schemas(*models: type[BaseModel]) -> dict[str, Any]:
    _, top = models_json_schema([(m, "serialization") for m in models], ref_template=REF)
    return top.get("$defs", {})


def _error_responses() -> dict[int, Any]:
    return {code: {"description": text, "content": {"application/json": {
        "schema": {"$ref": REF.format(model="ErrorResponse")}}}} for code, text in ERRORS.items()}


INFRA_SUMMARIES = {"/healthz": "Health (deprecated: use /livez)", "/livez": "Liveness probe",
                   "/readyz": "Readiness probe: 200 once the models are loaded",
                   "/metrics": "Prometheus metrics"}


def _name_requests(spec: dict[str, Any], schemas: dict[str, Any]) -> None:
    """Each scoring route's request schema under its own name, referenced from the route;
    BentoML's method-named copies and its unused IO descriptors dropped."""
    for path, name in REQUEST_SCHEMAS.items():
        body = spec["paths"].get(path, {}).get("post", {}).get("requestBody")
        if body is None:
            continue
        content = body["content"]["application/json"]
        schemas[name] = {**content["schema"], "title": name}
        content["schema"] = {"$ref": REF.format(model=name)}
        body["required"] = True
    for stale in [k for k in schemas if k.endswith(("__Input", "IODescriptor"))
                  or k == "TaskStatusResponse"]:
        schemas.pop(stale)


def customise(spec: dict[str, Any], examples: dict[str, tuple[Any, Any]],
              versions: str, token_required: bool = False) -> dict[str, Any]:
    """BentoML's generated document with this service's title, version, descriptions, one
    error schema, named request schemas, the bearer scheme (required on the scoring routes when
    the server has a token), ``GET /metadata`` and a worked example (request, answer) per
    endpoint."""
    spec["info"] = {"title": TITLE, "version": f"{package_version()} ({versions})",
                    "description": DESCRIPTION}
    descriptions = {"Service APIs": "Scoring, and which models answer.",
                    "Infrastructure": "Probes and metrics for orchestrators; no token needed."}
    for tag in spec.get("tags", []):
        tag["description"] = descriptions.get(tag["name"], tag.get("description"))
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for stale in ("InvalidArgument", "NotFound", "InternalServerError"):
        schemas.pop(stale, None)
    schemas.update(_schemas(ErrorResponse, Metadata, ScoreResponse))
    _name_requests(spec, schemas)
    spec["components"]["securitySchemes"] = {"bearer": BEARER}
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if path in SCORING_ROUTES:
                answer = "Metadata" if path == "/metadata" else "ScoreResponse"
                operation["responses"] = {
                    200: {"description": "Successful Response", "content": {
                        "application/json": {"schema": {"$ref": REF.format(model=answer)}}}},
                    **_error_responses()}
                if token_required:
                    operation["security"] = [{"bearer": []}]
            doc = inspect.cleandoc(operation.get("description") or "").replace("``", "`")
            operation["description"] = doc
            operation["summary"] = INFRA_SUMMARIES.get(path) or (
                doc.splitlines()[0] if doc else "")
            if path in examples and method == "post":
                request, answer = examples[path]
                operation["requestBody"]["content"]["application/json"]["example"] = request
                if answer is not None:
                    operation["responses"][200]["content"]["application/json"]["example"] = answer
    metadata = spec["paths"].get("/metadata", {}).get("post")
    if metadata is not None:
        spec["paths"]["/metadata"]["get"] = {
            **{k: v for k, v in metadata.items() if k != "requestBody"},
            "operationId": "churn__metadata_get",
            "responses": {200: {"description": "The models and settings that answer.",
                                "content": {"application/json": {
                                    "schema": {"$ref": REF.format(model="Metadata")}}}},
                          401: _error_responses()[401]}}
    return spec


def docs_page() -> bytes:
    """Swagger UI on the service's own document, from BentoML's bundled assets (offline)."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="UTF-8"><title>{TITLE} API</title>
<link rel="stylesheet" type="text/css" href="./static_content/swagger-ui.css" /></head>
<body><div id="swagger-ui"></div>
<script src="./static_content/swagger-ui-bundle.js" charset="UTF-8"></script>
<script>
window.onload = function () {{
  window.ui = SwaggerUIBundle({{url: "./docs.json", dom_id: "#swagger-ui", deepLinking: true,
    docExpansion: "list", defaultModelsExpandDepth: 0,
    presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout"}});
}};
</script></body></html>""".encode()


# ---- one error shape --------------------------------------------------------------------

LOCATED = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*): (.+)$", re.DOTALL)


def _detail(items: list[Any]) -> list[dict[str, Any]]:
    """``loc`` and ``msg`` of each problem, and pydantic's ``type`` when it gave one."""
    return [{"loc": list(d.get("loc", [])), "msg": str(d.get("msg", "")),
             **({"type": d["type"]} if "type" in d else {})}
            for d in items if isinstance(d, dict)]


def error_body(status: int, body: bytes, method: str, path: str,
               allow: str | None = None) -> dict[str, Any]:
    """Any error answer (BentoML's, starlette's or ours) as ``ErrorResponse``."""
    try:
        given = json.loads(body) if body else None
    except ValueError:
        given = None
    if isinstance(given, list) and given and isinstance(given[0], dict):
        given = given[0]  # BentoML answers a raised InvalidArgument as [{"error": ...}]
    if isinstance(given, dict) and isinstance(given.get("detail"), list):
        detail = _detail(given["detail"])
        message = str(given.get("error") or "invalid request")
        if "validation error" in message:
            message = (f"the request does not match the schema: {len(detail)} problem(s); "
                       f"see detail (the schema is at /docs)")
        return {"error": message, "detail": detail}
    if isinstance(given, dict) and "error" in given:
        message = str(given["error"])
        if status >= 500:
            message = "the service failed to answer; see its log"
        found = LOCATED.match(message)
        return {"error": message, "detail": [{"loc": [found.group(1)], "msg": found.group(2)}]
                if found else []}
    if status == 404:
        return {"error": f"no such endpoint: {path} (see /docs)", "detail": []}
    if status == 405:
        allowed = f"; use {allow}" if allow else ""
        return {"error": f"{method} is not allowed on {path}{allowed}", "detail": []}
    if status >= 500:
        return {"error": "the service failed to answer; see its log", "detail": []}
    text = body.decode(errors="replace").strip()[:200] or f"HTTP {status}"
    return {"error": text, "detail": []}


class ApiSurface:
    """ASGI middleware, outermost: serves ``/docs`` and ``/docs.json`` (``document`` builds
    the latter), answers ``GET /metadata`` with the ``/metadata`` method, refuses a body
    that is not JSON (415) and gives every error answer the ``ErrorResponse`` shape."""

    def __init__(self, app: App, document: Callable[[], dict[str, Any]]) -> None:
        self.app = app
        self.document = document

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope = restore_path(scope)
        method, path = scope["method"], scope["path"]
        refused = header_problem(scope.get("headers", []))
        if refused is not None:
            await reply_error(send, *refused)
            return
        if method == "OPTIONS" and path in KNOWN_PATHS:
            await send_body(send, 204, b"", b"text/plain",
                            [(b"allow", allowed_methods(path).encode())])
            return
        if method == "GET" and path == "/docs":
            await send_body(send, 200, docs_page(), b"text/html; charset=utf-8")
            return
        if method == "GET" and path == "/docs.json":
            try:
                document = json.dumps(await run_in_threadpool(self.document)).encode()
            except Exception:
                LOG.exception("building the OpenAPI document failed")
                raise
            await send_body(send, 200, document)
            return
        if method == "GET" and path == "/":
            await send_body(send, 307, b"", b"text/plain", [(b"location", b"/docs")])
            return
        if method == "GET" and path == "/metadata":
            scope, receive = _as_post(scope)
        elif method == "POST" and path in SCORING_ROUTES and not _is_json(scope):
            await reply_error(send, 415, "send the body as JSON (content-type: "
                                         "application/json)")
            return
        await self.app(scope, receive, _ErrorShaper(send, method, path))


# Headers a request may carry once: two of them (say, two content types) are read one way by
# one layer and another way by the next.
SINGLE_HEADERS = (b"content-type", b"content-length", b"content-encoding",
                  b"transfer-encoding", b"authorization", b"host")


def header_problem(headers: list[tuple[bytes, bytes]]) -> tuple[int, str] | None:
    """(status, message) for headers no answer can be trusted on: one of ``SINGLE_HEADERS``
    sent twice (400), or a body encoding the service does not decode (415). None when fine."""
    counts = Counter(name.lower() for name, _ in headers)
    for name in SINGLE_HEADERS:
        if counts[name] > 1:
            return 400, f"header {name.decode()} sent {counts[name]} times; send it once"
    encoding = dict(headers).get(b"content-encoding", b"").strip().lower()
    if encoding not in (b"", b"identity"):
        return 415, (f"content-encoding {encoding.decode(errors='replace')[:40]!r} is not "
                     f"accepted; send the body uncompressed")
    return None


def allowed_methods(path: str) -> str:
    """The methods a known path answers, for ``Allow``."""
    if path == "/metadata":
        return "GET, POST, OPTIONS"
    return "POST, OPTIONS" if path in SCORING_ROUTES else "GET, OPTIONS"


def _is_json(scope: Scope) -> bool:
    kind = dict(scope.get("headers", [])).get(b"content-type", b"application/json")
    return kind.split(b";")[0].strip().lower() in (b"application/json", b"")


def _as_post(scope: Scope) -> tuple[Scope, Receive]:
    headers = [(k, v) for k, v in scope.get("headers", [])
               if k not in (b"content-type", b"content-length")]
    scope = {**scope, "method": "POST",
             "headers": [*headers, (b"content-type", b"application/json"),
                         (b"content-length", b"2")]}
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"{}", "more_body": False}
        return {"type": "http.disconnect"}

    return scope, receive


class _ErrorShaper:
    """A ``send`` that passes answers under 400 through untouched and reshapes the rest."""

    def __init__(self, send: Send, method: str, path: str) -> None:
        self.send, self.method, self.path = send, method, path
        self.start: Message | None = None
        self.chunks: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            if message["status"] < 400:
                await self.send(message)
            else:
                self.start = message
            return
        if self.start is None or message["type"] != "http.response.body":
            await self.send(message)
            return
        self.chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        headers = dict(self.start.get("headers", []))
        allow = headers.get(b"allow", b"").decode() or None
        if self.start["status"] == 405 and self.path in KNOWN_PATHS:
            allow = allowed_methods(self.path)
        body = json.dumps(error_body(self.start["status"], b"".join(self.chunks), self.method,
                                     self.path, allow)).encode()
        kept = [(k, v) for k, v in self.start.get("headers", [])
                if k.lower() not in (b"content-type", b"content-length", b"allow")]
        if allow:
            kept.append((b"allow", allow.encode()))
        await send_body(self.send, self.start["status"], body, headers=kept)
