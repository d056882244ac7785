"""Loading metrics / logs / events files of every accepted format into one DuckDB file."""
from __future__ import annotations

import csv
import gzip
import json
import math
import os
import pickle
from datetime import UTC, datetime

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tools.loader import ACCEPTED_EXTENSIONS, InputError, LoadSummary, load_sources
from tools.sql_sandbox import connect_readonly, run_sql

NAN = float("nan")

METRICS = [  # unsorted, with a duplicate ts (averaged) and missing / NaN values
    {"ts": "2024-06-01T10:02:00Z", "rps": 130, "p95_ms": 300, "error_rate": 0.05, "cpu": 0.7},
    {"ts": "2024-06-01T10:00:00Z", "rps": 100, "p95_ms": 200, "error_rate": 0.01, "cpu": 0.5},
    {"ts": "2024-06-01T10:01:00Z", "rps": 110, "p95_ms": None, "error_rate": 0.02, "cpu": 0.6},
    {"ts": "2024-06-01T10:01:00Z", "rps": 120, "p95_ms": 250, "error_rate": NAN, "cpu": 0.6},
]
METRICS_EXPECTED = [
    (datetime(2024, 6, 1, 10, 0), 100.0, 200.0, 0.01, 0.5),
    (datetime(2024, 6, 1, 10, 1), 115.0, 250.0, 0.02, 0.6),
    (datetime(2024, 6, 1, 10, 2), 130.0, 300.0, 0.05, 0.7),
]
LOG_COLUMNS = ["ts", "service", "level", "message", "error_kind", "endpoint", "latency_ms",
               "region", "trace_id", "message_key", "pattern_id"]
LOGS = [
    {"ts": "2024-06-01T10:00:05Z", "service": "checkout", "level": "info", "message": "ok",
     "error_kind": "", "endpoint": "/pay", "latency_ms": 12.5, "region": "eu", "trace_id": "t1"},
    {"ts": "2024-06-01T10:00:01Z", "service": "checkout", "level": "warning", "message": "slow",
     "error_kind": "", "endpoint": "/pay", "latency_ms": 800, "region": "eu", "trace_id": "t2"},
    {"ts": "2024-06-01T10:00:03Z", "service": "payments", "level": "Fatal",
     "message": 'db down, "retry"', "error_kind": "DBTimeout", "endpoint": "/charge",
     "latency_ms": None, "region": "us", "trace_id": "t3"},
]
LOGS_EXPECTED = [
    (datetime(2024, 6, 1, 10, 0, 1), "checkout", "WARN", "slow", None, "/pay", 800.0, "eu", "t2"),
    (datetime(2024, 6, 1, 10, 0, 3), "payments", "ERROR", 'db down, "retry"', "DBTimeout",
     "/charge", None, "us", "t3"),
    (datetime(2024, 6, 1, 10, 0, 5), "checkout", "INFO", "ok", None, "/pay", 12.5, "eu", "t1"),
]
EVENTS = [
    {"ts": "2024-06-01T10:00:02Z", "service": "payments", "kind": "deploy",
     "description": "v2.3.1"},
    {"ts": "2024-06-01T09:00:00Z", "service": "checkout", "kind": "config",
     "description": "pool 10 -> 2"},
]
EVENTS_EXPECTED = [
    (datetime(2024, 6, 1, 9, 0), "checkout", "config", "pool 10 -> 2"),
    (datetime(2024, 6, 1, 10, 0, 2), "payments", "deploy", "v2.3.1"),
]


# ----------------------------------------------------------------------------- helpers

def _text_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return str(value)


