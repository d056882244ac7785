"""Parquet datasets (a directory or glob of hive-partitioned files) are read in place: the
investigation database holds a view, the sandbox may read exactly those files and nothing
else, and an investigation over the dataset finds what it finds over the CSV."""

import json
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from tests.processes import run_cli
from tools.loader import InputError, load_sources
from tools.sql_sandbox import SqlExecutionError, SqlRejected, connect_readonly, run_sql

FAULT, SEED = "dependency_outage", 3
LOG_COLUMNS = "ts, service, level, message, error_kind, endpoint, latency_ms, region, trace_id"


def write_dataset(csv: Path, root: Path) -> None:
    """The CSV logs as Parquet partitioned by day and hour, ts as TIMESTAMPTZ."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"""COPY (SELECT CAST(ts AS TIMESTAMPTZ) AS ts, * EXCLUDE (ts),
                          strftime(CAST(ts AS TIMESTAMPTZ), '%Y-%m-%d') AS day,
                          strftime(CAST(ts AS TIMESTAMPTZ), '%H') AS hour
                   FROM read_csv('{csv}', all_varchar=true))
                   TO '{root}' (FORMAT parquet, PARTITION_BY (day, hour))""")
    con.close()


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def dataset(scenario_dir, tmp_path_factory):
    folder = scenario_dir(FAULT, SEED)
    root = tmp_path_factory.mktemp("dataset") / "logs"
    write_dataset(folder / "logs.csv", root)
    return folder, root


def _rows(con) -> list[tuple]:
    return con.execute(f"SELECT {LOG_COLUMNS} FROM logs ORDER BY ALL").fetchall()


def test_directory_becomes_a_view_with_the_csv_rows(dataset, tmp_path):
    folder, root = dataset
    from_csv = load_sources(tmp_path / "csv.duckdb", folder / "metrics.csv", folder / "logs.csv")
    from_dir = load_sources(tmp_path / "dir.duckdb", folder / "metrics.csv", root)
    assert from_dir.log_rows == from_csv.log_rows
    assert sorted(from_dir.log_columns) == sorted(from_csv.log_columns)
    # a few KB of metrics and a view definition, against the copied logs of the CSV load
    assert (tmp_path / "dir.duckdb").stat().st_size * 4 < (tmp_path / "csv.duckdb").stat().st_size
    with connect_readonly(tmp_path / "dir.duckdb") as con:
        kinds = dict(con.execute("SELECT table_name, table_type FROM information_schema.tables").fetchall())
        files = [r[0] for r in con.execute("SELECT path FROM source_files").fetchall()]
        dir_rows = _rows(con)
    with connect_readonly(tmp_path / "csv.duckdb") as con:
        csv_rows = _rows(con)
    assert kinds["logs"] == "VIEW" and kinds["metrics"] == "BASE TABLE"
    assert files == sorted(str(p) for p in root.rglob("*.parquet"))
    assert dir_rows == csv_rows


def test_glob_selects_partitions(dataset, tmp_path):
    folder, root = dataset
    summary = load_sources(tmp_path / "db.duckdb", folder / "metrics.csv", str(root / "day=*" / "hour=0*" / "*.parquet"))
    with connect_readonly(tmp_path / "db.duckdb") as con:
        hours = {r[0] for r in con.execute("SELECT DISTINCT hour(ts) FROM logs").fetchall()}
    assert hours == set(range(10)) and summary.log_rows > 0


def test_model_sql_reads_the_dataset_and_nothing_else(dataset, tmp_path):
    folder, root = dataset
    load_sources(tmp_path / "db.duckdb", folder / "metrics.csv", root)
    outside = tmp_path / "secret.parquet"
    duckdb.execute(f"COPY (SELECT 42 AS secret) TO '{outside}'")
    one_file = next(root.rglob("*.parquet"))
    before = listing(root)

    db = tmp_path / "db.duckdb"
    total = run_sql(db, "SELECT count(*) FROM logs WHERE level = 'ERROR'").rows[0][0]
    assert total > 0
    for sql in (f"SELECT * FROM read_parquet('{outside}')",
                f"SELECT * FROM read_parquet('{root}/*/*/*.parquet')",
                f"SELECT * FROM glob('{root}/*')",
                f"SELECT * FROM read_text('{outside}')",
                f"SELECT * FROM read_parquet('{one_file}.missing')",
                "SELECT * FROM read_csv('/etc/passwd')"):
        with pytest.raises(SqlExecutionError, match="Permission|disabled"):
            run_sql(db, sql)
    for sql in (f"COPY (SELECT 1 AS x) TO '{root}/evil.parquet'",
                f"COPY logs TO '{one_file}' (FORMAT parquet)",
                "SET allowed_directories = ['/']"):
        with pytest.raises(SqlRejected):
            run_sql(db, sql)
    # Below the statement allow-list, DuckDB itself refuses writes into the dataset: only
    # exact files are allowed, and COPY writes a temporary file beside its target.
    con = connect_readonly(db)
    try:
        for sql in (f"COPY (SELECT 1 AS x) TO '{root}/evil.parquet'",
                    f"COPY (SELECT 1 AS x) TO '{one_file}' (FORMAT parquet)"):
            with pytest.raises(duckdb.PermissionException):
                con.execute(sql)
        with pytest.raises(duckdb.Error, match="locked"):
            con.execute(f"SET allowed_paths = ['{outside}']")
    finally:
        con.close()
    assert listing(root) == before


def test_files_written_after_the_load_are_not_read(dataset, tmp_path):
    folder, _ = dataset
    copy = tmp_path / "logs"
    write_dataset(folder / "logs.csv", copy)
    summary = load_sources(tmp_path / "db.duckdb", folder / "metrics.csv", copy)
    late = copy / "day=2099-01-01" / "hour=00"
    late.mkdir(parents=True)
    first = next(copy.rglob("*.parquet"))
    (late / "late.parquet").write_bytes(first.read_bytes())
    assert run_sql(tmp_path / "db.duckdb", "SELECT count(*) FROM logs").rows[0][0] == summary.log_rows


def test_field_mapping_reads_a_struct_column(tmp_path, dataset):
    folder, _ = dataset
    root = tmp_path / "nested"
    root.mkdir()
    duckdb.execute(f"""COPY (SELECT TIMESTAMP '2026-03-01 10:00:00' + INTERVAL (i) MINUTE AS "time",
                               {{'labels': {{'app': 'svc-' || (i % 3)}}}} AS kubernetes,
                               'INFO' AS level, 'line ' || i AS message FROM range(30) t(i))
                       TO '{root}/part-0.parquet'""")
    with pytest.raises(InputError, match="missing required column"):
        load_sources(tmp_path / "a.duckdb", folder / "metrics.csv", root)
    summary = load_sources(tmp_path / "b.duckdb", folder / "metrics.csv", root,
                           log_fields={"ts": "time", "service": "kubernetes.labels.app"})
    with connect_readonly(tmp_path / "b.duckdb") as con:
        services = con.execute("SELECT service, count(*) FROM logs GROUP BY 1 ORDER BY 1").fetchall()
    assert services == [("svc-0", 10), ("svc-1", 10), ("svc-2", 10)] and summary.log_rows == 30


def test_empty_or_mixed_datasets_are_clear_errors(tmp_path, dataset):
    folder, _ = dataset
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no files match"):
        load_sources(tmp_path / "a.duckdb", folder / "metrics.csv", empty)
    with pytest.raises(InputError, match="only .parquet files"):
        load_sources(tmp_path / "a.duckdb", folder / "metrics.csv", str(folder / "*.csv"))


def test_a_month_of_logs_is_read_in_place(tmp_path, dataset):
    """30 daily partitions, 3 M rows: the database stays small and the load does not copy."""
    folder, _ = dataset
    root = tmp_path / "month"
    con = duckdb.connect()
    con.execute(f"""COPY (SELECT TIMESTAMP '2026-02-01' + INTERVAL (i * 864) MILLISECOND AS ts,
                                'svc-' || (i % 40) AS service,
                                CASE WHEN i % 97 = 0 THEN 'ERROR' ELSE 'INFO' END AS level,
                                'request ' || (i % 1000) || ' served' AS message,
                                strftime(TIMESTAMP '2026-02-01' + INTERVAL (i * 864) MILLISECOND, '%Y-%m-%d') AS day
                         FROM range(3000000) t(i))
                    TO '{root}' (FORMAT parquet, PARTITION_BY (day))""")
    con.close()
    started = time.perf_counter()
    summary = load_sources(tmp_path / "db.duckdb", folder / "metrics.csv", root)
    seconds = time.perf_counter() - started
    assert summary.log_rows == 3_000_000
    assert (tmp_path / "db.duckdb").stat().st_size < 4 * 1024 * 1024
    errors = run_sql(tmp_path / "db.duckdb", "SELECT count(*) FROM logs WHERE level = 'ERROR'", timeout_s=30)
    assert errors.rows[0][0] == len(range(0, 3_000_000, 97))
    assert seconds < 60, f"load took {seconds:.1f} s"


def test_investigate_over_a_dataset_finds_the_csv_root_cause(dataset, tmp_path, state_dir):
    folder, root = dataset
    results = {}
    for name, logs in (("csv", str(folder / "logs.csv")), ("parquet", str(root))):
        out = tmp_path / name
        run = run_cli("investigate", "--metrics", str(folder / "metrics.csv"), "--logs", logs,
                      "--events", str(folder / "events.csv"), "--auto-approve", "--quiet", "--out", str(out),
                      env_home=state_dir)
        assert run.returncode == 0, run.stderr
        pm = json.loads((out / "postmortem.json").read_text())
        results[name] = (pm["root_cause"], pm["incident_window"])
    truth = json.loads((folder / "truth.json").read_text())
    assert results["parquet"] == results["csv"]
    assert results["csv"][0]["service"] == truth["root_service"]


def test_metrics_and_events_datasets_are_copied_and_logs_stay_a_view(dataset, tmp_path):
    folder, root = dataset
    for name in ("metrics", "events"):
        (tmp_path / name).mkdir()
        duckdb.execute(f"COPY (SELECT * FROM read_csv('{folder / name}.csv')) TO '{tmp_path / name}/part-0.parquet'")
    summary = load_sources(tmp_path / "db.duckdb", tmp_path / "metrics", root, tmp_path / "events")
    kinds = dict(run_sql(tmp_path / "db.duckdb", "SELECT table_name, table_type FROM information_schema.tables").rows)
    assert kinds == {"metrics": "BASE TABLE", "service_metrics": "BASE TABLE", "events": "BASE TABLE", "logs": "VIEW",
                     "source_files": "BASE TABLE"}
    assert summary.metrics_rows == len(pd.read_csv(folder / "metrics.csv"))
    assert summary.event_rows == len(pd.read_csv(folder / "events.csv"))
    assert run_sql(tmp_path / "db.duckdb", "SELECT count(*) FROM events").rows[0][0] == summary.event_rows
