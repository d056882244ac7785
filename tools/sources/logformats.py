"""Log exports flattened by DuckDB into the loader's log columns.

Formats (``--log-format``; ``auto`` looks at the file name, then at the start of a .json file):

* ``loki``: a Loki ``/loki/api/v1/query_range`` answer (``data.result`` = streams of
  ``[nanosecond epoch, line(, metadata)]``). Columns come from stream labels, then from
  structured metadata / parsed labels: service from ``service``, ``service_name``, ``app``,
  ``application``, ``job``, ``container``, ``component``; level from ``level``,
  ``detected_level``, ``severity``, ``lvl`` (else ``level=...`` in the line); trace_id from
  ``trace_id``/``traceID``. The line is the message.
* ``otlp``: OpenTelemetry OTLP/JSON logs (``resourceLogs[].scopeLogs[].logRecords[]``), one
  document or one per line (the collector's file exporter). ts from ``timeUnixNano`` (else
  ``observedTimeUnixNano``), level from ``severityText`` (else ``severityNumber`` ranges), message
  from ``body``, trace_id from ``traceId``, other columns from record attributes then resource
  attributes: service ``service.name``, error_kind ``exception.type``/``error.type``, endpoint
  ``http.route``/``url.path``/``rpc.method``, region ``cloud.region``, latency_ms ``latency_ms``
  /``duration_ms``.
* ``ndjson`` with a field mapping: one JSON object per line; ``fields`` maps a log column to
  a dotted path (``service`` -> ``kubernetes.labels.app``) or a JSONPath starting with ``$``
  (``$."service.name"`` for a key containing dots). Unmapped columns are read from the
  top-level key of the same name.

For Loki and OTLP ``fields`` replaces the candidate list of a column by one label / attribute
key (``--log-field service=k8s.deployment.name``). Every value is produced as text and the
loader applies its usual conversions (epoch nanoseconds, level names, numbers), so all
formats end in identical ``logs`` rows.
"""
from __future__ import annotations

import gzip
import re
from pathlib import Path

import duckdb

from tools.contract import (
    LOG_OPTIONAL,
    LOG_REQUIRED,
    InputError,
    duckdb_message,
    one_row,
    sql_ident,
    sql_literal,
)

__all__ = [
    "LOG_COLUMNS",
    "LOG_FORMATS",
    "check_fields",
    "flattened_logs_sql",
    "forced_format",
    "json_path",
    "mapped_relation_sql",
    "sniff_json_format",
]

LOG_FORMATS = ("auto", "csv", "ndjson", "loki", "otlp", "parquet")
LOG_COLUMNS = LOG_REQUIRED + LOG_OPTIONAL
_MAX_JSON_DOCUMENT = 1 << 30
_MIN_JSON_OBJECT = 16 << 20  # DuckDB's default bound
_GZIP_RATIO = 10  # JSON logs compress about this much

FLAT_TABLE = "_flattened_logs"  # TEMP: gone when the loading connection closes
_LOKI_LABELS = {
    "service": ("service", "service_name", "app", "application", "app_kubernetes_io_name",
                "job", "container", "component"),
    "level": ("level", "detected_level", "severity", "lvl", "loglevel"),
    "error_kind": ("error_kind", "error_type", "exception_type"),
    "endpoint": ("endpoint", "route", "http_route"),
    "latency_ms": ("latency_ms", "duration_ms"),
    "region": ("region", "cloud_region"),
    "trace_id": ("trace_id", "traceID", "traceid"),
}
_OTLP_ATTRIBUTES = {
    "service": ("service.name",),
    "error_kind": ("exception.type", "error.type", "error_kind"),
    "endpoint": ("http.route", "url.path", "rpc.method", "endpoint"),
    "latency_ms": ("latency_ms", "duration_ms"),
    "region": ("cloud.region", "region"),
    "trace_id": ("trace_id",),
}
# OTLP SeverityNumber ranges (logs data model): 1-4 TRACE ... 21-24 FATAL.
_OTLP_SEVERITY = "['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR', 'FATAL']"
_LEVEL_IN_LINE = r"""(?i)\b(?:level|lvl|severity)"?\s*[=:]\s*"?([a-z]+)"""


