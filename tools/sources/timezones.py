"""The UTC offsets a source's text timestamps were written in.

Every table holds UTC; the offsets are kept in the load summary (and so in the postmortem's
metadata) because they matter to a reader: "10:05 in the logs" means 08:05 UTC when the
service logged in +02:00.
"""
from __future__ import annotations

import duckdb

__all__ = ["text_offsets"]

_MAX_OFFSETS = 5
# An offset only counts right after a time of day, so dates like 2026-03-01 never match.
_OFFSET_RE = r"\d\d:\d\d(?::\d\d(?:[.,]\d+)?)?\s*(Z|z|[+-]\d\d:?\d\d)$"


def text_offsets(con: duckdb.DuckDBPyConnection, relation: str, ts_column: str) -> list[str]:
    """Distinct offsets other than UTC (``+02:00``) of a text timestamp column, at most five,
    sorted. ``Z``, ``+00:00``, naive and epoch values give none: they already are UTC."""
    rows = con.execute(
        f"SELECT DISTINCT regexp_extract(trim(CAST({ts_column} AS VARCHAR)), '{_OFFSET_RE}', 1) "
        f"AS o FROM {relation} WHERE o NOT IN ('', 'Z', 'z', '+00:00', '+0000', '-00:00') "
        f"LIMIT {_MAX_OFFSETS}").fetchall()
    out = set()
    for (raw,) in rows:
        digits = raw.replace(":", "")
        if raw not in ("Z", "z") and digits[1:] != "0000":
            out.add(f"{digits[:3]}:{digits[3:]}")
    return sorted(out)
