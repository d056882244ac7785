"""The scan's masked texts are `mask_message` of each line's message, and its templates are mined per service."""

import duckdb
import pandas as pd

from tools.logscan import log_pattern_scan, scan_sql
from tools.templates import mask_message

MESSAGES = [
    "jk2 lost link 3",  # a digit left in a word: its skeleton keeps a 0
    "jk3 lost link 4",
    "SOCKS5 proxy 10.0.0.1:1080 refused after 250 ms",
    "SOCKS4 proxy 10.0.0.2:1080 refused after 31 ms",
    "jk2_init() found child 1234 in slot 7",
    "request 3f2a9c1e-1b2c-4d5e-8f90-abcdef012345 failed",
]


def logs_db(rows: list[tuple]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.register("frame", pd.DataFrame(rows, columns=["ts", "service", "level", "message", "error_kind"]))
    con.execute("CREATE TABLE logs AS SELECT ts::TIMESTAMP AS ts, service, level, message, error_kind FROM frame")
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
