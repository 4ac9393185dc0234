"""Bad input: each contract rule gives an error naming table, column, rule and rows."""

from __future__ import annotations

import os
import re
import shutil
from datetime import date

import duckdb
import pandas as pd
import pytest

from features.contract import TABLES, ContractError, duckdb_type
from features.job import FeaturesJobConfig, run_features
from features.sources import find_table, present_columns
from features.validation import OnBadRows, frame_problems, id_problems, passes_screen
from tests.conftest import build, write_table

AS_OF = date(1998, 1, 1)


def transactions(**overrides) -> pd.DataFrame:
    frame = pd.DataFrame({
        "customer_id": ["a", "b", "c"],
        "order_id": ["1", "2", "3"],
        "ordered_at": ["1997-01-01", "1997-02-01", "1997-03-01"],
        "amount": ["10.0", "20.0", "30.0"],
    })
    for column, values in overrides.items():
        frame[column] = values
    return frame


def test_missing_required_column_is_named(tmp_path):
    write_table(tmp_path / "data", "transactions", transactions().drop(columns="amount"))
    with pytest.raises(ContractError, match=r"transactions: missing required column 'amount'"):
        build(tmp_path / "data", AS_OF)


def test_missing_transactions_table_is_named(tmp_path):
    write_table(tmp_path / "data", "events", pd.DataFrame(
        {"customer_id": ["a"], "occurred_at": ["1997-01-01"], "event_type": ["site_visit"]}))
    with pytest.raises(ContractError, match=r"transactions: no transactions.parquet"):
        build(tmp_path / "data", AS_OF)


def test_unparseable_timestamp_names_rule_and_row(tmp_path):
    write_table(tmp_path / "data", "transactions",
                transactions(ordered_at=["1997-01-01", "31/02/1997", "1997-03-01"]))
    with pytest.raises(ContractError) as err:
        build(tmp_path / "data", AS_OF)
    message = str(err.value)
    assert "transactions: 1 row of 3 break the contract" in message
    assert "column 'ordered_at', rule 'parse as timestamp': 1 row, e.g. row 2: '31/02/1997'" in (
        message)


def test_wrong_type_in_parquet_is_reported(tmp_path):
    # amount stored as text in a Parquet file, one value not a number
    write_table(tmp_path / "data", "transactions",
                transactions(amount=["10.0", "12,50", "30.0"]), fmt="parquet")
    with pytest.raises(ContractError,
                       match=r"'amount', rule 'parse as number': 1 row, e.g. row 2: '12,50'"):
        build(tmp_path / "data", AS_OF)


def test_null_key_and_infinite_amount_are_reported(tmp_path):
    write_table(tmp_path / "data", "transactions",
                transactions(customer_id=["a", None, "c"], amount=["1", "2", "inf"]))
    with pytest.raises(ContractError) as err:
        build(tmp_path / "data", AS_OF)
    assert "column 'customer_id', rule 'not_nullable': 1 row, e.g. row 2: null" in str(err.value)
    assert "column 'amount', rule 'finite': 1 row, e.g. row 3: inf" in str(err.value)


def test_an_implausible_amount_is_a_named_rule_not_an_infinite_spend(tmp_path):
    """Two orders of 1e308 are finite but sum to infinity; no order is worth over 1e9."""
    write_table(tmp_path / "data", "transactions",
                transactions(amount=["1e308", "1e308", "-2e9"], customer_id=["a", "a", "b"]))
    with pytest.raises(ContractError) as err:
        build(tmp_path / "data", AS_OF)
    assert "column 'amount', rule 'within ±1e+09': 3 rows, e.g. row 1: 1e+308" in str(err.value)


def test_bad_rows_stop_the_job_and_keep_earlier_output(tmp_path):
    data, out = tmp_path / "data", tmp_path / "features.parquet"
    write_table(data, "transactions", transactions())
    first = build(data, AS_OF, out=out)
    write_table(data, "transactions", transactions(ordered_at=["x", "y", "1997-01-01"]))
    with pytest.raises(ContractError, match="Nothing was written"):
        build(data, AS_OF, out=out)
    pd.testing.assert_frame_equal(pd.read_parquet(out).set_index("customer_id"), first)


