"""Async checkpointers for the server: the SQLite file by default, PostgreSQL when a DSN is set.

LangServe needs the compiled graph when routes are registered, but async savers can only be
opened inside the running event loop (the app's lifespan). `DeferredSaver` is the graph's
checkpointer from the start and forwards to the real saver once the lifespan has opened it.
"""

import json
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from graph.state import STATE_MODELS
from tools.times import utc_now_iso


class CheckpointUnavailable(RuntimeError):
    """The checkpoint store cannot be read: never silently replaced by a fresh one."""


def serializer() -> JsonPlusSerializer:
    return JsonPlusSerializer(allowed_msgpack_modules=STATE_MODELS)


# The columns our checkpoint tables must have: an existing file without them is someone else's
# database, and setup() would otherwise add our tables to it.
CHECKPOINT_COLUMNS = {
    "checkpoints": "thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, metadata",
    "writes": "thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, value",
}


def verify_sqlite_file(path: Path) -> None:
    """Fail clearly when `path` exists but is not a sound checkpoint database of ours."""
    if path.exists() and not path.is_file():
        raise CheckpointUnavailable(f"checkpoint database {path} is not a file")
    if not path.exists() or path.stat().st_size == 0:
        return
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise CheckpointUnavailable(f"checkpoint database {path} cannot be opened: {exc}") from exc
    try:
        # quick_check reads every page: a file damaged past its header fails here, not mid-run.
        problem = conn.execute("PRAGMA quick_check").fetchone()[0]
        if problem != "ok":
            raise CheckpointUnavailable(f"checkpoint database {path} is corrupt: {problem}")
        for table, columns in CHECKPOINT_COLUMNS.items():
            conn.execute(f"SELECT {columns} FROM {table} LIMIT 0")
    except sqlite3.DatabaseError as exc:
        raise CheckpointUnavailable(f"checkpoint database {path} is unreadable: {exc}") from exc
    finally:
        conn.close()


# One-time claims, in the same store as the checkpoints: a decision is taken exactly once
# whichever entry point (server worker, page, CLI process) sends it.
CLAIMS_DDL = "CREATE TABLE IF NOT EXISTS incident_claims (claim TEXT PRIMARY KEY, owner TEXT NOT NULL, claimed_at TEXT NOT NULL)"
# The decision that won a decision claim, written in the claim's transaction: a process that dies
# between the claim and the approve node's checkpoint leaves it for a later resume to apply,
# instead of a taken claim nobody can ever decide. A table of its own, so existing files keep theirs.
DECISIONS_DDL = "CREATE TABLE IF NOT EXISTS incident_decisions (claim TEXT PRIMARY KEY, decision TEXT NOT NULL)"
CLAIMED_DECISION_QUERY = (
    "SELECT d.decision, c.owner, c.claimed_at FROM incident_decisions d JOIN incident_claims c ON c.claim = d.claim WHERE d.claim = {}"
)


@dataclass(frozen=True)
class ClaimedDecision:
    """The decision stored with a taken decision claim: `decision` is the approve node's resume value."""

    decision: dict[str, Any]
    owner: str
    claimed_at: str

    @classmethod
    def from_row(cls, decision: str, owner: str, claimed_at: str) -> "ClaimedDecision":
        return cls(json.loads(decision), owner, claimed_at)


def decision_claim_key(thread_id: str, interrupt_id: str) -> str:
    """The claim every decision on one approval request competes for."""
    return f"decision:{thread_id}:{interrupt_id}"


def create_claim_tables(conn: sqlite3.Connection) -> None:
    conn.execute(CLAIMS_DDL)
    conn.execute(DECISIONS_DDL)


def claim_in_sqlite(path: Path, key: str, owner: str, decision: dict[str, Any] | None = None) -> bool:
    """True for the first process to claim `key` in the checkpoint file, False for every later one.
    `decision` is stored with the claim, in its transaction."""
    conn = sqlite3.connect(str(path), timeout=10)
    try:
        create_claim_tables(conn)
        try:
            with conn:
                conn.execute("INSERT INTO incident_claims VALUES (?, ?, ?)", (key, owner, utc_now_iso(precise=True)))
                if decision is not None:
                    conn.execute("INSERT INTO incident_decisions VALUES (?, ?)", (key, json.dumps(decision, sort_keys=True)))
            return True
        except sqlite3.IntegrityError:
            return False
    finally:
        conn.close()


