"""Notebook 02, uplift on Hillstrom, run in a real Jupyter kernel: a file of its own, so that
`pytest -n` runs it beside the other notebooks."""

from __future__ import annotations

from tests.conftest import shared_file
from tests.notebooks.kernel import NOTEBOOKS, figures, run_notebook


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
        assert set(found["learners"][arm]) >= {"adaptive", "t_learner", "two_part"}
        assert found["parts"][arm]["mean uplift_conversion"] > 0
    assert figures(notebook) >= 5
