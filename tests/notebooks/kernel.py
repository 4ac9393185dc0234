"""Run notebooks in a real Jupyter kernel (nbclient), as a user's Jupyter would.

``python -m tests.notebooks.kernel notebooks/*.ipynb`` executes each notebook and saves it
with its outputs (``make notebooks``), so they read on a code host.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbformat import NotebookNode

# The project's notebooks folder.
NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

TIMEOUT_SECONDS = 900


def figures(notebook: NotebookNode) -> int:
    """How many images the notebook's outputs hold."""
    return sum("image/png" in output.get("data", {})
               for cell in notebook.cells if cell.cell_type == "code"
               for output in cell.get("outputs", []))


def run_notebook(path: Path, probe: str | None = None) -> tuple[NotebookNode, dict]:
    """Execute every cell of ``path`` in a fresh kernel started in its folder; a cell that
    raises fails the run (``CellExecutionError``, with the cell and traceback).

    ``probe``, an expression, is then evaluated in the same kernel and returned as JSON:
    what the notebook computed, for a test to check.
    """
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=TIMEOUT_SECONDS, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    found: dict = {}
    with client.setup_kernel():
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type == "code":
                client.execute_cell(cell, index)
        if probe:
            cell = nbformat.v4.new_code_cell(f"import json as _json\nprint(_json.dumps({probe}))")
            notebook.cells.append(cell)
            try:
                client.execute_cell(cell, len(notebook.cells) - 1)
            finally:
                notebook.cells.pop()
            text = "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")
            found = json.loads(text)
    return notebook, found


def main(paths: list[str]) -> None:
    for name in paths:
        path = Path(name).resolve()
        notebook, _ = run_notebook(path)
        nbformat.write(notebook, path)
        print(f"{name}: executed and saved, {figures(notebook)} figures", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
