"""The SQL sandbox: model-written SQL can read the investigation tables and nothing else."""
from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import duckdb
import psutil
import pytest

from tools.sql_sandbox import (
    KILL_GRACE_S,
    SqlExecutionError,
    SqlRejected,
    SqlResult,
    SqlTimeout,
    check_sql,
    connect_readonly,
    run_sql,
)

COUNTS = {"metrics": 60, "logs": 500, "events": 2}
# 12 KB of parentheses: DuckDB's parser spent 15-56 s and 4.6 GB on it
PARSER_BOMB = "SELECT * FROM " + "(" * 6000 + "logs" + ")" * 6000
# E'\'' is one quote to DuckDB but opens a string to the caller's nesting scan, so these
# brackets reach the query process (3,000 levels: seconds and GBs to parse)
HIDDEN_PARSER_BOMB = "SELECT E'\\'' AS q, * FROM " + "(" * 3000 + "logs" + ")" * 3000 + " WHERE 'x' = 'x'"


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """A small investigation database like the loader builds, made directly with DuckDB."""
    d = tmp_path_factory.mktemp("sandbox")
    path = d / "incident.duckdb"
    con = duckdb.connect(str(path))
    con.execute("""
        CREATE TABLE metrics AS
        SELECT TIMESTAMP '2024-06-01 10:00:00' + to_minutes(i) AS ts,
               100.0 + i AS rps, 200.0 + (i % 7) AS p95_ms, CASE WHEN i >= 40 THEN 0.2 ELSE 0.01 END
               AS error_rate
        FROM range(60) t(i)""")
    con.execute("""
        CREATE TABLE logs AS
        SELECT TIMESTAMP '2024-06-01 10:00:00' + to_seconds(i * 7) AS ts,
               'checkout' AS service,
               CASE WHEN i % 5 = 0 THEN 'ERROR' ELSE 'INFO' END AS level,
               'request ' || i AS message,
               CASE WHEN i % 5 = 0 THEN 'Timeout' END AS error_kind,
               '/pay' AS endpoint, (i % 50)::DOUBLE AS latency_ms,
               'eu-west-1' AS region, 'tr-' || i AS trace_id
        FROM range(500) t(i)""")
    con.execute("""
        CREATE TABLE events(ts TIMESTAMP, service VARCHAR, kind VARCHAR, description VARCHAR)""")
    con.execute("""INSERT INTO events VALUES
        ('2024-06-01 10:39:00', 'checkout', 'deploy', 'v2.3.1'),
        ('2024-06-01 10:50:00', 'checkout', 'config', 'pool size 10 -> 2')""")
    con.close()
    return path


# ----------------------------------------------------------------------------- normal use

def test_plain_select(db):
    r = run_sql(db, "SELECT ts, rps FROM metrics ORDER BY ts LIMIT 3")
    assert isinstance(r, SqlResult)
    assert r.columns == ["ts", "rps"]
    assert r.rows == [("2024-06-01T10:00:00", 100.0), ("2024-06-01T10:01:00", 101.0),
                      ("2024-06-01T10:02:00", 102.0)]
    assert r.row_count == 3 and r.truncated is False and r.elapsed_ms >= 0


def test_aggregate_over_logs(db):
    r = run_sql(db, """
        SELECT level, error_kind, count(*) AS n, max(latency_ms) AS worst
        FROM logs GROUP BY ALL ORDER BY level""")
    assert r.columns == ["level", "error_kind", "n", "worst"]
    assert r.rows == [("ERROR", "Timeout", 100, 45.0), ("INFO", None, 400, 49.0)]


def test_with_select_and_other_select_forms(db):
    r = run_sql(db, """
        WITH errs AS (SELECT date_trunc('minute', ts) AS m, count(*) AS n FROM logs
                      WHERE level = 'ERROR' GROUP BY 1)
        SELECT e.ts, e.kind, (SELECT sum(n) FROM errs WHERE m >= e.ts) AS errors_after
        FROM events e ORDER BY e.ts""")
    assert r.row_count == 2 and r.rows[0][1] == "deploy"
    assert run_sql(db, "FROM events SELECT count(*)").rows == [(2,)]
    assert run_sql(db, "SELECT 1 AS a; ").rows == [(1,)]  # one statement, trailing semicolon
    assert {row[0] for row in run_sql(db, "SHOW TABLES").rows} == set(COUNTS)
    assert run_sql(db, "DESCRIBE metrics").row_count == 4


def test_values_are_json_friendly(db):
    r = run_sql(db, """
        SELECT TIMESTAMP '2024-06-01 10:00:00.5' AS t,
               TIMESTAMPTZ '2024-06-01 12:00:00+02' AS tz,
               DATE '2024-06-01' AS d, 1.25::DECIMAL(6, 2) AS dec,
               'NaN'::DOUBLE AS nan, INTERVAL 90 SECOND AS iv, [1, 2] AS l,
               {'a': TIMESTAMP '2024-01-01'} AS s, NULL AS n""")
    row = dict(zip(r.columns, r.rows[0]))
    assert row == {"t": "2024-06-01T10:00:00.500000", "tz": "2024-06-01T10:00:00",
                   "d": "2024-06-01", "dec": 1.25, "nan": None, "iv": 90.0, "l": [1, 2],
                   "s": {"a": "2024-01-01T00:00:00"}, "n": None}
    json.dumps(r.rows, allow_nan=False)


