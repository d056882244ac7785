"""The generator's scenarios at benchmark scale: 10 k to 10 M log lines, 1 to 30 days of metrics.

One scenario from ``evals.generator`` is the seed; DuckDB SQL multiplies it, so 10 M lines are
written by DuckDB's own ``COPY`` (no Python loop per line):

* logs: copy ``c`` of every line inside the incident window keeps its minute (so the fault's
  per-minute rates and onsets scale with the copy count) at a pseudo-random second; copies of
  background lines land at independent random times of the day outside the window, so that
  background stays as smooth as independent events at that volume would be; its digits are
  rotated by ``c`` (``translate``), so the raw messages differ between copies while the masked
  messages - and so the templates - stay exactly the base scenario's. That is what real logs at
  volume look like: many lines, few templates. Fewer lines than the base are an even sample.
* metrics: the base day is the last day; each earlier day repeats it with the incident stretch
  replaced by a straight line between its edges plus the noise of the hours before it, so only
  the last day has an incident.

Files are cached under ``benchmarks/data/`` (gitignored): a second run reuses them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from evals.generator import generate, write_scenario

DATA_DIR = Path(__file__).resolve().parent / "data"
FORMATS = ("csv", "parquet")
DEFAULT_FAULT, DEFAULT_SEED = "conn_pool_exhaustion", 1
# A cached logs file is reused only beside its marker file "<name>.v<LOGS_VERSION>": files made
# by an earlier logs_file are made again (2: background copies spread over the day, not within
# 30 minutes of their original).
LOGS_VERSION = 2
# Minutes of normal data kept on either side of the incident when earlier days are synthesised.
_MARGIN_MINUTES = 30


def base_dir(fault: str = DEFAULT_FAULT, seed: int = DEFAULT_SEED, data_dir: Path = DATA_DIR) -> Path:
    """The generator's own scenario files (CSV + truth.json), written once."""
    folder = Path(data_dir) / f"{fault}-{seed}" / "base"
    if not (folder / "truth.json").exists():
        write_scenario(generate(fault, seed), folder)
    return folder


def _connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    return con


def _copy_to(con: duckdb.DuckDBPyConnection, select_sql: str, path: Path, fmt: str) -> None:
    tmp = path.with_name(path.name + ".part")
    options = "FORMAT parquet, COMPRESSION zstd" if fmt == "parquet" else "FORMAT csv, HEADER true"
    con.execute(f"COPY ({select_sql}) TO '{tmp}' ({options})")
    tmp.replace(path)  # a killed run never leaves a half-written file under the final name


def _coprime_step(n: int) -> int:
    """A multiplier coprime with n: (i * step) % n is then a permutation of 0..n-1."""
    step = 7919
    while math.gcd(step, n) != 1:
        step += 2
    return step


def logs_file(lines: int, fmt: str, fault: str = DEFAULT_FAULT, seed: int = DEFAULT_SEED,
              data_dir: Path = DATA_DIR) -> Path:
    """Path of a logs file with exactly `lines` lines in `fmt`, generated if not cached."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")
    path = Path(data_dir) / f"{fault}-{seed}" / f"logs-{lines}.{fmt}"
    marker = path.with_name(f"{path.name}.v{LOGS_VERSION}")
    if path.exists() and marker.exists():
        return path
    base = base_dir(fault, seed, data_dir) / "logs.csv"
    con = _connect()
    try:
        con.execute(
            f"CREATE TEMP TABLE base AS SELECT row_number() OVER () - 1 AS i, * "
            f"FROM read_csv('{base}', header=true, all_varchar=true)"
        )
        n0 = con.execute("SELECT count(*) FROM base").fetchone()[0]
        columns = [r[0] for r in con.execute("DESCRIBE base").fetchall() if r[0] != "i"]
        full_copies, remainder = divmod(lines, n0)
        step = _coprime_step(n0)
        digits = "0123456789"
        rotations = ", ".join(f"'{digits[k:] + digits[:k]}'" for k in range(10))
        t = truth(fault, seed, data_dir)
        window = (f"TIMESTAMP '{t['start'][:-1]}'", f"TIMESTAMP '{t['end'][:-1]}'") if t.get("start") else None
        base_ts = "CAST(ts AS TIMESTAMP)"
        in_minute = f"date_trunc('minute', {base_ts}) + to_seconds(CAST(hash(c, i) % 60 AS BIGINT))"
        background = "TRUE" if window is None else f"NOT ({base_ts} >= {window[0]} AND {base_ts} < {window[1]})"
        day_first, day_last = con.execute(f"SELECT min({base_ts}), max({base_ts}) FROM base").fetchone()
        # A uniformly random second of the day outside the window: the day's seconds with the
        # window cut out, then shifted past it.
        window_seconds = 0 if window is None else con.execute(
            f"SELECT epoch({window[1]} - {window[0]})::BIGINT").fetchone()[0]
        outside_seconds = max(int((day_last - day_first).total_seconds()) - window_seconds, 1)
        anywhere = f"TIMESTAMP '{day_first}' + to_seconds(CAST(hash(i, c, 7) % {outside_seconds} AS BIGINT))"
        spread = anywhere if window is None else (
            f"CASE WHEN {anywhere} >= {window[0]} THEN {anywhere} + to_seconds({window_seconds}) "
            f"ELSE {anywhere} END")
        # Copy 0 is the base line itself. Other copies of an incident line keep its minute (a fault
        # at more traffic makes proportionally more errors); copies of background lines land at a
        # random time of the day outside the window, each independently. Keeping them near their
        # original (the first version moved them up to 30 minutes) replayed each background line
        # as a burst of its copies (about 200 at 10 M lines) within one hour: far lumpier than
        # independent background events, and the Poisson tests of tools/onsets.py rightly
        # flagged such hours as rises (a wrong root service at 10 M lines).
        shifted_ts = (
            f"CASE WHEN c = 0 THEN {base_ts} "
            f"WHEN {background} THEN {spread} "
            f"ELSE {in_minute} END"
        )
        varied = {
            "message": f"translate(message, '{digits}', list_extract([{rotations}], c % 10 + 1))",
            "trace_id": "CASE WHEN c = 0 THEN trace_id ELSE md5(trace_id || c) END",
        }
        out_cols = []
        for name in columns:
            if name == "ts":
                out_cols.append("strftime(new_ts, '%Y-%m-%dT%H:%M:%SZ') AS ts" if fmt == "csv" else "new_ts AS ts")
            elif name == "latency_ms" and fmt == "parquet":
                out_cols.append("TRY_CAST(latency_ms AS DOUBLE) AS latency_ms")
            else:
                out_cols.append(f"{varied.get(name, name)} AS {name}")
        # The last, partial copy takes an evenly spread subset of the base lines.
        sql = f"""
            SELECT {', '.join(out_cols)}
            FROM (SELECT *, {shifted_ts} AS new_ts
                  FROM base, range({full_copies + (1 if remainder else 0)}) AS copies(c)
                  WHERE c < {full_copies} OR (i * {step}) % {n0} < {remainder})
            ORDER BY new_ts, c, i
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        _copy_to(con, sql, path, fmt)
        marker.touch()
    finally:
        con.close()
    return path


