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
  has no value at all is dropped. Metrics given per service or pod (``_metric_layout``: long
  ``ts, service|pod|instance, metric, value``; wide per entity ``ts, service|pod|instance,
  <numeric columns>``; a folder or glob of such files, the file name giving the pod when no
  column does and files share timestamps) become one column ``<service>:<metric>`` each, the
  mean over the service's pods on one time grid; a ``<service>:<metric>`` column of a wide file
  keeps that name. Pods map to services with ``tools.sources.pods`` (or a service map).
* ``service_metrics(ts, service, instance, metric, value DOUBLE)``: every value given per service
  or pod, raw ts, the pod in ``instance`` (NULL when only a service was given); empty for a
  global wide table.
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
from tools.sources.pods import ServiceMap
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
    # Per-service metrics (table service_metrics): its rows and the services it names, sorted.
    service_metric_rows: int = 0
    metric_services: list[str] = field(default_factory=list)


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
    # A metrics folder or glob: the column each row's file path is read into (see _METRIC_FILE).
    file_column: str | None = None

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
        if self.files is not None and self.fmt == "parquet":
            return datasets.parquet_relation_sql(self.files, self.file_column)
        p = self._path_lit()
        if self.fmt in ("csv", "tsv"):
            delim = "," if self.fmt == "csv" else "\t"
            many = ""
            if self.files is not None:
                # A metrics folder: one relation over its files, columns aligned by name and
                # compression chosen per file from its extension.
                p = "[" + ", ".join(sql_literal(str(f)) for f in self.files) + "]"
                many = f", union_by_name=true, filename={sql_literal(self.file_column or 'filename')}"
            compression = "auto" if self.files is not None else self.compression
            return (f"read_csv({p}, header=true, all_varchar=true, delim={sql_literal(delim)}, "
                    f"quote='\"', escape='\"', compression={sql_literal(compression)}, "
                    f"ignore_errors=false, null_padding=false{many})")
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


def _precheck_metrics(file: str | Path) -> _Source:
    """A metrics file, or a folder (searched recursively) or glob of CSV / TSV / Parquet files
    of one format, read as one relation whose rows carry their file (see _metric_layout)."""
    if not datasets.is_dataset(file):
        return _precheck(file)
    label = str(file)
    pattern = Path(file).expanduser() / "**" / "*" if Path(file).expanduser().is_dir() else file
    matched = datasets.matching_files(label, pattern)
    formats: dict[str, str] = {}
    for real, name in matched:
        fmt = _detect_format(real, name)[0]
        if fmt not in ("csv", "tsv", "parquet"):
            raise InputError(label, f"a metrics folder or glob holds CSV, TSV or Parquet files; found {name}: narrow the glob")
        formats.setdefault(fmt, name)
    if len(formats) > 1:
        raise InputError(label, "a metrics folder or glob holds files of one format; found "
                         + " and ".join(f"{name} ({fmt})" for fmt, name in formats.items()))
    files = [real for real, _ in matched]
    for real, name in matched:
        if real.stat().st_size == 0:
            raise InputError(name, "file is empty (0 bytes)")
    return _Source(label=label, path=Path(file), fmt=next(iter(formats)), files=files, file_column=_METRIC_FILE)


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
    if src.file_column is not None:
        cols.pop(_norm_name(src.file_column), None)  # ours, not the user's
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

# Metric layouts (see load_sources): an entity column names a service as written, or a pod /
# instance that is mapped to its service (tools.sources.pods).
_SERVICE_COLUMN = "service"
_INSTANCE_COLUMNS = ("pod", "pod_name", "podname", "instance")
_LONG_COLUMNS = ("metric", "value")
SERVICE_SEP = ":"  # metrics columns of one service: "<service>:<metric>"
# The column a metrics folder's rows carry their file path in (dropped from the tables).
_METRIC_FILE = "_metrics_file_"
# A per-pod file name's usual tail, left out of the entity taken from the name.
_FILE_TAIL = re.compile(r"[_-]metrics?$", re.IGNORECASE)


@dataclass(frozen=True)
class _Layout:
    """How a metrics input is read. kind: wide (today's global table, maybe with
    <service>:<metric> columns), entity (ts, an entity column or the file, numeric columns) or
    long (ts, entity, metric, value)."""

    kind: Literal["wide", "entity", "long"]
    service: str | None = None  # normalised name of the service column
    instance: str | None = None  # normalised name of the pod / instance column
    from_file: bool = False  # the entity is the file name


