"""Load a service's metrics, logs and change events into one DuckDB database file.

Everything is read by DuckDB itself (``read_csv`` / ``read_parquet`` / ``read_json``), so a
multi-GB log file is streamed, never held in Python memory. Text formats are read as VARCHAR
and converted with ``TRY_CAST`` so that a bad value can be reported precisely (file, column,
data row, value) instead of surfacing as a DuckDB conversion error.

Tables created (all ``ts`` are naive ``TIMESTAMP`` in UTC):

* ``metrics(ts, <numeric columns> DOUBLE ...)``: one row per distinct ts (duplicates averaged),
  sorted by ts. ``rps``, ``p95_ms``, ``error_rate`` are the recognised names; any other numeric
  column is kept as a generic signal. Column names are normalised to lower snake case
  (``"P95 (ms)"`` -> ``p95_ms``). NaN / NULL / empty values are stored as NULL; a column that
  has no value at all is dropped.
* ``logs(ts, service, level, message, error_kind, endpoint, latency_ms DOUBLE, region,
  trace_id, message_key UBIGINT, pattern_key UBIGINT)``: optional columns missing from the file
  are NULL; other extra columns are ignored. ``message_key`` is ``hash(service, message, level,
  error_kind)`` (``MESSAGE_KEY_SQL``): equal for lines whose four texts are equal.
  ``pattern_key`` names a WARN/ERROR line's masked message in the tables ``log_patterns`` and
  ``log_pattern_messages`` (``tools.logscan.index_patterns``), NULL on other lines. ``level`` is
  upper-cased, WARNING->WARN, ERR/FATAL/CRITICAL/CRIT/EMERG/ALERT/SEVERE/PANIC->ERROR
  (``tools.contract.LEVEL_MAP``), and read from the line when no column gives it. Container
  wrappers are removed and multi-line records joined (``tools.sources.logformats``).
  Empty strings become NULL (except in ``message``). Sorted by ts (file order among equal ts).
* ``events(ts, service, kind, description)``: from the optional events file, else empty.

Timestamps: ISO 8601 with ``Z`` or an offset (converted to UTC), naive ISO (taken as UTC), or
epoch numbers whose unit is chosen by magnitude (|v| < 1e11 seconds, < 1e14 milliseconds,
< 1e17 microseconds, else nanoseconds). Parquet TIMESTAMP / TIMESTAMPTZ / DATE are used as is.

The database is built in ``<db_path>.tmp`` and moved over ``db_path`` with ``os.replace`` only
when everything succeeded: a failed load leaves no new file and never damages an existing one.
"""
from __future__ import annotations

import difflib
import logging
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal, overload

import duckdb

from tools.contract import (
    EVENT_REQUIRED,
    LOG_OPTIONAL,
    LOG_REQUIRED,
    InputError,
    duckdb_message,
    level_sql,
    one_row,
    sql_ident,
    sql_literal,
)
from tools.inputcheck import leading_bytes_problem, read_error_explanation
from tools.logscan import index_patterns
from tools.sources import datasets, logformats
from tools.sources.timezones import text_offsets

log = logging.getLogger(__name__)

__all__ = ["InputError", "LoadSummary", "load_sources", "ACCEPTED_EXTENSIONS"]

ACCEPTED_EXTENSIONS: tuple[str, ...] = (
    ".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet",
    ".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz", ".json", ".json.gz",
)

# DuckDB memory while loading (env INCIDENT_GRAPH_LOAD_MEMORY overrides); sorts beyond it spill
# to <db>.tmp.spill/, which DuckDB empties on close.
LOAD_MEMORY_LIMIT = "512MB"
SPILL_SUFFIX = ".spill"
# A 64-bit hash: distinct texts share a key only by a hash collision (probability about
# n^2 / 2^65 for n distinct messages: 3e-8 for a million).
MESSAGE_KEY_SQL = "hash(service, message, level, error_kind)"
_TS_TEXT = "_ts_text"  # a column of logs while it is built (see _text_table)

# Values of a text column that mean "no value" for a numeric column.
_NULL_TOKENS = ("", "nan", "null", "none", "na", "n/a")