def _metrics_days(base: pd.DataFrame, truth: dict, days: int, seed: int) -> pd.DataFrame:
    """`days` days of per-minute metrics ending with the base day (the only one with an incident)."""
    base = base.sort_values("ts").reset_index(drop=True)
    ts = pd.to_datetime(base["ts"], utc=True)
    if days == 1:
        return base.assign(ts=ts)
    minutes = len(base)
    start = pd.Timestamp(truth["start"]) if truth.get("start") else None
    end = pd.Timestamp(truth["end"]) if truth.get("end") else None
    quiet = base.copy()
    rng = np.random.default_rng(seed)
    if start is not None:
        inside = ((ts >= start - pd.Timedelta(minutes=_MARGIN_MINUTES)) & (ts < end + pd.Timedelta(minutes=_MARGIN_MINUTES))).to_numpy()
        idx = np.flatnonzero(inside)
        first, last = max(idx[0] - 1, 0), min(idx[-1] + 1, minutes - 1)
        for col in base.columns.drop("ts"):
            values = base[col].to_numpy(dtype=float)
            line = np.interp(idx, [first, last], [values[first], values[last]])
            # Noise of the same length from the normal stretch before (or after) the incident.
            donor = values[~inside]
            noise = np.diff(donor)[: len(idx)] / np.sqrt(2.0) if len(donor) > len(idx) + 1 else 0.0
            quiet.loc[idx, col] = line + rng.permutation(noise) if np.ndim(noise) else line
    frames = []
    for day in range(days - 1, 0, -1):
        frames.append(quiet.assign(ts=ts - pd.Timedelta(days=day)))
    frames.append(base.assign(ts=ts))
    return pd.concat(frames, ignore_index=True)


def metrics_file(days: int, fmt: str, fault: str = DEFAULT_FAULT, seed: int = DEFAULT_SEED,
                 data_dir: Path = DATA_DIR) -> Path:
    """Path of a per-minute metrics file covering `days` days in `fmt`, generated if not cached."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")
    path = Path(data_dir) / f"{fault}-{seed}" / f"metrics-{days}d.{fmt}"
    if path.exists():
        return path
    folder = base_dir(fault, seed, data_dir)
    frame = _metrics_days(pd.read_csv(folder / "metrics.csv"), truth(fault, seed, data_dir), days, seed)
    con = _connect()
    try:
        con.register("frame", frame)
        ts_out = "strftime(ts, '%Y-%m-%dT%H:%M:%SZ')" if fmt == "csv" else "timezone('UTC', ts)"
        others = ", ".join(c for c in frame.columns if c != "ts")
        _copy_to(con, f"SELECT {ts_out} AS ts, {others} FROM frame ORDER BY frame.ts", path, fmt)
    finally:
        con.close()
    return path


def events_file(fault: str = DEFAULT_FAULT, seed: int = DEFAULT_SEED, data_dir: Path = DATA_DIR) -> Path:
    return base_dir(fault, seed, data_dir) / "events.csv"


def truth(fault: str = DEFAULT_FAULT, seed: int = DEFAULT_SEED, data_dir: Path = DATA_DIR) -> dict:
    return json.loads((base_dir(fault, seed, data_dir) / "truth.json").read_text())
