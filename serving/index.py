"""The incident index: which incidents exist, and one-time claims on them.

The checkpointer knows each thread's state but not which threads are incidents started over
HTTP, nor who has already answered an approval. Small tables, kept in the same store as
the checkpoints (the SQLite file or PostgreSQL), hold that, so every server worker sees the
same incidents and a decision is taken exactly once even when two arrive at two workers; the
decision is stored with its claim, so a worker that dies before applying it leaves it to recover.
"""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from graph.checkpointing import CLAIMED_DECISION_QUERY, CLAIMS_DDL, DECISIONS_DDL, ClaimedDecision
from tools.times import utc_now_iso


@dataclass(frozen=True)
class IncidentRecord:
    thread_id: str
    created_at: str
    source: dict[str, Any]


class IncidentIndex(Protocol):
    async def add(self, thread_id: str, source: dict[str, Any]) -> IncidentRecord: ...
    async def get(self, thread_id: str) -> IncidentRecord | None: ...
    async def all(self) -> list[IncidentRecord]: ...
    async def claim(self, key: str, owner: str, decision: dict[str, Any] | None = None) -> bool:
        """True for the first caller with `key`, False for every later one (any worker);
        `decision` is stored with the claim, in its transaction."""
        ...
    async def claimed_decision(self, key: str) -> ClaimedDecision | None:
        """The decision stored with the claim `key`, if one was."""
        ...


SCHEMA = (
    "CREATE TABLE IF NOT EXISTS incidents (thread_id TEXT PRIMARY KEY, created_at TEXT NOT NULL, source TEXT NOT NULL)",
    CLAIMS_DDL,
    DECISIONS_DDL,
)


def _record(row: Any) -> IncidentRecord:
    thread_id, created_at, source = (row["thread_id"], row["created_at"], row["source"]) if isinstance(row, dict) else row
    return IncidentRecord(thread_id, created_at, json.loads(source))


class SqliteIndex:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def add(self, thread_id: str, source: dict[str, Any]) -> IncidentRecord:
        record = IncidentRecord(thread_id, utc_now_iso(precise=True), source)
        await self.conn.execute(
            "INSERT INTO incidents VALUES (?, ?, ?)", (thread_id, record.created_at, json.dumps(source, sort_keys=True))
        )
        await self.conn.commit()
        return record

    async def get(self, thread_id: str) -> IncidentRecord | None:
        async with self.conn.execute("SELECT thread_id, created_at, source FROM incidents WHERE thread_id = ?", (thread_id,)) as cur:
            row = await cur.fetchone()
        return _record(row) if row else None

    async def all(self) -> list[IncidentRecord]:
        async with self.conn.execute("SELECT thread_id, created_at, source FROM incidents ORDER BY created_at DESC") as cur:
            return [_record(row) for row in await cur.fetchall()]

    async def claim(self, key: str, owner: str, decision: dict[str, Any] | None = None) -> bool:
        import sqlite3

        try:
            await self.conn.execute("INSERT INTO incident_claims VALUES (?, ?, ?)", (key, owner, utc_now_iso(precise=True)))
            if decision is not None:
                await self.conn.execute("INSERT INTO incident_decisions VALUES (?, ?)", (key, json.dumps(decision, sort_keys=True)))
            await self.conn.commit()
            return True
        except sqlite3.IntegrityError:
            await self.conn.rollback()  # or the failed INSERT's transaction keeps the file locked
            return False

    async def claimed_decision(self, key: str) -> ClaimedDecision | None:
        async with self.conn.execute(CLAIMED_DECISION_QUERY.format("?"), (key,)) as cur:
            row = await cur.fetchone()
        return ClaimedDecision.from_row(*row) if row else None


class PostgresIndex:
    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def add(self, thread_id: str, source: dict[str, Any]) -> IncidentRecord:
        record = IncidentRecord(thread_id, utc_now_iso(precise=True), source)
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO incidents VALUES (%s, %s, %s)", (thread_id, record.created_at, json.dumps(source, sort_keys=True))
            )
        return record

    async def get(self, thread_id: str) -> IncidentRecord | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT thread_id, created_at, source FROM incidents WHERE thread_id = %s", (thread_id,))
            row = await cur.fetchone()
        return _record(row) if row else None

    async def all(self) -> list[IncidentRecord]:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT thread_id, created_at, source FROM incidents ORDER BY created_at DESC")
            return [_record(row) for row in await cur.fetchall()]

    async def claim(self, key: str, owner: str, decision: dict[str, Any] | None = None) -> bool:
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "INSERT INTO incident_claims VALUES (%s, %s, %s) ON CONFLICT (claim) DO NOTHING", (key, owner, utc_now_iso(precise=True))
            )
            if cur.rowcount != 1:
                return False
            if decision is not None:
                await conn.execute("INSERT INTO incident_decisions VALUES (%s, %s)", (key, json.dumps(decision, sort_keys=True)))
            return True

    async def claimed_decision(self, key: str) -> ClaimedDecision | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(CLAIMED_DECISION_QUERY.format("%s"), (key,))
            row = await cur.fetchone()
        return ClaimedDecision.from_row(row["decision"], row["owner"], row["claimed_at"]) if row else None


@asynccontextmanager
async def open_sqlite_index(path: Path) -> AsyncIterator[SqliteIndex]:
    import aiosqlite

    async with aiosqlite.connect(str(path)) as conn:
        await conn.execute("PRAGMA busy_timeout = 10000")
        for statement in SCHEMA:
            await conn.execute(statement)
        await conn.commit()
        yield SqliteIndex(conn)


@asynccontextmanager
async def open_postgres_index(dsn: str) -> AsyncIterator[PostgresIndex]:
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(dsn, min_size=1, max_size=4, open=False, kwargs={"autocommit": True, "row_factory": dict_row})
    await pool.open(wait=True, timeout=15)
    try:
        async with pool.connection() as conn:
            # Workers starting together: CREATE TABLE IF NOT EXISTS can still collide on the catalog.
            await conn.execute("SELECT pg_advisory_lock(hashtext('incident-graph index'))")
            for statement in SCHEMA:
                await conn.execute(statement)
            await conn.execute("SELECT pg_advisory_unlock(hashtext('incident-graph index'))")
        yield PostgresIndex(pool)
    finally:
        await pool.close()