def write(path, rows, columns=None):
    """Write rows (dicts) to path in the format its extension names."""
    path = str(path)
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    name = path[:-3] if path.endswith(".gz") else path
    opener = (lambda: gzip.open(path, "wt", newline="")) if path.endswith(".gz") else \
        (lambda: open(path, "w", newline=""))
    if name.endswith((".csv", ".tsv")):
        with opener() as f:
            w = csv.writer(f, delimiter="," if name.endswith(".csv") else "\t")
            w.writerow(columns)
            for r in rows:
                w.writerow([_text_cell(r.get(c)) for c in columns])
    elif name.endswith((".ndjson", ".jsonl", ".json")):
        with opener() as f:
            for r in rows:
                clean = {k: (None if isinstance(v, float) and math.isnan(v) else v)
                         for k, v in r.items() if k in columns}
                f.write(json.dumps(clean) + "\n")
    elif name.endswith(".parquet"):
        def conv(c, v):
            if c == "ts" and isinstance(v, str):
                return datetime.fromisoformat(v)  # tz-aware: TIMESTAMPTZ in Parquet
            return v
        table = pa.Table.from_pylist([{c: conv(c, r.get(c)) for c in columns} for r in rows])
        pq.write_table(table, path)
    else:
        raise AssertionError(path)
    return path


def dump(db_path, table):
    """The table's rows; for logs without message_key and pattern_id (checked by
    test_message_key_names_the_texts and test_pattern_id_names_the_masked_problem_messages)."""
    columns = "* EXCLUDE (message_key, pattern_id)" if table == "logs" else "*"
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        return con.execute(f"SELECT {columns} FROM {table}").fetchall()
    finally:
        con.close()


def columns_of(db_path, table):
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        return [(r[0], r[1]) for r in con.execute(f"DESCRIBE {table}").fetchall()]
    finally:
        con.close()


def same(rows_a, rows_b):
    """Row lists equal, treating float NaN/None consistently and floats approximately."""
    assert len(rows_a) == len(rows_b), (rows_a, rows_b)
    for a, b in zip(rows_a, rows_b):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            if isinstance(x, float) and isinstance(y, float):
                assert x == pytest.approx(y), (a, b)
            else:
                assert x == y, (a, b)


def no_db_left(tmp_path, db):
    assert not db.exists()
    assert not os.path.exists(str(db) + ".tmp")
    assert not os.path.exists(str(db) + ".tmp.wal")


@pytest.fixture
def good(tmp_path):
    """Paths of a valid metrics / logs / events CSV trio."""
    return (write(tmp_path / "metrics.csv", METRICS), write(tmp_path / "logs.csv", LOGS),
            write(tmp_path / "events.csv", EVENTS))


# ----------------------------------------------------------------------------- formats

@pytest.mark.parametrize("ext", ["csv", "csv.gz", "tsv", "tsv.gz", "parquet", "ndjson",
                                 "jsonl.gz", "json"])
def test_every_format_loads_the_same_data(tmp_path, ext):
    m = write(tmp_path / f"metrics.{ext}", METRICS)
    lg = write(tmp_path / f"logs.{ext}", LOGS)
    ev = write(tmp_path / f"events.{ext}", EVENTS)
    db = tmp_path / "incident.duckdb"
    s = load_sources(db, m, lg, ev)
    assert s == LoadSummary(db_path=str(db), metrics_rows=3,
                            metric_columns=["rps", "p95_ms", "error_rate", "cpu"], log_rows=3,
                            event_rows=2, start="2024-06-01T10:00:00Z",
                            end="2024-06-01T10:02:00Z",
                            log_columns=["error_kind", "endpoint", "latency_ms", "region",
                                         "trace_id"])
    same(dump(db, "metrics"), METRICS_EXPECTED)
    same(dump(db, "logs"), LOGS_EXPECTED)
    same(dump(db, "events"), EVENTS_EXPECTED)
    assert columns_of(db, "metrics") == [("ts", "TIMESTAMP")] + [
        (c, "DOUBLE") for c in ("rps", "p95_ms", "error_rate", "cpu")]
    assert columns_of(db, "logs") == [
        ("ts", "TIMESTAMP"), ("service", "VARCHAR"), ("level", "VARCHAR"),
        ("message", "VARCHAR"), ("error_kind", "VARCHAR"), ("endpoint", "VARCHAR"),
        ("latency_ms", "DOUBLE"), ("region", "VARCHAR"), ("trace_id", "VARCHAR"),
        ("message_key", "UBIGINT"), ("pattern_id", "UINTEGER")]
    assert columns_of(db, "events") == [("ts", "TIMESTAMP"), ("service", "VARCHAR"),
                                        ("kind", "VARCHAR"), ("description", "VARCHAR")]
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["incident.duckdb", f"metrics.{ext}", f"logs.{ext}", f"events.{ext}"])


