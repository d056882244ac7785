"""Malformed inputs: each one gets a clear error (InputError naming the file, the column where
there is one, and what was expected) or a documented handling - never a traceback, never a
partial postmortem.

Built from a real generated scenario, damaged the way real exports are. Function-level checks
that tests/test_loader.py already makes (unparseable timestamps, unknown extension, missing
file, the did-you-mean hints) are not repeated; the categories it covers are checked here
through the real CLI instead (exit code 2, `error:` and the file name on stderr, no traceback,
no postmortem written).
"""

from __future__ import annotations

import gzip
import os
import random
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from tests.processes import REPO, run_cli
from tools.detection import detect_windows
from tools.loader import InputError, load_sources
from tools.logscan import log_pattern_scan
from tools.sql_sandbox import connect_readonly

SCENARIO = ("conn_pool_exhaustion", 1)


@pytest.fixture(scope="module")
def clean(scenario_dir, tmp_path_factory):
    """The scenario's files and what loading them gives: tables, window and top templates."""
    folder = scenario_dir(*SCENARIO)
    db = tmp_path_factory.mktemp("clean") / "clean.duckdb"
    load_sources(db, folder / "metrics.csv", folder / "logs.csv", folder / "events.csv")
    return {"folder": folder, **investigate(db)}


def investigate(db: Path) -> dict:
    with connect_readonly(db) as con:
        metrics = con.execute("SELECT * FROM metrics ORDER BY ts").df()
        logs = con.execute("SELECT * FROM logs ORDER BY ALL").df()
        found = detect_windows(metrics)
        top = found.windows[0] if found.windows else None
        scan = log_pattern_scan(con, top.start, top.end) if top else {"templates": []}
    return {
        "metrics": metrics,
        "logs": logs,
        "window": (top.start, top.end) if top else (None, None),
        "templates": [(t["service"], t["template"], t["window_count"]) for t in scan["templates"]],
    }


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")


def expect_input_error(tmp_path, metrics, logs, *, bad: Path, contains: list[str], column: str | None = None):
    db = tmp_path / "incident.duckdb"
    with pytest.raises(InputError) as info:
        load_sources(db, metrics, logs)
    err = info.value
    assert err.file == str(bad) and str(bad) in str(err)
    assert err.column == column
    for part in contains:
        assert part in str(err), str(err)
    assert "Traceback" not in str(err) and "sniffing" not in str(err)
    assert not db.exists() and not Path(str(db) + ".tmp").exists()
    return err


# ----------------------------------------------------------------------------- clear errors

def non_utf8(src: Path, dst: Path) -> None:
    rows = lines_of(src)
    rows[41] = rows[41].replace(b",INFO,", b",INFO,caf\xe9 ", 1)  # a Latin-1 byte on file line 42
    dst.write_bytes(b"\n".join(rows))


def utf16(src: Path, dst: Path) -> None:
    dst.write_bytes(src.read_text(encoding="utf-8").encode("utf-16"))


def binary(src: Path, dst: Path) -> None:
    dst.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(2048))


def truncated_fields(src: Path, dst: Path) -> None:
    data = src.read_bytes().rstrip(b"\n")
    dst.write_bytes(data[: data.rindex(b"\n") + 30])  # the last line cut after 30 bytes


def truncated_quote(src: Path, dst: Path) -> None:
    dst.write_bytes(src.read_bytes() + b'2026-03-01T12:00:00Z,checkout-worker,ERROR,"pool exhausted while')


def gzip_named_csv(src: Path, dst: Path) -> None:
    dst.write_bytes(gzip.compress(src.read_bytes()))