# Common alternative names, used for "did you mean" hints next to difflib's close matches.
_SYNONYMS = {
    "ts": ("timestamp", "time", "datetime", "date", "date_time", "time_stamp", "t", "_time",
           "event_time", "eventtime", "@timestamp", "created_at", "time_utc", "timestamp_utc"),
    "service": ("svc", "app", "application", "service_name", "servicename", "component", "source"),
    "level": ("severity", "lvl", "loglevel", "log_level", "levelname", "severity_text", "priority"),
    "message": ("msg", "log", "text", "body", "line", "log_message", "content"),
    "kind": ("type", "event_type", "change_type", "category", "event_kind", "action"),
    "description": ("desc", "details", "detail", "summary", "text", "message", "msg", "title"),
}

_NUMERIC_TYPES = {
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
    "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "REAL",
}
_NAIVE_TS_TYPES = {"TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS", "DATE"}





@dataclass(frozen=True)
class LoadSummary:
    db_path: str
    metrics_rows: int
    metric_columns: list[str]
    log_rows: int
    event_rows: int
    start: str  # first metrics ts, ISO 8601 UTC ("2024-06-01T10:00:00Z")
    end: str  # last metrics ts, ISO 8601 UTC
    log_columns: list[str] = field(default_factory=list)  # optional log columns present
    # Offsets other than UTC the text timestamps were written in, per input ({"logs":
    # ["+02:00"]}); the tables hold UTC. Inputs written in UTC (Z, naive, epoch) are not listed.
    time_offsets: dict[str, list[str]] = field(default_factory=dict)


# --------------------------------------------------------------------------- SQL helpers

