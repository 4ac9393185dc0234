"""The peer: a straightforward pandas implementation of the same point-in-time features.

Loads the Parquet tables whole into memory and computes every registry feature with
groupby. Used by ``bench/features.py`` to measure the DuckDB engine against, and by a test
that proves both give the same numbers.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from features.contract import KNOWN_EVENT_TYPES
from features.registry import CHANNELS, EVENT_WINDOWS, ORDER_WINDOWS, feature_names

DAY = pd.Timedelta(days=1)


def _read(data: Path, name: str, columns: list[str]) -> pd.DataFrame | None:
    path = data / f"{name}.parquet"
    return pd.read_parquet(path, columns=columns) if path.exists() else None


def _order_features(tx: pd.DataFrame, t: pd.Timestamp) -> pd.DataFrame:
    tx = tx[tx["ordered_at"] < t]
    lines = tx[tx["amount"] >= 0]
    orders = lines.groupby(["customer_id", "order_id"], as_index=False).agg(
        ordered_at=("ordered_at", "min"), amount=("amount", "sum"), channel=("channel", "min"))
    money = pd.concat([orders[["customer_id", "ordered_at", "amount"]],
                       tx.loc[tx["amount"] < 0, ["customer_id", "ordered_at", "amount"]]])
    g = orders.groupby("customer_id")
    out = pd.DataFrame({
        "recency_days": (t - g["ordered_at"].max()) / DAY,
        "first_order_at": g["ordered_at"].min(),
        "orders_total": g.size(),
    })
    for d in ORDER_WINDOWS:
        recent = orders[orders["ordered_at"] >= t - d * DAY]
        out[f"orders_{d}d"] = recent.groupby("customer_id").size()
        in_window = money[money["ordered_at"] >= t - d * DAY]
        out[f"spend_{d}d"] = in_window.groupby("customer_id")["amount"].sum()
    prev = money[(money["ordered_at"] >= t - 180 * DAY) & (money["ordered_at"] < t - 90 * DAY)]
    out["spend_prev_90d"] = prev.groupby("customer_id")["amount"].sum()
    out["spend_total"] = money.groupby("customer_id")["amount"].sum()
    channel = orders["channel"].str.lower()
    with_channel = orders[channel.notna()].groupby("customer_id").size()
    for ch in CHANNELS:
        out[f"n_{ch}"] = orders[channel == ch].groupby("customer_id").size()
    out["n_with_channel"] = with_channel
    out["channels_used"] = orders.assign(ch=channel).groupby("customer_id")["ch"].nunique()
    days = orders.assign(day=orders["ordered_at"].dt.floor("D"))[["customer_id", "day"]]
    days = days.drop_duplicates().sort_values(["customer_id", "day"])
    days["gap"] = days.groupby("customer_id")["day"].diff() / DAY
    gaps = days.dropna(subset=["gap"]).groupby("customer_id")["gap"]
    out["gap_mean_days"] = gaps.mean()
    out["gap_std_days"] = gaps.std(ddof=0)
    return out


def _event_features(ev: pd.DataFrame, t: pd.Timestamp, last_order: pd.Series) -> pd.DataFrame:
    ev = ev[(ev["occurred_at"] < t) & ev["event_type"].isin(KNOWN_EVENT_TYPES)]
    out = pd.DataFrame(index=pd.Index(ev["customer_id"].unique(), name="customer_id"))
    for e in KNOWN_EVENT_TYPES:
        of_type = ev[ev["event_type"] == e]
        for d in EVENT_WINDOWS:
            recent = of_type[of_type["occurred_at"] >= t - d * DAY]
            out[f"{e}_{d}d"] = recent.groupby("customer_id").size()
        out[f"days_since_{e}"] = (t - of_type.groupby("customer_id")["occurred_at"].max()) / DAY
    carts = ev[(ev["event_type"] == "cart_add") & (ev["occurred_at"] >= t - 30 * DAY)]
    after = carts["customer_id"].map(last_order)
    carts = carts[after.isna() | (carts["occurred_at"] > after)]
    out["cart_adds_without_order_30d"] = carts.groupby("customer_id").size()
    return out


def _last_order(tx: pd.DataFrame, t: pd.Timestamp) -> pd.Series:
    orders = tx[(tx["ordered_at"] < t) & (tx["amount"] >= 0)]
    return orders.groupby("customer_id")["ordered_at"].max()


def pandas_features(data: Path, as_of: date) -> pd.DataFrame:
    """Feature table as of ``as_of`` from Parquet contract tables in ``data``."""
    t = pd.Timestamp(as_of, tz="UTC")
    tx = _read(data, "transactions", ["customer_id", "order_id", "ordered_at", "amount",
                                      "channel"])
    ev = _read(data, "events", ["customer_id", "occurred_at", "event_type"])
    cu = _read(data, "customers", ["customer_id", "signed_up_at", "profiling_consent"])
    o = _order_features(tx, t)
    e = _event_features(ev, t, _last_order(tx, t))
    signups = cu[cu["signed_up_at"] < t].groupby("customer_id")["signed_up_at"].min()
    consented = cu["profiling_consent"].fillna(False).astype(bool)
    no_consent = set(cu.loc[~consented, "customer_id"])
    ids = set(tx.loc[tx["ordered_at"] < t, "customer_id"]) | set(e.index) | set(signups.index)
    ids = sorted(ids - no_consent)
    f = pd.DataFrame(index=pd.Index(ids, name="customer_id"))
    f = f.join(o).join(e).join(signups.rename("signed_up_at"))
    first_seen = f[["signed_up_at", "first_order_at"]].min(axis=1)
    f["tenure_days"] = (t - first_seen) / DAY
    counts = [c for c in f.columns if c.startswith(("orders_", "spend_", "n_", "channels_"))
              or c.endswith(tuple(f"_{d}d" for d in EVENT_WINDOWS))]
    f[counts] = f[counts].fillna(0)
    f["aov_365d"] = f["spend_365d"] / f["orders_365d"].replace(0, np.nan)
    f["aov_total"] = f["spend_total"] / f["orders_total"].replace(0, np.nan)
    f["overdue_ratio"] = f["recency_days"] / f["gap_mean_days"].replace(0, np.nan)
    both = f["spend_90d"].abs() + f["spend_prev_90d"].abs()
    f["spend_trend_90d"] = (f["spend_90d"] - f["spend_prev_90d"]) / both.replace(0, np.nan)
    with_channel = f["n_with_channel"].replace(0, np.nan)
    for ch in CHANNELS:
        f[f"channel_share_{ch}"] = f[f"n_{ch}"] / with_channel
    named = sum(f[f"n_{ch}"] for ch in CHANNELS)
    f["channel_share_other"] = (f["n_with_channel"] - named) / with_channel
    sent = f["email_sent_90d"].replace(0, np.nan)
    f["email_open_rate_90d"] = f["email_open_90d"] / sent
    f["email_click_rate_90d"] = f["email_click_90d"] / sent
    f["unsubscribed"] = f["days_since_unsubscribe"].notna().astype(float)
    f = f[feature_names()].astype("float64").reset_index()
    f.insert(1, "as_of", as_of)
    return f