def claimed_decision_in_sqlite(path: Path, key: str) -> ClaimedDecision | None:
    """The decision stored with the claim `key` in the checkpoint file (its claim tables created
    when it was opened), if one was."""
    conn = sqlite3.connect(str(path), timeout=10)
    try:
        row = conn.execute(CLAIMED_DECISION_QUERY.format("?"), (key,)).fetchone()
    finally:
        conn.close()
    return ClaimedDecision.from_row(*row) if row else None


class DeferredSaver(BaseCheckpointSaver):
    """Forwards every async checkpoint call to the saver bound by `bind` (see module doc)."""

    def __init__(self) -> None:
        super().__init__(serde=serializer())
        self._inner: BaseCheckpointSaver | None = None

    def bind(self, inner: BaseCheckpointSaver | None) -> None:
        self._inner = inner

    @property
    def inner(self) -> BaseCheckpointSaver:
        if self._inner is None:
            raise CheckpointUnavailable("the checkpointer is not open (server starting or stopped)")
        return self._inner

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self.inner.aget_tuple(config)

    async def alist(self, config: RunnableConfig | None, **kwargs: Any) -> AsyncIterator[CheckpointTuple]:
        async for item in self.inner.alist(config, **kwargs):
            yield item

    async def aput(
        self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata, new_versions: ChannelVersions
    ) -> RunnableConfig:
        return await self.inner.aput(config, checkpoint, metadata, new_versions)

    async def aput_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = "") -> None:
        await self.inner.aput_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await self.inner.adelete_thread(thread_id)

    def get_next_version(self, current: Any, channel: None) -> Any:
        return self.inner.get_next_version(current, channel)


@asynccontextmanager
async def open_sqlite_saver(path: Path) -> AsyncIterator[BaseCheckpointSaver]:
    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    path.parent.mkdir(parents=True, exist_ok=True)
    verify_sqlite_file(path)
    async with aiosqlite.connect(str(path)) as conn:
        # Several server workers may share the file: wait for a writer rather than fail at once.
        await conn.execute("PRAGMA busy_timeout = 10000")
        saver = AsyncSqliteSaver(conn, serde=serializer())
        await saver.setup()
        yield saver


# One key for "the migrations of incident-graph's PostgreSQL tables": workers starting together
# would otherwise race on CREATE TABLE / the migrations table.
SETUP_LOCK_KEY = 0x1C1D_E17


SETUP_LOCK_WAIT_S = 120.0


async def _take_setup_lock(conn) -> None:
    """Take the migrations lock by polling, never by a blocking pg_advisory_lock: a statement
    waiting for the lock holds a snapshot, the holder's migrations run CREATE INDEX CONCURRENTLY,
    which waits for every such snapshot, and PostgreSQL breaks the deadlock by failing the
    waiting worker's startup (seen with two uvicorn workers on a loaded machine)."""
    import asyncio

    deadline = asyncio.get_running_loop().time() + SETUP_LOCK_WAIT_S
    while not (await (await conn.execute("SELECT pg_try_advisory_lock(%s) AS taken", (SETUP_LOCK_KEY,))).fetchone())["taken"]:
        if asyncio.get_running_loop().time() > deadline:
            raise CheckpointUnavailable(f"PostgreSQL checkpointer: another process held the setup lock for over {SETUP_LOCK_WAIT_S:.0f} s")
        await asyncio.sleep(0.2)


@asynccontextmanager
async def open_postgres_saver(dsn: str) -> AsyncIterator[BaseCheckpointSaver]:
    import psycopg
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    try:
        connect = psycopg.AsyncConnection.connect(dsn, autocommit=True, connect_timeout=10, row_factory=dict_row)
        async with await connect as lock_conn:
            await _take_setup_lock(lock_conn)
            await AsyncPostgresSaver(lock_conn, serde=serializer()).setup()
            await lock_conn.execute("SELECT pg_advisory_unlock(%s)", (SETUP_LOCK_KEY,))
    except psycopg.OperationalError as exc:
        raise CheckpointUnavailable(f"PostgreSQL checkpointer unreachable: {str(exc).strip()}") from exc
    pool = AsyncConnectionPool(
        dsn, min_size=1, max_size=8, open=False, kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
    )
    await pool.open(wait=True, timeout=15)
    try:
        yield AsyncPostgresSaver(pool, serde=serializer())
    finally:
        await pool.close()
