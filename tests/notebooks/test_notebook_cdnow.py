"""Notebook 01, churn on CDNOW, run in a real Jupyter kernel: a file of its own, so that
`pytest -n` runs it beside the other notebooks."""

from __future__ import annotations

from tests.conftest import shared_file
from tests.notebooks.kernel import NOTEBOOKS, figures, run_notebook


def test_churn_on_cdnow_notebook():
    shared_file("cdnow/transactions.csv")
    notebook, found = run_notebook(
        NOTEBOOKS / "01_churn_on_cdnow.ipynb",
        probe='{"backtest": summary[("mean", "roc_auc")].to_dict(), '
              '"test": table["roc_auc"].to_dict(), "promoted": promotion.promoted, '
              '"segments": segments["customers"].to_dict(), '
              '"run": mlflow.get_run(result.run.run_id).info.run_name}')
    backtest = found["backtest"]
    assert 0.70 < backtest["model"] < 0.90
    assert backtest["model"] > backtest["recency rule"]
    assert backtest["BG/NBD P(alive)"] < 0.6  # the artefact the notebook explains
    assert found["test"]["model"] > found["test"]["recency rule"]
    assert found["promoted"] is True
    assert sum(found["segments"].values()) == 23_570
    assert {"at_risk", "lapsed"} <= set(found["segments"])
    assert found["run"] == "churn-cdnow-test-1998-04-01"
    assert figures(notebook) >= 5
