"""Hostile SQL against the sandbox: a catalogue of attacks, each refused or shown harmless.

The target is what the model really queries: an investigation database built by the real
loader from a generated scenario, with the logs an operator's Parquet dataset read in place
(the most exposed layout: DuckDB's allow list names those files). Every entry of CATALOGUE
is one test (its id is the pytest id); `len(CATALOGUE)` is the "hostile queries tried" number
the README quotes, and a green run means every one of them held. After each query the
database file and every Parquet source file must be byte-for-byte unchanged (sha256), every
table and view must still hold all its rows, no file may have appeared next to the database
(no WAL, no spill directory), in the dataset or in the directories the query tried to write
to, and no query process may be left running.

Outcomes:
- refused: SqlRejected before anything ran: the caller's size and nesting check, or the query
  process's statement check (statement type, then every node of the parse tree), including SQL
  it could not parse within the time limit.
- blocked: DuckDB's own lock-down (read-only file, external access off, configuration locked,
  memory bounds) raised SqlExecutionError while running an accepted SELECT.
- stopped: a runaway query raised SqlTimeout or an out-of-memory SqlExecutionError within
  the time limit + 2 s.
- harmless: it ran, and its result shows it could not do harm (each entry says why).

Entries marked `direct` are also sent straight to a `connect_readonly` connection in the test
process, bypassing the statement check, and must fail there too: DuckDB's lock-down holds
without the string filter in any process. Entries marked `confined` are sent straight to a
`connect_readonly` connection inside a process confined like a query process (no file-system
write rights, no spill directory), bypassing the statement check, and must fail there: that is
what stops a write into a file DuckDB's allow list names (an in-process connection, which runs
only trusted SQL, would let it through).

Decisions recorded here:
- TEMP tables/views are refused by the statement check. DuckDB itself allows them on a
  read-only connection (test_temp_table_on_a_direct_connection_stays_in_memory): they live
  in that connection's in-memory catalog, vanish when it closes (each query runs in its own
  process) and never touch the file.
- Settings are readable (current_setting, duckdb_settings): they show the lock-down (and that
  the query process has no temp_directory), no secrets. Environment variables are not reachable: getenv does not
  exist in embedded DuckDB.
- The database file itself is on DuckDB's allow list (it must open it): read_blob of the
  database returns bytes of data the tables already expose, and DuckDB refuses to COPY over it.
- The Parquet files of a dataset are on DuckDB's allow list for reading and, DuckDB having no
  read-only allow list, for writing: `WITH x AS (COPY ... TO '<file>' (USE_TMP_FILE false))
  SELECT 1` is typed SELECT and overwrote one. The statement check refuses every query node that
  is not a SELECT anywhere in the tree (CTE, subquery in FROM/WHERE/select list, set operation)
  and the functions that run SQL text (json_execute_serialized_sql ran a serialized COPY); the
  query process cannot write files at all (Landlock), which the `confined` entries show.
  Reading a source file directly is harmless: it is the data the logs view shows.
- Query processes have no spill directory (DuckDB lets SQL read and write its temp_directory):
  a sort or aggregate beyond the memory limit fails with a clean out-of-memory error, and a
  killed query leaves nothing behind, so there is nothing to clean on the next open.
- The caller never parses model SQL (DuckDB's parser took 15-56 s and 4.6 GB for 12 KB of
  nested parentheses): it refuses SQL over MAX_SQL_CHARS or nested deeper than MAX_NESTING_DEPTH
  in a linear scan, and brackets hidden from that scan (in an E'\\'' string) reach a query
  process, which refuses the SQL when parsing outlasts the time limit.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
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
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Loaded:
    db: Path
    dataset: Path  # the operator's Parquet logs, read in place by the logs view
    parquet: Path  # one file of it: on DuckDB's allow list
    secret: Path  # real files outside the sandbox: a failure cannot be "file not found"
    out: Path  # where write attempts point; must stay empty
    copy_json: str  # a WITH ... COPY over `parquet`, serialized by json_serialize_sql, quoted for SQL
    counts: dict[str, int]


@dataclass(frozen=True)
class Hostile:
    id: str
    sql: str  # {db}, {parquet}, {secret}, {out}, {copy_json} are filled in from Loaded
    expect: str  # refused | blocked | stopped | harmless
    match: str = ""  # regex the error message must contain (not for harmless)
    direct: bool = False  # DuckDB itself must refuse it too, without the statement check
    confined: bool = False  # ... and so must a confined process, without the statement check
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


def _no_spill_directory(result: SqlResult, loaded: Loaded) -> None:
    assert dict(result.rows) == {"temp_directory": "", "enable_external_access": "false", "lock_configuration": "true"}


def _with_copy(target: str, options: str = "FORMAT parquet, USE_TMP_FILE false") -> str:
    """A SELECT whose CTE writes `target` (USE_TMP_FILE false: in place, no temporary file beside it)."""
    return f"WITH x AS (COPY (SELECT 0 AS overwritten) TO '{target}' ({options})) SELECT 1"


# COPY over the Parquet source file, to hide in subqueries
COPY_OVER_SOURCE = "COPY (SELECT 0 AS overwritten) TO '{parquet}' (FORMAT parquet, USE_TMP_FILE false)"
PERMISSION = "disabled by configuration"
NOT_SELECT = "is not allowed: only SELECT"
INSIDE = "inside the statement is not allowed: only SELECT"
SQL_TEXT = r"\(\) is not allowed: it runs SQL given as text"
NOT_PARSED = "does not parse"
TOO_DEEP = "levels deep; the limit is"
OUT_OF_MEMORY = "Out of Memory|out of memory"
# A runaway allocation is stopped by whichever bound it meets first: the memory limit, or on a
# loaded machine (CI: the allocation itself runs slower) the time limit. Either one is the sandbox holding.
MEMORY_OR_TIME = f"{OUT_OF_MEMORY}|exceeded the time limit"
BOMB_LEVELS = 6000  # 12 KB of parentheses: 15-56 s and 4.6 GB in DuckDB's parser

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
    Hostile("glob-dataset-dir", "SELECT * FROM glob('{parquet}/../*')", "blocked", PERMISSION, direct=True),
    Hostile("cte-reads-file", "WITH f AS (SELECT * FROM read_csv('{secret}/secret.csv')) SELECT * FROM f", "blocked", PERMISSION, direct=True),
    Hostile("subquery-reads-file",
            "SELECT count(*) FROM logs WHERE message IN (SELECT content FROM read_text('/etc/passwd'))",
            "blocked", PERMISSION, direct=True),
    Hostile("view-reads-file", "CREATE VIEW v AS SELECT * FROM read_csv('{secret}/secret.csv')", "refused", "CREATE", direct=True),
    Hostile("temp-view-reads-file", "CREATE TEMP VIEW v AS SELECT * FROM read_csv('{secret}/secret.csv')", "refused", "CREATE"),
    Hostile("query-function-reads-file", "SELECT * FROM query('SELECT * FROM read_csv(''/etc/passwd'')')", "refused", SQL_TEXT, direct=True),
    Hostile("traversal-via-spill-dir", "SELECT * FROM read_text('{db}.sqltmp/../../secret/secret.csv')", "blocked", PERMISSION, direct=True),
    Hostile("file-url", "SELECT * FROM read_text('file:///etc/passwd')", "blocked", PERMISSION, direct=True),
    Hostile("http-url", "SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')", "blocked", PERMISSION, direct=True),
    Hostile("s3-url", "SELECT * FROM read_parquet('s3://bucket/x.parquet')", "blocked", PERMISSION, direct=True),
    Hostile("own-database-file", "SELECT * FROM read_blob('{db}')", "harmless", check=_own_database_bytes),
    Hostile("parquet-source-read-directly", "SELECT count(*) FROM read_parquet('{parquet}')", "harmless",
            check=_rows_equal(lambda loaded: [(loaded.counts["logs"],)])),  # the rows the logs view shows
    # the spill directory of in-process connections; a query process has none
    Hostile("own-spill-dir", "SELECT * FROM glob('{db}.sqltmp/*')", "blocked", PERMISSION, confined=True),
    Hostile("read-back-from-spill-dir", "SELECT * FROM read_blob('{db}.sqltmp/*')", "blocked", PERMISSION, confined=True),
    # ---- writing
    Hostile("copy-table-to-csv", "COPY logs TO '{out}/logs.csv'", "refused", "COPY", direct=True),
    Hostile("copy-query-to-parquet", "COPY (SELECT * FROM logs) TO '{out}/q.parquet' (FORMAT parquet)", "refused", "COPY", direct=True),
    Hostile("copy-over-parquet-source", COPY_OVER_SOURCE, "refused", "COPY", confined=True),
    Hostile("export-database", "EXPORT DATABASE '{out}/export'", "refused", "EXPORT", direct=True),
    Hostile("import-database", "IMPORT DATABASE '{secret}'", "refused", "PRAGMA", direct=True),
    Hostile("create-table", "CREATE TABLE x AS SELECT 1 AS a", "refused", "CREATE", direct=True),
    Hostile("create-temp-table", "CREATE TEMP TABLE x AS SELECT 1 AS a", "refused", "CREATE"),
    Hostile("create-macro", "CREATE MACRO m() AS 1", "refused", "CREATE"),
    Hostile("create-secret", "CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 's')", "refused", "CREATE"),
    Hostile("insert", "INSERT INTO events (kind) VALUES ('x')", "refused", "INSERT", direct=True),
    Hostile("update", "UPDATE events SET kind = 'x'", "refused", "UPDATE", direct=True),
    Hostile("delete", "DELETE FROM events", "refused", "DELETE", direct=True),
    Hostile("truncate", "TRUNCATE events", "refused", "DELETE", direct=True),
    Hostile("merge-into", "MERGE INTO events USING events s ON false WHEN NOT MATCHED THEN INSERT VALUES (s.ts, s.service, s.kind, s.description)",
            "refused", "MERGE_INTO", direct=True),
    Hostile("drop-table", "DROP TABLE events", "refused", "DROP", direct=True),
    Hostile("drop-view", "DROP VIEW logs", "refused", "DROP", direct=True),
    Hostile("alter-table", "ALTER TABLE events ADD COLUMN x INT", "refused", "ALTER", direct=True),
    Hostile("comment-on", "COMMENT ON TABLE events IS 'x'", "refused", "ALTER", direct=True),
    # ---- writing from inside a SELECT: the statement's type is SELECT, its parse tree holds the write
    Hostile("cte-copy-over-parquet-source", _with_copy("{parquet}"), "refused", INSIDE, confined=True),
    Hostile("cte-copy-csv-over-parquet-source", _with_copy("{parquet}", "FORMAT csv, USE_TMP_FILE false"), "refused", INSIDE, confined=True),
    Hostile("cte-copy-table-over-parquet-source", "WITH x AS (COPY logs TO '{parquet}' (FORMAT parquet, USE_TMP_FILE false)) SELECT 1",
            "refused", INSIDE, confined=True),
    Hostile("cte-copy-into-spill-dir", _with_copy("{db}.sqltmp/planted.parquet"), "refused", INSIDE, confined=True),
    Hostile("cte-copy-to-out", _with_copy("{out}/cte.parquet", "FORMAT parquet"), "refused", INSIDE, direct=True, confined=True),
    Hostile("cte-copy-partitioned-to-out", "WITH x AS (COPY (SELECT * FROM logs) TO '{out}/parts' (FORMAT parquet, PARTITION_BY (level))) SELECT 1",
            "refused", INSIDE, direct=True, confined=True),
    Hostile("materialized-cte-copy", f"WITH x AS MATERIALIZED ({COPY_OVER_SOURCE}) SELECT * FROM x", "refused", INSIDE, confined=True),
    Hostile("nested-cte-copy", f"WITH a AS (WITH b AS ({COPY_OVER_SOURCE}) SELECT 1) SELECT * FROM a", "refused", INSIDE, confined=True),
    Hostile("from-subquery-copy", f"SELECT * FROM (WITH y AS ({COPY_OVER_SOURCE}) SELECT 1)", "refused", INSIDE, confined=True),
    Hostile("where-exists-copy", f"SELECT count(*) FROM logs WHERE EXISTS (WITH y AS ({COPY_OVER_SOURCE}) SELECT 1)",
            "refused", INSIDE, confined=True),
    Hostile("in-subquery-copy", f"SELECT count(*) FROM logs WHERE level IN (WITH y AS ({COPY_OVER_SOURCE}) SELECT 'ERROR')",
            "refused", INSIDE, confined=True),
    Hostile("scalar-subquery-copy", f"SELECT (WITH y AS ({COPY_OVER_SOURCE}) SELECT 1) AS one", "refused", INSIDE, confined=True),
    Hostile("union-branch-copy", f"SELECT 1 UNION ALL (WITH y AS ({COPY_OVER_SOURCE}) SELECT 1)", "refused", INSIDE, confined=True),
    Hostile("serialized-copy-over-parquet-source", "SELECT * FROM json_execute_serialized_sql('{copy_json}')",
            "refused", SQL_TEXT, confined=True),  # DuckDB alone runs it: only the confined process stops the write
    Hostile("cte-insert", "WITH x AS (INSERT INTO events VALUES (now(), 's', 'k', 'd') RETURNING *) SELECT count(*) FROM x",
            "refused", "INSERT " + INSIDE, direct=True),
    Hostile("cte-update", "WITH x AS (UPDATE events SET kind = 'x' RETURNING *) SELECT count(*) FROM x", "refused", "UPDATE " + INSIDE, direct=True),
    Hostile("cte-delete", "WITH gone AS (DELETE FROM events RETURNING *) SELECT count(*) FROM gone", "refused", "DELETE " + INSIDE, direct=True),
    Hostile("subquery-delete", "SELECT count(*) FROM logs WHERE 1 = (WITH d AS (DELETE FROM events RETURNING 1) SELECT count(*) FROM d)",
            "refused", "DELETE " + INSIDE, direct=True),
    Hostile("pivot-in-cte", "WITH p AS (PIVOT logs ON level USING count(*)) SELECT * FROM p", "refused", "MULTI"),
    # other statements do not even parse inside a CTE or a subquery
    Hostile("cte-export-database", "WITH x AS (EXPORT DATABASE '{out}/export') SELECT 1", "refused", NOT_PARSED, direct=True),
    Hostile("cte-copy-from", "WITH x AS (COPY events FROM '{secret}/secret.csv') SELECT 1", "refused", NOT_PARSED, direct=True),
    Hostile("cte-attach", "WITH x AS (ATTACH '{out}/other.duckdb' AS other) SELECT 1", "refused", NOT_PARSED, direct=True),
    Hostile("cte-detach", "WITH x AS (DETACH t_hostile) SELECT 1", "refused", NOT_PARSED),
    Hostile("cte-pragma", "WITH x AS (PRAGMA profiling_output = '{out}/profile.json') SELECT 1", "refused", NOT_PARSED, direct=True),
    Hostile("cte-set", "WITH x AS (SET enable_external_access = true) SELECT 1", "refused", NOT_PARSED, direct=True),
    Hostile("cte-call", "WITH x AS (CALL pragma_version()) SELECT 1", "refused", NOT_PARSED),
    Hostile("cte-install", "WITH x AS (INSTALL httpfs) SELECT 1", "refused", NOT_PARSED, direct=True),
    Hostile("cte-load", "WITH x AS (LOAD httpfs) SELECT 1", "refused", NOT_PARSED, direct=True),
    Hostile("subquery-set", "SELECT * FROM (SET enable_external_access = true)", "refused", NOT_PARSED, direct=True),
    Hostile("subquery-attach", "SELECT * FROM (ATTACH '{out}/other.duckdb' AS other)", "refused", NOT_PARSED, direct=True),
    Hostile("subquery-pragma", "SELECT * FROM (PRAGMA database_size)", "refused", NOT_PARSED),
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
    Hostile("enable-logging-to-parquet-source", "SELECT * FROM enable_logging(storage = 'file', storage_path = '{parquet}')",
            "blocked", "locked", direct=True),
    Hostile("vacuum", "VACUUM", "refused", "VACUUM"),
    Hostile("analyze", "ANALYZE", "refused", "VACUUM"),
    Hostile("begin-transaction", "BEGIN TRANSACTION", "refused", "TRANSACTION"),
    Hostile("prepare", "PREPARE p AS SELECT 1", "refused", "PREPARE"),
    Hostile("execute", "EXECUTE p", "refused", "EXECUTE"),
    Hostile("explain", "EXPLAIN SELECT 1", "refused", "EXPLAIN"),
    Hostile("explain-analyze", "EXPLAIN ANALYZE SELECT count(*) FROM logs", "refused", "EXPLAIN"),
    Hostile("pivot-is-multi-statement", "PIVOT logs ON level USING count(*)", "refused", "MULTI"),
    Hostile("query-function-drops", "SELECT * FROM query('DROP TABLE events')", "refused", SQL_TEXT, direct=True),
    # ---- several statements and comments
    Hostile("select-then-drop", "SELECT 1; DROP TABLE events", "refused", r"2 statements found \(SELECT, DROP\)", direct=True),
    Hostile("select-then-copy", "SELECT 1; COPY logs TO '{out}/multi.csv'", "refused", "2 statements", direct=True),
    Hostile("two-selects", "SELECT * FROM logs; SELECT * FROM metrics", "refused", "2 statements"),
    Hostile("line-comment-then-drop", "SELECT 1 -- looks harmless\n; DROP TABLE events", "refused", "2 statements", direct=True),
    Hostile("block-comment-then-set", "SELECT 1 /* ; */ ; SET enable_external_access = true", "refused", "2 statements", direct=True),
    Hostile("drop-commented-out", "SELECT 1 AS one; -- DROP TABLE events", "harmless", check=_rows_equal([(1,)])),
    Hostile("drop-inside-block-comment", "SELECT /* ; DROP TABLE events; */ count(*) FROM logs", "harmless",
            check=_rows_equal(lambda loaded: [(loaded.counts["logs"],)])),
    Hostile("drop-inside-string", "SELECT 'a; DROP TABLE events' AS s", "harmless", check=_rows_equal([("a; DROP TABLE events",)])),
    Hostile("empty", "", "refused", "empty"),
    Hostile("whitespace", "   \n ", "refused", "empty"),
    Hostile("comment-only", "-- only a comment", "refused", "empty"),
    Hostile("semicolon-only", ";", "refused", "empty"),
    Hostile("not-sql", "SELEC * FROM logs", "refused", "parse"),
    # ---- the parser itself
    Hostile("overlong", "SELECT " + "1+" * (MAX_SQL_CHARS // 2) + "1", "refused", "characters long"),
    Hostile("deep-nesting", "SELECT " + "(" * 5000 + "1" + ")" * 5000, "refused", TOO_DEEP),
    Hostile("parser-bomb", "SELECT * FROM " + "(" * BOMB_LEVELS + "logs" + ")" * BOMB_LEVELS, "refused", TOO_DEEP),
    Hostile("parser-bomb-of-lists", "SELECT " + "[" * BOMB_LEVELS + "1" + "]" * BOMB_LEVELS, "refused", TOO_DEEP),
    Hostile("parentheses-in-strings-and-comments", "SELECT '" + "(" * 500 + "' AS s /* " + "(" * 500 + " */ -- " + "(" * 500,
            "harmless", check=_rows_equal([("(" * 500,)])),  # the nesting scan skips strings and comments
    # E'\'' is one quote to DuckDB but opens a string to the caller's scan, which then misses the
    # brackets; 3,000 levels take seconds and GBs to parse: the query process gives up at the limit
    Hostile("parser-bomb-hidden-from-the-scan", "SELECT E'\\'' AS q, * FROM " + "(" * 3000 + "logs" + ")" * 3000 + " WHERE 'x' = 'x'",
            "refused", f"could not be parsed and checked within 1 s|{NOT_PARSED}", timeout_s=1.0),
    # ---- what the query can learn about its host
    Hostile("getenv", "SELECT getenv('HOME')", "blocked", "getenv"),
    Hostile("secrets", "SELECT * FROM duckdb_secrets()", "blocked", ""),
    Hostile("extensions-dir", "SELECT * FROM duckdb_extensions()", "blocked", PERMISSION),
    Hostile("lock-down-visible", "SELECT current_setting('enable_external_access') AS ext, "
            "current_setting('lock_configuration') AS locked, current_setting('access_mode') AS mode",
            "harmless", check=_rows_equal([(False, True, "read_only")])),
    Hostile("settings-show-no-spill-directory", "SELECT name, value FROM duckdb_settings() WHERE name IN "
            "('temp_directory', 'enable_external_access', 'lock_configuration')", "harmless", check=_no_spill_directory),
    # ---- resources
    Hostile("self-join-2-billion-pairs", "SELECT count(*) FROM logs a, logs b WHERE a.message < b.message",
            "stopped", "time limit", timeout_s=TIME_LIMIT_S),
    Hostile("sort-beyond-memory", "SELECT count(*) FROM (SELECT * FROM range(300000000) t(i) ORDER BY hash(i))",
            "stopped", "time limit|memory", timeout_s=TIME_LIMIT_S),  # no spill directory: out of memory, no file
    Hostile("millions-of-rows", "SELECT * FROM range(5000000)", "harmless", check=_capped),
    Hostile("logs-times-a-million", "SELECT * FROM logs, range(1000000)", "harmless", check=_capped),
    Hostile("huge-string", "SELECT repeat('x', 1000000000) AS s", "stopped", f"time limit|{OUT_OF_MEMORY}", timeout_s=TIME_LIMIT_S),
    Hostile("string-of-100-mb", "SELECT repeat('x', 100000000) AS s", "blocked", "limit is 16 MB"),
    Hostile("many-1-mb-cells", "SELECT repeat('x', 1000000) AS s FROM range(200)", "blocked", "limit is 16 MB"),
    Hostile("billion-element-list", "SELECT range(1000000000) AS l", "stopped", MEMORY_OR_TIME, timeout_s=TIME_LIMIT_S),
    Hostile("billion-element-list-aggregate", "SELECT list(i) FROM range(1000000000) t(i)", "stopped", MEMORY_OR_TIME, timeout_s=TIME_LIMIT_S),
    Hostile("string-agg-5-gb", "SELECT string_agg(repeat('x', 1000000), '') FROM range(5000)", "stopped", MEMORY_OR_TIME, timeout_s=TIME_LIMIT_S),
]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _table_counts(db: Path) -> dict[str, int]:
    con = connect_readonly(db)
    try:
        tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables ORDER BY 1").fetchall()]
        return {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
    finally:
        con.close()


def _query_processes() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if "tools.sql_sandbox" in " ".join(p.cmdline())]


@pytest.fixture(scope="module")
def loaded(scenario_dir, tmp_path_factory) -> Loaded:
    case = scenario_dir("conn_pool_exhaustion", 11)
    root = tmp_path_factory.mktemp("hostile")
    dataset = root / "dataset" / "logs"
    dataset.mkdir(parents=True)
    secret, out = root / "secret", root / "out"
    secret.mkdir()
    out.mkdir()
    (secret / "secret.csv").write_text("user,password\nroot,hunter2\n")
    parquet = dataset / "part-0.parquet"
    scratch = duckdb.connect()  # an ordinary, unlocked connection makes the Parquet files
    scratch.execute("SET TimeZone = 'UTC'")
    scratch.execute(f"""COPY (SELECT CAST(ts AS TIMESTAMPTZ) AS ts, * EXCLUDE (ts)
                              FROM read_csv('{case / 'logs.csv'}', all_varchar = true))
                        TO '{parquet}' (FORMAT parquet)""")
    scratch.execute(f"COPY (SELECT 'hunter2' AS password) TO '{secret / 'secret.parquet'}' (FORMAT parquet)")
    copy_json = scratch.execute("SELECT json_serialize_sql(?)", [_with_copy(str(parquet))]).fetchone()[0]
    scratch.close()
    db = root / "work" / "t_hostile.duckdb"  # the CLI's layout: <state>/work/<thread>.duckdb
    summary = load_sources(db, case / "metrics.csv", dataset, case / "events.csv")
    counts = _table_counts(db)
    assert {k: counts[k] for k in ("metrics", "logs", "events", "source_files")} == {
        "metrics": summary.metrics_rows, "logs": summary.log_rows, "events": summary.event_rows, "source_files": 1}
    assert summary.log_rows > 40_000  # a self-join compares > 1.6 billion pairs: far past the time limit
    return Loaded(db=db, dataset=dataset, parquet=parquet, secret=secret, out=out,
                  copy_json=copy_json.replace("'", "''"), counts=counts)


def _snapshot(loaded: Loaded) -> tuple:
    dataset = {str(p.relative_to(loaded.dataset)): _sha256(p) if p.is_file() else "directory"
               for p in loaded.dataset.rglob("*")}
    return (_sha256(loaded.db), dataset, sorted(os.listdir(loaded.db.parent)), sorted(os.listdir(loaded.secret)))


@pytest.fixture
def intact(loaded):
    """Snapshot before the test; after it, the database, its data and its surroundings are unchanged."""
    before = _snapshot(loaded)
    yield
    assert _snapshot(loaded) == before
    assert sorted(os.listdir(loaded.db.parent)) == [loaded.db.name]  # no WAL, no spill directory
    assert os.listdir(loaded.out) == []
    assert _table_counts(loaded.db) == loaded.counts
    assert _query_processes() == []


def _fill(sql: str, loaded: Loaded) -> str:
    return sql.format(db=loaded.db, parquet=loaded.parquet, secret=loaded.secret, out=loaded.out,
                      copy_json=loaded.copy_json)


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


# A process confined the way a query process is (before it parses anything), then SQL straight
# to its connect_readonly connection: the statement check is not involved.
CONFINED_SQL = """
import json, sys
import duckdb
from tools.sql_sandbox import _confine_query_process, connect_readonly
_confine_query_process()
con = connect_readonly(sys.argv[1])
outcomes = []
for sql in sys.argv[2:]:
    try:
        outcomes.append({"rows": con.execute(sql).fetchall()})
    except duckdb.Error as exc:
        outcomes.append({"error": type(exc).__name__, "message": str(exc)})