def _metric_layout(con, src: _Source) -> _Layout:
    service = _SERVICE_COLUMN if _SERVICE_COLUMN in src.columns else None
    instance = next((c for c in _INSTANCE_COLUMNS if c in src.columns), None)
    from_file = service is None and instance is None and src.file_column is not None and _files_overlap(con, src)
    entity = service is not None or instance is not None or from_file
    if all(c in src.columns for c in _LONG_COLUMNS):
        if not entity:
            raise InputError(src.label, "a long metrics file (metric, value columns) needs a service, pod or instance "
                             f"column saying whose each value is; columns found: {src.found()}", column="service")
        return _Layout("long", service, instance, from_file)
    return _Layout("entity" if entity else "wide", service, instance, from_file)


def _files_overlap(con, src: _Source) -> bool:
    """Whether two files of a metrics folder hold the same timestamp: then they are parallel
    series (one per pod, the entity is each file's name); files that split one time range
    (one per day) are one table."""
    pairs, times = one_row(con.execute(
        f"SELECT count(*), count(DISTINCT t) FROM (SELECT DISTINCT {sql_ident(_METRIC_FILE)}, {src.col('ts')} AS t "
        f"FROM {src.relation_sql()})"))
    return bool(pairs > times)


def _file_entity(path: str) -> str:
    """A per-pod file's entity: its name without extensions or a _metric(s) tail
    ('checkout-7d9f8b6c5d-x2k4q_metric.csv.gz' -> 'checkout-7d9f8b6c5d-x2k4q')."""
    return _FILE_TAIL.sub("", Path(path).name.split(".")[0])


def _numeric_columns(con, src: _Source, candidates: list[str], besides: str = "ts",
                     rule: str | None = None) -> list[str]:
    """The candidate columns that hold values, after checking every value is a number and
    every ts parses. besides: the columns that are not metrics (for messages); rule: what a
    non-numeric value breaks."""
    rule = rule or f"every metrics column except {besides} must be numeric"
    if not candidates:
        raise InputError(src.label, f"no metric column besides {besides}; columns found: {src.found()}")
    rel = src.relation_sql()
    ts_conv = _ts_expr(src.col("ts"), src.ctype("ts"))
    parts = ["count(*)", f"count(*) FILTER (WHERE ({ts_conv}) IS NULL)"]
    for n in candidates:
        c, t = src.col(n), src.ctype(n)
        parts.append(f"count(*) FILTER (WHERE {_has_value_expr(c, t)})")
        parts.append(f"count(*) FILTER (WHERE {_not_a_number_cond(c, t)})")
    stats = one_row(con.execute(f"SELECT {', '.join(parts)} FROM {rel}"))
    total, bad_ts = stats[0], stats[1]
    if total == 0:
        raise InputError(src.label, "no data rows (the file has only a header)")
    kept: list[str] = []
    for i, n in enumerate(candidates):
        values, bad = stats[2 + 2 * i], stats[3 + 2 * i]
        c, t = src.col(n), src.ctype(n)
        if bad:
            blamed = _blamed(con, src, _not_a_number_cond(c, t))
            found = _first_bad_row(con, blamed, blamed.col(n), _not_a_number_cond(blamed.col(n), blamed.ctype(n)))
            where = f" at data row {found[0]}: {_short(found[1])}" if found else ""
            raise InputError(
                blamed.label,
                f"non-numeric value{where} ({bad} of {values} values are not numbers); {rule}",
                column=src.columns[n][0],
            )
        if values == 0:
            log.info("%s: column %r has no values, dropped", src.label, src.columns[n][0])
            continue
        kept.append(n)
    if not kept:
        raise InputError(src.label, f"no metric column with values besides {besides}; columns found: {src.found()}")
    if bad_ts:
        _raise_bad_ts(con, _blamed(con, src, f"({ts_conv}) IS NULL"))
    return kept


def _blamed(con, src: _Source, bad_cond: str) -> _Source:
    """For a metrics folder, the one file whose row meets bad_cond (so that the error names the
    file and its data row); any other source is itself."""
    if src.file_column is None:
        return src
    row = con.execute(f"SELECT {sql_ident(_METRIC_FILE)} FROM {src.relation_sql()} WHERE {bad_cond} LIMIT 1").fetchone()
    if row is None:
        return src
    one = _Source(label=str(row[0]), path=Path(row[0]), fmt=src.fmt, compression=_detect_format(Path(row[0]), str(row[0]))[2])
    _describe(con, one, allow_no_rows=False)
    return one


