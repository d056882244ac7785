"""Run untrusted, model-written SQL against an investigation database, safely.

Three layers:

1. DuckDB itself is locked down by ``connect_readonly``: the database file is opened
   read-only, file system access is off (no read_csv('/etc/passwd'), glob, COPY ... TO,
   ATTACH, INSTALL/LOAD) except reading the Parquet files of a dataset the loader left in
   place (``allowed_paths`` = table ``source_files``: exact files, no directory), extension
   auto-install/auto-load and community extensions are off, memory is bounded, and
   ``lock_configuration`` makes every later ``SET`` fail. DuckDB's allow list also allows
   *writing* those files (``COPY ... TO '<listed file>' (USE_TMP_FILE false)`` overwrote one)
   and its spill directory: layers 2 and 3 close both for model SQL.
2. The statement check accepts exactly one statement whose type is SELECT (which includes
   ``WITH ... SELECT``, ``FROM tbl``, ``VALUES``, ``DESCRIBE``, ``SHOW``, ``SUMMARIZE``) and
   then walks its whole parse tree (``json_serialize_sql``): every query node in it, in CTEs,
   subqueries and set operations alike, must be a SELECT, UNION/INTERSECT/EXCEPT or recursive
   CTE node (an allow list: a ``WITH x AS (COPY ... TO ...)``, ``DELETE ... RETURNING`` or any
   node type DuckDB adds later is refused), and the functions that run SQL given as text
   (``query``, ``json_execute_serialized_sql``) are refused. A statement that cannot be
   serialized as a SELECT tree is refused. EXPLAIN, PIVOT (a multi-statement rewrite in
   DuckDB), PRAGMA, CALL, SET and all DDL/DML are refused by type; EXPORT, ATTACH, PRAGMA, SET,
   CALL, INSTALL/LOAD do not parse inside a CTE or subquery at all.
   The caller only measures the SQL (length, bracket nesting: a linear scan, milliseconds);
   the parsing happens in the query process, because DuckDB's parser is slow and greedy on
   hostile input: 12 KB of nested parentheses held the GIL 15-56 s and took 4.6 GB.
3. Each statement is checked and run in its own Python process (``python -m
   tools.sql_sandbox``; 0.4 s per query measured on a 2-core machine at load average 7) with
   a bounded address space, interrupted (``cursor.interrupt()``) at ``timeout_s`` and killed
   outright a grace period later, killed with its caller, and its rows returned are capped.
   That process cannot write any file: Landlock (Linux 5.13+) takes away every file-system
   write right before the SQL is parsed, so the Parquet files it reads in place stay readable
   and cannot be overwritten, truncated or replaced. Where the kernel has no Landlock (or a
   container's seccomp filter refuses it), layers 1 and 2 stand alone.
   Its connections have no spill directory (``temp_directory`` is empty): a sort or aggregate
   bigger than SANDBOX_MAX_MEMORY fails with a clean out-of-memory error instead of spilling,
   so model SQL can neither reach a spill directory nor leave spill files behind when killed.
   DuckDB's ``max_memory`` only governs its buffer manager and ``interrupt()`` is only checked
   between vectors: a scalar function such as ``SELECT range(1000000000)`` allocated 20 GB and
   ran 55 s past a 5 s limit in-process. In the child it fails with a clean out-of-memory error,
   and a child that dies or hangs costs the caller nothing. Results over MAX_RESULT_BYTES, SQL
   over MAX_SQL_CHARS or nested deeper than MAX_NESTING_DEPTH, and SQL the query process could
   not parse within the time limit are refused with a clear message.

The hostile-query catalogue in tests/test_hostile_sql.py is the evidence for all of this.

DuckDB keeps one database instance per file in a process and refuses a second connection to
the same file with a different configuration, so every connection to an investigation
database must come from ``connect_readonly`` (same config every time in a process; trusted
in-process connections spill to ``<db>.sqltmp``, which DuckDB empties on close).
"""
from __future__ import annotations

import base64
import ctypes
import datetime as _dt
import decimal
import errno
import json
import math
import os
import re
import resource
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from tools.contract import one_row

__all__ = [
    "SANDBOX_MAX_MEMORY",
    "SANDBOX_MAX_TEMP_SIZE",
    "SANDBOX_THREADS",
    "SqlExecutionError",
    "SqlRejected",
    "SqlResult",
    "SqlTimeout",
    "check_sql",
    "connect_readonly",
    "run_sql",
]

