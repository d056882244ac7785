"""The --prometheus flags and queries file, checked without a server (the server tests are in
test_sources_prometheus.py)."""

from datetime import UTC, datetime

import pytest

from tools.loader import InputError
from tools.sources.prometheus import (
    MAX_POINTS,
    endpoint_and_headers,
    load_queries_file,
    parse_header_flag,
    parse_query_flag,
    resolve_range,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_range_accepts_offsets_durations_and_epochs_and_reports_utc():
    rng = resolve_range("2026-03-01T10:00:00+02:00", "2026-03-01T12:00:00+02:00", None, now=NOW)
    assert rng.start == datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    assert rng.end == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    relative = resolve_range("90m", str(int(NOW.timestamp())), "30s", now=NOW)
    assert (relative.end - relative.start).total_seconds() == 5400 and relative.step_s == 30
    default = resolve_range(None, None, None, now=NOW)
    assert default.end == NOW and (NOW - default.start).days == 1 and default.step_s == 60
    week = resolve_range("7d", None, None, now=NOW)
    assert (week.end - week.start).total_seconds() / week.step_s + 1 <= MAX_POINTS
    with pytest.raises(ValueError, match="must be before"):
        resolve_range("2026-03-02T00:00:00Z", "2026-03-01T00:00:00Z", None, now=NOW)
    with pytest.raises(ValueError, match="not a duration"):
        resolve_range("1h", None, "fast", now=NOW)


def test_flags_are_parsed_or_refused_with_the_expected_form():
    assert parse_query_flag("p95_ms=histogram_quantile(0.95, x) * 1000") == ("p95_ms", "histogram_quantile(0.95, x) * 1000")
    assert parse_query_flag("ratio=a / b == 1") == ("ratio", "a / b == 1")  # only the first = splits
    for bad in ("p95 ms=x", "=x", "rps=", "rps"):
        with pytest.raises(ValueError, match="NAME=PROMQL"):
            parse_query_flag(bad)
    assert parse_header_flag("X-Scope-OrgID: tenant-1") == ("X-Scope-OrgID", "tenant-1")
    assert parse_header_flag("Authorization: Basic a2V5OnZhbA==") == ("Authorization", "Basic a2V5OnZhbA==")
    with pytest.raises(ValueError, match="Name: value"):
        parse_header_flag("no header here")


def test_credentials_become_headers_and_leave_the_printed_url():
    endpoint, shown, headers = endpoint_and_headers("https://me:p%40ss@metrics.example:8428/prom/api/v1/", bearer_token="tok")
    assert endpoint == "https://metrics.example:8428/prom/api/v1/query_range"
    assert shown == "https://metrics.example:8428/prom" and "p%40ss" not in shown
    assert headers == {"Authorization": "Basic bWU6cEBzcw=="}  # me:p@ss; the URL's own credentials win
    _, _, explicit = endpoint_and_headers("http://h:9090", {"authorization": "Bearer x"}, bearer_token="tok")
    assert explicit == {"authorization": "Bearer x"}


def test_queries_file_errors_name_the_file_and_problem(tmp_path):
    good = tmp_path / "q.yaml"
    good.write_text("step: 2m\nqueries:\n  rps: sum(rate(x[1m]))\n  error_rate: a / b\n")
    assert load_queries_file(good) == ({"rps": "sum(rate(x[1m]))", "error_rate": "a / b"}, "2m")
    cases = {
        "list.yaml": ("- rps: x\n", "expected a mapping 'queries:'"),
        "name.yaml": ("queries:\n  p95 ms: x\n", "letters, digits"),
        "empty.yaml": ("queries:\n  rps: ''\n", "no PromQL"),
        "broken.yaml": ("queries: [unclosed\n", "cannot read as YAML"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(InputError, match=message) as info:
            load_queries_file(path)
        assert info.value.file == str(path)
    with pytest.raises(InputError, match="file not found"):
        load_queries_file(tmp_path / "missing.yaml")