def _load_metrics(con, src: _Source, service_map: ServiceMap) -> list[str]:
    """Create ``metrics`` (the global wide table the detector reads) and ``service_metrics``
    (one row per ts, service, instance, metric); returns the metrics columns."""
    _require(src, ("ts",))
    layout = _metric_layout(con, src)
    con.execute("CREATE TABLE service_metrics(ts TIMESTAMP, service VARCHAR, instance VARCHAR, metric VARCHAR, "
                "value DOUBLE)")
    if layout.kind == "wide":
        kept = _numeric_columns(con, src, [n for n in src.columns if n != "ts"])
        return _wide_metrics(con, src, kept)
    entity_cols = [c for c in (layout.service, layout.instance) if c]
    besides = " and ".join(["ts"] + [src.columns[c][0] for c in entity_cols])
    ts_conv = _ts_expr(src.col("ts"), src.ctype("ts"))
    service = _text_expr(src.col(layout.service)) if layout.service else "CAST(NULL AS VARCHAR)"
    if layout.instance:
        instance = _text_expr(src.col(layout.instance))
    elif layout.from_file:
        instance = "_file_entity.entity"
    else:
        instance = "CAST(NULL AS VARCHAR)"
    rel = src.relation_sql()
    if layout.from_file:
        files = [(str(f), _file_entity(str(f))) for f in src.files or []]
        con.execute("CREATE TEMP TABLE _file_entity(file VARCHAR, entity VARCHAR)")
        con.executemany("INSERT INTO _file_entity VALUES (?, ?)", files)
        rel = f"{rel} AS _r JOIN _file_entity ON _r.{sql_ident(_METRIC_FILE)} = _file_entity.file"
    if layout.kind == "long":
        _numeric_columns(con, src, ["value"], besides, rule="the value column must be numeric")
        metric = _text_expr(src.col("metric"))
        _check_entities(con, src, [*entity_cols, "metric"])
        con.execute(f"CREATE TEMP TABLE _long AS SELECT {ts_conv} AS ts, {service} AS _svc, {instance} AS _inst, "
                    f"{metric} AS metric, {_double_expr(src.col('value'), src.ctype('value'))} AS value FROM {rel}")
        con.execute("DELETE FROM _long WHERE value IS NULL")
    else:
        skip = {*entity_cols, "ts"}
        kept = _numeric_columns(con, src, [n for n in src.columns if n not in skip], besides)
        _check_entities(con, src, entity_cols)
        keys = [(f"_c{i}", n) for i, n in enumerate(kept)]
        values = ", ".join(f"{_double_expr(src.col(n), src.ctype(n))} AS {key}" for key, n in keys)
        con.execute("CREATE TEMP TABLE _keys(_key VARCHAR, metric VARCHAR)")
        con.executemany("INSERT INTO _keys VALUES (?, ?)", keys)
        # UNPIVOT leaves out NULL values: a pod without a value at a ts has no row there.
        con.execute(f"CREATE TEMP TABLE _long AS SELECT ts, _svc, _inst, metric, value FROM "
                    f"(SELECT {ts_conv} AS ts, {service} AS _svc, {instance} AS _inst, {values} FROM {rel}) "
                    f"UNPIVOT (value FOR _key IN ({', '.join(key for key, _ in keys)})) JOIN _keys USING (_key)")
    _fill_service_metrics(con, src, service_map)
    return _pivot_metrics(con)


def _check_entities(con, src: _Source, columns: list[str]) -> None:
    """Every row names its entity (and, in a long file, its metric): an empty one is an error."""
    for n in columns:
        c = src.col(n)
        cond = f"({_text_expr(c)}) IS NULL"
        if one_row(con.execute(f"SELECT count(*) FILTER (WHERE {cond}) FROM {src.relation_sql()}"))[0]:
            blamed = _blamed(con, src, cond)
            found = _first_bad_row(con, blamed, blamed.col(n), f"({_text_expr(blamed.col(n))}) IS NULL")
            where = f" at data row {found[0]}" if found else ""
            raise InputError(blamed.label, f"empty value{where}; every row must name its {n}", column=src.columns[n][0])


def _fill_service_metrics(con, src: _Source, service_map: ServiceMap) -> None:
    """_long (ts, _svc, _inst, metric, value) -> service_metrics: each pod mapped to its service
    once (distinct pods are few), duplicates of one (ts, service, instance, metric) averaged."""
    pods = [str(r[0]) for r in con.execute("SELECT DISTINCT _inst FROM _long WHERE _svc IS NULL").fetchall()]
    con.execute("CREATE TEMP TABLE _pod_service(_inst VARCHAR, service VARCHAR)")
    if pods:  # none when every row names its service
        con.executemany("INSERT INTO _pod_service VALUES (?, ?)", [(p, service_map.service(p)) for p in pods])
    con.execute("INSERT INTO service_metrics SELECT ts, coalesce(_svc, _pod_service.service) AS service, _inst AS instance, "
                "metric, avg(value) FROM _long LEFT JOIN _pod_service USING (_inst) GROUP BY ALL "
                "ORDER BY ts, service, instance, metric")
    if not one_row(con.execute("SELECT count(*) FROM service_metrics"))[0]:
        raise InputError(src.label, "no metric value in any row")


