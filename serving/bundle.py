"""The champions as plain files, for a bento that serves without the MLflow store.

``churn build`` writes the churn champion (``ChurnModel.save``), the uplift champion
(``UpliftModel.save``), the policy, a few warm-up rows and ``bundle.json`` (names,
versions, runs, the data they were trained on) into ``bundle/`` beside the packages of a
build context. A service started from that bento finds ``bundle/`` and loads from it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pandas as pd

from features.errors import ChurnError
from models.churn_model import ChurnModel
from models.uplift_model import UpliftModel
from serving.champion import LoadedModel, LoadedUplift, use_compiled_forest

# Where a bento's copy of this package finds its bundle: beside the packages.
BUNDLE = Path(__file__).resolve().parents[1] / "bundle"


def write_bundle(loaded: LoadedModel, policy: Path, folder: Path) -> Path:
    """Everything the service needs from the registry, written to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    loaded.model.save(folder / "churn_model")
    meta: dict[str, object] = {"churn": {"name": loaded.name, "version": loaded.version,
                                         "run_id": loaded.run_id}}
    if loaded.uplift is not None:
        loaded.uplift.model.save(folder / "uplift_model")
        meta["uplift"] = {"name": loaded.uplift.name, "version": loaded.uplift.version,
                          "arm": loaded.uplift.arm}
    shutil.copy(policy, folder / "segments.toml")
    loaded.warmup_rows().to_parquet(folder / "warmup.parquet", index=False)
    (folder / "bundle.json").write_text(json.dumps(meta, indent=2))
    return folder


def read_bundle(folder: Path, compiled: bool = True) -> LoadedModel:
    """The champions a bundle holds, as ``load_champion`` would give them."""
    meta = json.loads((folder / "bundle.json").read_text())
    model = ChurnModel.load(folder / "churn_model")
    if compiled:
        use_compiled_forest(model)
    uplift = None
    if "uplift" in meta:
        u = meta["uplift"]
        uplift = LoadedUplift(UpliftModel.load(folder / "uplift_model"), u["name"],
                              u["version"], u["arm"])
    churn = meta["churn"]
    return LoadedModel(model, churn["name"], churn["version"], churn["run_id"], uplift,
                       pd.read_parquet(folder / "warmup.parquet"))


PACKAGES = ("features", "training", "serving")
DISTRIBUTION = "churn-propensity"


def runtime_requirements() -> list[str]:
    """This project's own requirements (no dev extras), for the bento's Python environment."""
    return [r for r in importlib.metadata.requires(DISTRIBUTION) or [] if "extra ==" not in r]


def build_context(loaded: LoadedModel, policy: Path, ctx: Path) -> Path:
    """A BentoML build context: the packages, the bundle and ``bentofile.yaml``."""
    for name in PACKAGES:
        source = Path(importlib.import_module(name).__file__).parent  # type: ignore[arg-type]
        shutil.copytree(source, ctx / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "bundle"))
    write_bundle(loaded, policy, ctx / "bundle")
    bentofile = {
        "service": "serving.service:ChurnService",
        "description": f"Churn scoring with {loaded.label}, built by `churn build`.",
        "labels": {"churn_model": f"{loaded.name}:v{loaded.version}",
                   "uplift_model": loaded.uplift.label if loaded.uplift else "none"},
        "include": [*(f"{name}/**/*.py" for name in PACKAGES), "serving/segments.toml",
                    "bundle/**"],
        "python": {"packages": runtime_requirements(), "lock_packages": False},
    }
    # JSON is YAML, so the file needs no YAML writer.
    (ctx / "bentofile.yaml").write_text(json.dumps(bentofile, indent=2))
    return ctx


class BuildError(ChurnError, RuntimeError):
    """``bentoml build`` failed."""


def build_bento(loaded: LoadedModel, policy: Path, bentoml: Path) -> str:
    """Build a bento holding ``loaded`` and ``policy``; return its tag (``churn:...``)."""
    with tempfile.TemporaryDirectory(prefix="churn-build-") as tmp:
        ctx = build_context(loaded, policy, Path(tmp))
        # BentoML reads only files under its working folder.
        done = subprocess.run([str(bentoml), "build", ".", "-o", "tag"], cwd=ctx,
                              capture_output=True, text=True, check=False)
    tags = [line.split("__tag__:", 1)[1] for line in done.stdout.splitlines()
            if "__tag__:" in line]
    if done.returncode != 0 or not tags:
        raise BuildError(f"bentoml build failed: {(done.stderr or done.stdout).strip()[-800:]}")
    return tags[-1].strip()