# Process-wide, fixed: every connection to a given file must use the identical config.
SANDBOX_MAX_MEMORY = "1GB"
SANDBOX_THREADS = 2
SANDBOX_MAX_TEMP_SIZE = "4GB"  # spill space of trusted in-process connections (query processes have none)
TEMP_DIR_SUFFIX = ".sqltmp"  # their spill directory beside the database, removed by DuckDB on close

_ALLOWED_TYPES = {duckdb.StatementType.SELECT}
# Query node types a SELECT's parse tree may contain (json_serialize_sql's "type" of every node
# with a "cte_map"): everything else, e.g. COPY_QUERY_NODE or DELETE_QUERY_NODE in a CTE, is refused.
_ALLOWED_QUERY_NODES = {"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE"}
# Table functions that parse and run SQL given as a string, out of the statement check's sight
# (json_execute_serialized_sql ran a serialized WITH ... COPY that wrote a file).
_SQL_TEXT_FUNCTIONS = {"query", "json_execute_serialized_sql"}

# Model-written SQL is a few hundred characters and a few brackets deep. DuckDB's parser needed
# 2.2 GB for 600 KB of nested parentheses, and 4.6 GB and up to 56 s for 12 KB of them (6,000
# levels): both limits are measured in the caller without parsing; the parse runs in the query process.
MAX_SQL_CHARS = 20_000
MAX_NESTING_DEPTH = 100
# Address space a query process may add to its start-up size: max_memory for DuckDB's buffer
# manager plus room for allocations outside it (vectors, strings, Python result rows).
SANDBOX_PROCESS_HEADROOM_BYTES = 3 * 1024**3
# After timeout_s the in-process interrupt normally stops the query within milliseconds; a
# query that does not react (a single huge scalar call) is killed this much later.
KILL_GRACE_S = 1.0
# Time for a query process to start and report ready (Python + DuckDB import) on a busy machine.
# Not a multiprocessing fork: that would copy the caller's DuckDB locks mid-use from other
# threads, and spawn/forkserver re-import the caller's __main__ (cli.py: seconds) per query.
STARTUP_TIMEOUT_S = 30.0
# check_sql's limit for parsing and checking in the query process.
CHECK_TIMEOUT_S = 5.0
# A result is for a model to read (a few KB reach it): a bigger answer is refused, so one cell of
# repeat('x', 10^8) cannot cost the caller hundreds of MB.
MAX_RESULT_BYTES = 16 * 1024**2
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
# Query process -> caller, on stdout: _READY once confined, _CHECKED once the statement passed the
# check (so a timeout can say whether parsing or running took too long), then the JSON answer.
_READY = b"R"
_CHECKED = b"C"
_ERRORS: dict[str, type[Exception]] = {}  # filled below: error class name -> class, for the wire

# Landlock (linux/landlock.h). The file-system rights that change the file system, by the ABI
# version that introduced them; reading and executing stay allowed.
_SYS_LANDLOCK_CREATE_RULESET = 444  # the same number on every architecture
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_WRITE_RIGHTS_BY_ABI = {
    1: 1 << 1 | 0b1_1111_1111 << 4,  # WRITE_FILE; REMOVE_DIR/FILE, MAKE_CHAR/DIR/REG/SOCK/FIFO/BLOCK/SYM
    2: 1 << 13,  # REFER (link or rename into another directory)
    3: 1 << 14,  # TRUNCATE
}
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_PDEATHSIG = 1
# Set by _confine_query_process: a process that can write no file gets no spill directory.
_confined = False


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
    # enable_external_access=false and lock_configuration are applied by _lock_down right
    # after connecting: DuckDB accepts allowed_paths only while external access is still on.
    # DuckDB allows reading and writing its temp_directory whatever the lock-down says: a query
    # process, which runs model SQL, has none.
    return {
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
        "threads": SANDBOX_THREADS,
        "max_memory": SANDBOX_MAX_MEMORY,
        "temp_directory": "" if _confined else db_path + TEMP_DIR_SUFFIX,
        "max_temp_directory_size": SANDBOX_MAX_TEMP_SIZE,
    }


# Held from connect to lock-down: no thread may use a database instance before it is locked.
_LOCK_DOWN = threading.Lock()


