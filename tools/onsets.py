"""Per-service error onsets: who started failing first.

Each service's WARN/ERROR counts are tested against its own rate outside the window (Poisson
tail over short trailing sums), so a service that always logs errors has no onset, and a quiet
one that starts logging a slow trickle does. The onset is the start of the first sustained rise,
refined to the timestamp of that minute's first problem line.
"""

import duckdb
import numpy as np
import pandas as pd

from tools.contract import one_row
from tools.logscan import PROBLEM_LEVELS, poisson_sf


def onset_sql(levels: tuple[str, ...] = PROBLEM_LEVELS) -> str:
    level_list = ", ".join(f"'{lvl}'" for lvl in levels)
    return f"""
        SELECT service,
               time_bucket(INTERVAL 1 MINUTE, ts) AS minute,
               count(*) AS errors,
               min(ts) AS first_ts
        FROM logs
        WHERE level IN ({level_list}) AND ts >= $from AND ts < $until
        GROUP BY ALL
    """


def baseline_sql(levels: tuple[str, ...] = PROBLEM_LEVELS) -> str:
    level_list = ", ".join(f"'{lvl}'" for lvl in levels)
    return f"""
        SELECT service,
               count(*) FILTER (WHERE level IN ({level_list}) AND (ts < $from OR ts >= $until)) AS outside_errors,
               count(*) AS lines
        FROM logs GROUP BY service
    """


def first_sustained_rise(
    counts: np.ndarray, expected_per_min: float, alpha: float, span: int, sustain_count: int
) -> int | None:
    """Index of the minute a sustained rise starts, or None.

    A trailing `span`-minute sum is tested against the baseline (a slow ramp of one line a
    minute is caught, where per-minute tests miss it); the rise must stay significant in at
    least `sustain_count` of the following `span * 2` minutes. Its start is the earliest minute
    from which the counts up to the first significant minute are themselves significant, so a
    stray background line minutes earlier does not pull the onset back.
    """
    n = len(counts)
    span = min(span, n)
    trailing = np.convolve(counts, np.ones(span), mode="full")[:n]
    significant = poisson_sf(trailing - 1, expected_per_min * span) < alpha
    ahead = min(span * 2, n)
    sustained = np.convolve(significant, np.ones(ahead), mode="full")[ahead - 1 :][:n] >= sustain_count
    hits = np.flatnonzero(significant & sustained)
    if len(hits) == 0:
        return None
    first = int(hits[0])
    for start in range(max(0, first - span + 1), first + 1):
        if counts[start] == 0:
            continue
        total = counts[start : first + 1].sum()
        if poisson_sf(total - 1, expected_per_min * (first - start + 1)) < alpha:
            return start
    return first


def service_error_onsets(
    con: duckdb.DuckDBPyConnection,
    start: pd.Timestamp,
    end: pd.Timestamp,
    *,
    lookback_minutes: int = 60,
    alpha: float = 1e-4,
    sustain_minutes: int = 5,
    sustain_count: int = 3,
) -> dict:
    """Rank services by when their problem lines became significantly more frequent."""
    scan_from = start - pd.Timedelta(minutes=lookback_minutes)
    first, last = one_row(con.execute("SELECT min(ts), max(ts) FROM logs"))
    if first is None:
        return {"onsets": [], "quiet": [], "sql": onset_sql()}
    span = (pd.Timestamp(last) - pd.Timestamp(first)).total_seconds() / 60.0 + 1.0
    scanned = (end - max(scan_from, pd.Timestamp(first))).total_seconds() / 60.0
    outside_minutes = max(span - scanned, 1.0)

    params = {"from": scan_from, "until": end}
    minutes = con.execute(onset_sql(), params).df()
    base = con.execute(baseline_sql(), params).df().set_index("service")
    grid = pd.date_range(scan_from.floor("min"), end, freq="min", inclusive="left")
    onsets, quiet = [], []
    for service, rows in minutes.groupby("service"):
        counts = rows.set_index("minute")["errors"].reindex(grid, fill_value=0).to_numpy()
        first_ts = rows.set_index("minute")["first_ts"].reindex(grid)
        rate = float(base.loc[service, "outside_errors"]) / outside_minutes
        # A floor of one line per ten hours keeps a never-failing service from testing at zero.
        expected = max(rate, 1.0 / 600.0)
        onset_index = first_sustained_rise(counts, expected, alpha, sustain_minutes, sustain_count)
        in_window = grid >= start
        entry = {
            "service": service,
            "baseline_per_min": round(rate, 4),
            "window_errors": int(counts[in_window].sum()),
            "window_per_min": round(float(counts[in_window].mean()) if in_window.any() else 0.0, 3),
        }
        if onset_index is None:
            quiet.append(entry)
            continue
        onset = first_ts.iloc[onset_index]
        entry["onset"] = pd.Timestamp(onset).isoformat()
        entry["onset_minutes_from_window_start"] = round((pd.Timestamp(onset) - start).total_seconds() / 60.0, 2)
        onsets.append(entry)
    onsets.sort(key=lambda e: e["onset"])
    for rank, entry in enumerate(onsets, start=1):
        entry["order"] = rank
    quiet.sort(key=lambda e: -e["window_errors"])
    return {"onsets": onsets, "quiet": quiet, "lookback_minutes": lookback_minutes, "sql": onset_sql()}