def test_row_cap_sets_truncated(db):
    r = run_sql(db, "SELECT * FROM range(5000000)", max_rows=200)
    assert r.row_count == 200 and len(r.rows) == 200 and r.truncated is True
    exact = run_sql(db, "SELECT * FROM range(10)", max_rows=10)
    assert exact.row_count == 10 and exact.truncated is False


def test_timeout_interrupts_runaway_query(db):
    start = time.monotonic()
    with pytest.raises(SqlTimeout, match="0.5 s"):
        run_sql(db, "SELECT count(*) FROM range(100000) a, range(100000) b", timeout_s=0.5)
    assert time.monotonic() - start < 3.0
    assert run_sql(db, "SELECT count(*) FROM logs").rows == [(500,)]  # still usable after


def test_execution_errors_are_reported(db):
    with pytest.raises(SqlExecutionError, match="no_such_column"):
        run_sql(db, "SELECT no_such_column FROM logs")
    with pytest.raises(SqlRejected, match="parse"):
        run_sql(db, "SELEC * FROM logs")


def test_check_sql_returns_the_select_or_refuses(db):
    assert check_sql("SELECT 1 AS a; ") == "SELECT 1 AS a;"
    with pytest.raises(SqlRejected, match="COPY inside the statement is not allowed"):
        check_sql("WITH x AS (COPY (SELECT 1 AS a) TO 'x.parquet' (FORMAT parquet)) SELECT 1")
    with pytest.raises(SqlRejected, match="DROP"):
        check_sql("DROP TABLE logs")


def test_caller_never_parses_model_sql(db):
    """A parser bomb costs the caller milliseconds of CPU and no memory: the caller measures
    the SQL (length, nesting) and leaves the parsing to the query process, which is bounded."""
    me = psutil.Process()
    for call in (lambda: run_sql(db, PARSER_BOMB), lambda: check_sql(PARSER_BOMB),
                 lambda: run_sql(db, HIDDEN_PARSER_BOMB, timeout_s=1.0)):
        rss, cpu, wall = me.memory_info().rss, time.thread_time(), time.monotonic()
        with pytest.raises(SqlRejected) as refused:
            call()
        cpu, wall = time.thread_time() - cpu, time.monotonic() - wall
        assert cpu < 0.5, f"the caller spent {cpu:.2f} s of CPU"
        assert me.memory_info().rss - rss < 100 * 1024**2
        if "levels deep" in str(refused.value):  # refused by the caller's scan: no query process
            assert wall < 0.5
        else:  # the query process parsed until the time limit (+ its start-up time)
            assert re.search("could not be parsed and checked within 1 s|does not parse", str(refused.value))
            assert wall < 1.0 + KILL_GRACE_S + 3.0, f"answered after {wall:.1f} s"


def test_sort_beyond_memory_fails_cleanly_without_spilling(db):
    """Query processes have no spill directory: a sort that fits in memory runs, a bigger one
    fails with a clear out-of-memory error, and no spill file is ever written."""
    ordered = "SELECT count(*) FROM (SELECT * FROM range({n}) t(i) ORDER BY hash(i))"
    assert run_sql(db, ordered.format(n=5_000_000), timeout_s=30).rows == [(5_000_000,)]
    with pytest.raises(SqlExecutionError, match="out of memory .*do not spill to disk"):
        run_sql(db, ordered.format(n=300_000_000), timeout_s=30)
    assert not Path(f"{db}.sqltmp").exists()


def test_max_memory_is_process_wide(db):
    assert run_sql(db, "SELECT 1", max_memory="1gb").rows == [(1,)]
    with pytest.raises(ValueError, match="fixed"):
        run_sql(db, "SELECT 1", max_memory="8GB")


def test_concurrent_use_from_threads(db):
    held = connect_readonly(db)  # a long-lived connection of another tool, same process
    results, errors = [], []

    def work():
        try:
            results.append(run_sql(db, "SELECT count(*) FROM logs WHERE level = 'ERROR'").rows)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert held.execute("SELECT count(*) FROM metrics").fetchone()[0] == 60
    held.close()
    assert errors == [] and results == [[(100,)]] * 6


def test_other_config_refused_while_sandbox_connection_open(db):
    """Why connect_readonly must be the only way to open the file: DuckDB caches one
    instance per file and refuses a connection with a different config."""
    con = connect_readonly(db)
    try:
        with pytest.raises(duckdb.Error, match="different configuration"):
            duckdb.connect(str(db), read_only=True)
    finally:
        con.close()


def test_missing_database_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        connect_readonly(tmp_path / "nope.duckdb")
    with pytest.raises(FileNotFoundError, match="nope.duckdb"):  # raised in the query process, re-raised here
        run_sql(tmp_path / "nope.duckdb", "SELECT 1")
    assert not (tmp_path / "nope.duckdb").exists()


# Hostile SQL (files, writes, ATTACH, extensions, SET, multi-statement, runaway queries) is
# the table-driven catalogue in tests/test_hostile_sql.py, over a database the real loader built.