def json_path(source: str) -> str:
    """``a.b.c`` -> ``$."a"."b"."c"``; a path already starting with ``$`` is used as is."""
    if source.startswith("$"):
        return source
    return "$" + "".join('."' + part.replace('"', '\\"') + '"' for part in source.split("."))


def check_fields(fields: dict[str, str] | None) -> dict[str, str]:
    fields = dict(fields or {})
    unknown = sorted(set(fields) - set(LOG_COLUMNS))
    if unknown:
        raise InputError("--log-field", f"unknown log column(s) {', '.join(unknown)}; "
                         f"targets are {', '.join(LOG_COLUMNS)}")
    return fields


def sniff_json_format(path: Path, compression: str) -> str | None:
    """'loki' or 'otlp' from the first 64 KiB of a JSON file, else None (plain records)."""
    opener = gzip.open if compression == "gzip" else open
    try:
        with opener(path, "rb") as handle:
            head = handle.read(65536).decode("utf-8", "replace")
    except (OSError, EOFError):
        return None
    if re.match(r'\s*\{\s*"resourceLogs"\s*:', head):
        return "otlp"
    if re.match(r"\s*\{", head) and '"resultType"' in head and '"streams"' in head:
        return "loki"
    return None


def forced_format(path: Path, log_format: str) -> tuple[str, str, str, str | None]:
    """(loader format, JSON layout, compression, export to flatten) for an explicit
    --log-format, whatever the file is called."""
    if log_format not in LOG_FORMATS:
        raise InputError(str(path), f"unknown log format {log_format!r}; expected one of "
                         f"{', '.join(LOG_FORMATS)}")
    compression = "gzip" if path.name.lower().endswith(".gz") else "none"
    if log_format == "parquet":
        if compression != "none":
            raise InputError(str(path), "a Parquet file cannot be gzip-compressed (.gz)")
        return "parquet", "newline_delimited", compression, None
    if log_format == "csv":
        return "csv", "newline_delimited", compression, None
    if log_format == "ndjson":
        return "json", "newline_delimited", compression, None
    return "json", "auto", compression, log_format


def mapped_relation_sql(con: duckdb.DuckDBPyConnection, label: str, relation: str,
                        fields: dict[str, str]) -> str:
    """A CSV / Parquet relation with log columns taken from other (nested) columns:
    ``service`` <- ``kubernetes.labels.app`` reads the struct field; a column whose name
    contains dots is matched whole first."""
    fields = check_fields(fields)
    described = con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
    names = [str(r[0]) for r in described]
    exprs = []
    for target, source in fields.items():
        if source in names:
            expr = sql_ident(source)
        else:
            head = source.split(".")[0]
            if head not in names:
                raise InputError(label, f"--log-field {target}={source}: no column {head!r}; "
                                 f"columns found: {', '.join(names)}", column=head)
            expr = ".".join(sql_ident(part) for part in source.split("."))
        exprs.append(f"{expr} AS {sql_ident(target)}")
    replaced = [n for n in names if n.lower() in fields]
    keep = f"* EXCLUDE ({', '.join(sql_ident(n) for n in replaced)})" if replaced else "*"
    sql = f"SELECT {keep}, {', '.join(exprs)} FROM {relation}"
    try:
        con.execute(f"DESCRIBE {sql}")
    except duckdb.Error as exc:
        raise InputError(label, f"--log-field: {duckdb_message(exc)}") from None
    return sql


def _read_typed(path: Path, compression: str, columns: dict[str, str]) -> str:
    # Typed columns: DuckDB parses the nesting once into structs and lists, instead of JSON
    # functions re-parsing text per line (which needed > 512 MB for a 20 MB OTLP file).
    # A Loki answer is one JSON document, so the reader must accept an object as big as the
    # file; DuckDB sizes its buffers from that bound, so it is no larger than needed.
    size = path.stat().st_size * (_GZIP_RATIO if compression == "gzip" else 1) + 1
    bound = min(max(size, _MIN_JSON_OBJECT), _MAX_JSON_DOCUMENT)
    typed = ", ".join(f"{sql_literal(k)}: {sql_literal(v)}" for k, v in columns.items())
    return (f"read_json({sql_literal(str(path))}, format='auto', compression={sql_literal(compression)}, "
            f"maximum_object_size={bound}, columns={{{typed}}})")


