"""One benchmark measurement in its own process: `python -m benchmarks.measure STAGE JSON_ARGS`.

A fresh process per measurement makes its peak RSS (``ru_maxrss``) that measurement's own, not
the high-water mark of everything measured before it. The process prints one line
``RESULT {json}`` with wall seconds per step, its RSS after imports and its peak RSS (MB).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from tools.changes import recent_changes
from tools.detection import detect_windows
from tools.loader import load_sources
from tools.logscan import PROBLEM_LEVELS, log_pattern_scan
from tools.onsets import service_error_onsets
from tools.sql_sandbox import connect_readonly, run_sql
from tools.templates import mask_sql, mine_service_templates

# A query of the kind the analyst writes: problem lines per service and level in the window.
ANALYST_SQL = (
    "SELECT service, level, count(*) AS lines, avg(latency_ms) AS mean_latency_ms FROM logs "
    "WHERE ts >= TIMESTAMP '{start}' AND ts < TIMESTAMP '{end}' AND level IN ('WARN', 'ERROR') "
    "GROUP BY service, level ORDER BY lines DESC"
)
FLOOR_SQL = "SELECT service, level, count(*) FROM logs GROUP BY service, level"


def rss_mb() -> float:
    """Peak RSS of this process so far (MB): VmHWM, the high-water mark of this process's own
    memory map. ru_maxrss is not used: across a vfork + exec it starts at the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # no /proc: KiB


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - started


