"""Propensity and value on CDNOW beside the textbook peers, on the same customers.

The split of the value issue: training cutoffs 1997-07-01 and 1997-10-01, validation
1998-01-01, test 1998-04-01, a 90-day horizon. Peers, fitted on the history before the test
cutoff: BG/NBD x Gamma-Gamma as this project fits it, and as the `lifetimes` package fits it
(`pip install -e '.[bench]'`), and last period's spend repeated. Metrics on every customer with
a past order, and on the churn base (an order in the year before the cutoff).

    python bench/value_cdnow.py [--data ../shared/data/cdnow]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

# bench/features.py would shadow the features package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

import lifetimes  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from features.point_in_time import connect  # noqa: E402
from features.tables import load_tables  # noqa: E402
from training.config import ChurnTrainConfig, ValueTrainConfig  # noqa: E402
from training.dataset import clv_summary  # noqa: E402
from training.propensity import train_propensity  # noqa: E402
from training.train_value import SCORER_LABELS, train_value  # noqa: E402
from training.value_metrics import value_metrics  # noqa: E402

HERE = Path(__file__).resolve().parent
TEST = date(1998, 4, 1)
HORIZON = 90


def lifetimes_peer(summary: pd.DataFrame, rows: pd.DataFrame) -> tuple[np.ndarray, float]:
    """`lifetimes`' BG/NBD x Gamma-Gamma forecast of spend over the horizon, and its fit time."""
    started = time.perf_counter()
    bg = lifetimes.BetaGeoFitter().fit(summary["x"], summary["t_x"], summary["T"])
    repeat = summary[(summary["x"] > 0) & (summary["monetary"] > 0)]
    gg = lifetimes.GammaGammaFitter().fit(repeat["x"], repeat["monetary"])
    at = summary.set_index("customer_id").loc[rows["customer_id"]]
    purchases = bg.conditional_expected_number_of_purchases_up_to_time(
        HORIZON / 7.0, at["x"], at["t_x"], at["T"])
    spend = gg.conditional_expected_average_profit(at["x"], at["monetary"])
    return np.asarray(purchases * spend, dtype=float), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path,
                        default=HERE.parents[1] / "shared" / "data" / "cdnow")
    args = parser.parse_args()
    started = time.perf_counter()
    value = train_value(ValueTrainConfig(
        data=args.data, cutoffs=(date(1997, 7, 1), date(1997, 10, 1)),
        validation_cutoff=date(1998, 1, 1), test_cutoff=TEST, horizon_days=HORIZON))
    value_seconds = time.perf_counter() - started
    test = value.test
    with tempfile.TemporaryDirectory() as work, connect(temp_dir=Path(work) / "spill") as con:
        loaded = load_tables(con, args.data, Path(work))
        summary = clv_summary(con, loaded.relations, TEST)
    peer, peer_seconds = lifetimes_peer(summary, test)
    forecasts = {**{label: test[f"{name}_spend"].to_numpy() for name, label in
                    SCORER_LABELS.items()},
                 "lifetimes BG/NBD x Gamma-Gamma": peer}
    actual = test["future_spend"].to_numpy()
    base = (test["recency_days"] <= 365).to_numpy()
    rows = []
    for who, mask in (("every past buyer", np.ones(len(test), bool)), ("churn base", base)):
        for name, forecast in forecasts.items():
            m = value_metrics(actual[mask], forecast[mask])
            rows.append({"customers": f"{who} ({mask.sum():,})", "scorer": name,
                         **m.as_dict()})
    table = pd.DataFrame(rows)
    print(table.round(3).to_string(index=False))

    started = time.perf_counter()
    propensity = train_propensity(ChurnTrainConfig(data=args.data, test_cutoff=TEST), HORIZON)
    propensity_seconds = time.perf_counter() - started
    prop = pd.DataFrame({name: {"roc_auc": m.roc_auc, "pr_auc": m.pr_auc, "ece": m.ece}
                         for name, m in propensity.metrics.items()}).T
    print(prop.round(3).to_string())
    write_results(table, prop, value.model.form, value_seconds, peer_seconds,
                  propensity_seconds)


def write_results(table: pd.DataFrame, prop: pd.DataFrame, form: str, value_seconds: float,
                  peer_seconds: float, propensity_seconds: float) -> None:
    title = (f"\n## Propensity and value on CDNOW (`bench/value_cdnow.py`, {date.today()}, "
             f"{platform.machine()})\n")
    how = (f"Test cutoff {TEST}, {HORIZON}-day horizon, training cutoffs 1997-07-01 and "
           f"1997-10-01, validation 1998-01-01. The value model kept the `{form}` form on the "
           f"validation cutoff; it trained in {value_seconds:.1f} s (all three forms and the "
           f"orders model); `lifetimes` fitted BG/NBD and Gamma-Gamma in {peer_seconds:.1f} s.\n")
    header = ("| customers | scorer | Spearman | normalised Gini | decile MAPE | "
              "total forecast error |")
    lines = [title, how, header, "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r.customers} | {r.scorer} | {r.spearman:.3f} | {r.normalised_gini:.3f} | "
              f"{r.decile_mape:.3f} | {r.total_error:+.3f} |" for r in table.itertuples()]
    intro = (f"Propensity (an order within {HORIZON} days), every past buyer, trained in "
             f"{propensity_seconds:.1f} s:")
    lines += ["", intro, "", "| scorer | ROC AUC | PR AUC | ECE |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {r.roc_auc:.3f} | {r.pr_auc:.3f} | "
              f"{'-' if pd.isna(r.ece) else f'{r.ece:.3f}'} |" for name, r in prop.iterrows()]
    with (HERE / "RESULTS.md").open("a") as out:
        out.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
