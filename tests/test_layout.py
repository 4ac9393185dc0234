"""The packages follow the data's path, and imports point one way along it:
features <- models <- training / serving <- operations <- churn."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What each package may import from this project (itself always).
ALLOWED = {
    "features": set(),
    "models": {"features"},
    "training": {"features", "models"},
    "serving": {"features", "models"},
    "operations": {"features", "models", "training", "serving"},
    "churn": {"features", "models", "training", "serving", "operations"},
}


def project_imports(path: Path) -> set[str]:
    """The project packages a module imports, at its top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
    return found & set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_one_way(package):
    wrong = {f"{path.relative_to(ROOT)} imports {', '.join(sorted(bad))}"
             for path in sorted((ROOT / package).glob("*.py"))
             if (bad := project_imports(path) - ALLOWED[package] - {package})}
    assert not wrong, "\n".join(sorted(wrong))


def test_the_service_loads_no_training_code_and_no_plotting():
    code = ("import sys, serving.service; "
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=ROOT).stdout.split()
    assert "training" not in loaded
    assert "operations" not in loaded
    assert "matplotlib" not in loaded