def test_quarantine_writes_rejects_with_reasons_and_goes_on(tmp_path):
    data = tmp_path / "data"
    write_table(data, "transactions",
                transactions(ordered_at=["1997-01-01", "soon", "1997-03-01"],
                             amount=["10", "20", "-inf"]))
    rejects = tmp_path / "rejects"
    features = build(data, AS_OF, on_bad_rows=OnBadRows.quarantine, rejects=rejects)
    assert list(features.index) == ["a"]
    rejected = pd.read_csv(rejects / "transactions.rejects.csv", dtype=str)
    assert list(rejected["customer_id"]) == ["b", "c"]
    assert list(rejected["_where"]) == ["row 2", "row 3"]
    assert list(rejected["_reason"]) == ["column 'ordered_at': parse as timestamp",
                                         "column 'amount': finite"]
    assert rejected.loc[0, "ordered_at"] == "soon"


OTHER_TABLE_RULES = {
    "duplicate customer rows": (
        "customers",
        {"customer_id": ["a", "a"], "signed_up_at": ["1996-01-01", "1996-02-01"]},
        r"rule 'unique \(customer_id\)': 1 row, e.g. row 2"),
    "consent must be a boolean": (
        "customers",
        {"customer_id": ["a", "b"], "profiling_consent": ["true", "maybe"]},
        r"'profiling_consent', rule 'parse as boolean'"),
    "treatment must be zero or one": (
        "exposures",
        {"customer_id": ["a", "b"], "campaign_id": ["k", "k"],
         "exposed_at": ["1997-05-01", "1997-05-01"], "treatment": [1, 2]},
        r"(?s)exposures: .*column 'treatment', rule 'isin"),
}


@pytest.mark.parametrize("table, columns, message", OTHER_TABLE_RULES.values(),
                         ids=OTHER_TABLE_RULES.keys())
def test_rules_of_the_other_tables(tmp_path, table, columns, message):
    data = tmp_path / "data"
    write_table(data, "transactions", transactions())
    write_table(data, table, pd.DataFrame(columns))
    with pytest.raises(ContractError, match=message):
        build(data, AS_OF)


def test_unknown_event_types_are_counted_not_fatal(tmp_path):
    data = tmp_path / "data"
    write_table(data, "transactions", transactions())
    write_table(data, "events", pd.DataFrame({
        "customer_id": ["a", "a", "b"],
        "occurred_at": ["1997-06-01"] * 3,
        "event_type": ["push_open", "push_open", "site_visit"]}))
    result = run_features(FeaturesJobConfig(data=data, as_of=AS_OF, out=tmp_path / "f.csv"))
    events = next(r for r in result.reports if r.table == "events")
    assert events.unknown_event_types == {"push_open": 2}
    assert events.bad_rows == 0


def test_folder_of_files_reports_file_and_row(tmp_path):
    folder = tmp_path / "data" / "transactions"
    write_table(folder, "part-1", transactions())
    write_table(folder, "part-2", transactions(ordered_at=["1997-01-01", "1997-01-02", "never"]))
    with pytest.raises(ContractError, match=r"row 3: 'never'") as err:
        build(tmp_path / "data", AS_OF)
    assert "part-2.csv row 3" in str(err.value)


def test_folder_of_files_is_read_whole(tmp_path):
    folder = tmp_path / "data" / "transactions"
    write_table(folder, "part-1", transactions(), fmt="parquet")
    write_table(folder, "part-2", transactions(order_id=["4", "5", "6"]), fmt="parquet")
    features = build(tmp_path / "data", AS_OF)
    assert features["orders_total"].to_dict() == {"a": 2, "b": 2, "c": 2}


