"""Real log shapes on small hand-written inputs: levels written in the line, container runtime
wrappers, multi-line records (tools.sources.logformats, steps 1-4)."""

import csv
import json
from pathlib import Path

import duckdb
import pytest

from tools.loader import InputError, load_sources


@pytest.fixture
def metrics(tmp_path: Path) -> Path:
    path = tmp_path / "metrics.csv"
    path.write_text("ts,rps\n" + "".join(f"2024-06-01T10:{m:02d}:00Z,{100 + m}\n" for m in range(10)))
    return path


def write_logs(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def load(tmp_path: Path, metrics: Path, logs: Path) -> list[tuple]:
    load_sources(tmp_path / "db.duckdb", metrics, logs)
    with duckdb.connect(str(tmp_path / "db.duckdb"), read_only=True) as con:
        return con.execute("SELECT service, level, message FROM logs ORDER BY ts, rowid").fetchall()


def lines(service: str, *messages: str, second: int = 0) -> list[dict]:
    return [{"ts": f"2024-06-01T10:00:{second + i:02d}Z", "service": service, "message": m}
            for i, m in enumerate(messages)]


def test_level_comes_from_the_line_when_there_is_no_level_column(tmp_path, metrics):
    logs = write_logs(tmp_path / "logs.csv", lines(
        "api",
        "2024-06-01 10:00:00,123 ERROR [main] c.e.Pool - pool exhausted",
        "W0612 10:00:01.000000 7 client.go:12] slow response",
        'time=2024-06-01T10:00:02Z level=warn msg="retrying"',
        '{"severity": "ERROR", "message": "upstream reset"}',
        "2024/06/01 10:00:04 [error] 12#0: connect() failed",
        "Jun 01 10:00:05 host app: SEVERE: disk full",
        "I0612 10:00:06.000000 7 main.go:1] started; the ERROR budget is fine",
        "request served in 5 ms",
    ))
    assert [(level, message) for _, level, message in load(tmp_path, metrics, logs)] == [
        ("ERROR", "2024-06-01 10:00:00,123 ERROR [main] c.e.Pool - pool exhausted"),
        ("WARN", "W0612 10:00:01.000000 7 client.go:12] slow response"),
        ("WARN", 'time=2024-06-01T10:00:02Z level=warn msg="retrying"'),
        ("ERROR", "upstream reset"),  # a JSON line gives its message and its level
        ("ERROR", "2024/06/01 10:00:04 [error] 12#0: connect() failed"),
        ("ERROR", "Jun 01 10:00:05 host app: SEVERE: disk full"),
        ("INFO", "I0612 10:00:06.000000 7 main.go:1] started; the ERROR budget is fine"),
        (None, "request served in 5 ms"),
    ]


def test_a_level_column_wins_over_the_text(tmp_path, metrics):
    rows = [dict(r, level=lvl) for r, lvl in zip(lines("api", "ERROR-like text", "WARN: x"), ["info", ""])]
    logs = write_logs(tmp_path / "logs.csv", rows)
    assert [level for _, level, _ in load(tmp_path, metrics, logs)] == ["INFO", "WARN"]


def test_docker_json_file_records_are_unwrapped(tmp_path, metrics):
    def docker(text: str, stream: str = "stdout") -> str:
        return json.dumps({"log": text + "\n", "stream": stream, "time": "2024-06-01T10:00:00.1Z"})

    logs = write_logs(tmp_path / "logs.csv", lines(
        "cart",
        docker('{"timestamp": "2024-06-01T10:00:00Z", "severity": "warning", "message": "cache miss storm"}'),
        docker("16:42:22.382 ERROR c.e.CartService - checkout failed", "stderr"),
        docker("plain line"),
    ))
    assert load(tmp_path, metrics, logs) == [
        ("cart", "WARN", "cache miss storm"),
        ("cart", "ERROR", "16:42:22.382 ERROR c.e.CartService - checkout failed"),
        ("cart", None, "plain line"),
    ]


def test_cri_lines_are_unwrapped_and_partial_lines_joined(tmp_path, metrics):
    cri = "2016-10-06T00:17:09.669794202Z"
    logs = write_logs(tmp_path / "logs.csv", [
        *lines("db", f"{cri} stdout P ERROR connection refused by ", f"{cri} stdout P replica-2 after ", second=0),
        *lines("web", f"{cri} stdout F INFO GET / 200", second=2),  # another service in between
        *lines("db", f"{cri} stdout F 3 retries", f"{cri} stderr F WARN slow query", second=3),
    ])
    assert load(tmp_path, metrics, logs) == [
        ("db", "ERROR", "ERROR connection refused by replica-2 after 3 retries"),
        ("web", "INFO", "INFO GET / 200"),
        ("db", "WARN", "WARN slow query"),
    ]


def test_a_java_stack_trace_is_one_event_with_its_error_line(tmp_path, metrics):
    from tools.logscan import log_pattern_scan

    trace = [
        "10:00:01.234 ERROR o.a.c.c.C.[dispatcherServlet] - Servlet.service() threw exception with root cause",
        "java.lang.IllegalStateException: No instances available for inventory",
        "\tat org.springframework.cloud.loadbalancer.BlockingLoadBalancerClient.execute(Blocking.java:98)",
        "\tat org.springframework.web.client.RestTemplate.doExecute(RestTemplate.java:776)",
        "Caused by: java.net.ConnectException: Connection refused",
        "\t... 42 more",
    ]
    rows = [*lines("orders", "10:00:00.100 INFO  o.e.Orders - started", second=0),
            *lines("orders", *trace[:3], second=1),
            *lines("inventory", "10:00:04.000 WARN i.Stock - low stock", second=4),  # interleaved
            *lines("orders", *trace[3:], "10:00:09.000 INFO  o.e.Orders - recovered", second=5)]
    logs = write_logs(tmp_path / "logs.csv", rows)
    assert load(tmp_path, metrics, logs) == [
        ("orders", "INFO", "10:00:00.100 INFO  o.e.Orders - started"),
        ("orders", "ERROR", "\n".join(trace)),
        ("inventory", "WARN", "10:00:04.000 WARN i.Stock - low stock"),
        ("orders", "INFO", "10:00:09.000 INFO  o.e.Orders - recovered"),
    ]
    import pandas as pd

    with duckdb.connect(str(tmp_path / "db.duckdb"), read_only=True) as con:
        found = log_pattern_scan(con, pd.Timestamp("2024-06-01T10:00:00"), pd.Timestamp("2024-06-01T10:00:30"),
                                 min_lift=0.0)
    orders = [t for t in found["templates"] + found["background"] if t["service"] == "orders"]
    assert [t["window_count"] for t in orders] == [1]
    assert orders[0]["template"].startswith("<TIME> ERROR o.a.c.c.C.[dispatcherServlet]")
    assert "IllegalStateException: No instances available for inventory" in orders[0]["template"]


def test_frames_alone_do_not_join_lines_of_a_service_without_timestamps(tmp_path, metrics):
    # Without timestamps in the text, only frame lines continue a record.
    logs = write_logs(tmp_path / "logs.csv", lines(
        "api", "ERROR request failed", "java.io.IOException: broken pipe", "\tat a.B.c(B.java:1)", "INFO next"))
    assert [m for _, _, m in load(tmp_path, metrics, logs)] == [
        "ERROR request failed", "java.io.IOException: broken pipe\n\tat a.B.c(B.java:1)", "INFO next"]


def test_a_cut_docker_record_is_an_error_naming_its_row(tmp_path, metrics):
    good = json.dumps({"log": "ERROR fine\n", "stream": "stdout"})
    logs = write_logs(tmp_path / "logs.csv", lines("api", good, good, '{"log":"ERROR cut in the mid'))
    with pytest.raises(InputError) as info:
        load(tmp_path, metrics, logs)
    assert info.value.file == str(logs) and info.value.column == "message"
    assert "data row 3" in info.value.message and "Docker json-file record" in info.value.message
    assert not (tmp_path / "db.duckdb").exists()


def test_no_level_anywhere_is_an_error_naming_the_column(tmp_path, metrics):
    logs = write_logs(tmp_path / "logs.csv", lines("api", "request served", "cache warmed"))
    with pytest.raises(InputError) as info:
        load(tmp_path, metrics, logs)
    assert info.value.column == "level" and "--log-field level=" in info.value.message
