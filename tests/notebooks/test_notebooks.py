"""The notebooks run in a real Jupyter kernel and show what they say they show."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

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


@pytest.mark.parametrize("name", ["01_churn_on_cdnow.ipynb", "02_uplift_on_hillstrom.ipynb"])
def test_notebooks_call_the_python_api(name):
    source = "".join(c.source for c in nbformat.read(NOTEBOOKS / name, as_version=4).cells)
    assert "import churn" in source
    assert "churn.train_" in source
