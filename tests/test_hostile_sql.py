"""Hostile SQL against the sandbox: a catalogue of attacks, each refused or shown harmless.

The target is what the model really queries: an investigation database built by the real
loader from a generated scenario. Every entry of CATALOGUE is one test (its id is the pytest
id); `len(CATALOGUE)` is the "hostile queries tried" number the README quotes, and a green run
means every one of them held. After each query the database file must be byte-for-byte
unchanged (sha256), every table must still hold all its rows, no file may have appeared next
to the database or in the directories the query tried to write to, and no query process may
be left running.

Outcomes:
- refused: run_sql's statement check raised SqlRejected before anything ran.
- blocked: DuckDB's own lock-down (read-only file, external access off, configuration locked,
  memory bounds) raised SqlExecutionError while running an accepted SELECT.
- stopped: a runaway query raised SqlTimeout or an out-of-memory SqlExecutionError within
  the time limit + 2 s.
- harmless: it ran, and its result shows it could not do harm (each entry says why).

Entries marked `direct` are also sent straight to a `connect_readonly` connection, bypassing
the statement check, and must fail there too: the lock-down holds without the string filter.

Decisions recorded here:
- TEMP tables/views are refused by the statement check. DuckDB itself allows them on a
  read-only connection (test_temp_table_on_a_direct_connection_stays_in_memory): they live
  in that connection's in-memory catalog, vanish when it closes (each query runs in its own
  process) and never touch the file.
- Settings are readable (current_setting, duckdb_settings): they show the lock-down and the
  database's own paths, no secrets. Environment variables are not reachable: getenv does not
  exist in embedded DuckDB.
- The database file itself and its spill directory are on DuckDB's allow list (it must open
  them): read_blob of the database returns bytes of data the tables already expose.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import psutil
import pytest

from tools.loader import load_sources
from tools.sql_sandbox import (
    MAX_SQL_CHARS,
    SqlExecutionError,
    SqlRejected,
    SqlResult,
    SqlTimeout,
    connect_readonly,
    run_sql,
)

MAX_ROWS = 200
TIME_LIMIT_S = 2.0  # for the runaway queries; the bound checked is TIME_LIMIT_S + 2 s


@dataclass(frozen=True)
class Loaded:
    db: Path
    secret: Path  # real files outside the sandbox: a failure cannot be "file not found"
    out: Path  # where write attempts point; must stay empty
    counts: dict[str, int]


@dataclass(frozen=True)
class Hostile:
    id: str
    sql: str  # {db}, {secret}, {out} are filled in from Loaded
    expect: str  # refused | blocked | stopped | harmless
    match: str = ""  # regex the error message must contain (not for harmless)
    direct: bool = False  # DuckDB itself must refuse it too, without the statement check
    check: Callable[[SqlResult, Loaded], None] | None = None  # harmless: why it is harmless
    timeout_s: float = 5.0


def _rows_equal(expected):
    def check(result: SqlResult, loaded: Loaded) -> None:
        assert result.rows == (expected(loaded) if callable(expected) else expected)
    return check


def _capped(result: SqlResult, loaded: Loaded) -> None:
    assert result.row_count == MAX_ROWS == len(result.rows) and result.truncated is True


def _own_database_bytes(result: SqlResult, loaded: Loaded) -> None:
    (path, content, *_), = result.rows
    assert path == str(loaded.db)
    assert base64.b64decode(content)[8:12] == b"DUCK"  # the database's own header, nothing else


def _own_paths_only(result: SqlResult, loaded: Loaded) -> None:
    assert dict(result.rows) == {"temp_directory": f"{loaded.db}.sqltmp",
                                 "enable_external_access": "false", "lock_configuration": "true"}


PERMISSION = "disabled by configuration"
NOT_SELECT = "is not allowed: only SELECT"
OUT_OF_MEMORY = "Out of Memory|out of memory"

CATALOGUE: list[Hostile] = [
    # ---- reading files and the network
    Hostile("read_csv-etc-passwd", "SELECT * FROM read_csv('/etc/passwd')", "blocked", PERMISSION, direct=True),
    Hostile("read_csv_auto-etc-passwd", "SELECT * FROM read_csv_auto('/etc/passwd')", "blocked", PERMISSION, direct=True),
    Hostile("read_text-etc-passwd", "SELECT * FROM read_text('/etc/passwd')", "blocked", PERMISSION, direct=True),
    Hostile("read_blob-etc-passwd", "SELECT * FROM read_blob('/etc/passwd')", "blocked", PERMISSION, direct=True),
    Hostile("replacement-scan-path", "SELECT * FROM '/etc/passwd'", "blocked", "does not exist", direct=True),
    Hostile("replacement-scan-csv", "SELECT * FROM '{secret}/secret.csv'", "blocked", PERMISSION, direct=True),
    Hostile("sniff_csv", "SELECT * FROM sniff_csv('/etc/passwd')", "blocked", PERMISSION, direct=True),
    Hostile("read_csv-real-file", "SELECT * FROM read_csv('{secret}/secret.csv')", "blocked", PERMISSION, direct=True),
    Hostile("read_parquet-real-file", "SELECT * FROM read_parquet('{secret}/secret.parquet')", "blocked", PERMISSION, direct=True),
    Hostile("parquet_metadata", "SELECT * FROM parquet_metadata('{secret}/secret.parquet')", "blocked", PERMISSION, direct=True),
    Hostile("read_json_objects", "SELECT * FROM read_json_objects('{secret}/secret.csv')", "blocked", PERMISSION, direct=True),
    Hostile("glob-root", "SELECT * FROM glob('/*')", "blocked", PERMISSION, direct=True),
    Hostile("glob-relative", "SELECT * FROM glob('*')", "blocked", PERMISSION, direct=True),
    Hostile("glob-secret-dir", "SELECT * FROM glob('{secret}/*')", "blocked", PERMISSION, direct=True),
    Hostile("cte-reads-file", "WITH f AS (SELECT * FROM read_csv('{secret}/secret.csv')) SELECT * FROM f", "blocked", PERMISSION, direct=True),
    Hostile("subquery-reads-file",
            "SELECT count(*) FROM logs WHERE message IN (SELECT content FROM read_text('/etc/passwd'))",
            "blocked", PERMISSION, direct=True),
    Hostile("view-reads-file", "CREATE VIEW v AS SELECT * FROM read_csv('{secret}/secret.csv')", "refused", "CREATE", direct=True),
    Hostile("temp-view-reads-file", "CREATE TEMP VIEW v AS SELECT * FROM read_csv('{secret}/secret.csv')", "refused", "CREATE"),
    Hostile("query-function-reads-file", "SELECT * FROM query('SELECT * FROM read_csv(''/etc/passwd'')')", "blocked", PERMISSION, direct=True),
    Hostile("traversal-via-spill-dir", "SELECT * FROM read_text('{db}.sqltmp/../../secret/secret.csv')", "blocked", PERMISSION, direct=True),
    Hostile("file-url", "SELECT * FROM read_text('file:///etc/passwd')", "blocked", PERMISSION, direct=True),
    Hostile("http-url", "SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')", "blocked", PERMISSION, direct=True),
    Hostile("s3-url", "SELECT * FROM read_parquet('s3://bucket/x.parquet')", "blocked", PERMISSION, direct=True),
    Hostile("own-database-file", "SELECT * FROM read_blob('{db}')", "harmless", check=_own_database_bytes),
    Hostile("own-spill-dir", "SELECT * FROM glob('{db}.sqltmp/*')", "harmless", check=_rows_equal([])),
    # ---- writing
    Hostile("copy-table-to-csv", "COPY logs TO '{out}/logs.csv'", "refused", "COPY", direct=True),
    Hostile("copy-query-to-parquet", "COPY (SELECT * FROM logs) TO '{out}/q.parquet' (FORMAT parquet)", "refused", "COPY", direct=True),
    Hostile("export-database", "EXPORT DATABASE '{out}/export'", "refused", "EXPORT", direct=True),
    Hostile("import-database", "IMPORT DATABASE '{secret}'", "refused", "PRAGMA", direct=True),
    Hostile("create-table", "CREATE TABLE x AS SELECT 1 AS a", "refused", "CREATE", direct=True),
    Hostile("create-temp-table", "CREATE TEMP TABLE x AS SELECT 1 AS a", "refused", "CREATE"),
    Hostile("create-macro", "CREATE MACRO m() AS 1", "refused", "CREATE"),
    Hostile("create-secret", "CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 's')", "refused", "CREATE"),
    Hostile("insert", "INSERT INTO logs (message) VALUES ('x')", "refused", "INSERT", direct=True),
    Hostile("update", "UPDATE logs SET level = 'INFO'", "refused", "UPDATE", direct=True),
    Hostile("delete", "DELETE FROM logs", "refused", "DELETE", direct=True),
    Hostile("truncate", "TRUNCATE logs", "refused", "DELETE", direct=True),
    Hostile("merge-into", "MERGE INTO events USING events s ON false WHEN NOT MATCHED THEN INSERT VALUES (s.ts, s.service, s.kind, s.description)",
            "refused", "MERGE_INTO", direct=True),
    Hostile("drop-table", "DROP TABLE logs", "refused", "DROP", direct=True),
    Hostile("alter-table", "ALTER TABLE logs ADD COLUMN x INT", "refused", "ALTER", direct=True),
    Hostile("comment-on", "COMMENT ON TABLE logs IS 'x'", "refused", "ALTER", direct=True),
    Hostile("cte-delete", "WITH gone AS (DELETE FROM logs RETURNING *) SELECT count(*) FROM gone",
            "blocked", "read-only", direct=True),  # parses as a SELECT: DuckDB's read-only mode stops it
    # ---- other databases
    Hostile("attach-path", "ATTACH '{out}/other.duckdb' AS other", "refused", "ATTACH", direct=True),
    Hostile("attach-memory", "ATTACH ':memory:' AS mem", "refused", "ATTACH"),
    Hostile("attach-secret-file", "ATTACH '{secret}/secret.csv' AS s", "refused", "ATTACH", direct=True),
    Hostile("detach", "DETACH t_hostile", "refused", "DETACH"),
    Hostile("use", "USE memory", "refused", "SET"),
    # ---- extensions
    Hostile("install-httpfs", "INSTALL httpfs", "refused", "LOAD", direct=True),
    Hostile("force-install-from-url", "FORCE INSTALL httpfs FROM 'http://127.0.0.1:9'", "refused", "LOAD", direct=True),
    Hostile("load-httpfs", "LOAD httpfs", "refused", "LOAD", direct=True),
    Hostile("load-extension-file", "LOAD '{secret}/evil.duckdb_extension'", "refused", "LOAD", direct=True),
    Hostile("update-extensions", "UPDATE EXTENSIONS", "refused", "UNKNOWN"),
    Hostile("autoload-by-function", "SELECT * FROM sqlite_scan('{secret}/x.db', 't')", "blocked", "sqlite_scan", direct=True),
    # ---- undoing the lock-down
    Hostile("set-external-access", "SET enable_external_access = true", "refused", "SET", direct=True),
    Hostile("set-global-external-access", "SET GLOBAL enable_external_access = true", "refused", "SET", direct=True),
    Hostile("set-lock-configuration", "SET lock_configuration = false", "refused", "SET", direct=True),
    Hostile("reset-external-access", "RESET enable_external_access", "refused", "SET", direct=True),
    Hostile("set-allowed-directories", "SET allowed_directories = ['/']", "refused", "SET", direct=True),
    Hostile("set-allowed-paths", "SET allowed_paths = ['/etc/passwd']", "refused", "SET", direct=True),
    Hostile("set-autoload", "SET autoload_known_extensions = true", "refused", "SET", direct=True),
    Hostile("set-max-memory", "SET max_memory = '64GB'", "refused", "SET", direct=True),
    Hostile("set-temp-directory", "SET temp_directory = '{out}'", "refused", "SET", direct=True),
    Hostile("set-threads", "SET threads = 64", "refused", "SET", direct=True),
    Hostile("pragma-enable-profiling", "PRAGMA enable_profiling", "refused", "PRAGMA"),
    Hostile("pragma-profile-output", "PRAGMA profiling_output = '{out}/profile.json'", "refused", "SET", direct=True),  # parsed as SET
    Hostile("pragma-database-size", "PRAGMA database_size", "refused", "PRAGMA"),
    Hostile("call", "CALL pragma_version()", "refused", "CALL"),
    Hostile("checkpoint", "CHECKPOINT", "refused", "CALL"),  # parsed as CALL checkpoint()
    Hostile("force-checkpoint-function", "SELECT * FROM force_checkpoint()", "blocked", "CHECKPOINT", direct=True),
    Hostile("checkpoint-function", "SELECT * FROM checkpoint()", "harmless", check=_rows_equal([])),  # a no-op on a read-only file
    Hostile("vacuum", "VACUUM", "refused", "VACUUM"),
    Hostile("analyze", "ANALYZE", "refused", "VACUUM"),
    Hostile("begin-transaction", "BEGIN TRANSACTION", "refused", "TRANSACTION"),
    Hostile("prepare", "PREPARE p AS SELECT 1", "refused", "PREPARE"),
    Hostile("execute", "EXECUTE p", "refused", "EXECUTE"),
    Hostile("explain", "EXPLAIN SELECT 1", "refused", "EXPLAIN"),
    Hostile("explain-analyze", "EXPLAIN ANALYZE SELECT count(*) FROM logs", "refused", "EXPLAIN"),
    Hostile("pivot-is-multi-statement", "PIVOT logs ON level USING count(*)", "refused", "MULTI"),
    Hostile("query-function-drops", "SELECT * FROM query('DROP TABLE logs')", "blocked", "", direct=True),
    # ---- several statements and comments
    Hostile("select-then-drop", "SELECT 1; DROP TABLE logs", "refused", r"2 statements found \(SELECT, DROP\)", direct=True),
    Hostile("select-then-copy", "SELECT 1; COPY logs TO '{out}/multi.csv'", "refused", "2 statements", direct=True),
    Hostile("two-selects", "SELECT * FROM logs; SELECT * FROM metrics", "refused", "2 statements"),
    Hostile("line-comment-then-drop", "SELECT 1 -- looks harmless\n; DROP TABLE logs", "refused", "2 statements", direct=True),
    Hostile("block-comment-then-set", "SELECT 1 /* ; */ ; SET enable_external_access = true", "refused", "2 statements", direct=True),
    Hostile("drop-commented-out", "SELECT 1 AS one; -- DROP TABLE logs", "harmless", check=_rows_equal([(1,)])),
    Hostile("drop-inside-block-comment", "SELECT /* ; DROP TABLE logs; */ count(*) FROM logs", "harmless",
            check=_rows_equal(lambda loaded: [(loaded.counts["logs"],)])),
    Hostile("drop-inside-string", "SELECT 'a; DROP TABLE logs' AS s", "harmless", check=_rows_equal([("a; DROP TABLE logs",)])),
    Hostile("empty", "", "refused", "empty"),
    Hostile("whitespace", "   \n ", "refused", "empty"),
    Hostile("comment-only", "-- only a comment", "refused", "empty"),
    Hostile("semicolon-only", ";", "refused", "empty"),
    Hostile("not-sql", "SELEC * FROM logs", "refused", "parse"),
    Hostile("overlong", "SELECT " + "1+" * (MAX_SQL_CHARS // 2) + "1", "refused", "characters long"),
    Hostile("deep-nesting", "SELECT " + "(" * 5000 + "1" + ")" * 5000, "refused", "expression depth"),
    # ---- what the query can learn about its host
    Hostile("getenv", "SELECT getenv('HOME')", "blocked", "getenv"),
    Hostile("secrets", "SELECT * FROM duckdb_secrets()", "blocked", ""),
    Hostile("extensions-dir", "SELECT * FROM duckdb_extensions()", "blocked", PERMISSION),
    Hostile("lock-down-visible", "SELECT current_setting('enable_external_access') AS ext, "
            "current_setting('lock_configuration') AS locked, current_setting('access_mode') AS mode",
            "harmless", check=_rows_equal([(False, True, "read_only")])),
    Hostile("settings-show-own-paths", "SELECT name, value FROM duckdb_settings() WHERE name IN "
            "('temp_directory', 'enable_external_access', 'lock_configuration')", "harmless", check=_own_paths_only),
    # ---- resources
    Hostile("self-join-2-billion-pairs", "SELECT count(*) FROM logs a, logs b WHERE a.message < b.message",
            "stopped", "time limit", timeout_s=TIME_LIMIT_S),
    Hostile("sort-spilling-to-disk", "SELECT count(*) FROM (SELECT * FROM range(300000000) t(i) ORDER BY hash(i))",
            "stopped", "time limit|memory", timeout_s=TIME_LIMIT_S),
    Hostile("millions-of-rows", "SELECT * FROM range(5000000)", "harmless", check=_capped),
    Hostile("logs-times-a-million", "SELECT * FROM logs, range(1000000)", "harmless", check=_capped),
    Hostile("huge-string", "SELECT repeat('x', 1000000000) AS s", "stopped", f"time limit|{OUT_OF_MEMORY}", timeout_s=TIME_LIMIT_S),
    Hostile("string-of-100-mb", "SELECT repeat('x', 100000000) AS s", "blocked", "limit is 16 MB"),
    Hostile("many-1-mb-cells", "SELECT repeat('x', 1000000) AS s FROM range(200)", "blocked", "limit is 16 MB"),
    Hostile("billion-element-list", "SELECT range(1000000000) AS l", "stopped", OUT_OF_MEMORY, timeout_s=TIME_LIMIT_S),
    Hostile("billion-element-list-aggregate", "SELECT list(i) FROM range(1000000000) t(i)", "stopped", OUT_OF_MEMORY, timeout_s=TIME_LIMIT_S),
    Hostile("string-agg-5-gb", "SELECT string_agg(repeat('x', 1000000), '') FROM range(5000)", "stopped", OUT_OF_MEMORY, timeout_s=TIME_LIMIT_S),
]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _table_counts(db: Path) -> dict[str, int]:
    con = connect_readonly(db)
    try:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()]
        return {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
    finally:
        con.close()


def _query_processes() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if "tools.sql_sandbox" in " ".join(p.cmdline())]


@pytest.fixture(scope="module")
def loaded(scenario_dir, tmp_path_factory) -> Loaded:
    case = scenario_dir("conn_pool_exhaustion", 11)
    root = tmp_path_factory.mktemp("hostile")
    db = root / "work" / "t_hostile.duckdb"  # the CLI's layout: <state>/work/<thread>.duckdb
    db.parent.mkdir()
    summary = load_sources(db, case / "metrics.csv", case / "logs.csv", case / "events.csv")
    secret, out = root / "secret", root / "out"
    secret.mkdir()
    out.mkdir()
    (secret / "secret.csv").write_text("user,password\nroot,hunter2\n")
    scratch = duckdb.connect()  # an ordinary, unlocked connection makes the Parquet bait
    scratch.execute(f"COPY (SELECT 'hunter2' AS password) TO '{secret / 'secret.parquet'}' (FORMAT parquet)")
    scratch.close()
    counts = _table_counts(db)
    assert {k: counts[k] for k in ("metrics", "logs", "events")} == {
        "metrics": summary.metrics_rows, "logs": summary.log_rows, "events": summary.event_rows}
    assert summary.log_rows > 40_000  # a self-join compares > 1.6 billion pairs: far past the time limit
    return Loaded(db=db, secret=secret, out=out, counts=counts)


@pytest.fixture
def intact(loaded):
    """Snapshot before the test; after it, the database and its surroundings are unchanged."""
    before = (_sha256(loaded.db), sorted(os.listdir(loaded.db.parent)), sorted(os.listdir(loaded.secret)))
    yield
    assert (_sha256(loaded.db), sorted(os.listdir(loaded.db.parent)), sorted(os.listdir(loaded.secret))) == before
    assert sorted(os.listdir(loaded.db.parent)) == [loaded.db.name]  # no WAL, no leftover spill files
    assert os.listdir(loaded.out) == []
    assert _table_counts(loaded.db) == loaded.counts
    assert _query_processes() == []


def _fill(sql: str, loaded: Loaded) -> str:
    return sql.format(db=loaded.db, secret=loaded.secret, out=loaded.out)


@pytest.mark.parametrize("case", CATALOGUE, ids=[h.id for h in CATALOGUE])
def test_hostile_query_is_refused_or_harmless(case: Hostile, loaded: Loaded, intact):
    sql = _fill(case.sql, loaded)
    started = time.monotonic()
    if case.expect == "harmless":
        result = run_sql(loaded.db, sql, timeout_s=case.timeout_s, max_rows=MAX_ROWS)
        case.check(result, loaded)
        return
    expected = {"refused": SqlRejected, "blocked": SqlExecutionError, "stopped": SqlExecutionError}[case.expect]
    with pytest.raises(expected) as info:
        run_sql(loaded.db, sql, timeout_s=case.timeout_s, max_rows=MAX_ROWS)
    elapsed = time.monotonic() - started
    message = str(info.value)
    assert message and re.search(case.match, message), message
    if case.expect == "blocked":
        assert not isinstance(info.value, SqlTimeout)
    if case.expect == "stopped":
        assert elapsed < case.timeout_s + 2.0, f"stopped after {elapsed:.2f} s"


DIRECT = [h for h in CATALOGUE if h.direct]


@pytest.mark.parametrize("case", DIRECT, ids=[h.id for h in DIRECT])
def test_duckdb_refuses_it_without_the_statement_check(case: Hostile, loaded: Loaded, intact):
    con = connect_readonly(loaded.db)
    try:
        with pytest.raises(duckdb.Error):
            con.execute(_fill(case.sql, loaded)).fetchall()
    finally:
        con.close()


def test_connection_is_locked_down(loaded, intact):
    con = connect_readonly(loaded.db)
    try:
        settings = dict(con.execute(
            "SELECT name, value FROM duckdb_settings() WHERE name IN ('enable_external_access', "
            "'lock_configuration', 'access_mode', 'autoload_known_extensions', "
            "'autoinstall_known_extensions', 'allow_community_extensions', 'threads', 'max_memory')").fetchall())
        assert settings == {"enable_external_access": "false", "lock_configuration": "true", "access_mode": "read_only",
                            "autoload_known_extensions": "false", "autoinstall_known_extensions": "false",
                            "allow_community_extensions": "false", "threads": "2", "max_memory": "953.6 MiB"}
        assert con.execute("SELECT current_setting('enable_external_access'), current_setting('lock_configuration')").fetchone() == (False, True)
        with pytest.raises(duckdb.Error, match="read-only"):
            con.execute("CREATE TABLE probe(a INT)")
        with pytest.raises(duckdb.Error, match="locked"):
            con.execute("SET enable_external_access = true")
    finally:
        con.close()


def test_temp_table_on_a_direct_connection_stays_in_memory(loaded, intact):
    """Why refusing TEMP tables is enough: DuckDB allows them on a read-only connection, but
    they live in that connection's memory only and are gone for the next one."""
    con = connect_readonly(loaded.db)
    try:
        con.execute("CREATE TEMP TABLE scratch AS SELECT * FROM logs LIMIT 5")
        assert con.execute("SELECT count(*) FROM scratch").fetchone() == (5,)
    finally:
        con.close()
    with pytest.raises(SqlExecutionError, match="scratch"):
        run_sql(loaded.db, "SELECT * FROM scratch")


def test_query_process_dies_with_a_killed_caller(loaded):
    """A CLI or server killed mid-query (SIGKILL: no cleanup runs) leaves no query running."""
    caller = psutil.Popen([sys.executable, "-c", (
        "from tools.sql_sandbox import run_sql; "
        f"run_sql({str(loaded.db)!r}, 'SELECT count(*) FROM logs a, logs b WHERE a.message < b.message', timeout_s=60)")],
        cwd=Path(__file__).resolve().parent.parent)
    try:
        deadline = time.monotonic() + 30
        while not (children := caller.children()):
            assert time.monotonic() < deadline and caller.poll() is None, "the query process never started"
            time.sleep(0.05)
        (query,) = children
        assert "tools.sql_sandbox" in " ".join(query.cmdline())
    finally:
        caller.kill()
        caller.wait()
    _, alive = psutil.wait_procs([query], timeout=5)
    assert alive == [], "the query process outlived its caller"