def _lock_down(con: duckdb.DuckDBPyConnection) -> None:
    """File access off except for the Parquet files the loader's views read in place (table
    source_files), then the configuration locked: every later SET fails. These are settings
    of the database instance, so they hold for every connection to the file."""
    from tools.sources.datasets import SOURCE_FILES_TABLE

    listed = one_row(con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main' "
                                 "AND table_name = ?", [SOURCE_FILES_TABLE]))[0]
    if listed:
        files = [row[0] for row in con.execute(f"SELECT path FROM {SOURCE_FILES_TABLE}").fetchall()]
        con.execute("SET allowed_paths = ?", [files])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def connect_readonly(db_path: str | Path) -> duckdb.DuckDBPyConnection:
    """Open an investigation database read-only and locked down.

    The only way the product opens a loaded database. Safe to call from several threads and
    for several files at once (give each thread its own connection, or use ``con.cursor()``).
    Close the connection when done; DuckDB releases the file when the last one closes.
    """
    path = os.path.abspath(os.fspath(db_path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"investigation database not found: {path}")
    with _LOCK_DOWN:
        con = duckdb.connect(path, read_only=True, config=_config(path))
        try:
            if not one_row(con.execute("SELECT current_setting('lock_configuration')"))[0]:
                _lock_down(con)
        except BaseException:
            con.close()
            raise
    return con


# What DuckDB's lexer skips (string literals, quoted names, comments; unterminated ones run to the
# end) and the brackets that nest. Unrolled loops, so the scan stays linear on any input. It may
# miscount exotic forms (E'\'' strings, $$ strings, nested comments); that only moves the parse
# of such SQL to the query process, which is bounded in time and memory anyway.
_SKIPPED_OR_BRACKET = re.compile(r"""
      '[^']*(?:''[^']*)*(?:'|\Z)
    | "[^"]*(?:""[^"]*)*(?:"|\Z)
    | --[^\n]*
    | /\*[^*]*(?:\*+[^*/][^*]*)*(?:\*+/|\**\Z)
    | [(\[{)\]}]
""", re.VERBOSE)
_OPENING = frozenset("([{")
_CLOSING = frozenset(")]}")


def _nesting_depth(sql: str) -> int:
    """How deeply (), [] and {} nest in sql, outside strings and comments."""
    depth = deepest = 0
    for lexeme in _SKIPPED_OR_BRACKET.finditer(sql):
        token = lexeme.group()
        if token in _OPENING:
            depth += 1
            deepest = max(deepest, depth)
        elif token in _CLOSING:
            depth = max(depth - 1, 0)
    return deepest


def _check_size(sql: str) -> None:
    """SqlRejected for SQL that is empty, too long or nested too deeply; never parses it."""
    if not isinstance(sql, str) or not sql.strip():
        raise SqlRejected("empty SQL: send exactly one SELECT statement")
    if len(sql) > MAX_SQL_CHARS:
        raise SqlRejected(f"SQL is {len(sql):,} characters long; the limit is {MAX_SQL_CHARS:,}: "
                          f"send one shorter SELECT statement")
    depth = _nesting_depth(sql)
    if depth > MAX_NESTING_DEPTH:
        raise SqlRejected(f"SQL nests brackets {depth:,} levels deep; the limit is {MAX_NESTING_DEPTH}: "
                          f"send a flatter SELECT statement (use WITH for intermediate results)")


def check_sql(sql: str) -> str:
    """Validate untrusted SQL without running it: the single SELECT's text, or SqlRejected.

    Parsed in a query process, like run_sql (about the cost of one query)."""
    _check_size(sql)
    return _ask_query_process({"sql": sql}, CHECK_TIMEOUT_S)["sql"]


def _statement_type(stmt: Any) -> duckdb.StatementType | None:
    """The statement's type; None for types DuckDB's Python enum lacks (``UPDATE EXTENSIONS``
    raises ValueError on ``.type``)."""
    try:
        return stmt.type
    except ValueError:
        return None


def _statement_kind(stmt: Any) -> str:
    kind = _statement_type(stmt)
    return "UNKNOWN" if kind is None else getattr(kind, "name", str(kind))


def _checked_select(parser: duckdb.DuckDBPyConnection, sql: str) -> Any:
    """The one SELECT statement in sql (a parsed duckdb Statement), or SqlRejected. Parses:
    only for the query process."""
    try:
        statements = parser.extract_statements(sql)
    except duckdb.Error as exc:
        raise SqlRejected(f"SQL does not parse: {exc}") from exc
    if not statements:
        raise SqlRejected("empty SQL (only comments or semicolons): send one SELECT statement")
    if len(statements) > 1:
        kinds = ", ".join(_statement_kind(s) for s in statements)
        raise SqlRejected(f"{len(statements)} statements found ({kinds}): send exactly one "
                          f"SELECT statement")
    stmt = statements[0]
    if _statement_type(stmt) not in _ALLOWED_TYPES:
        raise SqlRejected(f"statement type {_statement_kind(stmt)} is not allowed: only SELECT "
                          f"(including WITH ... SELECT) is accepted; the database is read-only")
    _check_tree(parser, sql)
    return stmt


def _check_tree(parser: duckdb.DuckDBPyConnection, sql: str) -> None:
    """SqlRejected unless every node of sql's parse tree is allowed in a read-only SELECT: a
    statement typed SELECT may still hold a COPY or DELETE in a CTE, or run SQL text."""
    serialized = one_row(parser.execute("SELECT json_serialize_sql(?)", [sql]))[0]
    try:
        tree = json.loads(serialized)
    except RecursionError:
        raise SqlRejected("SQL is nested too deeply to check; send a flatter SELECT statement "
                          "(use WITH for intermediate results)") from None
    if tree["error"]:
        raise SqlRejected(f"the statement cannot be checked as a plain SELECT "
                          f"({tree['error_message']}): only SELECT is accepted")
    pending: list[Any] = [tree["statements"]]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, dict):
            kind = node.get("type")
            is_query_node = "cte_map" in node or (isinstance(kind, str) and kind.endswith("_NODE"))
            if is_query_node and kind not in _ALLOWED_QUERY_NODES:
                what = str(kind).removesuffix("_NODE").removesuffix("_QUERY")
                raise SqlRejected(f"{what} inside the statement is not allowed: only SELECT "
                                  f"(including WITH ... SELECT) is accepted; the database is read-only")
            function = node.get("function_name")
            if isinstance(function, str) and function.lower() in _SQL_TEXT_FUNCTIONS:
                raise SqlRejected(f"function {function}() is not allowed: it runs SQL given as "
                                  f"text; write that SELECT directly")
            pending.extend(node.values())


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
            value = value.astimezone(_dt.UTC).replace(tzinfo=None)
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

    Raises SqlRejected (refused before running, including SQL the query process could not
    parse within timeout_s), SqlTimeout (interrupted after timeout_s) or SqlExecutionError
    (DuckDB error while running, e.g. unknown column or out of memory).

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
    _check_size(sql)
    outcome = _ask_query_process({"sql": sql, "db_path": os.fspath(db_path), "timeout_s": timeout_s,
                                  "max_rows": max_rows}, timeout_s)
    return SqlResult(columns=outcome["columns"], rows=[tuple(r) for r in outcome["rows"]],
                     row_count=outcome["row_count"], truncated=outcome["truncated"],
                     elapsed_ms=outcome["elapsed_ms"])


