"""The MLproject file, generated from the ``churn`` command so the two never drift apart.

Each entry point runs one command; its parameters' defaults are the command's own (which
the command takes from ``training.config``). Regenerate after changing a command:

    python -m churn.mlproject > MLproject
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import click
import typer.main

from churn.cli import app
from training.config import DEFAULT_TRAIN_CUTOFFS

HEADER = """name: churn-propensity

# Generated from the `churn` command by `python -m churn.mlproject > MLproject`: edit the
# command, not this file. Each entry point is a thin wrapper over the `churn` command, so
# `mlflow run .` and the shell run the same code. Run with `--env-manager local` inside the
# project's .venv. (`mlflow run` logs these parameters on the run, so a parameter whose value
# the command resolves, like a cutoff given as "auto", is named apart from the run's own
# param.)

entry_points:"""


@dataclass(frozen=True)
class Param:
    """One MLproject parameter: its name, the command's option it fills, and a default of its
    own only where the command's is not a value (None, or a computed one)."""

    name: str
    option: str | None = None
    default: object = None
    kind: str = "string"


@dataclass(frozen=True)
class Entry:
    name: str
    command: tuple[str, ...]
    params: tuple[Param, ...]
    comment: str = ""
    # The command's words may take a parameter (``churn promote {model}``).
    words: tuple[str, ...] = ()


P = Param
ENTRIES = (
    Entry("main", ("demo",), (P("out"), P("customers"), P("seed"))),
    Entry("generate", ("generate",), (P("out"), P("customers"), P("seed"), P("format", "fmt"))),
    Entry("features", ("features",), (P("data"), P("as_of"), P("out"), P("on_bad_rows"))),
    Entry("train_churn", ("train", "churn"), (
        P("data"), P("cutoffs", default=DEFAULT_TRAIN_CUTOFFS),
        P("validation_date", "validation_cutoff", "auto"), P("test_date", "test_cutoff", "auto"),
        P("horizon_days"), P("base_days"), P("experiment"), P("model_name"))),
    Entry("backtest_churn", ("backtest", "churn"), (
        P("data"), P("origins"), P("cutoffs"), P("horizon_days"), P("base_days"),
        P("experiment"))),
    Entry("train_uplift", ("train", "uplift"), (
        P("data"), P("horizon_days"), P("learner"), P("experiment"))),
    Entry("train_uplift_table", ("train", "uplift"), (
        P("table"), P("treatment"), P("control"), P("outcome"), P("learner"),
        P("experiment"))),
    Entry("train_propensity", ("train", "propensity"), (
        P("data"), P("cutoffs", default=DEFAULT_TRAIN_CUTOFFS),
        P("validation_date", "validation_cutoff", "auto"), P("test_date", "test_cutoff", "auto"),
        P("horizon_days"), P("experiment"), P("model_name"))),
    Entry("train_value", ("train", "value"), (
        P("data"), P("cutoffs", default=DEFAULT_TRAIN_CUTOFFS),
        P("validation_date", "validation_cutoff", "auto"), P("test_date", "test_cutoff", "auto"),
        P("horizon_days"), P("experiment"), P("model_name"))),
    Entry("promote", ("promote", "churn"), (P("model", default="churn"), P("model_name")),
          "Also -P model=uplift|propensity|value -P model_name=NAME (as registered).",
          words=("promote", "{model}")),
    Entry("score", ("score",), (
        P("data"), P("as_of"), P("out"), P("model_name"), P("uplift_model_name"))),
    Entry("monitor", ("monitor",), (P("data"), P("as_of"), P("model_name")),
          "Exits 10 (degrading) or 20 (retrain), which `mlflow run` reports as a failed run."),
    Entry("retrain", ("retrain",), (P("data"), P("model_name")),
          "Exits 10 when the champion is kept."),
    Entry("campaign_plan", ("campaign", "plan"), (
        P("scores"), P("campaign"), P("out"), P("segment"), P("holdout", kind="float"),
        P("seed"))),
    Entry("campaign_report", ("campaign", "report"), (
        P("data"), P("campaign"), P("horizon_days"))),
)


def command_of(words: tuple[str, ...]) -> click.Command:
    command = typer.main.get_command(app)
    for word in words:
        command = command.commands[word]  # type: ignore[attr-defined]
    return command


def _yaml_value(value: object) -> str:
    text = value.value if hasattr(value, "value") else str(value)
    return f'"{text}"' if re.fullmatch(r"[0-9][0-9_.]*", text) else text


def _param_line(param: Param, option: click.Parameter) -> str:
    default = param.default if param.default is not None else option.default
    if param.kind == "float" or default is None or option.required:
        spec = f"type: {param.kind}"
    else:
        spec = f"type: string, default: {_yaml_value(default)}"
    if default is not None and param.kind == "float":
        spec += f", default: {default}"
    return f"      {param.name}: {{{spec}}}"


def render_entry(entry: Entry) -> list[str]:
    command = command_of(entry.command)
    options = {p.name: p for p in command.params}
    lines = [f"  # {entry.comment}"] if entry.comment else []
    lines += [f"  {entry.name}:", "    parameters:"]
    words = list(entry.words or entry.command)
    for param in entry.params:
        if param.name == "model" and entry.words:
            lines.append(f"      {param.name}: {{type: string, default: {param.default}}}")
            continue
        option = options[param.option or param.name]
        lines.append(_param_line(param, option))
        words.append(f"{option.opts[0]} {{{param.name}}}")
    lines.append(f'    command: "churn {" ".join(words)}"')
    return lines


def render() -> str:
    """The MLproject file's text."""
    blocks = ["\n".join(render_entry(entry)) for entry in ENTRIES]
    return HEADER + "\n" + "\n\n".join(blocks) + "\n"


if __name__ == "__main__":
    print(render(), end="")
