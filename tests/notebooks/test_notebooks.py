"""The notebooks run in a real Jupyter kernel and show what they say they show."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from tests.conftest import shared_file
from tests.notebooks.kernel import figures, run_notebook

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def test_every_notebook_is_saved_with_its_outputs():
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert [p.name for p in paths] == ["00_point_in_time_features.ipynb",
                                       "01_churn_on_cdnow.ipynb",
                                       "02_uplift_on_hillstrom.ipynb"]
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        code = [c for c in notebook.cells if c.cell_type == "code"]
        assert all(c.execution_count is not None for c in code), (
            f"{path.name} is saved without outputs: run `make notebooks`")
        assert figures(notebook) >= 1
        assert not any(o.get("output_type") == "error" for c in code for o in c.outputs)


def test_point_in_time_features_notebook():
    notebook, found = run_notebook(
        NOTEBOOKS / "00_point_in_time_features.ipynb",
        probe='{"customers": len(features), "features": features.shape[1] - 1, '
              '"stays": comparison["mean per customer"]["stays"].to_dict(), '
              '"leaves": comparison["mean per customer"]["leaves"].to_dict()}')
    assert found["features"] == 62
    assert 3_000 < found["customers"] <= 5_000
    # What the notebook shows: leavers visit the site and open the app less than stayers.
    for signal in ("site_visit_30d", "app_session_30d"):
        assert found["leaves"][signal] < found["stays"][signal]
    assert figures(notebook) >= 1


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


def test_uplift_on_hillstrom_notebook():
    shared_file("hillstrom/hillstrom.csv")
    notebook, found = run_notebook(
        NOTEBOOKS / "02_uplift_on_hillstrom.ipynb",
        probe='{"checks": checks.to_dict(), "nested": nested.to_dict(), '
              '"targeting": targeting.to_dict(orient="index"), "parts": parts.to_dict(), '
              '"learners": learners.to_dict()}')
    for arm in ("Mens E-Mail", "Womens E-Mail"):
        assert found["checks"][arm]["sample-ratio p"] > 0.01
        assert abs(found["checks"][arm]["its std. difference"]) < 0.1
        assert found["nested"][arm]["nested Qini (spend)"] > 0
        # Targeting the top 30% by predicted uplift beats mailing at random.
        assert found["targeting"][arm]["top 30%"] > found["targeting"][arm]["everyone"]
        # Every member on the same folds, and the published effect: more buyers.
        assert set(found["learners"][arm]) >= {"ensemble", "t_learner", "two_part"}
        assert found["parts"][arm]["mean uplift_conversion"] > 0
    assert figures(notebook) >= 5


@pytest.mark.parametrize("name", ["01_churn_on_cdnow.ipynb", "02_uplift_on_hillstrom.ipynb"])
def test_notebooks_call_the_python_api(name):
    source = "".join(c.source for c in nbformat.read(NOTEBOOKS / name, as_version=4).cells)
    assert "import churn" in source
    assert "churn.train_" in source