def seed_zscore_loop(values: np.ndarray, window: int = 75, z: float = 3.2) -> np.ndarray:
    """The seed notebook's detector as it was: a Python loop recomputing mean and std over the
    previous `window` points for every point, O(n * window)."""
    x = values.astype(float)
    out = np.zeros_like(x, dtype=bool)
    for i in range(len(x)):
        lo = max(0, i - window)
        if i - lo < max(10, window // 4):
            continue
        mu = float(np.mean(x[lo:i]))
        sd = float(np.std(x[lo:i])) + 1e-9
        out[i] = abs((x[i] - mu) / sd) >= z
    return out


def seed_pandas_scan(logs_csv: str, start: pd.Timestamp, end: pd.Timestamp, top_k: int = 8) -> dict:
    """The seed notebook's log scan: the whole CSV into pandas, filter the window and the
    WARN/ERROR lines, value_counts per error kind, service, endpoint and region."""
    logs = pd.read_csv(logs_csv, parse_dates=["ts"])
    ts = logs["ts"].dt.tz_convert(None) if logs["ts"].dt.tz is not None else logs["ts"]
    window = logs[(ts >= start) & (ts <= end)].copy()
    kinds = window["error_kind"].fillna("") if "error_kind" in window else pd.Series("", index=window.index)
    window["error_kind_norm"] = kinds.replace("", "NONE")
    problems = window[window["level"].isin(["WARN", "ERROR"])]
    return {
        "rows": len(window),
        "top_error_kinds": problems["error_kind_norm"].value_counts().head(top_k).to_dict(),
        "top_services": problems["service"].value_counts().head(top_k).to_dict(),
        "top_endpoints": problems["endpoint"].value_counts().head(top_k).to_dict(),
        "by_region": problems.groupby("region").size().sort_values(ascending=False).head(top_k).to_dict(),
        "p95_latency_ms": float(np.percentile(window["latency_ms"].dropna().to_numpy(), 95)) if len(window) else None,
    }


def _reader(path: str) -> str:
    return f"read_parquet('{path}')" if path.endswith(".parquet") else f"read_csv('{path}')"


def stage_load(args: dict) -> dict:
    summary, seconds = timed(load_sources, args["db"], args["metrics"], args["logs"], args.get("events"))
    return {"load": seconds, "log_rows": summary.log_rows, "metrics_rows": summary.metrics_rows}


def stage_duckdb_load(args: dict) -> dict:
    """DuckDB's own reader of the same files into a database file: the floor for `load`."""
    db = Path(args["db"])
    for stale in (db, Path(str(db) + ".wal")):
        stale.unlink(missing_ok=True)
    con = duckdb.connect(str(db))
    con.execute("SET enable_progress_bar = false")

    def copy_in() -> None:
        con.execute(f"CREATE TABLE metrics AS SELECT * FROM {_reader(args['metrics'])}")
        con.execute(f"CREATE TABLE logs AS SELECT * FROM {_reader(args['logs'])}")
        con.execute("CHECKPOINT")

    _, seconds = timed(copy_in)
    con.close()
    return {"duckdb_load": seconds}


def warm(fn, *args, **kwargs):
    """Run twice and time the second call: first-call costs (lazy imports, caches) are not the
    stage's scaling behaviour. The first call's time is returned too."""
    _, first = timed(fn, *args, **kwargs)
    value, second = timed(fn, *args, **kwargs)
    return value, second, first


def stage_tools(args: dict) -> dict:
    """Every investigation tool over a loaded database, and the bare GROUP BY floor."""
    out: dict = {}
    with connect_readonly(args["db"]) as con:
        metrics, out["read_metrics"] = timed(lambda: con.execute("SELECT * FROM metrics ORDER BY ts").df())
        found, out["detect"], _ = warm(detect_windows, metrics)
        start, end = found.windows[0].start, found.windows[0].end
        out["window"] = [str(start), str(end)]
        _, out["floor_group_by"], _ = warm(lambda: con.execute(FLOOR_SQL).fetchall())
        scan, out["log_pattern_scan"], out["log_pattern_scan_first"] = warm(log_pattern_scan, con, start, end)
        out["top_template_services"] = [t["service"] for t in scan["templates"][:3]]
        _, out["service_error_onsets"], _ = warm(service_error_onsets, con, start, end)
        _, out["recent_changes"], _ = warm(recent_changes, con, start, end)
        level_list = ", ".join(f"'{lvl}'" for lvl in PROBLEM_LEVELS)
        out["problem_lines"] = con.execute(f"SELECT count(*) FROM logs WHERE level IN ({level_list})").fetchone()[0]
        masked = con.execute(
            f"SELECT DISTINCT service, {mask_sql('message')} FROM "
            f"(SELECT DISTINCT service, message FROM logs WHERE level IN ({level_list}))"
        ).fetchall()
    out["distinct_masked_messages"] = len(masked)
    _, out["mine_templates"], _ = warm(mine_service_templates, [m[0] for m in masked], [m[1] for m in masked])
    query = ANALYST_SQL.format(start=start, end=end)
    # The first run_sql of a process also starts the sandbox's forkserver: reported apart.
    _, out["run_sql"], out["run_sql_first"] = warm(run_sql, args["db"], query)
    return out


def stage_seed_scan(args: dict) -> dict:
    start, end = pd.Timestamp(args["start"]), pd.Timestamp(args["end"])
    result, seconds = timed(seed_pandas_scan, args["logs"], start, end)
    return {"seed_pandas_scan": seconds, "rows": result["rows"]}


def stage_detectors(args: dict) -> dict:
    """Detector vs the seed's loop on the same loaded metrics (p95_ms)."""
    with connect_readonly(args["db"]) as con:
        metrics = con.execute("SELECT * FROM metrics ORDER BY ts").df()
    found, detect_s = timed(detect_windows, metrics)
    flags, seed_s = timed(seed_zscore_loop, metrics["p95_ms"].to_numpy())
    return {"points": len(metrics), "detect": detect_s, "seed_zscore_loop": seed_s,
            "window": [str(found.windows[0].start), str(found.windows[0].end)] if found.windows else None, "seed_flagged": int(flags.sum())}


STAGES = {
    "load": stage_load,
    "duckdb_load": stage_duckdb_load,
    "tools": stage_tools,
    "seed_scan": stage_seed_scan,
    "detectors": stage_detectors,
}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str]) -> int:
    stage, args = argv[0], json.loads(argv[1])
    base_mb, base_cpu = rss_mb(), cpu_seconds()
    result = STAGES[stage](args)
    result.update({"rss_after_imports_mb": round(base_mb, 1), "peak_rss_mb": round(rss_mb(), 1),
                   "cpu": round(cpu_seconds() - base_cpu, 3)})
    print("RESULT " + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