def test_loaded_db_opens_in_the_sandbox(tmp_path, good):
    db = tmp_path / "incident.duckdb"
    load_sources(db, *good)
    r = run_sql(db, "SELECT level, count(*) FROM logs GROUP BY level ORDER BY level")
    assert r.rows == [("ERROR", 1), ("INFO", 1), ("WARN", 1)]
    con = connect_readonly(db)
    assert con.execute("SELECT count(*) FROM metrics").fetchone() == (3,)
    con.close()


def test_json_array_file_and_late_optional_key(tmp_path):
    """A key first seen after DuckDB's schema sample (error_kind on one late record) is kept."""
    rows = [{"ts": 1717236000 + i, "service": "s", "level": "INFO", "message": f"m{i}"}
            for i in range(25000)]
    rows[-1] = dict(rows[-1], level="ERROR", error_kind="Boom")
    lg = write(tmp_path / "logs.ndjson", rows)
    m = tmp_path / "metrics.json"
    m.write_text(json.dumps([{"ts": "2024-06-01T10:00:00Z", "rps": 1}]))  # a JSON array
    db = tmp_path / "x.duckdb"
    s = load_sources(db, m, lg)
    assert s.log_rows == 25000 and s.log_columns == ["error_kind"]
    assert run_sql(db, "SELECT ts, error_kind FROM logs WHERE error_kind IS NOT NULL").rows == [
        ("2024-06-01T16:56:39", "Boom")]


# ----------------------------------------------------------------------------- normalisation

def test_timestamp_forms_normalise_to_the_same_utc_instant(tmp_path):
    forms = ["2024-06-01T10:00:00Z", "2024-06-01T12:00:00+02:00", "2024-06-01T05:00:00-05:00",
             "2024-06-01 10:00:00", "2024-06-01T10:00:00", "2024-06-01T15:30:00+0530",
             "1717236000", "1717236000000", "1717236000.0", " 2024-06-01T10:00:00.000Z "]
    logs = [{"ts": f, "service": "s", "level": "INFO", "message": f} for f in forms]
    metrics = [{"ts": 1717236000000 + 60000 * i, "rps": i} for i in range(3)]  # epoch ms
    db = tmp_path / "x.duckdb"
    load_sources(db, write(tmp_path / "m.ndjson", metrics), write(tmp_path / "l.csv", logs))
    got = {msg: ts for ts, msg in
           ((r[0], r[3]) for r in dump(db, "logs"))}
    assert got == {f: datetime(2024, 6, 1, 10, 0) for f in forms}
    assert [r[0] for r in dump(db, "metrics")] == [
        datetime(2024, 6, 1, 10, 0), datetime(2024, 6, 1, 10, 1), datetime(2024, 6, 1, 10, 2)]


def test_parquet_native_and_epoch_timestamps(tmp_path):
    aware = [datetime(2024, 6, 1, 12, 0, tzinfo=UTC)]
    pq.write_table(pa.table({"ts": pa.array([1717236000000], pa.int64()),
                             "rps": pa.array([5], pa.int32())}), tmp_path / "m.parquet")
    pq.write_table(pa.table({
        "ts": pa.array([datetime(2024, 6, 1, 10, 0)], pa.timestamp("ns")),  # naive = UTC
        "service": ["s"], "level": ["warning"], "message": ["x"]}), tmp_path / "l.parquet")
    pq.write_table(pa.table({"ts": pa.array(aware, pa.timestamp("us", tz="Europe/Paris")),
                             "service": ["s"], "kind": ["deploy"], "description": ["d"]}),
                   tmp_path / "e.parquet")
    db = tmp_path / "x.duckdb"
    load_sources(db, tmp_path / "m.parquet", tmp_path / "l.parquet", tmp_path / "e.parquet")
    assert dump(db, "metrics") == [(datetime(2024, 6, 1, 10, 0), 5.0)]
    assert dump(db, "logs")[0][:3] == (datetime(2024, 6, 1, 10, 0), "s", "WARN")
    assert dump(db, "events") == [(datetime(2024, 6, 1, 12, 0), "s", "deploy", "d")]


