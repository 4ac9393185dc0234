"""The real CDNOW purchase log goes through the contract and gets correct features."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest

from features.contract import ContractError
from features.labels import check_matured
from features.point_in_time import connect
from features.tables import load_tables
from features.validation import OnBadRows
from tests.conftest import build, shared_file

AS_OF = date(1998, 1, 1)


@pytest.fixture(scope="module")
def cdnow_csv():
    return shared_file("cdnow/transactions.csv")


@pytest.fixture(scope="module")
def cdnow(tmp_path_factory, cdnow_csv):
    data = tmp_path_factory.mktemp("cdnow")
    (data / "transactions.csv").symlink_to(cdnow_csv)
    return build(data, AS_OF)


def test_every_customer_gets_features(cdnow):
    assert len(cdnow) == 23_570
    assert cdnow.index.is_unique


def test_recency_and_frequency_match_an_independent_computation(cdnow, cdnow_csv):
    raw = pd.read_csv(cdnow_csv, dtype={"customer_id": str})
    raw["day"] = pd.to_datetime(raw["ordered_at"])
    cutoff = pd.Timestamp(AS_OF)
    seen = raw[raw["day"] < cutoff]
    recency = (cutoff - seen.groupby("customer_id")["day"].max()).dt.days
    last_year = seen[seen["day"] >= cutoff - pd.Timedelta(days=365)]
    orders = last_year.groupby("customer_id")["order_id"].nunique()
    orders = orders.reindex(recency.index, fill_value=0)
    assert np.array_equal(cdnow.loc[recency.index, "recency_days"].to_numpy(), recency.to_numpy())
    assert np.array_equal(cdnow.loc[orders.index, "orders_365d"].to_numpy(), orders.to_numpy())
    assert cdnow["spend_total"].sum() == pytest.approx(seen["amount"].sum())


def test_a_stray_row_far_past_the_data_cannot_pass_for_matured_labels(tmp_path, cdnow_csv):
    """CDNOW ends 1998-06-30; one row dated today would move its end by decades, so a label
    window two-thirds past the real data would look matured. It is a finding instead: the
    job stops, or with quarantine sets it aside and judges maturity on the real end."""
    data = tmp_path / "data"
    data.mkdir()
    today = datetime.now(UTC).date()
    stray = pd.DataFrame({"customer_id": ["00001"], "order_id": ["stray-1"],
                          "ordered_at": [today.isoformat()], "amount": [10.0], "items": [1]})
    rows = pd.concat([pd.read_csv(cdnow_csv, dtype=str), stray.astype(str)])
    rows.to_csv(data / "transactions.csv", index=False)
    with connect() as con, pytest.raises(ContractError) as err:
        load_tables(con, data, tmp_path)
    assert (f"transactions: 1 row dated from {today} on, {(today - date(1998, 6, 30)).days:,} "
            f"days after the rest of the data (which ends 1998-06-30)") in str(err.value)
    assert "quarantine" in str(err.value)
    with connect() as con:
        tables = load_tables(con, data, tmp_path, OnBadRows.quarantine, rejects=tmp_path / "r")
    assert tables.end == date(1998, 7, 1)
    with pytest.raises(ContractError, match="label window is not over yet"):
        check_matured([date(1998, 5, 1)], 90, tables.end)
    rejected = pd.read_csv(tmp_path / "r" / "transactions.rejects.csv", dtype=str)
    assert list(rejected["order_id"]) == ["stray-1"]