def _norm_name(name: str) -> str:
    """Lower snake case: ' P95 (ms) ' -> 'p95_ms'. '@timestamp' -> 'timestamp'."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def _base_type(duck_type: str) -> str:
    return duck_type.split("(")[0].strip().upper()


def _epoch_expr(v: str) -> str:
    """DOUBLE epoch value (unit by magnitude) -> TIMESTAMP, NULL when impossible."""
    micros = (
        f"CASE WHEN abs({v}) < 1e11 THEN {v} * 1e6 WHEN abs({v}) < 1e14 THEN {v} * 1e3 "
        f"WHEN abs({v}) < 1e17 THEN {v} ELSE {v} / 1e3 END"
    )
    return f"try(make_timestamp(TRY_CAST(round({micros}) AS BIGINT)))"


def _ts_expr(col: str, duck_type: str) -> str:
    """Expression converting a source column to a naive UTC TIMESTAMP (NULL if unparseable)."""
    base = _base_type(duck_type)
    if base in ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"):
        return f"timezone('UTC', {col})"
    if base in _NAIVE_TS_TYPES:
        return f"CAST({col} AS TIMESTAMP)"
    if base in _NUMERIC_TYPES or base == "DECIMAL":
        return _epoch_expr(f"CAST({col} AS DOUBLE)")
    s = f"trim(CAST({col} AS VARCHAR))"
    num = f"TRY_CAST({s} AS DOUBLE)"
    return (
        f"(CASE WHEN {num} IS NOT NULL THEN {_epoch_expr(num)} "
        f"ELSE timezone('UTC', TRY_CAST({s} AS TIMESTAMPTZ)) END)"
    )


def _has_value_expr(col: str, duck_type: str) -> str:
    """TRUE when a cell holds something (not NULL, not an empty / NaN-like token)."""
    base = _base_type(duck_type)
    if base in _NUMERIC_TYPES or base in ("DECIMAL", "BOOLEAN"):
        return f"({col} IS NOT NULL)"
    tokens = ", ".join(sql_literal(t) for t in _NULL_TOKENS)
    return f"({col} IS NOT NULL AND lower(trim(CAST({col} AS VARCHAR))) NOT IN ({tokens}))"


def _double_raw(col: str, duck_type: str) -> str:
    """Source column -> DOUBLE (NaN kept); NULL for empty / null-like / unparseable values."""
    base = _base_type(duck_type)
    if base in _NUMERIC_TYPES or base in ("DECIMAL", "BOOLEAN"):
        return f"CAST({col} AS DOUBLE)"
    tokens = ", ".join(sql_literal(t) for t in _NULL_TOKENS)
    s = f"trim(CAST({col} AS VARCHAR))"
    return f"TRY_CAST(CASE WHEN lower({s}) IN ({tokens}) THEN NULL ELSE {s} END AS DOUBLE)"


def _double_expr(col: str, duck_type: str) -> str:
    """Source column -> DOUBLE with NaN stored as NULL."""
    x = _double_raw(col, duck_type)
    return f"(CASE WHEN isnan({x}) THEN NULL ELSE {x} END)"


def _not_a_number_cond(col: str, duck_type: str) -> str:
    """TRUE for a cell that holds a value which is not a number."""
    return f"({_has_value_expr(col, duck_type)} AND ({_double_raw(col, duck_type)}) IS NULL)"


def _text_expr(col: str, keep_empty: bool = False) -> str:
    if keep_empty:
        return f"CAST({col} AS VARCHAR)"
    return f"NULLIF(trim(CAST({col} AS VARCHAR)), '')"


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- sources

@dataclass
class _Source:
    label: str  # the path as the caller gave it, for messages
    path: Path
    fmt: str  # csv | tsv | parquet | json
    json_format: str = "newline_delimited"
    compression: str = "none"
    columns: dict[str, tuple[str, str]] = field(default_factory=dict)  # norm -> (orig, type)
    files: list[Path] | None = None  # a Parquet dataset, read in place (tools.sources.datasets)
    flatten: str | None = None  # loki | otlp | ndjson export, flattened by tools.sources
    fields: dict[str, str] = field(default_factory=dict)  # log column -> source field
    sql: str | None = None  # the flattened or field-mapped relation, once built
    offsets: list[str] | None = None  # text offsets other than UTC, when found while loading

    def _path_lit(self) -> str:
        return sql_literal(str(self.path))

    def describe_sql(self) -> str:
        if self.sql is not None:
            return f"({self.sql})"
        if self.fmt == "json":
            return (f"read_json({self._path_lit()}, format={sql_literal(self.json_format)}, "
                    f"compression={sql_literal(self.compression)})")
        return self.relation_sql()

    def relation_sql(self) -> str:
        if self.sql is not None:
            return f"({self.sql})"
        if self.files is not None:
            from tools.sources.datasets import (
                parquet_relation_sql,  # tools.sources imports us
            )
            return parquet_relation_sql(self.files)
        p = self._path_lit()
        if self.fmt in ("csv", "tsv"):
            delim = "," if self.fmt == "csv" else "\t"
            return (f"read_csv({p}, header=true, all_varchar=true, delim={sql_literal(delim)}, "
                    f"quote='\"', escape='\"', compression={sql_literal(self.compression)}, "
                    f"ignore_errors=false, null_padding=false)")
        if self.fmt == "parquet":
            return f"read_parquet({p})"
        cols = ", ".join(f"{sql_literal(o)}: 'VARCHAR'" for o, _ in self.columns.values())
        return (f"read_json({p}, format={sql_literal(self.json_format)}, "
                f"compression={sql_literal(self.compression)}, columns={{{cols}}})")

    def col(self, norm: str) -> str:
        return sql_ident(self.columns[norm][0])

    def ctype(self, norm: str) -> str:
        # JSON and CSV are read as VARCHAR; Parquet keeps its own types.
        if self.fmt == "parquet":
            return self.columns[norm][1]
        return "VARCHAR"

    def found(self) -> str:
        return ", ".join(o for o, _ in self.columns.values()) or "(none)"


def _detect_format(path: Path, label: str) -> tuple[str, str, str]:
    name = path.name.lower()
    compression = "none"
    if name.endswith(".gz"):
        compression = "gzip"
        name = name[:-3]
    ext = Path(name).suffix
    if ext == ".csv":
        return "csv", "newline_delimited", compression
    if ext == ".tsv":
        return "tsv", "newline_delimited", compression
    if ext == ".parquet" and compression == "none":
        return "parquet", "newline_delimited", compression
    if ext in (".ndjson", ".jsonl"):
        return "json", "newline_delimited", compression
    if ext == ".json":
        # .json is expected to be newline-delimited, but a top-level array is accepted too.
        return "json", "auto", compression
    shown = path.name if "." in path.name else "(no extension)"
    raise InputError(label, f"unsupported file type {shown!r}; accepted extensions: "
                     + ", ".join(ACCEPTED_EXTENSIONS))


@overload
def _precheck(file: str | Path, allow_empty: Literal[False] = False, log_format: str = "auto",
              fields: dict[str, str] | None = None) -> _Source: ...
@overload
def _precheck(file: str | Path, allow_empty: Literal[True], log_format: str = "auto",
              fields: dict[str, str] | None = None) -> _Source | None: ...
def _precheck(file: str | Path, allow_empty: bool = False, log_format: str = "auto",
              fields: dict[str, str] | None = None) -> _Source | None:
    """Cheap checks (exists, not empty, known extension) before anything is loaded; None only
    for an empty file that `allow_empty` accepts."""

    label = str(file)
    if datasets.is_dataset(file) or log_format == "parquet" and Path(file).is_dir():
        return _Source(label=label, path=Path(file), fmt="parquet",
                       files=datasets.dataset_files(label, file), fields=dict(fields or {}))
    path = Path(file).expanduser()
    if not path.exists():
        raise InputError(label, "file not found")
    if not path.is_file():
        raise InputError(label, "not a regular file")
    if log_format == "auto":
        fmt, json_format, compression = _detect_format(path, label)
        flatten = logformats.sniff_json_format(path, compression) if fmt == "json" else None
    else:
        fmt, json_format, compression, flatten = logformats.forced_format(path, log_format)
    if path.stat().st_size == 0:
        if allow_empty:
            return None
        raise InputError(label, "file is empty (0 bytes)")
    problem = leading_bytes_problem(path, fmt, compression)
    if problem:
        raise InputError(label, problem)
    if fields and fmt == "json":
        flatten = flatten or "ndjson"
    return _Source(label=label, path=path.resolve(), fmt=fmt, json_format=json_format,
                   compression=compression, flatten=flatten, fields=dict(fields or {}))


def _time_offsets(con, sources: dict[str, _Source | None]) -> dict[str, list[str]]:

    found = {}
    for name, src in sources.items():
        if src is not None and src.offsets is not None:
            if src.offsets:
                found[name] = src.offsets
        elif src is not None and src.ctype("ts") == "VARCHAR":
            # Values ending in Z are UTC (text_offsets leaves them out): a suffix test skips
            # them before its regex, which otherwise runs on every line of the file.
            ts = src.col("ts")
            rel = f"(SELECT {ts} FROM {src.relation_sql()} WHERE NOT suffix(trim({ts}), 'Z'))"
            offsets = text_offsets(con, rel, ts)
            if offsets:
                found[name] = offsets
    return found


def _build_relation(con, src: _Source) -> None:
    """Flatten a log export or apply a field mapping (tools.sources.logformats)."""

    if src.flatten:
        src.sql = logformats.flattened_logs_sql(con, src.label, src.path, src.flatten,
                                                src.compression, src.fields)
        src.fmt = "flat"  # text columns, like CSV
    elif src.fields:
        src.sql = logformats.mapped_relation_sql(con, src.label, src.relation_sql(), src.fields)


def _describe(con: duckdb.DuckDBPyConnection, src: _Source, allow_no_rows: bool) -> bool:
    """Fill src.columns. Returns False when the file has no records (only if allowed)."""
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM {src.describe_sql()}").fetchall()
    except duckdb.Error as exc:
        raise InputError(src.label, _read_error(src, exc, f"cannot read as {src.fmt}")) from exc
    if src.fmt == "json" and len(rows) == 1 and rows[0][0] == "json" and rows[0][1] == "JSON":
        # DuckDB's answer for a file without JSON objects (e.g. only blank lines).
        n = one_row(con.execute(f"SELECT count(*) FROM {src.describe_sql()}"))[0]
        if n == 0:
            if allow_no_rows:
                return False
            raise InputError(src.label, "file contains no JSON records")
        raise InputError(src.label, "records are not JSON objects (one object per line expected)")
    cols: dict[str, tuple[str, str]] = {}
    for i, (name, duck_type, *_rest) in enumerate(rows):
        norm = _norm_name(str(name)) or f"column{i}"
        if norm in cols:
            raise InputError(src.label, f"columns {cols[norm][0]!r} and {name!r} both map to "
                             f"{norm!r} (names are matched case-insensitively)", column=str(name))
        cols[norm] = (str(name), str(duck_type))
    src.columns = cols
    return True


def _read_error(src: _Source, exc: BaseException, what: str) -> str:
    """The cause and fix of a read error when one is recognised, else DuckDB's own message."""
    if src.files is None and src.path.is_file():
        explained = read_error_explanation(src.path, src.fmt, src.compression, str(exc))
        if explained:
            return explained
    return f"{what}: {duckdb_message(exc)}"