def test_level_normalisation(tmp_path):
    levels = {"warning": "WARN", "WARN": "WARN", "err": "ERROR", "Error": "ERROR",
              "FATAL": "ERROR", "critical": "ERROR", "crit": "ERROR", "emerg": "ERROR",
              "alert": "ERROR", "debug": "DEBUG", "info": "INFO", "TRACE": "TRACE",
              " Info ": "INFO", "notice": "NOTICE", "": None}
    logs = [{"ts": 1717236000 + i, "service": "s", "level": lv, "message": f"m{i}"}
            for i, lv in enumerate(levels)]
    db = tmp_path / "x.duckdb"
    load_sources(db, write(tmp_path / "m.csv", METRICS), write(tmp_path / "l.csv", logs))
    assert [r[2] for r in dump(db, "logs")] == list(levels.values())


def test_missing_optional_columns_become_null(tmp_path):
    logs = [{k: r[k] for k in ("ts", "service", "level", "message")} for r in LOGS]
    db = tmp_path / "x.duckdb"
    s = load_sources(db, write(tmp_path / "m.csv", METRICS), write(tmp_path / "l.csv", logs))
    assert s.log_columns == []
    assert [c for c, _ in columns_of(db, "logs")] == LOG_COLUMNS
    assert all(r[4:] == (None,) * 5 for r in dump(db, "logs"))
    partial = [dict(r, endpoint="/x") for r in logs]
    s = load_sources(db, write(tmp_path / "m.csv", METRICS),
                     write(tmp_path / "l2.ndjson", partial))
    assert s.log_columns == ["endpoint"]
    assert {r[5] for r in dump(db, "logs")} == {"/x"}


def test_empty_error_kind_becomes_null(tmp_path):
    rows = [dict(LOGS[0], error_kind=v, ts=f"2024-06-01T10:00:0{i}Z")
            for i, v in enumerate(["", "  ", None, "Timeout"])]
    for name in ("l.csv", "l.ndjson"):
        db = tmp_path / f"{name}.duckdb"
        load_sources(db, write(tmp_path / "m.csv", METRICS), write(tmp_path / name, rows))
        assert [r[4] for r in dump(db, "logs")] == [None, None, None, "Timeout"]
    # quoted empty string in CSV too
    p = tmp_path / "q.csv"
    p.write_text('ts,service,level,message,error_kind\n2024-06-01T10:00:00Z,s,INFO,m,""\n')
    db = tmp_path / "q.duckdb"
    load_sources(db, write(tmp_path / "m.csv", METRICS), p)
    assert dump(db, "logs")[0][4] is None


def test_duplicate_and_unsorted_metric_timestamps(tmp_path):
    rows = [{"ts": t, "rps": v} for t, v in [
        ("2024-06-01T10:05:00Z", 5), ("2024-06-01T10:00:00Z", 1), ("2024-06-01T10:05:00Z", 7),
        ("2024-06-01T12:00:00+02:00", 3), ("2024-06-01T10:03:00Z", None)]]
    db = tmp_path / "x.duckdb"
    s = load_sources(db, write(tmp_path / "m.csv", rows), write(tmp_path / "l.csv", LOGS))
    assert dump(db, "metrics") == [(datetime(2024, 6, 1, 10, 0), 2.0),
                                   (datetime(2024, 6, 1, 10, 3), None),
                                   (datetime(2024, 6, 1, 10, 5), 6.0)]
    assert (s.metrics_rows, s.start, s.end) == (3, "2024-06-01T10:00:00Z", "2024-06-01T10:05:00Z")


