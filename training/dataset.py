"""Training data: validated contract tables -> (features at cutoff, churn label) per cutoff.

Each cutoff is a snapshot: the base at that cutoff, its point-in-time features and its label.
Snapshots stack into one frame with a ``cutoff`` column; nothing is shuffled across time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import date

import duckdb
import pandas as pd

from features.clv import clv_summary_query
from features.labels import LABEL, ChurnLabelConfig, check_matured, churn_label_query
from features.point_in_time import feature_query
from features.registry import feature_names
from features.tables import LoadedTables


def snapshot(con: duckdb.DuckDBPyConnection, tables: dict[str, str], cutoff: date,
             cfg: ChurnLabelConfig) -> pd.DataFrame:
    """The base at ``cutoff`` with its features and churn label."""
    labels = churn_label_query(tables["transactions"], cutoff, cfg)
    query = f"""SELECT f.*, l.{LABEL}
FROM ({feature_query(tables, cutoff)}) f JOIN ({labels}) l USING (customer_id)
ORDER BY customer_id"""
    frame = con.sql(query).df()
    frame.insert(0, "cutoff", pd.Timestamp(cutoff))
    return frame.drop(columns=["as_of"])


def training_frame(con: duckdb.DuckDBPyConnection, loaded: LoadedTables, cutoffs: list[date],
                   cfg: ChurnLabelConfig,
                   on_cutoff: Callable[[date], None] | None = None) -> pd.DataFrame:
    """Stack the snapshots of ``cutoffs``; refuse cutoffs whose label window has not ended."""
    check_matured(cutoffs, cfg.horizon_days, loaded.end)
    frames = []
    for cutoff in sorted(cutoffs):
        frames.append(snapshot(con, loaded.relations, cutoff, cfg))
        if on_cutoff:
            on_cutoff(cutoff)
    return pd.concat(frames, ignore_index=True)


def clv_summary(con: duckdb.DuckDBPyConnection, tables: dict[str, str],
                cutoff: date) -> pd.DataFrame:
    """``customer_id, x, t_x, T`` for every customer who bought before ``cutoff``."""
    return con.sql(clv_summary_query(tables["transactions"], cutoff)).df()


def frame_digest(frame: pd.DataFrame) -> str:
    """A short content digest of a training frame, for lineage."""
    hashed = pd.util.hash_pandas_object(frame[["cutoff", "customer_id", *feature_names(), LABEL]],
                                        index=False)
    return hashlib.sha256(hashed.to_numpy().tobytes()).hexdigest()[:16]