def _ask_query_process(request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Send one request (check, or check and run when it names a db_path) to a new query
    process; its answer, or the error it raised."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (_PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)}
    argument = json.dumps({**request, "parent_pid": os.getpid()})
    child = subprocess.Popen([sys.executable, "-m", __name__, argument], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert child.stdout is not None  # stdout=PIPE
    try:
        ready, _, _ = select.select([child.stdout], [], [], STARTUP_TIMEOUT_S)
        # os.read, not child.stdout.read: a buffered read could swallow the answer's first bytes
        if not ready or os.read(child.stdout.fileno(), 1) != _READY:
            child.kill()
            child.wait()
            raise SqlExecutionError(f"the SQL query process did not start "
                                    f"({_describe_exit(child.returncode)})")
        try:
            answer, _ = child.communicate(timeout=timeout_s + KILL_GRACE_S)
        except subprocess.TimeoutExpired as exc:
            if not (exc.stdout or b"").startswith(_CHECKED):
                raise SqlRejected(f"the SQL could not be parsed and checked within {timeout_s:g} s: "
                                  f"send a shorter, flatter SELECT statement") from None
            raise SqlTimeout(f"query exceeded the time limit of {timeout_s:g} s and was "
                             f"stopped; add filters, aggregate, or LIMIT") from None
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    answer = answer.removeprefix(_CHECKED)
    if not answer:
        raise SqlExecutionError(
            f"the query process died ({_describe_exit(child.returncode)}) before answering; "
            f"the query most likely exceeded the memory limit: aggregate or LIMIT")
    outcome = json.loads(answer)
    if "error" in outcome:
        raise _ERRORS[outcome["error"]](outcome["message"])
    return outcome


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"killed by {signal.Signals(-exitcode).name}"
    return f"exit code {exitcode}"


def _confine_query_process() -> None:
    """Bound this process's address space and take away its right to write files (Landlock:
    nothing can be created, written, truncated, renamed or removed from now on; files opened
    before stay usable, such as stdout). Irreversible: only for a query process."""
    global _confined
    _confined = True
    with open("/proc/self/statm") as f:  # first field: current address space, in pages
        size_now = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = size_now + SANDBOX_PROCESS_HEADROOM_BYTES
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    libc = ctypes.CDLL(None, use_errno=True)
    abi = libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                       ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION))
    if abi < 0:
        # no Landlock in the kernel, switched off at boot, or refused by a seccomp filter (containers)
        if ctypes.get_errno() in (errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
            return
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    handled = ctypes.c_uint64(sum(rights for version, rights in _LANDLOCK_WRITE_RIGHTS_BY_ABI.items()
                                  if version <= abi))
    # struct landlock_ruleset_attr starts with handled_access_fs; the kernel zero-fills the rest.
    ruleset = libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(handled),
                           ctypes.c_size_t(ctypes.sizeof(handled)), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    try:
        # With no rule added, every handled right is denied everywhere.
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 \
                or libc.syscall(_SYS_LANDLOCK_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    finally:
        os.close(ruleset)


def _query_process_main() -> None:
    """`python -m tools.sql_sandbox REQUEST_JSON`: run one request, answer in JSON on stdout."""
    request = json.loads(sys.argv[1])
    # Die with the caller (a SIGKILLed CLI or server must not leave a query running); the
    # calling thread waits for this process, so the "parent thread exited" case cannot arise.
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != request["parent_pid"]:  # the caller died before prctl took effect
        sys.exit(1)
    _confine_query_process()
    out = sys.stdout.buffer
    out.write(_READY)
    out.flush()
    try:
        # Parsing needs no database: SQL that fails the check never opens the investigation's.
        parser = duckdb.connect(config={"autoinstall_known_extensions": False,
                                        "autoload_known_extensions": False})
        stmt = _checked_select(parser, request["sql"])
        parser.close()
        out.write(_CHECKED)
        out.flush()
        if "db_path" not in request:
            outcome = {"sql": stmt.query.strip()}
        else:
            result = _execute(request["db_path"], stmt, request["timeout_s"], request["max_rows"])
            outcome = {"columns": result.columns, "rows": result.rows, "row_count": result.row_count,
                       "truncated": result.truncated, "elapsed_ms": result.elapsed_ms}
    except MemoryError:
        outcome = {"error": "SqlExecutionError", "message": "the query ran out of memory: aggregate or LIMIT"}
    except tuple(_ERRORS.values()) as exc:
        outcome = {"error": type(exc).__name__, "message": str(exc)}
    answer = json.dumps(outcome).encode()
    if len(answer) > MAX_RESULT_BYTES:
        answer = json.dumps({"error": "SqlExecutionError", "message": (
            f"the result is {len(answer) / 1024**2:.0f} MB; the limit is "
            f"{MAX_RESULT_BYTES // 1024**2} MB: select fewer or shorter values, aggregate or LIMIT")}).encode()
    out.write(answer)
    out.flush()


def _execute(db_path: str, stmt: Any, timeout_s: float, max_rows: int) -> SqlResult:
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
            if isinstance(exc, duckdb.OutOfMemoryException):  # DuckDB's advice (SET ...) does not apply here
                raise SqlExecutionError(f"OutOfMemoryException: the query ran out of memory ({SANDBOX_MAX_MEMORY}; "
                                        f"query processes do not spill to disk): filter, aggregate, "
                                        f"or LIMIT") from None
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


_ERRORS.update({cls.__name__: cls for cls in (SqlRejected, SqlExecutionError, SqlTimeout,
                                               FileNotFoundError)})

if __name__ == "__main__":
    _query_process_main()
