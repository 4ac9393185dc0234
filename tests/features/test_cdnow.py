"""The real CDNOW purchase log goes through the contract and gets correct features."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

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
