"""What every input reader shares: the log and event table columns, the error a bad input
raises, and quoting for the SQL the readers build. Readers (tools.loader, tools.sources.*)
import this module, never each other's internals."""

import re
from pathlib import Path

import duckdb

LOG_REQUIRED = ("ts", "service", "level", "message")
LOG_OPTIONAL = ("error_kind", "endpoint", "latency_ms", "region", "trace_id")
EVENT_REQUIRED = ("ts", "service", "kind", "description")

# Level names as logging libraries write them -> the product's levels (others are kept upper-cased).
LEVEL_MAP = {
    "WARNING": "WARN",
    "ERR": "ERROR",
    "FATAL": "ERROR",
    "CRITICAL": "ERROR",
    "CRIT": "ERROR",
    "EMERG": "ERROR",
    "EMERGENCY": "ERROR",
    "ALERT": "ERROR",
    "SEVERE": "ERROR",  # java.util.logging
    "PANIC": "ERROR",
}


class InputError(ValueError):
    """An input file cannot be loaded. ``str(e)`` names the file and, if relevant, the column."""

    def __init__(self, file: str | Path, message: str, column: str | None = None):
        self.file = str(file)
        self.column = column
        self.message = message
        super().__init__(self.__str__())

    def __str__(self) -> str:
        if self.column is not None:
            return f"{self.file}: column '{self.column}': {self.message}"
        return f"{self.file}: {self.message}"

    def __reduce__(self):  # keep it picklable despite the custom __init__
        return (self.__class__, (self.file, self.message, self.column))


def sql_ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def sql_literal(text: str) -> str:
    """A quoted SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def level_sql(text: str) -> str:
    """A DuckDB expression normalising a VARCHAR level: upper-cased, ``LEVEL_MAP`` applied,
    empty -> NULL."""
    u = f"upper(trim({text}))"
    whens = " ".join(f"WHEN {sql_literal(k)} THEN {sql_literal(v)}" for k, v in LEVEL_MAP.items())
    return f"(CASE {u} WHEN '' THEN NULL {whens} ELSE {u} END)"


def duckdb_message(exc: BaseException) -> str:
    """DuckDB's message without the echo of our own SQL ("LINE 1: ...")."""
    text = str(exc).strip()
    text = re.split(r"\n\s*LINE \d+:", text)[0].strip()
    return text if len(text) <= 600 else text[:597] + "..."


def one_row(result: duckdb.DuckDBPyConnection) -> tuple:
    """The row of a query that always returns exactly one (an aggregate, a setting)."""
    row = result.fetchone()
    if row is None:
        raise RuntimeError("an aggregate query returned no row")
    return row
