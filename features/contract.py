"""The data contract: the four input tables, their columns and the rules each row must meet.

The pandera schemas are the single source of truth. The SQL types used to read files
(``duckdb_type``) and the checks run on every row are both derived from them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow

from features.errors import ChurnError

KNOWN_EVENT_TYPES: tuple[str, ...] = (
    "email_sent",
    "email_open",
    "email_click",
    "site_visit",
    "app_session",
    "cart_add",
    "support_contact",
    "content_download",
    "unsubscribe",
)

UTC_TIMESTAMP = pd.DatetimeTZDtype(unit="us", tz="UTC")
# The same type in Arrow, for tables written in the contract's form.
ARROW_TIMESTAMP = pyarrow.timestamp("us", tz="UTC")


def non_empty(values: pd.Series) -> pd.Series:
    """The rule every id and type must meet: text with something besides spaces."""
    return values.str.strip().str.len() > 0


def _non_empty() -> pa.Check:
    return pa.Check(non_empty, name="not_empty")


def no_nul(values: pd.Series) -> pd.Series:
    """Text without NUL characters, which databases (PostgreSQL) cannot store."""
    return ~values.str.contains("\x00", regex=False).fillna(False).astype(bool)


def _no_nul() -> pa.Check:
    return pa.Check(no_nul, name="no NUL character")


def _finite() -> pa.Check:
    # Nulls are the nullable rule's business; this one rejects inf and -inf.
    return pa.Check(lambda s: s.isna() | np.isfinite(s), name="finite")


# No single order is worth more than this (in the currency of `amount`), either way: a
# bigger one is a unit or parsing mistake, and sums of such values overflow to infinity.
MAX_ORDER_AMOUNT = 1e9


def _plausible_amount() -> pa.Check:
    return pa.Check(lambda s: s.isna() | (s.abs() <= MAX_ORDER_AMOUNT),
                    name=f"within ±{MAX_ORDER_AMOUNT:.0e}")


def _key() -> pa.Column:
    return pa.Column(str, [_non_empty(), _no_nul()], nullable=False)


# Times outside these are mistakes (a placeholder year, a unit error), and one in the future
# would pass for a matured label window: rows must lie between 1900 and tomorrow.
EARLIEST_TIME = pd.Timestamp("1900-01-01", tz="UTC")


def latest_plausible_time() -> pd.Timestamp:
    """The start of the day after tomorrow (UTC): rows must lie before it."""
    return pd.Timestamp.now(tz="UTC").normalize() + pd.Timedelta(days=2)


def plausible_times(values: pd.Series) -> pd.Series:
    latest = latest_plausible_time()
    return values.isna() | ((values >= EARLIEST_TIME) & (values < latest))


def _timestamp(nullable: bool = False, required: bool = True) -> pa.Column:
    check = pa.Check(plausible_times, name="between 1900-01-01 and today")
    return pa.Column(UTC_TIMESTAMP, check, nullable=nullable, required=required)


def rule_screen(check: pa.Check, column: str) -> str | None:
    """SQL that is true for every value of ``column`` (an SQL expression) that may break
    ``check``, and perhaps for some that do not: a screen, not the rule. A table none of
    whose rows it flags needs no exact check; a flagged one gets the exact check, which
    names the rows. None for a rule without a screen (its tables always get the exact
    check). Nulls are never flagged here: nullability is a rule of its own."""
    if check.name == "not_empty":
        # A first character that is printable ASCII and not a space survives strip().
        return f"NOT (ascii({column}) BETWEEN 33 AND 126)"
    if check.name == "no NUL character":
        return f"contains({column}, chr(0))"
    if check.name == "finite":
        return f"NOT isfinite({column})"
    if check.name == f"within ±{MAX_ORDER_AMOUNT:.0e}":
        return f"abs({column}) > {MAX_ORDER_AMOUNT!r}"
    if check.name == "between 1900-01-01 and today":
        # A day's margin before the exact rule's limit, for a run that passes midnight.
        latest = latest_plausible_time() - pd.Timedelta(days=1)
        return (f"({column} < TIMESTAMPTZ '{EARLIEST_TIME.isoformat()}' "
                f"OR {column} >= TIMESTAMPTZ '{latest.isoformat()}')")
    if check.name == "isin":
        allowed = ", ".join(repr(float(v)) for v in check.statistics["allowed_values"])
        return f"{column} NOT IN ({allowed})"
    return None


@dataclass(frozen=True)
class TableSpec:
    """One contract table: its schema, whether a data folder must hold it, its time column."""

    name: str
    schema: pa.DataFrameSchema
    required: bool
    time_column: str
    unique_key: tuple[str, ...] = ()
    # Whether two rows equal in every column are a finding (the same order line loaded twice
    # would count its spend twice).
    distinct_rows: bool = False
    # SQL values for optional columns that a file does not have at all.
    absent_defaults: tuple[tuple[str, str], ...] = ()

    @property
    def columns(self) -> list[str]:
        return list(self.schema.columns)

    @property
    def required_columns(self) -> list[str]:
        return [n for n, c in self.schema.columns.items() if c.required]


TRANSACTIONS = TableSpec(
    name="transactions",
    schema=pa.DataFrameSchema(
        {
            "customer_id": _key(),
            "order_id": _key(),
            "ordered_at": _timestamp(),
            # Negative amounts are returns: they net off spend but are not orders.
            "amount": pa.Column(float, [_finite(), _plausible_amount()], nullable=False),
            "channel": pa.Column(str, _no_nul(), nullable=True, required=False),
        },
        name="transactions",
    ),
    required=True,
    time_column="ordered_at",
    distinct_rows=True,
)

EVENTS = TableSpec(
    name="events",
    schema=pa.DataFrameSchema(
        {
            "customer_id": _key(),
            "occurred_at": _timestamp(),
            "event_type": pa.Column(str, [_non_empty(), _no_nul()], nullable=False),
        },
        name="events",
    ),
    required=False,
    time_column="occurred_at",
)

CUSTOMERS = TableSpec(
    name="customers",
    schema=pa.DataFrameSchema(
        {
            "customer_id": _key(),
            "signed_up_at": _timestamp(nullable=True, required=False),
            # A missing column means consent is handled upstream; a null value means no consent.
            "profiling_consent": pa.Column("boolean", nullable=True, required=False),
            "marketing_consent": pa.Column("boolean", nullable=True, required=False),
        },
        name="customers",
    ),
    required=False,
    time_column="signed_up_at",
    unique_key=("customer_id",),
    absent_defaults=(("profiling_consent", "TRUE"), ("marketing_consent", "TRUE")),
)

EXPOSURES = TableSpec(
    name="exposures",
    schema=pa.DataFrameSchema(
        {
            "customer_id": _key(),
            "campaign_id": pa.Column(str, [_non_empty(), _no_nul()], nullable=False),
            "exposed_at": _timestamp(),
            "treatment": pa.Column(float, pa.Check.isin([0.0, 1.0]), nullable=False),
        },
        name="exposures",
    ),
    required=False,
    time_column="exposed_at",
    unique_key=("customer_id", "campaign_id"),
)

class ContractError(ChurnError, ValueError):
    """Input data breaks the contract; the message names table, column, rule and rows."""


class BadRowsError(ContractError):
    """Some rows break the contract (they could be quarantined)."""


TABLES: dict[str, TableSpec] = {
    t.name: t for t in (TRANSACTIONS, EVENTS, CUSTOMERS, EXPOSURES)
}


def duckdb_type(spec: TableSpec, column: str) -> str:
    """The SQL type a contract column is read as."""
    dtype = str(spec.schema.columns[column].dtype)
    if dtype.startswith("datetime64"):
        return "TIMESTAMPTZ"
    if dtype.startswith(("str", "object")):
        return "VARCHAR"
    return {"float64": "DOUBLE", "boolean": "BOOLEAN"}[dtype]


def parse_rule(sql_type: str) -> str:
    """The rule name reported when a raw value cannot be read as ``sql_type``."""
    return {
        "TIMESTAMPTZ": "parse as timestamp",
        "DOUBLE": "parse as number",
        "BOOLEAN": "parse as boolean",
        "VARCHAR": "parse as text",
    }[sql_type]