print(json.dumps(outcomes, default=str))
"""


def _run_confined(db: Path, *statements: str) -> list[dict]:
    done = subprocess.run([sys.executable, "-c", CONFINED_SQL, str(db), *statements],
                          check=False, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


CONFINED = [h for h in CATALOGUE if h.confined]


@pytest.mark.parametrize("case", CONFINED, ids=[h.id for h in CONFINED])
def test_the_query_process_refuses_it_without_the_statement_check(case: Hostile, loaded: Loaded, intact):
    (outcome,) = _run_confined(loaded.db, _fill(case.sql, loaded))
    assert "error" in outcome, f"ran without the statement check: {outcome}"


def test_query_process_reads_the_parquet_files_and_cannot_write_them(loaded, intact):
    """DuckDB's allow list lets a COPY overwrite a listed file (an in-process connection would let
    it through); in the confined process the kernel refuses it, and only it: the read still works."""
    overwrite = f"COPY (SELECT 0 AS overwritten) TO '{loaded.parquet}' (FORMAT parquet, USE_TMP_FILE false)"
    read, cte_copy, copy, serialized = _run_confined(
        loaded.db, "SELECT count(*) FROM logs", _with_copy(str(loaded.parquet)), overwrite,
        _fill("SELECT * FROM json_execute_serialized_sql('{copy_json}')", loaded))
    assert read == {"rows": [[loaded.counts["logs"]]]}
    for outcome in (cte_copy, copy, serialized):
        assert "Permission denied" in outcome["message"], outcome  # the kernel said no, not DuckDB


def test_query_process_has_no_spill_directory(loaded):
    """Spill files of an in-process connection (or of a query killed under an older version)
    are out of the query process's reach: it can neither read them nor write beside them."""
    spill = Path(f"{loaded.db}.sqltmp")
    spill.mkdir()
    try:
        (spill / "leftover.block").write_bytes(b"spilled rows")
        with pytest.raises(SqlExecutionError, match=PERMISSION):
            run_sql(loaded.db, f"SELECT * FROM read_blob('{spill}/leftover.block')")
        read, write = _run_confined(loaded.db, f"SELECT * FROM read_blob('{spill}/leftover.block')",
                                    _with_copy(f"{spill}/planted.parquet"))
        assert PERMISSION in read["message"] and PERMISSION in write["message"]
        assert os.listdir(spill) == ["leftover.block"] and (spill / "leftover.block").read_bytes() == b"spilled rows"
    finally:
        for leftover in spill.iterdir():
            leftover.unlink()
        spill.rmdir()


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


