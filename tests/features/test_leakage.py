"""Point-in-time correctness: rows at or after the cutoff change no feature."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd

from features.synthetic import as_of_default
from tests.conftest import build, write_table

TIME_COLUMNS = {"transactions": "ordered_at", "events": "occurred_at",
                "customers": "signed_up_at", "exposures": "exposed_at"}


def _with_future_rows(frame: pd.DataFrame, column: str, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Add copies of every row moved to the cutoff or later, and a customer seen only then."""
    at_cutoff = frame.assign(**{column: cutoff})
    # Spread over the 150 days after the cutoff (still in the past: rows dated after today
    # break the contract).
    offset = frame[column] - frame[column].min()
    later = frame.assign(**{column: cutoff + pd.Timedelta(days=1)
                            + offset * (pd.Timedelta(days=150) / offset.max())})
    newcomer = frame.head(3).assign(customer_id="FUTURE-ONLY", **{column: cutoff})
    if "order_id" in frame:
        at_cutoff["order_id"] += "-at"
        later["order_id"] += "-later"
    if column == "signed_up_at":  # one row per customer: only a newcomer can be added
        return pd.concat([frame, newcomer.head(1)])
    if column == "exposed_at":
        newcomer = newcomer.assign(campaign_id=newcomer["campaign_id"] + "-future")
        return pd.concat([frame, newcomer.head(1)])
    return pd.concat([frame, at_cutoff, later, newcomer])


def test_rows_at_or_after_cutoff_change_nothing(synthetic_data, tmp_path):
    source, cfg = synthetic_data
    as_of = as_of_default(cfg) - timedelta(days=200)
    before = build(source, as_of, out=tmp_path / "before.parquet")
    cutoff = pd.Timestamp(as_of, tz="UTC")
    for name, column in TIME_COLUMNS.items():
        frame = pd.read_parquet(source / f"{name}.parquet")
        write_table(tmp_path / "leaky", name, _with_future_rows(frame, column, cutoff), "parquet")
    after = build(tmp_path / "leaky", as_of, out=tmp_path / "after.parquet")
    assert "FUTURE-ONLY" not in after.index
    pd.testing.assert_frame_equal(after, before)
