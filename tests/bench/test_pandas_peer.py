"""The benchmark's pandas peer computes the same numbers as the DuckDB engine."""

from __future__ import annotations

import pandas as pd

from bench.pandas_features import pandas_features
from features.synthetic import as_of_default
from tests.conftest import build


def test_pandas_peer_equals_duckdb_engine(synthetic_data, tmp_path):
    folder, cfg = synthetic_data
    as_of = as_of_default(cfg)
    duck = build(folder, as_of, out=tmp_path / "duck.parquet").reset_index()
    peer = pandas_features(folder, as_of)
    duck["as_of"] = pd.to_datetime(duck["as_of"])
    peer["as_of"] = pd.to_datetime(peer["as_of"])
    pd.testing.assert_frame_equal(peer, duck, check_dtype=False, rtol=1e-9, atol=1e-9)