def _candidates(src: _Source, column: str, required: tuple[str, ...]) -> list[str]:
    """Columns of src that look like a misnamed `column` (synonyms, then close spellings)."""
    found_norm = list(src.columns)
    candidates = [f for f in found_norm if f in _SYNONYMS.get(column, ()) and f not in required]
    candidates += [f for f in difflib.get_close_matches(column, found_norm, n=2, cutoff=0.6)
                   if f not in required and f not in candidates]
    return candidates


def _require(src: _Source, required: tuple[str, ...]) -> None:
    missing = [c for c in required if c not in src.columns]
    if not missing:
        return
    hints = []
    for m in missing:
        candidates = _candidates(src, m, required)
        if candidates:
            orig = src.columns[candidates[0]][0]
            hints.append(f"found column '{orig}': did you mean {m}? (rename it to '{m}')")
    msg = (f"missing required column{'s' if len(missing) > 1 else ''} "
           f"{', '.join(missing)}; columns found: {src.found()}")
    if hints:
        msg += "; " + "; ".join(hints)
    elif len(src.columns) == 1 and src.fmt in ("csv", "tsv"):
        only = next(iter(src.columns.values()))[0]
        for sep, sep_name in ((";", "';'"), ("\t", "tab"), (",", "','"), ("|", "'|'")):
            if sep in only:
                expected = "','" if src.fmt == "csv" else "tab"
                msg += (f"; the header looks {sep_name}-separated but a .{src.fmt} file "
                        f"must be {expected}-separated")
                break
    raise InputError(src.label, msg, column=missing[0])