def _first(exprs: list[str]) -> str:
    return exprs[0] if len(exprs) == 1 else f"coalesce({', '.join(exprs)})"


_LOKI_DATA = 'STRUCT(resultType VARCHAR, result STRUCT(stream JSON, "values" JSON[][])[])'


def _loki_sql(path: Path, compression: str, fields: dict[str, str]) -> str:
    def label(name: str) -> str:
        key = sql_literal(name)
        return _first([f"labels->>{key}", f"meta->'structuredMetadata'->>{key}",
                       f"meta->'parsed'->>{key}", f"meta->>{key}"])

    cols = {"ts": "v[1]->>'$'", "message": "v[2]->>'$'"}
    for column, names in _LOKI_LABELS.items():
        names = (fields[column],) if column in fields else names
        cols[column] = _first([label(n) for n in names])
    if "level" not in fields:
        cols["level"] = (f"coalesce({cols['level']}, "
                         f"NULLIF(regexp_extract(v[2]->>'$', {sql_literal(_LEVEL_IN_LINE)}, 1), ''))")
    select = ", ".join(f"CAST({expr} AS VARCHAR) AS {c}" for c, expr in cols.items())
    return (f"WITH doc AS (SELECT data FROM {_read_typed(path, compression, {'data': _LOKI_DATA})}), "
            f"streams AS (SELECT unnest(data.result) AS s FROM doc "
            f"WHERE data.resultType = 'streams'), "
            f"entries AS (SELECT s.stream AS labels, unnest(s.\"values\") AS v FROM streams) "
            f"SELECT {select}, labels AS _labels FROM (SELECT *, v[3] AS meta FROM entries)")


_OTLP_VALUE = "STRUCT(stringValue VARCHAR, intValue VARCHAR, doubleValue DOUBLE, boolValue BOOLEAN)"
_OTLP_ATTRS = f"STRUCT(key VARCHAR, value {_OTLP_VALUE})[]"
_OTLP_RESOURCE_LOGS = (
    f"STRUCT(resource STRUCT(attributes {_OTLP_ATTRS}), scopeLogs STRUCT(logRecords STRUCT("
    f"timeUnixNano VARCHAR, observedTimeUnixNano VARCHAR, severityNumber INTEGER, "
    f"severityText VARCHAR, body JSON, attributes {_OTLP_ATTRS}, traceId VARCHAR)[])[])[]")


def _attribute_map(attributes: str) -> str:
    # OTLP attributes are [{key, value: {stringValue | intValue | doubleValue | boolValue}}].
    value = ("coalesce(a.value.stringValue, a.value.intValue, CAST(a.value.doubleValue AS VARCHAR), "
             "CAST(a.value.boolValue AS VARCHAR))")
    return (f"map_from_entries(list_transform(coalesce({attributes}, []), "
            f"lambda a: struct_pack(k := a.key, v := {value})))")


def _otlp_sql(path: Path, compression: str, fields: dict[str, str]) -> str:
    cols = {
        "ts": "CASE WHEN coalesce(rec.timeUnixNano, '0') NOT IN ('0', '') "
              "THEN rec.timeUnixNano ELSE rec.observedTimeUnixNano END",
        "message": "coalesce(rec.body->>'stringValue', CAST(rec.body AS VARCHAR))",
        "level": f"coalesce(NULLIF(rec.severityText, ''), "
                 f"{_OTLP_SEVERITY}[((rec.severityNumber - 1) // 4) + 1])",
    }
    for column, keys in _OTLP_ATTRIBUTES.items():
        keys = (fields[column],) if column in fields else keys
        cols[column] = _first([f"la[{sql_literal(k)}]" for k in keys] + [f"ra[{sql_literal(k)}]" for k in keys])
    if "trace_id" not in fields:
        cols["trace_id"] = f"coalesce(NULLIF(rec.traceId, ''), {cols['trace_id']})"
    if "level" in fields:
        cols["level"] = f"coalesce(la[{sql_literal(fields['level'])}], ra[{sql_literal(fields['level'])}])"
    select = ", ".join(f"CAST({expr} AS VARCHAR) AS {c}" for c, expr in cols.items())
    source = _read_typed(path, compression, {"resourceLogs": _OTLP_RESOURCE_LOGS})
    return (f"WITH res AS (SELECT unnest(resourceLogs) AS r FROM {source}), "
            f"scopes AS (SELECT r.resource.attributes AS rattrs, unnest(r.scopeLogs) AS sl FROM res), "
            f"recs AS (SELECT rattrs, unnest(sl.logRecords) AS rec FROM scopes) "
            f"SELECT {select} FROM (SELECT rec, {_attribute_map('rattrs')} AS ra, "
            f"{_attribute_map('rec.attributes')} AS la FROM recs)")


