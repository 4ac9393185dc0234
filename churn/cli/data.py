"""`churn generate` and `churn features`: synthetic data and point-in-time features."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import duckdb
import typer
from rich.table import Table

from churn.cli.app import app
from churn.cli.common import ENGINE_OPTION, fail, iso_date, one_line, out_console, progress_bar
from features.engines import Engine
from features.errors import ChurnError
from features.job import FeaturesJobConfig, FeaturesJobResult, run_features
from features.synthetic import GenerateConfig, generate
from features.validation import OnBadRows


def generate_with_progress(cfg: GenerateConfig, out: Path, fmt: str) -> dict[str, int]:
    with progress_bar() as bar:
        task = bar.add_task("Generating customers", total=cfg.customers)
        return generate(cfg, out, fmt, progress=lambda n: bar.advance(task, n))


def features_with_progress(cfg: FeaturesJobConfig) -> FeaturesJobResult:
    with progress_bar() as bar:
        tasks: dict[str, int] = {}

        def finish_validation() -> None:
            for task in tasks.values():
                bar.update(task, total=bar.tasks[task].completed)

        def on_rows(table: str, rows: int) -> None:
            if table not in tasks:
                finish_validation()
                tasks[table] = bar.add_task(f"Validating {table}", total=None)
            task = tasks[table]
            bar.advance(task, rows)
            bar.update(task, description=f"Validating {table}: "
                                         f"{bar.tasks[task].completed:,.0f} rows")

        build = bar.add_task("Building features", total=100, visible=False)

        def on_build(percent: float) -> None:
            finish_validation()
            bar.update(build, completed=percent, visible=True)

        return run_features(cfg, progress=on_rows, build_progress=on_build)


def print_features_summary(result: FeaturesJobResult, cfg: FeaturesJobConfig) -> None:
    table = Table(title="Input tables", title_justify="left")
    for column in ("table", "rows", "bad rows", "notes"):
        table.add_column(column, justify="right" if "rows" in column else "left")
    for report in result.reports:
        notes = []
        if report.rejects_file is not None:
            notes.append(f"rejects in {report.rejects_file}")
        if report.unknown_event_types:
            listed = ", ".join(f"{k} ({v:,})" for k, v in report.unknown_event_types.items())
            notes.append(f"unknown event types ignored: {listed}")
        table.add_row(report.table, f"{report.rows:,}", f"{report.bad_rows:,}", "; ".join(notes))
    out_console.print(table)
    out_console.print(
        f"Features as of {cfg.as_of}: {result.rows:,} customers x {result.feature_count} "
        f"features -> {cfg.out} ({result.seconds:.1f} s)", highlight=False, soft_wrap=True)


@app.command("generate")
def generate_command(
    out: Annotated[Path, typer.Option(help="Folder to write the tables into.")],
    customers: Annotated[int, typer.Option(min=1, help="How many customers.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same data.")] = 7,
    start: Annotated[str, typer.Option(help="First day of history (ISO date).")] = "2023-01-01",
    end: Annotated[str, typer.Option(help="Day after the last day of history.")] = "2026-01-01",
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
    shift_at: Annotated[str | None, typer.Option(
        help="Shift the world from this date: for a cohort (--shift-share of customers) "
             "tracked engagement (e-mail opens and clicks, site visits, app sessions) falls "
             "to a twentieth while buying goes on as before. For trying `churn monitor`.")] = None,
    shift_share: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Share of customers the shift hits.")] = 0.5,
) -> None:
    """Generate a synthetic customer base: the four contract tables plus ground truth.

    Writes transactions, events, customers and exposures in the data contract's form, and
    ground_truth.parquet with each customer's true purchase rate, churn hazard, departure
    date, true campaign effect on spend, and whether the shift (--shift-at) hit them.
    """
    if fmt not in ("parquet", "csv"):
        raise typer.BadParameter("use parquet or csv", param_hint="--format")
    first, last = iso_date(start), iso_date(end)
    if (last - first).days < 365:
        raise typer.BadParameter("history must cover at least a year", param_hint="--end")
    shift = iso_date(shift_at) if shift_at else None
    if shift and not first < shift < last:
        raise typer.BadParameter("must fall inside the history", param_hint="--shift-at")
    cfg = GenerateConfig(customers=customers, seed=seed, start=first, end=last, shift_at=shift,
                         shift_share=shift_share)
    started = time.perf_counter()
    rows = generate_with_progress(cfg, out, fmt)
    listed = ", ".join(f"{name} {n:,}" for name, n in rows.items())
    out_console.print(f"Wrote {listed} rows to {out} in {time.perf_counter() - started:.1f} s",
                      highlight=False, soft_wrap=True)


@app.command("features")
def features_command(
    data: Annotated[Path, typer.Option(help="Folder holding the contract tables.")],
    as_of: Annotated[str, typer.Option(help="Cutoff date: only rows before it are used.")],
    out: Annotated[Path, typer.Option(help="Feature file to write (.parquet or .csv).")],
    on_bad_rows: Annotated[OnBadRows, typer.Option(
        help="stop: write nothing if any row breaks the contract. quarantine: write bad rows "
             "with reasons to a rejects folder and go on with the rest.")] = OnBadRows.stop,
    rejects: Annotated[Path | None, typer.Option(
        help="Folder for rejected rows \\[default: next to --out].")] = None,
    memory_limit: Annotated[str, typer.Option(
        help="DuckDB memory limit; beyond it work spills to disk.")] = "4GB",
    engine: Annotated[Engine, ENGINE_OPTION] = Engine.duckdb,
) -> None:
    """Build point-in-time features as of a date, one row per customer.

    Every row is checked against the data contract first. Only rows stamped before
    --as-of are used, so features for a past date never see its future.

    With --engine spark the same features are built on Apache Spark (local[*], or the
    cluster SPARK_REMOTE or spark.master names) and --out is a folder of Parquet files.
    """
    cfg = FeaturesJobConfig(data=data, as_of=iso_date(as_of), out=out,
                            on_bad_rows=on_bad_rows, rejects=rejects, memory_limit=memory_limit,
                            engine=engine)
    try:
        result = features_with_progress(cfg)
    except (ChurnError, duckdb.Error, OSError) as err:  # the contract, Spark, the files
        fail(one_line(err))
    print_features_summary(result, cfg)