def _first_bad_row(con, src: _Source, raw: str, bad_cond: str) -> tuple[int, object] | None:
    """1-based data row number and raw value of the first row where bad_cond holds."""
    sql = (f"SELECT _row, _raw FROM (SELECT row_number() OVER () AS _row, {raw} AS _raw, "
           f"{bad_cond} AS _bad FROM {src.relation_sql()}) WHERE _bad "
           f"ORDER BY _row LIMIT 1")
    row = con.execute(sql).fetchone()
    return (int(row[0]), row[1]) if row else None


def _raise_bad_ts(con, src: _Source) -> None:
    ts = src.col("ts")
    conv = _ts_expr(ts, src.ctype("ts"))
    found = _first_bad_row(con, src, ts, f"({conv}) IS NULL")
    if found is None:  # should not happen; keep a clear message anyway
        raise InputError(src.label, "some timestamps could not be parsed", column="ts")
    row, value = found
    if value is None or (isinstance(value, str) and not value.strip()):
        what = "empty timestamp"
    else:
        what = f"unparseable timestamp {_short(value)}"
    raise InputError(
        src.label,
        f"{what} at data row {row}; expected ISO 8601 (e.g. 2024-06-01T10:00:00Z, an offset "
        f"like +02:00, or naive UTC) or epoch seconds/milliseconds",
        column="ts",
    )


# --------------------------------------------------------------------------- tables

def _load_metrics(con, src: _Source) -> list[str]:
    _require(src, ("ts",))
    rel = src.relation_sql()
    candidates = [n for n in src.columns if n != "ts"]
    if not candidates:
        raise InputError(src.label, f"no metric column besides ts; columns found: {src.found()}")
    ts_conv = _ts_expr(src.col("ts"), src.ctype("ts"))
    parts = ["count(*)", f"count(*) FILTER (WHERE ({ts_conv}) IS NULL)"]
    for n in candidates:
        c, t = src.col(n), src.ctype(n)
        parts.append(f"count(*) FILTER (WHERE {_has_value_expr(c, t)})")
        parts.append(f"count(*) FILTER (WHERE {_not_a_number_cond(c, t)})")
    stats = con.execute(f"SELECT {', '.join(parts)} FROM {rel}").fetchone()
    total, bad_ts = stats[0], stats[1]
    if total == 0:
        raise InputError(src.label, "no data rows (the file has only a header)")
    kept: list[str] = []
    for i, n in enumerate(candidates):
        values, bad = stats[2 + 2 * i], stats[3 + 2 * i]
        c, t = src.col(n), src.ctype(n)
        if bad:
            found = _first_bad_row(con, src, c, _not_a_number_cond(c, t))
            where = f" at data row {found[0]}: {_short(found[1])}" if found else ""
            raise InputError(
                src.label,
                f"non-numeric value{where} ({bad} of {values} values are not numbers); every "
                f"metrics column except ts must be numeric",
                column=src.columns[n][0],
            )
        if values == 0:
            log.info("%s: column %r has no values, dropped", src.label, src.columns[n][0])
            continue
        kept.append(n)
    if not kept:
        raise InputError(src.label, f"no metric column with values besides ts; columns found: "
                         f"{src.found()}")
    if bad_ts:
        _raise_bad_ts(con, src)
    inner = ", ".join([f"{ts_conv} AS ts"]
                      + [f"{_double_expr(src.col(n), src.ctype(n))} AS {sql_ident(n)}" for n in kept])
    outer = ", ".join(["ts"] + [f"avg({sql_ident(n)}) AS {sql_ident(n)}" for n in kept])
    con.execute(f"CREATE TABLE metrics AS SELECT {outer} FROM (SELECT {inner} FROM {rel}) "
                f"GROUP BY ts ORDER BY ts")
    return kept