def _ndjson_sql(path: Path, compression: str, fields: dict[str, str]) -> str:
    select = ", ".join(f"CAST(j->>{sql_literal(json_path(fields.get(c, c)))} AS VARCHAR) AS {c}"
                       for c in LOG_COLUMNS)
    return (f"SELECT {select} FROM (SELECT json AS j FROM read_json_objects({sql_literal(str(path))}, "
            f"format='newline_delimited', compression={sql_literal(compression)}))")


def flattened_logs_sql(con: duckdb.DuckDBPyConnection, label: str, path: Path, fmt: str,
                       compression: str, fields: dict[str, str] | None) -> str:
    """A SELECT giving the log columns (all VARCHAR) of a Loki / OTLP / NDJSON export: the
    required ones always, an optional one only when some record has it."""
    fields = check_fields(fields)
    build = {"loki": _loki_sql, "otlp": _otlp_sql, "ndjson": _ndjson_sql}[fmt]
    # Parsed once into a temporary table (spilled to disk beyond the memory limit): the
    # loader scans its source several times (checks, conversion, error rows).
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {FLAT_TABLE} AS "
                    f"{build(path, compression, fields)}")
    except duckdb.Error as exc:
        raise InputError(label, f"cannot read as {fmt}: {duckdb_message(exc)}") from None
    base = f"SELECT * FROM {FLAT_TABLE}"
    counts = ", ".join(f"count({c})" for c in LOG_COLUMNS)
    row = one_row(con.execute(f"SELECT count(*), {counts} FROM ({base})"))
    total, have = row[0], dict(zip(LOG_COLUMNS, row[1:]))
    if total == 0:
        what = {"loki": "no log lines (data.result has no streams of resultType 'streams')",
                "otlp": "no log records under resourceLogs[].scopeLogs[].logRecords[]",
                "ndjson": "no JSON records"}[fmt]
        raise InputError(label, what)
    for column in ("ts", "message", "service"):
        if not have[column]:
            raise InputError(label, _missing_hint(con, base, fmt, column, fields), column=column)
    keep = [c for c in LOG_COLUMNS if c in LOG_REQUIRED or have[c]]
    return f"SELECT {', '.join(keep)} FROM ({base})"


def _missing_hint(con, base: str, fmt: str, column: str, fields: dict[str, str]) -> str:
    if fmt == "loki":
        keys = con.execute(f"SELECT DISTINCT unnest(json_keys(_labels)) FROM ({base}) "
                           f"ORDER BY 1 LIMIT 40").fetchall()
        looked = fields.get(column) or ", ".join(_LOKI_LABELS.get(column, ()))
        return (f"no stream label gives the {column} (looked for {looked}); labels found: "
                f"{', '.join(k for (k,) in keys) or '(none)'}; map one with --log-field "
                f"{column}=LABEL")
    if fmt == "otlp":
        looked = fields.get(column) or ", ".join(_OTLP_ATTRIBUTES.get(column, ()))
        return (f"no log record or resource attribute gives the {column} (looked for {looked}); "
                f"map one with --log-field {column}=ATTRIBUTE.KEY")
    looked = json_path(fields.get(column, column))
    return (f"no record has a value at {looked}; map the column with --log-field "
            f"{column}=PATH.TO.FIELD (dotted, or a JSONPath starting with $)")