def test_metric_column_names_and_empty_columns(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("TS,RPS,P95 (ms),queue_depth,notes\n"
                 "2024-06-01T10:00:00Z,1,2,3,\n2024-06-01T10:01:00Z,4,nan,6,\n")
    db = tmp_path / "x.duckdb"
    s = load_sources(db, p, write(tmp_path / "l.csv", LOGS))
    assert s.metric_columns == ["rps", "p95_ms", "queue_depth"]  # all-empty 'notes' dropped
    assert dump(db, "metrics") == [(datetime(2024, 6, 1, 10, 0), 1.0, 2.0, 3.0),
                                   (datetime(2024, 6, 1, 10, 1), 4.0, None, 6.0)]


def test_events_optional_or_empty(tmp_path, good):
    m, lg, _ = good
    db = tmp_path / "x.duckdb"
    assert load_sources(db, m, lg).event_rows == 0
    assert columns_of(db, "events") == [("ts", "TIMESTAMP"), ("service", "VARCHAR"),
                                        ("kind", "VARCHAR"), ("description", "VARCHAR")]
    header_only = tmp_path / "e.csv"
    header_only.write_text("ts,service,kind,description\n")
    assert load_sources(db, m, lg, header_only).event_rows == 0
    empty = tmp_path / "e.ndjson"
    empty.write_text("")
    assert load_sources(db, m, lg, empty).event_rows == 0
    assert dump(db, "events") == []


# ----------------------------------------------------------------------------- errors

def _expect_error(tmp_path, m, lg, ev=None, *, file, column=None, contains=()):
    db = tmp_path / "incident.duckdb"
    with pytest.raises(InputError) as info:
        load_sources(db, m, lg, ev)
    err = info.value
    text = str(err)
    assert os.path.basename(str(file)) in text and err.file == str(file)
    if column is not None:
        assert f"column '{column}'" in text and err.column == column
    for part in contains:
        assert part in text, text
    no_db_left(tmp_path, db)
    return err


def test_error_missing_file(tmp_path, good):
    m, lg, ev = good
    missing = str(tmp_path / "nope.csv")
    _expect_error(tmp_path, missing, lg, file=missing, contains=["not found"])
    _expect_error(tmp_path, m, lg, missing, file=missing, contains=["not found"])


def test_error_empty_file(tmp_path, good):
    m, _, _ = good
    empty = tmp_path / "logs.ndjson"
    empty.write_text("")
    _expect_error(tmp_path, m, str(empty), file=str(empty), contains=["empty (0 bytes)"])
    blank = tmp_path / "logs.jsonl"
    blank.write_text("\n\n")
    _expect_error(tmp_path, m, str(blank), file=str(blank), contains=["no JSON records"])


def test_error_header_only(tmp_path, good):
    m, lg, _ = good
    hm = tmp_path / "hm.csv"
    hm.write_text("ts,rps\n")
    _expect_error(tmp_path, str(hm), lg, file=str(hm), contains=["no data rows"])
    hl = tmp_path / "hl.tsv"
    hl.write_text("ts\tservice\tlevel\tmessage\n")
    _expect_error(tmp_path, m, str(hl), file=str(hl), contains=["no data rows"])


def test_error_unknown_extension(tmp_path, good):
    _, lg, _ = good
    x = tmp_path / "metrics.xlsx"
    x.write_text("whatever")
    _expect_error(tmp_path, str(x), lg, file=str(x),
                  contains=["unsupported", ".csv", ".parquet", ".ndjson", ".csv.gz"])
    assert ".jsonl" in ACCEPTED_EXTENSIONS


def test_error_missing_required_column_with_hint(tmp_path, good):
    m, lg, _ = good
    p = write(tmp_path / "m_ts.csv", [{"timestamp": r["ts"], "rps": r["rps"]} for r in METRICS])
    err = _expect_error(tmp_path, p, lg, file=p, column="ts",
                        contains=["missing required column ts", "timestamp, rps",
                                  "did you mean ts?"])
    assert err.message.startswith("missing")
    p = write(tmp_path / "logs.ndjson", [{("time" if k == "ts" else k): v for k, v in r.items()}
                                          for r in LOGS])
    _expect_error(tmp_path, m, p, file=p, column="ts", contains=["'time'", "did you mean ts?"])
    p = write(tmp_path / "logs2.csv", [{"ts": r["ts"], "severity": r["level"]} for r in LOGS])
    _expect_error(tmp_path, m, p, file=p, column="service",
                  contains=["service, level, message", "'severity': did you mean level?"])
    p = tmp_path / "semi.csv"
    p.write_text("ts;rps\n2024-06-01T10:00:00Z;1\n")
    _expect_error(tmp_path, str(p), lg, file=str(p), column="ts", contains=["';'-separated"])
    ev = write(tmp_path / "bad_events.csv", [{"ts": r["ts"], "service": r["service"],
                                          "type": r["kind"]} for r in EVENTS])
    _expect_error(tmp_path, m, lg, ev, file=ev, column="kind",
                  contains=["kind, description", "did you mean kind?"])


def test_error_unparseable_timestamp(tmp_path, good):
    m, lg, _ = good
    rows = [dict(r) for r in METRICS]
    rows[2]["ts"] = "yesterday at noon"
    p = write(tmp_path / "bad_metrics.csv", rows)
    _expect_error(tmp_path, p, lg, file=p, column="ts",
                  contains=["data row 3", "'yesterday at noon'"])
    logs = [dict(r) for r in LOGS]
    logs[1]["ts"] = "2024-13-45T99:00:00Z"
    p = write(tmp_path / "logs.jsonl.gz", logs)
    _expect_error(tmp_path, m, p, file=p, column="ts", contains=["data row 2", "2024-13-45"])
    logs[1]["ts"] = ""
    p = write(tmp_path / "bad_logs.csv", logs)
    _expect_error(tmp_path, m, p, file=p, column="ts", contains=["empty timestamp", "data row 2"])


def test_error_non_numeric_metric(tmp_path, good):
    _, lg, _ = good
    rows = [dict(r) for r in METRICS]
    rows[1]["p95_ms"] = "fast"
    p = write(tmp_path / "bad_metrics.csv", rows)
    _expect_error(tmp_path, p, lg, file=p, column="p95_ms",
                  contains=["non-numeric", "data row 2", "'fast'"])
    p = write(tmp_path / "metrics2.parquet",
              [{"ts": r["ts"], "rps": r["rps"], "host": "web-1"} for r in METRICS])
    _expect_error(tmp_path, p, lg, file=p, column="host", contains=["'web-1'"])
    only_ts = tmp_path / "m3.csv"
    only_ts.write_text("ts,empty\n2024-06-01T10:00:00Z,\n")
    _expect_error(tmp_path, str(only_ts), lg, file=str(only_ts), contains=["no metric column"])


def test_error_message_format_and_pickle(tmp_path):
    e = InputError("a/m.csv", "bad", column="rps")
    assert str(e) == "a/m.csv: column 'rps': bad" and (e.file, e.column) == ("a/m.csv", "rps")
    assert str(InputError(tmp_path / "x.csv", "gone")) == f"{tmp_path / 'x.csv'}: gone"
    e2 = pickle.loads(pickle.dumps(e))
    assert str(e2) == str(e) and e2.column == "rps"
    assert isinstance(e, ValueError)


def test_failed_load_keeps_previous_good_db(tmp_path, good):
    m, lg, ev = good
    db = tmp_path / "incident.duckdb"
    load_sources(db, m, lg, ev)
    before = dump(db, "logs")
    bad = [dict(r) for r in LOGS]
    bad[2]["ts"] = "not a time"
    bad_path = write(tmp_path / "bad_logs.csv", bad)
    with pytest.raises(InputError, match="bad_logs.csv"):
        load_sources(db, m, bad_path, ev)
    assert dump(db, "logs") == before
    assert dump(db, "events") == EVENTS_EXPECTED
    assert not os.path.exists(str(db) + ".tmp")
    # and a good re-load replaces the content
    load_sources(db, m, write(tmp_path / "one.csv", LOGS[:1]))
    assert len(dump(db, "logs")) == 1 and dump(db, "events") == []


def test_stale_tmp_file_is_ignored(tmp_path, good):
    db = tmp_path / "incident.duckdb"
    (tmp_path / "incident.duckdb.tmp").write_bytes(b"garbage from a crashed run")
    assert load_sources(db, *good).log_rows == 3
    assert not os.path.exists(str(db) + ".tmp")


def test_big_logs_sorted_by_ts_with_file_order_among_equal_ts(tmp_path):
    """Across several row groups and parallel reading: a sorted file stays in file order, and a
    file with lines out of order is sorted with ties kept in file order."""
    n = 300_000  # > 2 DuckDB row groups (122,880 rows)

    def ts_of(i: int) -> int:  # three lines per second; two lines far out of place
        return {150_000: 5, 250_001: 10}.get(i, i // 3)

    for name, swapped in (("sorted.csv", False), ("unsorted.csv", True)):
        path = tmp_path / name
        offsets = "CASE i WHEN 150000 THEN 5 WHEN 250001 THEN 10 ELSE i // 3 END" if swapped else "i // 3"
        duckdb.execute(f"""COPY (SELECT to_timestamp(1717236000 + {offsets}) AS ts, 's' AS service,
                           'INFO' AS level, 'm' || i AS message FROM range({n}) AS t(i))
                           TO '{path}' (FORMAT csv, HEADER true)""")
        db = tmp_path / f"{name}.duckdb"
        load_sources(db, write(tmp_path / "m.csv", METRICS), path)
        con = duckdb.connect(str(db), read_only=True)
        got = [int(m[1:]) for (m,) in con.execute("SELECT message FROM logs").fetchall()]
        con.close()
        key = (lambda i: (ts_of(i), i)) if swapped else (lambda i: (i // 3, i))
        assert got == sorted(range(n), key=key)


def test_message_key_names_the_texts(tmp_path):
    """Lines share a message_key exactly when their service, message, level and error_kind
    are equal: tools.logscan.index_patterns groups by it instead of the text."""
    logs = [dict(r) for r in LOGS] + [dict(LOGS[0], ts="2024-06-01T10:00:09Z", trace_id="t9")]
    db = tmp_path / "x.duckdb"
    load_sources(db, write(tmp_path / "m.csv", METRICS), write(tmp_path / "l.csv", logs))
    con = duckdb.connect(str(db), read_only=True)
    try:
        keys, texts, lines = con.execute(
            "SELECT count(DISTINCT message_key), count(DISTINCT (service, message, level, error_kind)), "
            "count(*) FROM logs").fetchone()
    finally:
        con.close()
    assert lines == len(logs) and keys == texts == len(LOGS)


def test_pattern_id_names_the_masked_problem_messages(tmp_path):
    """WARN and ERROR lines share a pattern_id exactly when their service, masked message, level
    and error_kind are equal, and log_patterns holds that masked message; other lines have none."""
    from tools.templates import mask_message

    logs = [dict(r) for r in LOGS] + [
        dict(LOGS[1], ts="2024-06-01T10:00:07Z", message="slow 1200 ms on /api/v2"),
        dict(LOGS[1], ts="2024-06-01T10:00:08Z", message="slow 35 ms on /api/v2"),
        dict(LOGS[1], ts="2024-06-01T10:00:09Z", message="slow 35 ms on /api/v3"),
        dict(LOGS[0], ts="2024-06-01T10:00:10Z", message="ok 7")]
    db = tmp_path / "x.duckdb"
    load_sources(db, write(tmp_path / "m.csv", METRICS), write(tmp_path / "l.csv", logs))
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("SELECT l.service, l.message, l.level, l.error_kind, l.pattern_id, p.masked "
                           "FROM logs l LEFT JOIN log_patterns p USING (pattern_id)").fetchall()
    finally:
        con.close()
    problems = [r for r in rows if r[2] in ("WARN", "ERROR")]
    assert len(problems) == 5 and all(r[4] is None for r in rows if r not in problems)
    assert all(r[5] == mask_message(r[1]) for r in problems)
    groups = {r[4]: (r[0], r[5], r[2], r[3]) for r in problems}
    assert len(groups) == len(set(groups.values())) == len({(r[0], r[5], r[2], r[3]) for r in problems})
    assert {r[5] for r in problems} >= {"slow <NUM> ms on /api/v2", "slow <NUM> ms on /api/v3"}