def test_links_in_a_table_folder_are_read_once_and_folders_never(tmp_path):
    folder = tmp_path / "data" / "transactions"
    write_table(folder, "part-1", transactions(), fmt="parquet")
    (folder / "same-again.parquet").symlink_to(folder / "part-1.parquet")
    (tmp_path / "elsewhere").mkdir()
    write_table(tmp_path / "elsewhere", "x", transactions(order_id=["7", "8", "9"]), "parquet")
    (folder / "linked-folder.parquet").symlink_to(tmp_path / "elsewhere",
                                                   target_is_directory=True)
    features = build(tmp_path / "data", AS_OF)
    assert features["orders_total"].to_dict() == {"a": 1, "b": 1, "c": 1}


def test_hard_links_count_once_and_hidden_files_are_skipped(tmp_path):
    folder = tmp_path / "data" / "transactions"
    write_table(folder, "part-1", transactions())
    os.link(folder / "part-1.csv", folder / "hard-link.csv")
    write_table(folder, ".part-2", transactions(order_id=["7", "8", "9"]))  # an editor's
    features = build(tmp_path / "data", AS_OF)
    assert features["orders_total"].to_dict() == {"a": 1, "b": 1, "c": 1}
    assert features["spend_total"].to_dict() == {"a": 10.0, "b": 20.0, "c": 30.0}


def test_a_copied_file_in_a_table_folder_is_refused(tmp_path):
    folder = tmp_path / "data" / "transactions"
    write_table(folder, "part-1", transactions())
    shutil.copy(folder / "part-1.csv", folder / "part-1 (copy).csv")
    with pytest.raises(ContractError, match=r"part-1 \(copy\).csv and part-1.csv hold the "
                                            r"same bytes, so every row would count twice"):
        build(tmp_path / "data", AS_OF)


def test_repeated_rows_are_a_finding_stopped_or_quarantined(tmp_path):
    data = tmp_path / "data"
    doubled = pd.concat([transactions(), transactions()], ignore_index=True)
    write_table(data, "transactions", doubled)
    with pytest.raises(ContractError) as err:
        build(data, AS_OF)
    assert "transactions: 3 rows of 6 break the contract" in str(err.value)
    assert ("column 'order_id', rule 'unique row (every column equal to an earlier row)': "
            "3 rows, e.g. row 4: '1'") in str(err.value)
    features = build(data, AS_OF, on_bad_rows=OnBadRows.quarantine, rejects=tmp_path / "r")
    assert features["spend_total"].to_dict() == {"a": 10.0, "b": 20.0, "c": 30.0}
    rejected = pd.read_csv(tmp_path / "r" / "transactions.rejects.csv", dtype=str)
    assert list(rejected["_where"]) == ["row 4", "row 5", "row 6"]
    # Two lines of one order that differ in any column are two lines, not a repeat.
    write_table(data, "transactions", transactions(order_id=["1", "1", "1"],
                                                   customer_id=["a", "a", "a"]))
    assert build(data, AS_OF)["spend_total"].to_dict() == {"a": 60.0}


def test_a_pipe_in_a_table_folder_is_refused_not_waited_on(tmp_path):
    folder = tmp_path / "data" / "transactions"
    write_table(folder, "part-1", transactions())
    os.mkfifo(folder / "part-2.csv")
    with pytest.raises(ContractError, match=r"part-2.csv: a pipe \(FIFO\), not a file"):
        build(tmp_path / "data", AS_OF)


@pytest.mark.parametrize("when", ["2099-06-01", "9999-12-31", "0001-01-01", "1899-12-31"])
def test_an_implausible_date_is_a_named_rule(tmp_path, when):
    """A date in the future would pass for a matured label; one in year 1 for a long tenure."""
    write_table(tmp_path / "data", "transactions",
                transactions(ordered_at=["1997-01-01", when, "1997-03-01"]))
    with pytest.raises(ContractError) as err:
        build(tmp_path / "data", AS_OF)
    assert ("column 'ordered_at', rule 'between 1900-01-01 and today': 1 row, e.g. row 2"
            in str(err.value))