def _start_caller(db: Path, sql: str) -> tuple[psutil.Popen, psutil.Process]:
    """A CLI-like process running one run_sql, and its query process once that has started."""
    caller = psutil.Popen([sys.executable, "-c", (
        f"from tools.sql_sandbox import run_sql; run_sql({str(db)!r}, {sql!r}, timeout_s=60)")], cwd=REPO)
    deadline = time.monotonic() + 30
    while not (children := caller.children()):
        if time.monotonic() > deadline or caller.poll() is not None:
            caller.kill()
            pytest.fail("the query process never started")
        time.sleep(0.05)
    (query,) = children
    assert "tools.sql_sandbox" in " ".join(query.cmdline())
    return caller, query


def test_query_process_dies_with_a_killed_caller(loaded):
    """A CLI or server killed mid-query (SIGKILL: no cleanup runs) leaves no query running."""
    caller, query = _start_caller(loaded.db, "SELECT count(*) FROM logs a, logs b WHERE a.message < b.message")
    caller.kill()
    caller.wait()
    _, alive = psutil.wait_procs([query], timeout=5)
    assert alive == [], "the query process outlived its caller"


def test_a_sort_killed_with_its_caller_leaves_no_spill_files(loaded, intact):
    """A sort past the memory limit used to spill 0.5-1.5 GB beside the database, left there when
    its caller was killed. A query process has no spill directory: the sort runs out of memory,
    and whether it got that far or not, killing the caller leaves no file (checked by intact)."""
    spill = Path(f"{loaded.db}.sqltmp")
    caller, query = _start_caller(loaded.db, "SELECT count(*) FROM (SELECT * FROM range(300000000) t(i) ORDER BY hash(i))")
    try:  # the old spill directory appeared after about 6 s, once 1 GB of memory was full
        deadline = time.monotonic() + 20
        while query.is_running() and query.status() != psutil.STATUS_ZOMBIE and not spill.exists() \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2)  # let it spill for a while, if it does
    finally:
        caller.kill()
        caller.wait()
    _, alive = psutil.wait_procs([query], timeout=5)
    assert alive == [] and not spill.exists()
