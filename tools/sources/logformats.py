"""Log exports flattened by DuckDB into the loader's log columns, and the shapes of a log line
every source shares (container wrappers, levels in the text, multi-line records: see below).

Formats (``--log-format``; ``auto`` looks at the file name, then at the start of a .json file):

* ``loki``: a Loki ``/loki/api/v1/query_range`` answer (``data.result`` = streams of
  ``[nanosecond epoch, line(, metadata)]``). Columns come from stream labels, then from
  structured metadata / parsed labels: service from ``service``, ``service_name``, ``app``,
  ``application``, ``job``, ``container``, ``component``; level from ``level``,
  ``detected_level``, ``severity``, ``lvl`` (else from the line, see "shapes of a line"); trace_id from
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
    level_sql,
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
    "shaped_lines_sql",
    "check_wrappers",
    "join_records",
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


# --------------------------------------------------------------------------- shapes of a line
#
# Applied to every source (CSV, Parquet, NDJSON, Loki, OTLP), after its columns are mapped, in
# this order:
#
# 1. A container runtime's wrapper is removed: a Docker json-file record
#    ``{"log": "text\n", "stream": "stderr", "time": "..."}`` becomes ``text``; a CRI
#    (containerd, CRI-O) line ``2016-10-06T00:17:09.669794202Z stdout F text`` becomes ``text``,
#    and a ``P`` (partial) line is joined with the lines after it up to the next ``F``.
# 2. A message that is a JSON object gives its ``message`` / ``msg`` as the message, and its
#    ``level`` / ``severity`` / ``lvl`` / ``levelname`` as the level when no column gives one.
# 3. No level column (or an empty level): the level is read from the line: ``level=warn`` /
#    ``"severity": "error"``, glog's ``W0612 10:00:00.123`` (I/W/E/F), else the first level word
#    in capitals (``ERROR``, ``WARN``, ``SEVERE``...), else a bracketed one (``[error]``).
# 4. Multi-line records are joined into one line (text joined by newlines; ts, level and the
#    other columns of its first line): a line continues the previous line of its service (and
#    stream) when it is a stack frame (whitespace + ``at ``, ``Caused by:``, ``Suppressed:``,
#    ``... N more``), or when it has no timestamp of its own in a service that writes stack
#    frames and starts most other lines with a timestamp (the exception line after
#    ``10:00:01.234 ERROR ... with root cause``). A Java failure is then one ERROR line whose text starts with its error and
#    exception, not dozens of ``at org.springframework...`` lines. A Parquet dataset read in
#    place (a view) gets steps 1-3 only.

# Internal columns of the logs table while it is built; dropped before the load ends.
STREAM, PARTIAL = "_stream", "_partial"
_NEWLINES = "chr(13) || chr(10)"
_CRI = (r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d) (stdout|stderr) ([FP])(?: (.*))?$")
_JSON_LEVEL_KEYS = ("level", "severity", "lvl", "levelname", "loglevel")
_GLOG_LEVEL = r"^([IWEF])\d{4} \d\d:\d\d:\d\d"
_LEVEL_WORD = r"\b(TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|FATAL|CRITICAL|CRIT|SEVERE|ALERT|EMERG|PANIC)\b"
_LEVEL_BRACKET = r"(?i)\[(trace|debug|info|notice|warn|warning|error|crit|alert|emerg)\]"
_FRAME = r"^(?:\s+at \S|\s*Caused by: |\s*Suppressed: |\s*\.\.\. \d+ (?:more|common frames omitted))"
_OWN_TIME = (r"^\[?(?:\d{4}-\d\d-\d\d[T ]\d\d:\d\d|\d{4}/\d\d/\d\d \d\d:\d\d|\d{1,2}:\d\d:\d\d|"
             r"[IWEF]\d{4} \d\d:\d\d|(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ \d]\d \d\d:\d\d)")
_DOCKER_PREFIX = '{"log":'


def _extract(text: str, pattern: str) -> str:
    return f"NULLIF(regexp_extract({text}, {sql_literal(pattern)}, 1), '')"


def _level_in_text(text: str) -> str:
    glog = f"CASE {_extract(text, _GLOG_LEVEL)} WHEN 'I' THEN 'INFO' WHEN 'W' THEN 'WARN' ELSE 'ERROR' END"
    glog = f"CASE WHEN regexp_matches({text}, {sql_literal(_GLOG_LEVEL)}) THEN {glog} END"
    return level_sql(_first([_extract(text, _LEVEL_IN_LINE), glog, _extract(text, _LEVEL_WORD),
                             _extract(text, _LEVEL_BRACKET)]))


def shaped_lines_sql(select: str, internal: bool = True) -> str:
    """The log relation `select` (the loader's columns, level normalised or NULL) with steps
    1-3 applied; with `internal`, plus the stream and partial-line columns step 4 needs."""
    # Cheap prefix tests first: JSON parsing and regexes run only on lines that can match, and
    # TRY_CAST, because DuckDB may evaluate a JSON accessor before the condition guarding it.
    as_json = "CASE WHEN starts_with(message, '{') THEN TRY_CAST(message AS JSON) END"
    cri = ("CASE WHEN substr(message, 5, 1) = '-' AND substr(message, 11, 1) = 'T' "
           f"THEN regexp_extract(message, {sql_literal(_CRI)}, ['stream', 'tag', 'text']) END")
    unwrapped = (f"SELECT * EXCLUDE (_docker, _json, _cri) REPLACE ("
                 f"CASE WHEN _docker THEN rtrim(_json->>'log', {_NEWLINES}) "
                 f"WHEN _cri.tag <> '' THEN _cri.text ELSE message END AS message), "
                 f"CASE WHEN _docker THEN _json->>'stream' WHEN _cri.tag <> '' THEN _cri.stream END AS {STREAM}, "
                 f"coalesce(_cri.tag = 'P', false) AS {PARTIAL} "
                 f"FROM (SELECT *, coalesce(json_type(_json, '$.log') = 'VARCHAR', false) AS _docker "
                 f"FROM (SELECT *, {as_json} AS _json, {cri} AS _cri FROM ({select})))")
    keys = _first([f"_json->>{sql_literal(k)}" for k in _JSON_LEVEL_KEYS])
    structured = (f"SELECT * EXCLUDE (_json) REPLACE ("
                  f"coalesce(_json->>'message', _json->>'msg', message) AS message, "
                  f"CASE WHEN level IS NULL THEN {level_sql(keys)} ELSE level END AS level) "
                  f"FROM (SELECT *, {as_json} AS _json FROM ({unwrapped}))")
    leveled = (f"SELECT * REPLACE (CASE WHEN level IS NULL THEN {_level_in_text('message')} "
               f"ELSE level END AS level) FROM ({structured})")
    return leveled if internal else f"SELECT * EXCLUDE ({STREAM}, {PARTIAL}) FROM ({leveled})"


def check_wrappers(con: duckdb.DuckDBPyConnection, label: str, table: str) -> None:
    """A line that starts like a Docker json-file record but is not valid JSON (a cut or
    hand-edited line) is an error naming its data row; `table` is still in file order."""
    found = con.execute(
        f"SELECT rowid + 1, message FROM {table} WHERE starts_with(message, {sql_literal(_DOCKER_PREFIX)}) "
        f"AND NOT json_valid(message) ORDER BY rowid LIMIT 1").fetchone()
    if found:
        text = found[1] if len(found[1]) <= 80 else found[1][:77] + "..."
        raise InputError(label, f"data row {found[0]}: a Docker json-file record must be one JSON object "
                         f'{{"log": "...", "stream": "...", "time": "..."}}; got {text!r}', column="message")


def join_records(con: duckdb.DuckDBPyConnection, table: str, columns: list[str], key_sql: str) -> int:
    """Step 4 on `table` (in file order, with the internal columns, which are dropped);
    `key_sql` recomputes the per-line key of a joined record. Returns how many lines were
    joined into the line before them."""
    own_time = f"regexp_matches(message, {sql_literal(_OWN_TIME)})"
    frame = f"regexp_matches(message, {sql_literal(_FRAME)})"
    # One pass decides whether anything is to be joined; most files have nothing, and then
    # the table is left as it is (the rebuild below costs two window passes and a sort).
    per_service = con.execute(
        f"SELECT service, count(*) FILTER (WHERE {PARTIAL}), count(*) FILTER (WHERE kind = 1), "
        f"count(*) FILTER (WHERE kind = 2), count(*) FILTER (WHERE kind = 0) FROM "
        f"(SELECT service, {PARTIAL}, CASE WHEN {frame} THEN 1 WHEN {own_time} THEN 2 ELSE 0 END AS kind "
        f"FROM {table}) GROUP BY service").fetchall()
    # Lines without their own timestamp continue a record only in a service that writes stack
    # traces and starts most other lines with a timestamp: elsewhere such a line is more often
    # a message that merely does not start with a time than the second line of a record.
    timed = [s for s, _, frames, with_time, without in per_service if frames and with_time > without]
    if not any(partial or frames or (s in timed and without) for s, partial, frames, _, without in per_service):
        con.execute(f"ALTER TABLE {table} DROP COLUMN {STREAM}")
        con.execute(f"ALTER TABLE {table} DROP COLUMN {PARTIAL}")
        return 0
    window = f"(PARTITION BY service, {STREAM} ORDER BY _row)"
    after_partial = f"coalesce(lag({PARTIAL}) OVER {window}, false)"
    timed_list = ", ".join(sql_literal(s) for s in timed) or "NULL"
    continues = (f"lag(_row) OVER {window} IS NOT NULL AND ({after_partial} OR {frame} "
                 f"OR (service IN ({timed_list}) AND NOT {own_time}))")
    # The rest of a partial line follows it directly; a continuation line after a newline.
    marked = (f"SELECT *, {continues} AS _continues, CASE WHEN {after_partial} THEN '' ELSE chr(10) END "
              f"AS _separator FROM (SELECT *, rowid AS _row FROM {table})")
    numbered = (f"SELECT *, sum(CASE WHEN _continues THEN 0 ELSE 1 END) OVER "
                f"(PARTITION BY service, {STREAM} ORDER BY _row ROWS UNBOUNDED PRECEDING) AS _record "
                f"FROM ({marked})")
    exprs = {c: f"arg_min_null({sql_ident(c)}, _row)" for c in columns}
    exprs["message"] = ("string_agg(CASE WHEN _continues THEN _separator ELSE '' END || message, '' "
                        "ORDER BY _row)")
    # The record's level is its first line's, else the first level among its lines.
    exprs["level"] = "coalesce(arg_min_null(level, _row), arg_min(level, _row))"
    select = ", ".join(f"{expr} AS {sql_ident(c)}" for c, expr in exprs.items())
    con.execute(f"CREATE TABLE _records AS SELECT *, {key_sql} AS message_key FROM ("
                f"SELECT {select} FROM ({numbered}) GROUP BY service, {STREAM}, _record ORDER BY min(_row))")
    lines = one_row(con.execute(f"SELECT count(*) FROM {table}"))[0]
    records = one_row(con.execute("SELECT count(*) FROM _records"))[0]
    con.execute(f"DROP TABLE {table}")
    con.execute(f"ALTER TABLE _records RENAME TO {table}")
    return int(lines - records)