def _text_table(con, src: _Source, table: str, spec: list[tuple[str, str]],
                wanted_optional: tuple[str, ...]) -> tuple[int, list[str]]:
    """Create the logs or events table. spec: (column, kind), kind one of ts, text, message,
    level, double. Returns (row count, optional columns present in the file)."""
    added: set[str] = set()
    if src.fmt == "json":
        # DuckDB infers JSON keys from a sample; a key such as error_kind may appear only in
        # later records, so the wanted columns are always read (NULL where absent).
        for w in wanted_optional:
            if w not in src.columns:
                src.columns[w] = (w, "VARCHAR")
                added.add(w)
    exprs = []
    for name, kind in spec:
        if name not in src.columns:
            expr = "CAST(NULL AS DOUBLE)" if kind == "double" else "CAST(NULL AS VARCHAR)"
        else:
            c, t = src.col(name), src.ctype(name)
            if kind == "ts":
                expr = _ts_expr(c, t)
            elif kind == "level":
                expr = level_sql(f"CAST({c} AS VARCHAR)")
            elif kind == "double":
                expr = _double_expr(c, t)
            else:
                expr = _text_expr(c, keep_empty=(kind == "message"))
        exprs.append(f"{expr} AS {sql_ident(name)}")
    names = ", ".join(sql_ident(name) for name, _ in spec)
    as_view = src.files is not None and table == "logs"
    if table == "logs" and not as_view and src.ctype("ts") == "VARCHAR":
        # The text of each timestamp not in UTC's Z, for _time_offsets: kept beside its line
        # while the table is built, so that the file is not parsed a second time for it.
        ts = src.col("ts")
        exprs.append(f"CASE WHEN NOT suffix(trim({ts}), 'Z') THEN {ts} END AS {_TS_TEXT}")
    select = f"SELECT {', '.join(exprs)} FROM {src.relation_sql()}"
    if table == "logs":
        # Wrappers, levels written in the line, multi-line records (tools.sources.logformats).
        select = logformats.shaped_lines_sql(select, internal=not as_view)
        # One integer per line naming its distinct (service, message, level, error_kind), so
        # that tools.logscan.index_patterns groups 8-byte keys instead of the message text: a
        # few percent of a load (0.08 CPU-s per million lines).
        select = f"SELECT *, {MESSAGE_KEY_SQL} AS message_key FROM ({select})"
        names += ", message_key"
    if as_view:
        # A log dataset stays where it is: a view over its files (no sort, no copy). Metrics
        # and events are small and copied like any file.
        con.execute(f"CREATE VIEW {table} AS {select}")
    else:
        # Copied in file order (insertion order is kept: rowid = data row - 1, still read in
        # parallel), then sorted only if it is not in time order already.
        con.execute(f"CREATE TABLE {table} AS {select}")
    rows, null_ts = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE ts IS NULL) FROM {table}").fetchone()
    if null_ts:
        _raise_bad_ts(con, src)
    if table == "logs" and not as_view:
        if _TS_TEXT in _table_columns(con, table):
            src.offsets = text_offsets(con, f"(SELECT {_TS_TEXT} FROM {table} WHERE {_TS_TEXT} IS NOT NULL)",
                                       _TS_TEXT)
            con.execute(f"ALTER TABLE {table} DROP COLUMN {_TS_TEXT}")
        logformats.check_wrappers(con, src.label, table)
        rows -= logformats.join_records(con, table, [name for name, _ in spec], MESSAGE_KEY_SQL)
    if not as_view and not _in_time_order(con, table):
        _sort_by_time(con, table, names)
    present = []
    for w in wanted_optional:
        if w not in src.columns:
            continue
        if w in added and not con.execute(
                f"SELECT count({sql_ident(w)}) FROM {table}").fetchone()[0]:
            continue  # a key we added ourselves counts only if some record had it
        present.append(w)
    return rows, present