def _pivot_metrics(con) -> list[str]:
    """The global wide table from service_metrics: one column per <service>:<metric>, the mean
    over the service's instances. Instances scraped at different seconds are put on one grid
    first (the median spacing of a series, rounded as tools.detection.regular_grid does)."""
    distinct, longest = one_row(con.execute(
        "SELECT (SELECT count(DISTINCT ts) FROM service_metrics), "
        "(SELECT max(n) FROM (SELECT count(DISTINCT ts) AS n FROM service_metrics GROUP BY service, instance))"))
    bucket = "ts"
    if distinct > longest:
        spacing = one_row(con.execute(
            "SELECT median(d) FROM (SELECT epoch(ts) - epoch(lag(ts) OVER (PARTITION BY service, instance ORDER BY ts)) AS d "
            "FROM (SELECT DISTINCT service, instance, ts FROM service_metrics)) WHERE d > 0"))[0]
        if spacing:
            step = 60.0 * round(spacing / 60.0) if spacing >= 60 else max(float(round(spacing)), 1.0)
            bucket = f"time_bucket(INTERVAL {int(step * 1e6)} MICROSECONDS, ts + INTERVAL {int(step * 5e5)} MICROSECONDS)"
    keys = [f"{service}{SERVICE_SEP}{metric}" for service, metric in con.execute(
        "SELECT DISTINCT service, metric FROM service_metrics ORDER BY service, metric").fetchall()]
    listed = ", ".join(sql_literal(k) for k in keys)
    con.execute(f"CREATE TABLE metrics AS PIVOT (SELECT ts, service || {sql_literal(SERVICE_SEP)} || metric AS k, avg(value) AS value "
                f"FROM (SELECT {bucket} AS ts, service, instance, metric, avg(value) AS value FROM service_metrics GROUP BY ALL) "
                f"GROUP BY ALL) ON k IN ({listed}) USING first(value) GROUP BY ts ORDER BY ts")
    return keys


def _wide_metrics(con, src: _Source, kept: list[str]) -> list[str]:
    """Today's global wide table, one row per distinct ts (duplicates averaged). A column named
    <service>:<metric> keeps that name and also fills service_metrics."""
    ts_conv = _ts_expr(src.col("ts"), src.ctype("ts"))
    names: dict[str, str] = {}
    owned: dict[str, tuple[str, str]] = {}
    for n in kept:
        service, sep, metric = src.columns[n][0].partition(SERVICE_SEP)
        if sep and service.strip() and _norm_name(metric):
            owned[n] = (service.strip(), _norm_name(metric))
            names[n] = f"{owned[n][0]}{SERVICE_SEP}{owned[n][1]}"
        else:
            names[n] = n
    if len(set(names.values())) < len(names):
        twice = next(v for v in names.values() if list(names.values()).count(v) > 1)
        raise InputError(src.label, f"two columns both name the metric {twice!r}", column=twice)
    inner = ", ".join([f"{ts_conv} AS ts"]
                      + [f"{_double_expr(src.col(n), src.ctype(n))} AS {sql_ident(names[n])}" for n in kept])
    outer = ", ".join(["ts"] + [f"avg({sql_ident(names[n])}) AS {sql_ident(names[n])}" for n in kept])
    con.execute(f"CREATE TABLE metrics AS SELECT {outer} FROM (SELECT {inner} FROM {src.relation_sql()}) "
                f"GROUP BY ts ORDER BY ts")
    if owned:
        con.execute("CREATE TEMP TABLE _owned(col VARCHAR, service VARCHAR, metric VARCHAR)")
        con.executemany("INSERT INTO _owned VALUES (?, ?, ?)", [(names[n], s, m) for n, (s, m) in owned.items()])
        cols = ", ".join(sql_ident(names[n]) for n in owned)
        con.execute(f"INSERT INTO service_metrics SELECT ts, service, NULL, metric, value FROM "
                    f"(SELECT ts, {cols} FROM metrics) UNPIVOT (value FOR col IN ({cols})) JOIN _owned USING (col) "
                    f"ORDER BY ts, service, metric")
    return [names[n] for n in kept]


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
                 log_fields: dict[str, str] | None = None,
                 service_map: str | Path | None = None) -> LoadSummary:
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
    metrics_src = _precheck_metrics(metrics_path)
    pods = ServiceMap.read(service_map) if service_map is not None else ServiceMap()
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
        metric_cols = _load_metrics(con, metrics_src, pods)

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
        service_rows, services = one_row(con.execute(
            "SELECT count(*), coalesce(list(DISTINCT service ORDER BY service), []) FROM service_metrics"))
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
        service_metric_rows=int(service_rows),
        metric_services=[str(s) for s in services],
    )
