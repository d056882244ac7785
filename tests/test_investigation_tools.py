"""Log pattern scan, per-service error onsets and recent changes on a small real DuckDB file.

The story in the database (2024-06-01, logs from 00:00 to 06:00, incident window 03:00-04:00):
- `search` logs a slow-query WARN every 10 s all day long: loud, but nothing new;
- `payments` (the root) is quiet until 03:00, then logs "connection pool exhausted" errors;
- `checkout` (a caller) starts failing 5 minutes later with "call to payments failed ...";
- events: a payments deploy at 02:30, a search config change at 22:00 the day before, and a
  checkout feature flag flipped at 03:20, inside the window.
"""

import duckdb
import numpy as np
import pandas as pd
import pytest

from tools.changes import recent_changes
from tools.logscan import log_pattern_scan
from tools.onsets import service_error_onsets
from tools.sql_sandbox import connect_readonly

T0 = pd.Timestamp("2024-06-01 00:00:00")
T1 = pd.Timestamp("2024-06-01 06:00:00")
WS = pd.Timestamp("2024-06-01 03:00:00")
WE = pd.Timestamp("2024-06-01 04:00:00")

LOGS_DDL = """CREATE TABLE logs(ts TIMESTAMP, service VARCHAR, level VARCHAR, message VARCHAR,
    error_kind VARCHAR, endpoint VARCHAR, latency_ms DOUBLE, region VARCHAR, trace_id VARCHAR)"""
EVENTS_DDL = "CREATE TABLE events(ts TIMESTAMP, service VARCHAR, kind VARCHAR, description VARCHAR)"
METRICS_DDL = "CREATE TABLE metrics(ts TIMESTAMP, rps DOUBLE)"


def story_logs(with_error_kind: bool) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    rows = []

    def add(ts, service, level, message, kind=None):
        rows.append(
            (ts, service, level, message, kind if with_error_kind else None, "/api",
             float(rng.integers(5, 500)), "eu-west-1", f"{rng.integers(0, 2**62):016x}")
        )

    for ts in pd.date_range(T0, T1, freq="10s", inclusive="left"):
        add(ts, "search", "WARN", f"slow query on shard {rng.integers(0, 8)} took {rng.integers(800, 2000)} ms", "SlowQuery")
    for ts in pd.date_range(T0, T1, freq="20s", inclusive="left"):
        add(ts, "payments", "INFO", f"charge {rng.integers(1, 10**6)} ok in {rng.integers(5, 50)} ms")
        add(ts + pd.Timedelta(seconds=5), "checkout", "INFO", f"order {rng.integers(1, 10**6)} placed for user u_{rng.integers(1, 999)}")
    for ts in pd.date_range(WS, WE, freq="12s", inclusive="left"):
        add(ts + pd.Timedelta(seconds=1), "payments", "ERROR",
            f"connection pool exhausted: {rng.integers(10, 12)} of 10 in use, waited {rng.integers(100, 3000)} ms", "PoolExhausted")
    for ts in pd.date_range(WS + pd.Timedelta(minutes=5), WE, freq="20s", inclusive="left"):
        add(ts + pd.Timedelta(seconds=2), "checkout", "ERROR",
            f"call to payments failed: upstream timeout after {rng.integers(2000, 3000)} ms", "UpstreamTimeout")
    columns = ["ts", "service", "level", "message", "error_kind", "endpoint", "latency_ms", "region", "trace_id"]
    return pd.DataFrame(rows, columns=columns)


def write_db(path, logs: pd.DataFrame, events: list[tuple] = ()) -> None:
    con = duckdb.connect(str(path))
    try:
        con.execute(LOGS_DDL)
        con.register("logs_frame", logs)
        con.execute("INSERT INTO logs SELECT * FROM logs_frame")
        con.execute(EVENTS_DDL)
        if events:
            con.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", list(events))
        con.execute(METRICS_DDL)
        con.execute("INSERT INTO metrics SELECT TIMESTAMP '2024-06-01 00:00:00' + to_minutes(i), 100.0 FROM range(360) t(i)")
    finally:
        con.close()


STORY_EVENTS = [
    (pd.Timestamp("2024-06-01 02:30:00"), "payments", "deploy", "payments v2.4.0"),
    (pd.Timestamp("2024-05-31 22:00:00"), "search", "config", "reindex nightly"),
    (pd.Timestamp("2024-06-01 03:20:00"), "checkout", "feature_flag", "new_cart on"),
]