def _table_columns(con, table: str) -> list[str]:
    return [str(r[0]) for r in con.execute(f"DESCRIBE {table}").fetchall()]


def _in_time_order(con, table: str) -> bool:
    """Whether every row's ts is at or after the previous row's, in insertion order.

    Most log files are written in time order: one streaming pass over ts (no sort, about 1 %
    of a load) spares them the sort of every column, the dearest step of a load."""
    backwards = con.execute(
        f"SELECT count(*) FROM (SELECT ts < lag(ts) OVER () AS back FROM {table}) WHERE back"
    ).fetchone()[0]
    return backwards == 0


def _sort_by_time(con, table: str, names: str) -> None:
    """Rewrite `table` sorted by ts, in file order (rowid) among equal ts."""
    con.execute(f"CREATE TABLE _sorted_{table} AS SELECT {names} FROM {table} ORDER BY ts, rowid")
    con.execute(f"DROP TABLE {table}")
    con.execute(f"ALTER TABLE _sorted_{table} RENAME TO {table}")


def _load_logs(con, src: _Source) -> tuple[int, list[str]]:
    # Without a level column the level is read from each line (tools.sources.logformats); a
    # column that looks like a misnamed level (severity, lvl) is pointed out instead of ignored.
    from_lines = "level" not in src.columns and not _candidates(src, "level", LOG_REQUIRED)
    _require(src, tuple(c for c in LOG_REQUIRED if not (from_lines and c == "level")))
    spec = [("ts", "ts"), ("service", "text"), ("level", "level"), ("message", "message"),
            ("error_kind", "text"), ("endpoint", "text"), ("latency_ms", "double"),
            ("region", "text"), ("trace_id", "text")]
    rows, present = _text_table(con, src, "logs", spec, LOG_OPTIONAL)
    if rows == 0:
        raise InputError(src.label, "no data rows (the file has only a header)")
    if from_lines and not one_row(con.execute("SELECT count(level) FROM logs"))[0]:
        raise InputError(src.label, "no level column, and no line gives a level in its text (looked "
                         "for level=..., a JSON level/severity field, glog's I/W/E/F prefix and level "
                         "words such as ERROR or WARN); add a level column or map one with --log-field "
                         f"level=FIELD; columns found: {src.found()}", column="level")
    if "latency_ms" in present:
        # Single bad latency values become NULL; a column with no number at all is an error.
        if not con.execute("SELECT count(latency_ms) FROM logs").fetchone()[0]:
            c, t = src.col("latency_ms"), src.ctype("latency_ms")
            found = _first_bad_row(con, src, c, _has_value_expr(c, t))
            if found:
                raise InputError(src.label, f"no numeric value in the column (data row "
                                 f"{found[0]}: {_short(found[1])})",
                                 column=src.columns["latency_ms"][0])
    if src.files is None:
        # Once per load, so that every scan groups integers (a dataset's view stays unindexed).
        index_patterns(con)
    return rows, present


def _load_events(con, src: _Source | None) -> int:
    if src is None:
        con.execute("CREATE TABLE events(ts TIMESTAMP, service VARCHAR, kind VARCHAR, "
                    "description VARCHAR)")
        return 0
    _require(src, EVENT_REQUIRED)
    spec = [("ts", "ts"), ("service", "text"), ("kind", "text"), ("description", "message")]
    rows, _ = _text_table(con, src, "events", spec, ())
    return rows


# --------------------------------------------------------------------------- entry point

def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _iso_utc(value: datetime) -> str:
    return value.isoformat() + "Z"