def _csv_lines(tmp_path, lines: list[bytes]) -> None:
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    (folder / "transactions.csv").write_bytes(
        b"customer_id,order_id,ordered_at,amount\n" + b"\n".join(lines) + b"\n")


def test_a_quoted_id_far_down_the_file_is_read(tmp_path):
    """The CSV dialect is the contract's, not guessed from the first rows."""
    rows = [f"c{i},o{i},1997-01-01,10".encode() for i in range(25_000)]
    _csv_lines(tmp_path, [*rows, b'"c,late",o-late,1997-02-01,5'])
    features = build(tmp_path / "data", AS_OF)
    assert features.loc["c,late", "orders_total"] == 1 and len(features) == 25_001


@pytest.mark.parametrize(("last", "message"), [
    (b"c\xff,o-x,1997-02-01,5", "CSV Error on Line: 25002 The file is not UTF-8"),
    (b'"unclosed,o-x,1997-02-01,5', "cannot read"),
    (b"c-long,o-x,1997-02-01," + b"9" * 2_100_000,
     "line 25002 is 2,100,022 bytes, over the 2,000,000 a CSV line may hold"),
    (b"c-cr,o-x,1997-02-01,5\r", (r"line 25002 ends with \r\n but line 1 with \n: mixed "
                                  r"line endings")),
    (b"c-mac,o-x,1997-02-01,5\rc-2,o-y,1997-02-01,5",
     r"line 25002 holds a bare carriage return (\r)"),
])
def test_an_unreadable_csv_is_one_line_naming_file_and_line(tmp_path, last, message):
    rows = [f"c{i},o{i},1997-01-01,10".encode() for i in range(25_000)]
    _csv_lines(tmp_path, [*rows, last])
    with pytest.raises(ContractError) as err:
        build(tmp_path / "data", AS_OF)
    text = str(err.value)
    assert message in text and "transactions.csv" in text
    assert len(text.splitlines()) <= 2, text  # the line, and "Nothing was written."


def test_mixed_formats_in_a_folder_are_refused(tmp_path):
    folder = tmp_path / "data" / "transactions"
    write_table(folder, "part-1", transactions(), fmt="parquet")
    write_table(folder, "part-2", transactions())
    with pytest.raises(ContractError, match=r"both \.parquet and \.csv"):
        build(tmp_path / "data", AS_OF)


def test_a_nul_character_in_an_id_is_refused_at_the_contract(tmp_path):
    write_table(tmp_path / "data", "transactions",
                transactions(customer_id=["a", "b\x00", "c"]), fmt="parquet")
    with pytest.raises(ContractError, match=r"'customer_id', rule 'no NUL character': 1 row, "
                                            r"e.g. row 2"):
        build(tmp_path / "data", AS_OF)


def test_request_ids_meet_the_same_rules_as_files():
    """The quick id check of online requests gives what the contract's own rules give."""
    ids = ["a", " ", "", "\t\n", "\u00a0", "b", "a", "\u2003x", "b", "ok", "n\x00ul", "\x00"]
    assert id_problems(ids, TABLES["customers"]) == frame_problems(
        pd.DataFrame({"customer_id": ids}), TABLES["customers"])
    assert id_problems(ids, TABLES["transactions"]) == frame_problems(
        pd.DataFrame({"customer_id": ids, "order_id": [str(i) for i in range(len(ids))],
                      "ordered_at": ["2025-01-01"] * len(ids), "amount": [1.0] * len(ids)}),
        TABLES["transactions"])


# The screen: one DuckDB pass that lets a clean table skip the exact, row-by-row check.

