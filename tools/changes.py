"""Change events (deploys, config changes, feature flags) shortly before or inside a window."""

import duckdb
import pandas as pd

from tools.contract import one_row

CHANGES_SQL = """
    SELECT ts, service, kind, description
    FROM events
    WHERE ts >= $from AND ts < $until
    ORDER BY ts
"""


def recent_changes(
    con: duckdb.DuckDBPyConnection,
    start: pd.Timestamp,
    end: pd.Timestamp,
    *,
    lookback_minutes: int = 120,
) -> dict:
    """Changes from `lookback_minutes` before the window to its end, nearest-before first."""
    params = {"from": start - pd.Timedelta(minutes=lookback_minutes), "until": end}
    rows = con.execute(CHANGES_SQL, params).df()
    total = one_row(con.execute("SELECT count(*) FROM events"))[0]
    changes = []
    for row in rows.itertuples(index=False):
        lead = (start - pd.Timestamp(row.ts)).total_seconds() / 60.0
        changes.append(
            {
                "ts": pd.Timestamp(row.ts).isoformat(),
                "service": row.service,
                "kind": row.kind,
                "description": row.description,
                "minutes_before_window": round(lead, 2),
                "inside_window": lead < 0,
            }
        )
    changes.sort(key=lambda c: (c["inside_window"], abs(c["minutes_before_window"])))
    return {
        "changes": changes,
        "lookback_minutes": lookback_minutes,
        "events_total": int(total),
        "sql": CHANGES_SQL,
    }