def cut_gzip(src: Path, dst: Path) -> None:
    packed = gzip.compress(src.read_bytes())
    dst.write_bytes(packed[: len(packed) // 2])


def plain_named_gz(src: Path, dst: Path) -> None:
    dst.write_bytes(src.read_bytes())


def csv_named_parquet(src: Path, dst: Path) -> None:
    dst.write_bytes(src.read_bytes())


ERROR_CASES = [
    # (case, damaged file name, damage, what the message must say)
    ("non-UTF-8 bytes", "logs.csv", non_utf8, ["not valid UTF-8", "line 42", "iconv"]),
    ("UTF-16 text", "logs.csv", utf16, ["UTF-16-encoded", "expected UTF-8"]),
    ("binary file named .csv", "logs.csv", binary, ["not text", "NUL byte", "expected UTF-8 CSV"]),
    ("truncated last line", "logs.csv", truncated_fields, ["last line is truncated", "of 8 fields", "still be being written"]),
    ("last line cut inside a quote", "logs.csv", truncated_quote, ["last line is truncated", "inside a quoted value"]),
    ("gzip file named .csv", "logs.csv", gzip_named_csv, ["gzip-compressed", "rename it to 'logs.csv.gz'"]),
    ("gzip stream cut short", "logs.csv.gz", cut_gzip, ["gzip data is damaged or cut short"]),
    ("plain text named .gz", "logs.csv.gz", plain_named_gz, ["not gzip-compressed", "remove the .gz suffix"]),
    ("CSV named .parquet", "logs.parquet", csv_named_parquet, ["not a Parquet file", "PAR1"]),
]


@pytest.mark.parametrize("case,name,damage,contains", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_damaged_logs_file_is_a_clear_error(tmp_path, clean, case, name, damage, contains):
    bad = tmp_path / name
    damage(clean["folder"] / "logs.csv", bad)
    expect_input_error(tmp_path, clean["folder"] / "metrics.csv", bad, bad=bad, contains=contains)


def test_damaged_metrics_file_is_named_not_the_logs(tmp_path, clean):
    bad = tmp_path / "metrics.csv"
    truncated_fields(clean["folder"] / "metrics.csv", bad)
    expect_input_error(tmp_path, bad, clean["folder"] / "logs.csv", bad=bad,
                       contains=["last line is truncated", "of 5 fields"])


def test_bad_line_in_the_middle_of_a_big_file_names_its_line(tmp_path, clean):
    """Past DuckDB's sniffing sample, a short line fails while reading: the line is named."""
    rows = lines_of(clean["folder"] / "logs.csv")
    rows[40_000] = b",".join(rows[40_000].split(b",")[:3])
    bad = tmp_path / "logs.csv"
    bad.write_bytes(b"\n".join(rows))
    expect_input_error(tmp_path, clean["folder"] / "metrics.csv", bad, bad=bad,
                       contains=["a line has 3 fields where the header has 8", "line 40001"])


# ----------------------------------------------------------------------------- documented handling

def load_and_investigate(tmp_path, metrics: Path, logs: Path) -> dict:
    db = tmp_path / "handled.duckdb"
    load_sources(db, metrics, logs)
    return investigate(db)


def test_gzip_bom_and_crlf_load_the_same_data(tmp_path, clean):
    """A .csv.gz file, a UTF-8 byte-order mark and Windows line endings change nothing."""
    folder = clean["folder"]
    packed = tmp_path / "logs.csv.gz"
    packed.write_bytes(gzip.compress((folder / "logs.csv").read_bytes()))
    windows = tmp_path / "metrics.csv"
    windows.write_bytes(b"\xef\xbb\xbf" + (folder / "metrics.csv").read_bytes().replace(b"\n", b"\r\n"))
    got = load_and_investigate(tmp_path, windows, packed)
    pd.testing.assert_frame_equal(got["metrics"], clean["metrics"])
    pd.testing.assert_frame_equal(got["logs"], clean["logs"])
    assert got["window"] == clean["window"] and got["templates"] == clean["templates"]


def test_unsorted_and_duplicated_rows_give_the_same_investigation(tmp_path, clean):
    """Rows in any order, and every metrics row twice, load to the same sorted tables."""
    folder = clean["folder"]
    rng = random.Random(7)
    for name, repeat in (("metrics.csv", 2), ("logs.csv", 1)):
        header, *rows = (folder / name).read_text().rstrip("\n").split("\n")
        rows = rows * repeat
        rng.shuffle(rows)
        (tmp_path / name).write_text("\n".join([header, *rows]) + "\n")
    got = load_and_investigate(tmp_path, tmp_path / "metrics.csv", tmp_path / "logs.csv")
    pd.testing.assert_frame_equal(got["metrics"], clean["metrics"])
    pd.testing.assert_frame_equal(got["logs"], clean["logs"])
    assert got["window"] == clean["window"] and got["templates"] == clean["templates"]


def test_mixed_time_zones_and_epoch_timestamps_are_the_same_instants(tmp_path, clean):
    """One ts column mixing Z, +05:30 and -07:00 offsets, naive UTC, epoch s and epoch ms."""
    metrics = pd.read_csv(clean["folder"] / "metrics.csv")
    instants = pd.to_datetime(metrics["ts"], utc=True)
    forms = [
        lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ"),
        lambda t: t.tz_convert("Asia/Kolkata").isoformat(),
        lambda t: t.tz_convert("America/Los_Angeles").isoformat(),
        lambda t: t.strftime("%Y-%m-%d %H:%M:%S"),
        lambda t: str(int(t.timestamp())),
        lambda t: str(int(t.timestamp() * 1000)),
    ]
    metrics["ts"] = [forms[i % len(forms)](t) for i, t in enumerate(instants)]
    metrics.to_csv(tmp_path / "metrics.csv", index=False)
    got = load_and_investigate(tmp_path, tmp_path / "metrics.csv", clean["folder"] / "logs.csv")
    pd.testing.assert_frame_equal(got["metrics"], clean["metrics"])
    assert got["window"] == clean["window"]


def test_nans_and_gaps_are_null_and_the_window_still_found(tmp_path, clean):
    """NaN / null / empty cells become NULL; a 90-minute hole far from the incident and a few
    missing minutes inside it are gaps on the regular grid, and the window is still found."""
    metrics = pd.read_csv(clean["folder"] / "metrics.csv")
    ts = pd.to_datetime(metrics["ts"], utc=True).dt.tz_localize(None)
    start, end = clean["window"]
    hole = (ts >= start - pd.Timedelta(hours=8)) & (ts < start - pd.Timedelta(hours=6, minutes=30))
    missing_inside = ts.isin([start + pd.Timedelta(minutes=m) for m in (20, 21, 60)])
    damaged = metrics[~(hole | missing_inside)].astype({"p95_ms": object, "rps": object})
    damaged.loc[damaged.index[::37], "p95_ms"] = "NaN"
    damaged.loc[damaged.index[5::41], "rps"] = "null"
    damaged.loc[damaged.index[9::53], "error_rate"] = None
    damaged.to_csv(tmp_path / "metrics.csv", index=False)
    got = load_and_investigate(tmp_path, tmp_path / "metrics.csv", clean["folder"] / "logs.csv")
    assert len(got["metrics"]) == (~(hole | missing_inside)).sum()
    assert got["metrics"]["p95_ms"].isna().sum() == len(damaged.index[::37])
    assert got["metrics"]["rps"].isna().sum() == len(damaged.index[5::41])
    found_start, found_end = got["window"]
    assert abs(found_start - start) <= pd.Timedelta(minutes=2)
    assert abs(found_end - end) <= pd.Timedelta(minutes=2)


# ----------------------------------------------------------------------------- through the CLI

def header_only(src: Path, dst: Path) -> None:
    dst.write_bytes(lines_of(src)[0] + b"\n")


def empty(src: Path, dst: Path) -> None:
    dst.write_bytes(b"")


def non_numeric_metric(src: Path, dst: Path) -> None:
    frame = pd.read_csv(src).astype({"p95_ms": object})
    frame.loc[700, "p95_ms"] = "212ms"
    frame.to_csv(dst, index=False)


def misnamed_columns(src: Path, dst: Path) -> None:
    frame = pd.read_csv(src, nrows=2000)
    frame.rename(columns={"ts": "@timestamp", "level": "severity", "message": "msg"}).to_csv(dst, index=False)


CLI_CASES = [
    # (case, damaged input, its file name, damage, what stderr must say)
    ("header-only logs", "logs", "logs.csv", header_only, ["no data rows"]),
    ("empty metrics", "metrics", "metrics.csv", empty, ["file is empty (0 bytes)"]),
    ("non-numeric metric", "metrics", "metrics.csv", non_numeric_metric,
     ["column 'p95_ms'", "non-numeric value at data row 701", "'212ms'"]),
    ("misnamed columns", "logs", "logs.csv", misnamed_columns,
     ["missing required columns ts, level, message", "did you mean ts?", "did you mean level?", "did you mean message?"]),
    ("non-UTF-8 bytes", "logs", "logs.csv", non_utf8, ["not valid UTF-8"]),
    ("truncated last line", "logs", "logs.csv", truncated_fields, ["last line is truncated"]),
    ("gzip file named .csv", "logs", "logs.csv", gzip_named_csv, ["gzip-compressed"]),
]


@pytest.mark.parametrize("case,which,name,damage,contains", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_reports_bad_input_with_exit_2_and_writes_nothing(tmp_path, clean, case, which, name, damage, contains):
    folder = clean["folder"]
    files = {"metrics": folder / "metrics.csv", "logs": folder / "logs.csv"}
    files[which] = tmp_path / "input" / name
    files[which].parent.mkdir()
    damage(folder / f"{which}.csv", files[which])
    out = tmp_path / "out"
    result = run_cli("investigate", "--metrics", str(files["metrics"]), "--logs", str(files["logs"]),
                     "--events", str(folder / "events.csv"), "--auto-approve", "--out", str(out),
                     env_home=tmp_path / "home")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("error: ") and str(files[which]) in result.stderr
    for part in contains:
        assert part in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (out / "postmortem.json").exists() and not (out / "postmortem.md").exists()


# ----------------------------------------------------------------------------- 2 GB, streamed

LOAD_AND_REPORT = """
import resource, sys
from tools.loader import load_sources
summary = load_sources(sys.argv[1], sys.argv[2], sys.argv[3])
print(summary.log_rows, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""
BIG_LINES = 11_700_000  # about 186 bytes a line: just over 2 GiB


@pytest.mark.slow
def test_two_gigabyte_log_file_is_streamed_not_held_in_memory(tmp_path, clean, record_property):
    """2 GiB of CSV logs, written by DuckDB's COPY; loaded in a child process whose peak RSS
    (ru_maxrss, imports included) must stay far below the file size."""
    logs = tmp_path / "logs.csv"
    con = duckdb.connect()
    con.execute(f"""
        COPY (
            SELECT strftime(TIMESTAMP '2026-03-01 00:00:00' + to_microseconds(i * {86_400_000_000 // BIG_LINES}),
                            '%Y-%m-%dT%H:%M:%SZ') AS ts,
                   'svc-' || (i % 11) AS service,
                   CASE WHEN i % 97 = 0 THEN 'ERROR' WHEN i % 13 = 0 THEN 'WARN' ELSE 'INFO' END AS level,
                   'GET /api/v1/items/' || i || ' returned 200 in ' || (i % 997) || 'ms for user_' || (i % 10007)
                       || ' via pod-' || (i % 31) || ' in eu-west-1, request completed normally' AS message,
                   (i % 997) + 0.5 AS latency_ms,
                   md5(CAST(i AS VARCHAR)) AS trace_id
            FROM range({BIG_LINES}) AS t(i)
        ) TO '{logs}' (FORMAT csv, HEADER true)
    """)
    con.close()
    size = logs.stat().st_size
    assert size >= 2 * 1024**3
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", LOAD_AND_REPORT, str(tmp_path / "big.duckdb"), str(clean["folder"] / "metrics.csv"),
             str(logs)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        )
        stdout, stderr = proc.communicate(timeout=900)
    finally:  # pytest keeps recent temp dirs: do not leave 2.5 GB behind
        logs.unlink()
        (tmp_path / "big.duckdb").unlink(missing_ok=True)
    assert proc.returncode == 0, stderr
    rows, peak = (int(v) for v in stdout.split())
    record_property("file_bytes", size)
    record_property("peak_rss_bytes", peak)
    print(f"\n2 GiB logs: {size / 2**30:.2f} GiB, {rows} lines loaded, peak RSS {peak / 2**20:.0f} MiB "
          f"({peak / size:.0%} of the file)")
    assert rows == BIG_LINES
    assert peak < size / 2
