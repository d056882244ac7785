"""The benchmark runner works end to end at its smallest size (the real runs are not part of
`make test`: `python -m benchmarks.run` takes tens of minutes at 10 M lines)."""

import json
import subprocess
import sys

import duckdb

from tests.processes import REPO


def test_runner_at_the_smallest_size_writes_tables_and_plot(tmp_path):
    out, data = tmp_path / "results", tmp_path / "data"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--sizes", "10k", "--days", "1", "--formats", "csv",
         "--out", str(out), "--data-dir", str(data)],
        capture_output=True, text=True, cwd=REPO, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "10k csv: load" in result.stdout and "end-to-end" in result.stdout  # progress lines

    logs = data / "conn_pool_exhaustion-1" / "logs-10000.csv"
    assert duckdb.connect().execute(f"SELECT count(*) FROM read_csv('{logs}')").fetchone()[0] == 10_000

    results = json.loads((out / "results.json").read_text())
    (row,) = results["logs"]
    assert (row["lines"], row["format"]) == (10_000, "csv")
    assert row["load"]["log_rows"] == 10_000
    for seconds in (row["load"]["load"], row["duckdb_load"]["duckdb_load"], row["tools"]["detect"],
                    row["tools"]["log_pattern_scan"], row["tools"]["floor_group_by"], row["seed_scan"]["seed_pandas_scan"],
                    row["e2e"]["wall"]):
        assert 0 < seconds < 300
    assert row["load"]["peak_rss_mb"] >= row["load"]["rss_after_imports_mb"] > 0
    assert row["e2e"]["root_service"] in results["truth"]["services"]  # a real postmortem was read
    (days,) = results["days"]
    assert days["detectors"]["points"] == 1440 and days["detectors"]["seed_zscore_loop"] > 0

    table = (out / "results.md").read_text()
    assert "| 10k | csv |" in table and "seed loop" in table and "placeholder: measured by the server load test" in table
    assert (out / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
