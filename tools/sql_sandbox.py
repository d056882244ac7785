"""Run untrusted, model-written SQL against an investigation database, safely.

Two layers:

1. DuckDB itself is locked down by ``connect_readonly``: the database file is opened
   read-only, file system access is off (no read_csv('/etc/passwd'), glob, COPY ... TO,
   ATTACH, INSTALL/LOAD), extension auto-install/auto-load and community extensions are off,
   memory is bounded, and ``lock_configuration`` makes every later ``SET`` fail.
2. ``run_sql`` accepts exactly one statement whose type is SELECT (which includes
   ``WITH ... SELECT``, ``FROM tbl``, ``VALUES``, ``DESCRIBE``, ``SHOW``, ``SUMMARIZE``),
   enforces a wall-clock limit with ``cursor.interrupt()``, and caps the rows returned.
   EXPLAIN, PIVOT (a multi-statement rewrite in DuckDB), PRAGMA, CALL, SET and all DDL/DML are
   refused.

DuckDB keeps one database instance per file in a process and refuses a second connection to
the same file with a different configuration, so every connection to an investigation
database must come from ``connect_readonly`` (same config every time).
"""
from __future__ import annotations

import base64
import datetime as _dt
import decimal
import math
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

__all__ = [
    "SqlRejected", "SqlExecutionError", "SqlTimeout", "SqlResult",
    "connect_readonly", "run_sql", "check_sql", "SANDBOX_MAX_MEMORY", "SANDBOX_THREADS",
    "SANDBOX_MAX_TEMP_SIZE",
]

# Process-wide, fixed: every connection to a given file must use the identical config.
SANDBOX_MAX_MEMORY = "1GB"
SANDBOX_THREADS = 2
SANDBOX_MAX_TEMP_SIZE = "4GB"  # spill space for big sorts / aggregates over the logs
TEMP_DIR_SUFFIX = ".sqltmp"  # spill directory beside the database, removed by DuckDB on close

_ALLOWED_TYPES = {duckdb.StatementType.SELECT}


class SqlRejected(ValueError):
    """The statement was refused before running (the message says why)."""


class SqlExecutionError(RuntimeError):
    """DuckDB failed while running an accepted statement (bad column, permission, memory...)."""


class SqlTimeout(SqlExecutionError):
    """The statement ran longer than the time limit and was interrupted."""


@dataclass(frozen=True)
class SqlResult:
    columns: list[str]
    rows: list[tuple]  # JSON-friendly values; at most max_rows rows
    row_count: int  # rows returned (== len(rows), <= max_rows)
    truncated: bool  # True when the query produced more than max_rows rows
    elapsed_ms: float


def _config(db_path: str) -> dict[str, Any]:
    return {
        "enable_external_access": False,
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
        "threads": SANDBOX_THREADS,
        "max_memory": SANDBOX_MAX_MEMORY,
        "temp_directory": db_path + TEMP_DIR_SUFFIX,
        "max_temp_directory_size": SANDBOX_MAX_TEMP_SIZE,
        "lock_configuration": True,  # every later SET fails (checked in the tests)
    }


def connect_readonly(db_path: str | Path) -> duckdb.DuckDBPyConnection:
    """Open an investigation database read-only and locked down.

    The only way the product opens a loaded database. Safe to call from several threads and
    for several files at once (give each thread its own connection, or use ``con.cursor()``).
    Close the connection when done; DuckDB releases the file when the last one closes.
    """
    path = os.path.abspath(os.fspath(db_path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"investigation database not found: {path}")
    return duckdb.connect(path, read_only=True, config=_config(path))


def _statement_kind(stmt: Any) -> str:
    return getattr(stmt.type, "name", str(stmt.type))


def check_sql(sql: str) -> str:
    """Validate untrusted SQL without running it: the single SELECT's text, or SqlRejected."""
    return _single_select(sql).query.strip()


def _single_select(sql: str) -> Any:
    """The one SELECT statement in sql (a parsed duckdb Statement), or SqlRejected."""
    if not isinstance(sql, str) or not sql.strip():
        raise SqlRejected("empty SQL: send exactly one SELECT statement")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise SqlRejected(f"SQL does not parse: {exc}") from exc
    if not statements:
        raise SqlRejected("empty SQL (only comments or semicolons): send one SELECT statement")
    if len(statements) > 1:
        kinds = ", ".join(_statement_kind(s) for s in statements)
        raise SqlRejected(f"{len(statements)} statements found ({kinds}): send exactly one "
                          f"SELECT statement")
    stmt = statements[0]
    if stmt.type not in _ALLOWED_TYPES:
        raise SqlRejected(f"statement type {_statement_kind(stmt)} is not allowed: only SELECT "
                          f"(including WITH ... SELECT) is accepted; the database is read-only")
    return stmt


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, _dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(_dt.timezone.utc).replace(tzinfo=None)
        return value.isoformat()
    if isinstance(value, (_dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def run_sql(db_path: str | Path, sql: str, *, timeout_s: float = 5.0, max_rows: int = 200,
            max_memory: str = SANDBOX_MAX_MEMORY) -> SqlResult:
    """Run one untrusted SELECT against db_path in the locked-down sandbox.

    Raises SqlRejected (refused before running), SqlTimeout (interrupted after timeout_s) or
    SqlExecutionError (DuckDB error while running, e.g. unknown column or out of memory).

    max_memory is a process-wide setting of the DuckDB instance (all connections to a file
    must share one config), fixed at SANDBOX_MAX_MEMORY: any other value raises ValueError.
    """
    if _norm_size(max_memory) != _norm_size(SANDBOX_MAX_MEMORY):
        raise ValueError(f"max_memory is fixed per process at {SANDBOX_MAX_MEMORY} (DuckDB "
                         f"caches one configuration per database file); got {max_memory!r}")
    if max_rows < 0:
        raise ValueError("max_rows must be >= 0")
    if timeout_s <= 0:
        raise ValueError("timeout_s must be > 0")
    stmt = _single_select(sql)

    con = connect_readonly(db_path)
    try:
        cur = con.cursor()
        timed_out = threading.Event()

        def _interrupt() -> None:
            timed_out.set()
            cur.interrupt()

        timer = threading.Timer(timeout_s, _interrupt)
        timer.daemon = True
        start = time.perf_counter()
        timer.start()
        try:
            cur.execute(stmt)  # the parsed statement itself: no re-parse of the text
            columns = [d[0] for d in (cur.description or [])]
            fetched = cur.fetchmany(max_rows + 1) if cur.description else []
        except duckdb.Error as exc:
            if timed_out.is_set() or isinstance(exc, duckdb.InterruptException):
                raise SqlTimeout(f"query exceeded the time limit of {timeout_s:g} s and was "
                                 f"stopped; add filters, aggregate, or LIMIT") from None
            raise SqlExecutionError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            timer.cancel()
            elapsed_ms = (time.perf_counter() - start) * 1000.0
            cur.close()
    finally:
        con.close()

    truncated = len(fetched) > max_rows
    rows = [tuple(_jsonable(v) for v in row) for row in fetched[:max_rows]]
    return SqlResult(columns=columns, rows=rows, row_count=len(rows), truncated=truncated,
                     elapsed_ms=round(elapsed_ms, 3))


def _norm_size(size: str) -> str:
    s = str(size).strip().upper().replace(" ", "")
    return s[:-1] if s.endswith("B") and len(s) > 2 and s[-2] in "KMGT" else s
