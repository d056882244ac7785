"""The scan's masked texts are `mask_message` of each line's message, and its templates are mined per service."""

import duckdb
import pandas as pd

from tools.loader import MESSAGE_KEY_SQL
from tools.logscan import index_patterns, is_indexed, log_pattern_scan, scan_sql
from tools.templates import mask_message

MESSAGES = [
    "jk2 lost link 3",  # a digit left in a word: its skeleton keeps a 0
    "jk3 lost link 4",
    "SOCKS5 proxy 10.0.0.1:1080 refused after 250 ms",
    "SOCKS4 proxy 10.0.0.2:1080 refused after 31 ms",
    "jk2_init() found child 1234 in slot 7",
    "request 3f2a9c1e-1b2c-4d5e-8f90-abcdef012345 failed",
    "resize 2x4 to 1x5",  # no mask covers these digits, but 0x4 would be hex: 0 is kept apart
    "GET /api/v1/items/12 took 30 ms",
    "GET /api/v2/items/7 took 4 ms",
]


def logs_db(rows: list[tuple], indexed: bool = False) -> duckdb.DuckDBPyConnection:
    """A `logs` table of the rows in time order; with `indexed`, the loader's pattern index."""
    con = duckdb.connect()
    con.register("frame", pd.DataFrame(rows, columns=["ts", "service", "level", "message", "error_kind"]))
    con.execute("CREATE TABLE logs AS SELECT ts::TIMESTAMP AS ts, service, level, message, error_kind, "
                f"{MESSAGE_KEY_SQL} AS message_key FROM frame ORDER BY ts")
    if indexed:
        index_patterns(con)
    return con


def test_scan_masks_every_message_as_mask_message_does():
    rows = [(f"2025-01-01 00:{i:02d}:00", "edge", "ERROR", m, None) for i, m in enumerate(MESSAGES)]
    con = logs_db(rows)
    scanned = con.execute(scan_sql(), {"ws": pd.Timestamp("2025-01-01"), "we": pd.Timestamp("2025-01-02")}).df()
    assert sorted(scanned["masked"]) == sorted({mask_message(m) for m in MESSAGES})
    # the two jk lines differ in their word, not in a mask: two masked texts
    assert {"jk2 lost link <NUM>", "jk3 lost link <NUM>"} <= set(scanned["masked"])


def test_templates_are_mined_per_service_without_a_prefix():
    # One line a minute per service and message, 30 of them in the window: a template's text is
    # the service's own, never "service :: ...", and two services never share a template row.
    rows = []
    for minute in range(120):
        ts = f"2025-01-01 {minute // 60:02d}:{minute % 60:02d}:00"
        rows.append((ts, "api", "ERROR", f"timeout calling db after {minute} ms", None))
        if minute >= 90:
            rows.append((ts, "db", "ERROR", f"pool exhausted {minute} waiting", None))
            rows.append((ts, "api", "ERROR", f"pool exhausted {minute} waiting", None))
    con = logs_db(rows)
    scan = log_pattern_scan(con, pd.Timestamp("2025-01-01 01:30"), pd.Timestamp("2025-01-01 02:00"))
    found = {(t["service"], t["template"]) for t in scan["templates"]}
    assert found == {("db", "pool exhausted <NUM> waiting"), ("api", "pool exhausted <NUM> waiting")}
    assert all(" :: " not in t["template"] for t in scan["templates"] + scan["background"])


def test_the_pattern_index_scans_as_the_text_does():
    """Same groups, counts, examples and findings from the loader's index as from the text, for
    every subset of the levels; the example of a tie in time is the smaller text either way."""
    rows = []
    for minute in range(120):
        ts = f"2025-01-01 {minute // 60:02d}:{minute % 60:02d}:00"
        message = MESSAGES[minute % len(MESSAGES)]
        rows.append((ts, "edge", "ERROR" if minute % 3 else "WARN", message, "Timeout" if minute % 5 == 0 else None))
        rows.append((ts, "edge", "INFO", f"served {minute} requests", None))
        if minute >= 90:
            # two messages of one template in the same second, the larger text first in the file
            rows.append((ts, "db", "ERROR", f"pool exhausted {minute + 50} waiting", "PoolExhausted"))
            rows.append((ts, "db", "ERROR", f"pool exhausted {minute + 10} waiting", "PoolExhausted"))
    window = {"ws": pd.Timestamp("2025-01-01 01:30"), "we": pd.Timestamp("2025-01-01 02:00")}
    by_index, by_text = logs_db(rows, indexed=True), logs_db(rows)
    assert is_indexed(by_index) and not is_indexed(by_text)
    for levels in (("WARN", "ERROR"), ("ERROR",), ("WARN",)):
        indexed = by_index.execute(scan_sql(levels, indexed=True), window).df()
        texted = by_text.execute(scan_sql(levels, indexed=False), window).df()
        pd.testing.assert_frame_equal(indexed.drop(columns=["template", "mentions"]), texted)
        scans = [log_pattern_scan(con, window["ws"], window["we"], levels=levels) for con in (by_index, by_text)]
        assert "pattern_id" in scans[0]["sql"] and "pattern_id" not in scans[1]["sql"]
        assert {k: v for k, v in scans[0].items() if k != "sql"} == {k: v for k, v in scans[1].items() if k != "sql"}
    pool = next(t for t in log_pattern_scan(by_index, window["ws"], window["we"])["templates"] if t["service"] == "db")
    assert pool["example"] == "pool exhausted 100 waiting" and pool["window_count"] == 60
    edge = by_index.execute(scan_sql(indexed=True), window).df().query("service == 'edge'")
    assert sorted(edge["masked"]) == sorted({mask_message(m) for m in MESSAGES})
