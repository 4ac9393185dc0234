"""The ``churn`` command: one front for data, features, training, promotion and scoring.

``app`` is the command; each group of subcommands is a module here, imported below so that
its commands are registered.
"""

from __future__ import annotations

from churn.cli import (  # noqa: F401
    churn_model,
    data,
    demo,
    operations,
    scoring,
    uplift,
    value,
)
from churn.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    app()