def load_sources(db_path: str | Path, metrics_path: str | Path, logs_path: str | Path,
                 events_path: str | Path | None = None, *, log_format: str = "auto",
                 log_fields: dict[str, str] | None = None) -> LoadSummary:
    """Load the three inputs into a fresh DuckDB file at db_path (replacing it atomically).

    Any input may be a directory or glob of Parquet files; the logs of such a dataset become
    a view over the files (read in place; their list is kept in table ``source_files``).
    log_format (csv, ndjson, loki, otlp, parquet; default auto) and log_fields (log column ->
    source field) select how the logs are read: see tools.sources.logformats.

    Raises InputError (naming the file and column) for any problem with an input; then no
    database file is created and an existing one at db_path is left untouched.

    Close every connection to db_path in this process before re-loading it: DuckDB caches
    open database instances per path, and a connection opened before the replace keeps
    reading the old file.
    """
    db_path = Path(db_path)
    metrics_src = _precheck(metrics_path)
    logs_src = _precheck(logs_path, log_format=log_format, fields=log_fields)
    events_src = _precheck(events_path, allow_empty=True) if events_path is not None else None

    db_path.parent.mkdir(parents=True, exist_ok=True)
    final = str(db_path.resolve())
    tmp = final + ".tmp"
    if os.path.isdir(tmp):
        raise InputError(db_path, f"cannot build the database: {tmp} is a directory")
    _remove(tmp)
    _remove(tmp + ".wal")
    con = duckdb.connect(tmp, config={
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
        # DuckDB's default (80 % of RAM) let a 1.6 GB log file peak at 3.2 GB RSS while it
        # was sorted; with a cap the sort spills to disk beside the database instead.
        "memory_limit": os.environ.get("INCIDENT_GRAPH_LOAD_MEMORY", LOAD_MEMORY_LIMIT),
        "temp_directory": tmp + SPILL_SUFFIX,
    })
    ok = False
    current = metrics_src
    try:
        con.execute("SET TimeZone = 'UTC'")  # naive ISO strings are UTC
        con.execute("SET enable_progress_bar = false")  # no bar on stdout for big files
        # Parquet min/max statistics leave NaN out (as the format says), and DuckDB's
        # statistics propagation then folds isnan(col) to false: NaN would not become NULL.
        # in_clause: DuckDB plans an IN list of six or more values (the null tokens) as a hash
        # join, which does not keep the file's row order: rowid and row_number() would no
        # longer be data rows, and _text_table's time-order check would fail for sorted files.
        con.execute("SET disabled_optimizers = 'statistics_propagation,in_clause'")
        _describe(con, metrics_src, allow_no_rows=False)
        metric_cols = _load_metrics(con, metrics_src)

        current = logs_src
        _build_relation(con, logs_src)
        _describe(con, logs_src, allow_no_rows=False)
        log_rows, log_cols = _load_logs(con, logs_src)

        if events_src is not None:
            current = events_src
            if not _describe(con, events_src, allow_no_rows=True):
                events_src = None
        event_rows = _load_events(con, events_src)

        if logs_src.files is not None:
            con.execute(f"CREATE TABLE {datasets.SOURCE_FILES_TABLE}(path VARCHAR)")
            con.executemany(f"INSERT INTO {datasets.SOURCE_FILES_TABLE} VALUES (?)",
                            [[str(f)] for f in logs_src.files])
        time_offsets = _time_offsets(con, {"metrics": metrics_src, "logs": logs_src,
                                           "events": events_src})
        metrics_rows, start, end = one_row(con.execute("SELECT count(*), min(ts), max(ts) FROM metrics"))
        con.execute("CHECKPOINT")
        ok = True
    except InputError:
        raise
    except duckdb.Error as exc:
        raise InputError(current.label, _read_error(current, exc, "cannot load")) from exc
    finally:
        con.close()
        if not ok:
            _remove(tmp)
            _remove(tmp + ".wal")
    # A WAL left beside the old file would be replayed onto the new one.
    _remove(final + ".wal")
    os.replace(tmp, final)
    _remove(tmp + ".wal")
    return LoadSummary(
        db_path=final,
        metrics_rows=int(metrics_rows),
        metric_columns=metric_cols,
        log_rows=int(log_rows),
        event_rows=int(event_rows),
        start=_iso_utc(start),
        end=_iso_utc(end),
        log_columns=log_cols,
        time_offsets=time_offsets,
    )