@pytest.fixture(scope="module", params=[True, False], ids=["error_kind", "no_error_kind"])
def story(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("story") / "incident.duckdb"
    write_db(path, story_logs(with_error_kind=request.param), STORY_EVENTS)
    con = connect_readonly(path)
    yield con, request.param
    con.close()


@pytest.fixture(scope="module")
def scan(story):
    con, _ = story
    return log_pattern_scan(con, WS, WE)


# --- log_pattern_scan ---------------------------------------------------------------------------


def test_new_error_template_of_the_quiet_service_ranks_first(scan, story):
    _, with_kind = story
    top = scan["templates"][0]
    assert top["service"] == "payments"
    assert top["lift"] > 3
    assert top["template"].startswith("connection pool exhausted")
    assert top["window_count"] == 300
    assert top["baseline_per_min"] == 0.0
    assert top["p_value"] < 1e-6
    assert top["first_seen_in_window"] == "2024-06-01T03:00:01"
    assert top["example"].startswith("connection pool exhausted: 1")  # a raw line, not the mask
    assert top["error_kind"] == ("PoolExhausted" if with_kind else None)
    assert top["mentions"] == []
    assert scan["window_minutes"] == pytest.approx(60.0)


def test_steady_noisy_service_is_background_not_a_finding(scan):
    assert "search" not in {t["service"] for t in scan["templates"]}
    noisy = [b for b in scan["background"] if b["service"] == "search"]
    assert noisy, "the loud steady WARN is reported as background"
    # It is the loudest thing in the window, yet scores about 1x its usual rate.
    assert noisy[0]["window_count"] > scan["templates"][0]["window_count"]
    assert noisy[0]["lift"] == pytest.approx(1.0, abs=0.2)
    totals = {s["service"]: s for s in scan["services"]}
    assert totals["payments"]["excess"] > 100 > totals["search"]["excess"]


def test_caller_naming_the_root_produces_a_mention(scan):
    caller = next(t for t in scan["templates"] if t["service"] == "checkout")
    assert caller["mentions"] == ["payments"]
    assert caller["lift"] > 3
    assert caller["first_seen_in_window"] == "2024-06-01T03:05:02"
    assert [(m["from"], m["to"]) for m in scan["mentions"]] == [("checkout", "payments")]
    assert scan["mentions"][0]["window_count"] == caller["window_count"] == 165


def test_a_window_where_nothing_changed_has_no_findings(story):
    con, _ = story
    calm = log_pattern_scan(con, pd.Timestamp("2024-06-01 01:00"), pd.Timestamp("2024-06-01 02:00"))
    assert calm["templates"] == []
    assert calm["mentions"] == []
    assert {b["service"] for b in calm["background"]} == {"search"}


def test_only_the_requested_levels_are_scanned(story):
    con, _ = story
    errors_only = log_pattern_scan(con, WS, WE, levels=("ERROR",))
    assert {b["service"] for b in errors_only["background"]} == set()  # search only logs WARN
    assert {t["service"] for t in errors_only["templates"]} == {"payments", "checkout"}


# --- service_error_onsets -----------------------------------------------------------------------


def test_root_onset_precedes_the_caller(story):
    con, _ = story
    result = service_error_onsets(con, WS, WE)
    onsets = {o["service"]: o for o in result["onsets"]}

    assert [o["service"] for o in result["onsets"]] == ["payments", "checkout"]
    assert [o["order"] for o in result["onsets"]] == [1, 2]
    assert onsets["payments"]["onset"] == "2024-06-01T03:00:01"
    assert onsets["payments"]["onset_minutes_from_window_start"] == pytest.approx(0.0, abs=0.1)
    assert onsets["checkout"]["onset_minutes_from_window_start"] == pytest.approx(5.0, abs=0.1)
    assert onsets["payments"]["window_errors"] == 300
    assert onsets["payments"]["baseline_per_min"] == 0.0


def test_steady_noisy_service_has_no_onset(story):
    con, _ = story
    result = service_error_onsets(con, WS, WE)
    assert "search" not in {o["service"] for o in result["onsets"]}
    quiet = {q["service"]: q for q in result["quiet"]}
    assert "search" in quiet
    assert quiet["search"]["window_errors"] == 360
    assert quiet["search"]["baseline_per_min"] == pytest.approx(6.0, abs=0.1)


def test_onset_is_found_before_the_window_start(story):
    con, _ = story
    late_start = WS + pd.Timedelta(minutes=10)  # the detector put the window 10 minutes late

    result = service_error_onsets(con, late_start, WE, lookback_minutes=60)
    onsets = {o["service"]: o for o in result["onsets"]}
    assert onsets["payments"]["onset"] == "2024-06-01T03:00:01"
    assert onsets["payments"]["onset_minutes_from_window_start"] == pytest.approx(-10.0, abs=0.1)
    assert onsets["checkout"]["onset_minutes_from_window_start"] == pytest.approx(-5.0, abs=0.1)
    assert result["lookback_minutes"] == 60

    blind = service_error_onsets(con, late_start, WE, lookback_minutes=0)
    first = {o["service"]: o for o in blind["onsets"]}
    assert first["payments"]["onset_minutes_from_window_start"] >= 0


# --- recent_changes -----------------------------------------------------------------------------


def test_changes_before_and_inside_the_window(story):
    con, _ = story
    result = recent_changes(con, WS, WE)
    by_service = {c["service"]: c for c in result["changes"]}

    assert by_service["payments"]["minutes_before_window"] == 30.0
    assert by_service["payments"]["inside_window"] is False
    assert by_service["payments"]["kind"] == "deploy"
    assert by_service["payments"]["ts"] == "2024-06-01T02:30:00"
    assert "search" not in by_service  # 5 hours before, outside the 120-minute lookback
    assert by_service["checkout"]["inside_window"] is True
    assert by_service["checkout"]["minutes_before_window"] == -20.0
    # Before-the-window changes first, nearest first; then the ones inside.
    assert [c["service"] for c in result["changes"]] == ["payments", "checkout"]
    assert result["events_total"] == 3
    assert result["lookback_minutes"] == 120


def test_a_longer_lookback_reaches_older_changes(story):
    con, _ = story
    result = recent_changes(con, WS, WE, lookback_minutes=360)
    older = [c for c in result["changes"] if c["service"] == "search"]
    assert len(older) == 1 and older[0]["minutes_before_window"] == 300.0


# --- who blames whom ---


def _blame_db(tmp_path, quiet_services: tuple[str, ...], targets: tuple[str, ...]):
    """Quiet services logging INFO all day; in the window `checkout` fails its calls to `targets`."""
    span = pd.date_range(T0, T1, freq="30s", inclusive="left")
    quiet = [(ts, svc, "INFO", "all good", None, "/", 1.0, "r", "t") for ts in span for svc in quiet_services]
    window = pd.date_range(WS, WE, freq="20s", inclusive="left")
    errors = [
        (ts, "checkout", "ERROR", f"call to {targets[i % len(targets)]} failed: timeout", None, "/", 1.0, "r", "t")
        for i, ts in enumerate(window)
    ]
    columns = ["ts", "service", "level", "message", "error_kind", "endpoint", "latency_ms", "region", "trace_id"]
    path = tmp_path / "blame.duckdb"
    write_db(path, pd.DataFrame(quiet + errors, columns=columns))
    return connect_readonly(path)


def _mentions(tmp_path, quiet_services, targets) -> set[str]:
    con = _blame_db(tmp_path, quiet_services, targets)
    try:
        return {m["to"] for m in log_pattern_scan(con, WS, WE)["mentions"]}
    finally:
        con.close()


def test_a_caller_failing_towards_one_service_blames_it(tmp_path):
    assert _mentions(tmp_path, ("inventory", "payments"), ("payments",)) == {"payments"}


def test_a_caller_failing_towards_two_services_blames_both(tmp_path):
    assert _mentions(tmp_path, ("inventory", "payments"), ("inventory", "payments")) == {"inventory", "payments"}


def test_a_service_name_inside_another_is_not_a_mention(tmp_path):
    assert _mentions(tmp_path, ("cart", "cart-api"), ("cart-api",)) == {"cart-api"}


def test_scan_of_the_pattern_index_equals_the_scan_by_text(scenario_dir, tmp_path):
    """The loader's pattern index lets the scan read only the window's lines, as integers:
    same groups, same findings as grouping and masking the text, for every subset of the
    levels. A Parquet dataset's logs are a view the loader does not index: text."""
    from tools.loader import load_sources
    from tools.logscan import PROBLEM_LEVELS, is_indexed, scan_sql

    folder = scenario_dir("conn_pool_exhaustion", 1)
    truth = pd.read_json(folder / "truth.json", typ="series")
    start, end = pd.Timestamp(truth["start"]).tz_localize(None), pd.Timestamp(truth["end"]).tz_localize(None)
    table_db = tmp_path / "table.duckdb"
    load_sources(table_db, folder / "metrics.csv", folder / "logs.csv", folder / "events.csv")
    with connect_readonly(table_db) as con:
        assert is_indexed(con)
        for levels in (PROBLEM_LEVELS, ("ERROR",), ("WARN",)):
            by_index = con.execute(scan_sql(levels, indexed=True), {"ws": start, "we": end}).df()
            by_text = con.execute(scan_sql(levels, indexed=False), {"ws": start, "we": end}).df()
            assert len(by_index) > 3 and by_index["window_count"].sum() > 0
            pd.testing.assert_frame_equal(by_index.drop(columns=["template", "mentions"]), by_text)
        indexed_scan = log_pattern_scan(con, start, end)
        assert "pattern_id" in indexed_scan["sql"]

    dataset = tmp_path / "logs"
    dataset.mkdir()
    duckdb.sql(f"COPY (SELECT * FROM read_csv('{folder / 'logs.csv'}', all_varchar=true)) "
               f"TO '{dataset / 'part-0.parquet'}' (FORMAT parquet)")
    view_db = tmp_path / "view.duckdb"
    load_sources(view_db, folder / "metrics.csv", dataset, folder / "events.csv")
    with connect_readonly(view_db) as con:
        assert not is_indexed(con)
        view_scan = log_pattern_scan(con, start, end)
    assert "pattern_id" not in view_scan["sql"]
    assert {k: v for k, v in view_scan.items() if k != "sql"} == {
        k: v for k, v in indexed_scan.items() if k != "sql"}