CLEAN = {
    "transactions": transactions(channel=["web", "store", None]),
    "events": pd.DataFrame({"customer_id": ["a", "b", "c"],
                            "occurred_at": ["1997-01-01", "1997-01-02", "1997-01-03"],
                            "event_type": ["site_visit", "email_open", "cart_add"]}),
    "customers": pd.DataFrame({"customer_id": ["a", "b", "c"],
                               "signed_up_at": ["1996-01-01", None, "1996-03-01"],
                               "profiling_consent": ["true", "true", None],
                               "marketing_consent": ["false", "true", "true"]}),
    "exposures": pd.DataFrame({"customer_id": ["a", "b", "c"], "campaign_id": ["x", "x", "x"],
                               "exposed_at": ["1997-05-01"] * 3,
                               "treatment": ["1", "0", "1"]}),
}
# A value breaking each rule of the contract (by the rule's name).
BREAKS = {"not_empty": " \t", "no NUL character": "a\x00b", "finite": "inf",
          "within ±1e+09": "-2e9", "between 1900-01-01 and today": "1899-12-31",
          "isin": "0.5"}
CASES = [(table, column, check.name)
         for table, spec in TABLES.items()
         for column, rules in spec.schema.columns.items() for check in rules.checks]


def screened(tmp_path, table: str, frame: pd.DataFrame, fmt: str = "parquet") -> int | None:
    write_table(tmp_path, table, frame.astype("string"), fmt)
    source = find_table(tmp_path, TABLES[table])
    con = duckdb.connect()
    return passes_screen(con, source, present_columns(con, source))


@pytest.mark.parametrize("table", list(CLEAN))
def test_the_screen_passes_a_clean_table(tmp_path, table):
    assert screened(tmp_path, table, CLEAN[table]) == 3


@pytest.mark.parametrize(("table", "column", "rule"), CASES)
def test_the_screen_flags_every_value_a_rule_refuses(tmp_path, table, column, rule):
    frame = CLEAN[table].astype(object)
    frame.loc[1, column] = BREAKS[rule]
    assert screened(tmp_path, table, frame) is None
    # ... and the exact check, which then runs, names the row.
    with pytest.raises(ContractError, match=rf"(?s){table}: 1 row of 3 break.*'{column}', "
                                            rf"rule '{re.escape(rule)}"):
        build_table(tmp_path, table, frame)


@pytest.mark.parametrize(("table", "column"), [
    (t, c) for t, spec in TABLES.items() for c, rules in spec.schema.columns.items()
    if not rules.nullable])
def test_the_screen_flags_a_null_where_the_contract_wants_a_value(tmp_path, table, column):
    frame = CLEAN[table].astype(object)
    frame.loc[1, column] = None
    assert screened(tmp_path, table, frame) is None


@pytest.mark.parametrize(("table", "column"), [
    (t, c) for t, spec in TABLES.items() for c in spec.columns
    if duckdb_type(spec, c) != "VARCHAR"])
def test_the_screen_flags_a_value_that_does_not_parse(tmp_path, table, column):
    frame = CLEAN[table].astype(object)
    frame.loc[1, column] = "not a value"
    assert screened(tmp_path, table, frame) is None


def test_the_screen_flags_repeated_keys_and_rows(tmp_path):
    customers = CLEAN["customers"].astype(object)
    customers.loc[2, "customer_id"] = "a"
    assert screened(tmp_path, "customers", customers) is None
    repeated = pd.concat([CLEAN["transactions"], CLEAN["transactions"].iloc[[0]]])
    assert screened(tmp_path, "transactions", repeated) is None
    # The same order id with another amount is a second line, not a repeat.
    lines = transactions(order_id=["1", "1", "3"])
    assert screened(tmp_path, "transactions", lines) == 3


def test_a_value_the_screen_flags_but_the_rule_accepts_passes(tmp_path):
    """A non-breaking space before an id: flagged (not plain ASCII), but not blank."""
    data = tmp_path / "data"
    write_table(data, "transactions", transactions(customer_id=["\u00a0a", "b", "c"]))
    assert screened(tmp_path / "screen", "transactions",
                    transactions(customer_id=["\u00a0a", "b", "c"])) is None
    assert len(build(data, AS_OF)) == 3


def build_table(folder, table: str, frame: pd.DataFrame) -> None:
    data = folder / "data"
    tables = {"transactions": CLEAN["transactions"], table: frame}
    for name, rows in tables.items():
        write_table(data, name, rows)
    build(data, AS_OF)
