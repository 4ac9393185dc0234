"""Finding the contract tables in a data folder and reading them, typed, with DuckDB."""

from __future__ import annotations

import hashlib
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from features.contract import TABLES, ContractError, TableSpec, duckdb_type
from features.errors import setting

FORMATS = ("parquet", "csv")


@dataclass(frozen=True)
class TableSource:
    """The files holding one contract table (one file, or every file of a folder)."""

    spec: TableSpec
    files: tuple[Path, ...]
    format: str

    @property
    def label(self) -> str:
        return self.spec.name

    def raw_scan(self, with_filename: bool = False) -> str:
        """SQL reading the files as they are (CSV as text, so nothing is guessed)."""
        paths = "[" + ", ".join(_quote(str(f)) for f in self.files) + "]"
        filename = ", filename = true" if with_filename else ""
        if self.format == "csv":
            # The contract's dialect, stated, so nothing is guessed from a sample of rows.
            return (f"read_csv({paths}, header = true, all_varchar = true, delim = ',', "
                    f"quote = '\"', escape = '\"', union_by_name = true{filename})")
        return f"read_parquet({paths}, union_by_name = true{filename})"


def duckdb_error_line(err: Exception, path: Path | None = None) -> str:
    """DuckDB's error in one line: its first, the cause it gives further down, and the line
    of the file it names. For a CSV file DuckDB could not parse, the file is scanned for the
    usual causes (a line over DuckDB's size limit, mixed line endings) to name the line."""
    text = str(err).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    named = re.search(r"^\s*file = (.+)$", text, re.MULTILINE)
    if named and path is not None and path.is_dir():
        path = path / Path(named.group(1).strip()).name
    if path is not None and path.suffix == ".csv" and path.is_file():
        found = csv_problem(path)
        if found:
            return found
    if "not utf-8 encoded" in text:
        first += " The file is not UTF-8: save it as UTF-8."
    elif "sniffing" in first:
        first += " Tables must be UTF-8 CSV with a header row, commas and \" quotes."
    cause = next((line.strip() for line in text.splitlines()[1:] if CAUSES.search(line)), None)
    if cause:
        first = f"{first}: {cause}"
    where = re.search(r"\b[Ll]ine:? (\d+)", text)
    return f"{first} (line {where.group(1)})" if where and where.group(0) not in first else first


# What DuckDB says of a CSV line's real problem, below its first line.
CAUSES = re.compile(r"Maximum line size|Expected Number of Columns|unterminated quote|"
                    r"Invalid unicode", re.IGNORECASE)
MAX_LINE_BYTES = 2_000_000  # DuckDB's max_line_size


def csv_problem(path: Path) -> str | None:
    """The first line of a CSV file that is over DuckDB's line size limit, or whose ending
    differs from the first line's (CRLF, LF or a bare CR), named with its line number."""
    first_ending, number = None, 0
    with path.open("rb") as handle:
        for raw in handle:
            number += 1
            line = raw.rstrip(b"\n")
            if len(line) > MAX_LINE_BYTES:
                return (f"{path}: line {number} is {len(line):,} bytes, over the "
                        f"{MAX_LINE_BYTES:,} a CSV line may hold (a missing line ending or "
                        f"quote?)")
            if b"\r" in line[:-1]:
                return (f"{path}: line {number} holds a bare carriage return (\\r), an old "
                        f"line ending: save the file with one kind of line ending (\\n or "
                        f"\\r\\n)")
            if not raw.endswith(b"\n"):
                continue
            ending = "\\r\\n" if line.endswith(b"\r") else "\\n"
            first_ending = first_ending or ending
            if ending != first_ending:
                return (f"{path}: line {number} ends with {ending} but line 1 with "
                        f"{first_ending}: mixed line endings; save the file with one kind")
    return None


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _files_in(folder: Path) -> tuple[list[Path], str]:
    """The folder's files of one format; a link (symbolic or hard) counts once, wherever it
    points, hidden files (``.name``) and folders are never read into the table, and two files
    with the same bytes (a copy) are refused."""
    by_format = {fmt: _distinct_files(folder.glob(f"*.{fmt}")) for fmt in FORMATS}
    found = [fmt for fmt in FORMATS if by_format[fmt]]
    if len(found) != 1:
        kinds = "both .parquet and .csv files" if found else "no .parquet or .csv files"
        raise ContractError(f"{folder}: holds {kinds}; a table folder needs files of one format")
    files = by_format[found[0]]
    _refuse_copies(folder, files)
    return files, found[0]


def _distinct_files(paths: Iterable[Path]) -> list[Path]:
    seen, files = set(), []
    for path in sorted(paths):
        if path.name.startswith("."):
            continue
        if path.exists() and not path.is_file():
            if stat.S_ISFIFO(path.stat().st_mode):
                raise ContractError(f"{path}: a pipe (FIFO), not a file: table folders hold "
                                    f"files only")
            continue
        if not path.exists():
            continue
        info = path.stat()  # follows links: a link and its target share device and inode
        if (info.st_dev, info.st_ino) not in seen:
            seen.add((info.st_dev, info.st_ino))
            files.append(path)
    return files


def _refuse_copies(folder: Path, files: list[Path]) -> None:
    """Two files of the same size and bytes would count every row twice."""
    by_size: dict[int, list[Path]] = {}
    for path in files:
        by_size.setdefault(path.stat().st_size, []).append(path)
    for same_size in (group for group in by_size.values() if len(group) > 1):
        digests: dict[str, Path] = {}
        for path in same_size:
            digest = _digest(path)
            if digest in digests:
                raise ContractError(
                    f"{folder}: {digests[digest].name} and {path.name} hold the same bytes, so "
                    f"every row would count twice; keep one")
            digests[digest] = path


def _digest(path: Path) -> str:
    hasher = hashlib.blake2b(digest_size=16)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def find_table(data_dir: Path, spec: TableSpec) -> TableSource | None:
    """The files of one table in ``data_dir``: ``NAME.parquet``, ``NAME.csv`` or ``NAME/``."""
    candidates = [data_dir / f"{spec.name}.{fmt}" for fmt in FORMATS] + [data_dir / spec.name]
    present = [c for c in candidates if c.exists()]
    if len(present) > 1:
        names = ", ".join(p.name for p in present)
        raise ContractError(f"{spec.name}: found {names} in {data_dir}; keep exactly one")
    if not present:
        if spec.required:
            raise ContractError(
                f"{spec.name}: no {spec.name}.parquet, {spec.name}.csv or {spec.name}/ folder "
                f"in {data_dir}"
            )
        return None
    path = present[0]
    if not path.is_dir() and not path.is_file():
        raise ContractError(f"{path}: not a regular file (a pipe or a device?); tables are "
                            f"files, or folders of files")
    if path.is_dir():
        files, fmt = _files_in(path)
        return TableSource(spec, tuple(files), fmt)
    return TableSource(spec, (path,), path.suffix.lstrip("."))


def find_tables(data_dir: Path) -> dict[str, TableSource]:
    """Every contract table present in ``data_dir`` (transactions must be there)."""
    if not data_dir.is_dir():
        raise ContractError(f"{setting('data')} {data_dir}: not a folder")
    found = {name: find_table(data_dir, spec) for name, spec in TABLES.items()}
    return {name: src for name, src in found.items() if src is not None}


def present_columns(con: duckdb.DuckDBPyConnection, source: TableSource) -> list[str]:
    """Column names in the files, checked against the contract's required columns."""
    try:
        described = con.sql(f"DESCRIBE SELECT * FROM {source.raw_scan()}").fetchall()
    except duckdb.Error as err:
        raise ContractError(f"{source.label}: cannot read {source.files[0]}: "
                            f"{duckdb_error_line(err, source.files[0])}") from None
    return check_columns(source, [row[0] for row in described])


def check_columns(source: TableSource, columns: list[str]) -> list[str]:
    """``columns`` (those in the files), once the contract's required ones are among them."""
    missing = [c for c in source.spec.required_columns if c not in columns]
    if missing:
        raise ContractError(
            f"{source.label}: missing required column {', '.join(repr(m) for m in missing)} "
            f"(found: {', '.join(columns)})"
        )
    return columns


def typed_columns_sql(spec: TableSpec, present: list[str]) -> list[str]:
    """Select-list items casting each contract column to its type (NULL when absent)."""
    return [f'{expression} AS "{column}"'
            for column, expression in zip(spec.columns, typed_expressions(spec, present),
                                          strict=True)]


def typed_expressions(spec: TableSpec, present: list[str]) -> list[str]:
    """Each contract column cast to its type, as an SQL expression (its default, or NULL,
    when absent)."""
    defaults = dict(spec.absent_defaults)
    return [f'TRY_CAST("{column}" AS {duckdb_type(spec, column)})' if column in present
            else f'CAST({defaults.get(column, "NULL")} AS {duckdb_type(spec, column)})'
            for column in spec.columns]


def empty_relation_sql(spec: TableSpec) -> str:
    """A parenthesised query with the table's typed columns and no rows."""
    items = typed_columns_sql(spec, present=[])
    return f"(SELECT {', '.join(items)} WHERE false)"


def typed_relation_sql(con: duckdb.DuckDBPyConnection, source: TableSource) -> str:
    """A parenthesised query giving the table with contract columns and types."""
    items = typed_columns_sql(source.spec, present_columns(con, source))
    return f"(SELECT {', '.join(items)} FROM {source.raw_scan()})"
