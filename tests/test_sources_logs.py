"""Log exports (Loki query_range JSON, OTLP JSON, nested NDJSON with a field mapping) become
the same `logs` rows as the CSV they were made from, and an investigation over each finds
the same root cause as over the CSV."""

import json
from datetime import timedelta, timezone

import duckdb
import pandas as pd
import pytest

from tests.processes import run_cli
from tools.loader import InputError, load_sources
from tools.sources.logformats import json_path

FAULT, SEED = "bad_deploy", 2  # a scenario whose logs carry error_kind
LOG_COLUMNS = "ts, service, level, message, error_kind, endpoint, latency_ms, region, trace_id"
NESTED_FIELDS = {
    "ts": "@timestamp",
    "service": "kubernetes.labels.app",
    "level": "log.level",
    "message": "msg",
    "error_kind": "error.kind",
    "endpoint": "http.route",
    "latency_ms": "http.latency_ms",
    "region": "$.\"cloud.region\"",  # a key that itself contains a dot
    "trace_id": "trace.id",
}
_SEVERITY_NUMBER = {"INFO": 9, "WARN": 13, "ERROR": 17}


def _ns(ts: pd.Series) -> list[str]:
    return ((ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "ns")).astype(str).tolist()


def _present(value) -> bool:
    return isinstance(value, str) and value != "" or isinstance(value, float) and not pd.isna(value)


def write_loki(logs: pd.DataFrame, path) -> None:
    """A /loki/api/v1/query_range answer: one stream per (service, level), newest first,
    trace and request details as structured metadata (Loki 3 categorised labels)."""
    result = []
    for (service, level), group in logs.groupby(["service", "level"], sort=True):
        group = group.sort_values("ts", ascending=False, kind="stable")
        values = []
        for ns, row in zip(_ns(group["ts"]), group.itertuples(index=False)):
            meta = {k: str(getattr(row, k)) for k in ("trace_id", "endpoint", "region", "latency_ms", "error_kind")
                    if hasattr(row, k) and _present(getattr(row, k))}
            values.append([ns, row.message, {"structuredMetadata": meta}])
        result.append({"stream": {"app": service, "level": level.lower(), "namespace": "prod"}, "values": values})
    doc = {"status": "success", "data": {"resultType": "streams", "result": result, "stats": {}}}
    path.write_text(json.dumps(doc))


def _attr(key: str, value) -> dict:
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": str(value)}}


def write_otlp(logs: pd.DataFrame, path) -> None:
    """The OpenTelemetry collector's file exporter: one OTLP/JSON request per line (here one per
    service and hour); WARN records carry only a severityNumber."""
    lines = []
    hours = logs["ts"].dt.floor("h")
    for (service, _), group in logs.groupby(["service", hours], sort=True):
        records = []
        for ns, row in zip(_ns(group["ts"]), group.itertuples(index=False)):
            record = {"timeUnixNano": ns, "observedTimeUnixNano": ns,
                      "severityNumber": _SEVERITY_NUMBER[row.level],
                      "body": {"stringValue": row.message}, "traceId": row.trace_id, "spanId": row.trace_id[:16],
                      "attributes": [_attr("http.route", row.endpoint), _attr("cloud.region", row.region),
                                     _attr("latency_ms", float(row.latency_ms))]}
            if row.level != "WARN":
                record["severityText"] = row.level
            if _present(getattr(row, "error_kind", None)):
                record["attributes"].append(_attr("exception.type", row.error_kind))
            records.append(record)
        resource = {"attributes": [_attr("service.name", service), _attr("deployment.environment", "prod")]}
        lines.append(json.dumps({"resourceLogs": [{"resource": resource, "scopeLogs": [
            {"scope": {"name": "app"}, "logRecords": records}]}]}))
    path.write_text("\n".join(lines) + "\n")


def write_nested_ndjson(logs: pd.DataFrame, path) -> None:
    """Shipper-style records: nested fields, local time with a +02:00 offset."""
    local = logs["ts"].dt.tz_convert(timezone(timedelta(hours=2)))
    stamps = local.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "+02:00"
    lines = []
    for stamp, row in zip(stamps, logs.itertuples(index=False)):
        record = {"@timestamp": stamp, "kubernetes": {"labels": {"app": row.service}},
                  "log": {"level": row.level.lower()}, "msg": row.message, "trace": {"id": row.trace_id},
                  "http": {"route": row.endpoint, "latency_ms": row.latency_ms}, "cloud.region": row.region}
        if _present(getattr(row, "error_kind", None)):
            record["error"] = {"kind": row.error_kind}
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def exports(scenario_dir, tmp_path_factory):
    folder = scenario_dir(FAULT, SEED)
    logs = pd.read_csv(folder / "logs.csv", keep_default_na=False, na_values=[""])
    logs["ts"] = pd.to_datetime(logs["ts"], utc=True, format="ISO8601")
    out = tmp_path_factory.mktemp("exports")
    write_loki(logs, out / "loki.json")
    write_otlp(logs, out / "otlp.ndjson")
    write_nested_ndjson(logs, out / "nested.ndjson")
    return folder, out


def _logs_rows(db) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(f"SELECT {LOG_COLUMNS} FROM logs ORDER BY ALL").fetchall()
    finally:
        con.close()


@pytest.mark.parametrize("name, kwargs", [
    ("loki.json", {}),
    ("otlp.ndjson", {}),
    ("nested.ndjson", {"log_fields": NESTED_FIELDS}),
])
def test_export_loads_the_same_rows_as_the_csv(exports, tmp_path, name, kwargs):
    folder, out = exports
    from_csv = load_sources(tmp_path / "csv.duckdb", folder / "metrics.csv", folder / "logs.csv")
    from_export = load_sources(tmp_path / "export.duckdb", folder / "metrics.csv", out / name, **kwargs)
    assert from_export.log_rows == from_csv.log_rows
    assert sorted(from_export.log_columns) == sorted(from_csv.log_columns)
    assert _logs_rows(tmp_path / "export.duckdb") == _logs_rows(tmp_path / "csv.duckdb")


def test_forced_format_reads_a_file_whatever_its_name(exports, tmp_path):
    folder, out = exports
    renamed = tmp_path / "export.txt"
    renamed.write_bytes((out / "loki.json").read_bytes())
    with pytest.raises(InputError, match="unsupported file type"):
        load_sources(tmp_path / "a.duckdb", folder / "metrics.csv", renamed)
    summary = load_sources(tmp_path / "b.duckdb", folder / "metrics.csv", renamed, log_format="loki")
    assert summary.log_rows == len(pd.read_csv(folder / "logs.csv", usecols=["ts"]))


def test_loki_without_a_service_label_names_the_labels_it_found(tmp_path, exports):
    folder, _ = exports
    doc = {"status": "success", "data": {"resultType": "streams", "result": [
        {"stream": {"pod": "checkout-7d9f", "level": "error"}, "values": [["1772355240000000000", "boom"]]}]}}
    path = tmp_path / "loki.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError) as info:
        load_sources(tmp_path / "a.duckdb", folder / "metrics.csv", path)
    assert info.value.column == "service" and "labels found: level, pod" in str(info.value)
    summary = load_sources(tmp_path / "b.duckdb", folder / "metrics.csv", path, log_fields={"service": "pod"})
    con = duckdb.connect(str(tmp_path / "b.duckdb"), read_only=True)
    assert con.execute("SELECT service, level FROM logs").fetchall() == [("checkout-7d9f", "ERROR")]
    con.close()
    assert summary.log_rows == 1


def test_loki_metric_answer_is_refused_clearly(tmp_path, exports):
    folder, _ = exports
    path = tmp_path / "loki.json"
    path.write_text(json.dumps({"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"app": "x"}, "values": [[1772355240, "3"]]}]}}))
    with pytest.raises(InputError, match="no log lines"):
        load_sources(tmp_path / "a.duckdb", folder / "metrics.csv", path, log_format="loki")


def test_ndjson_mapping_errors_name_the_path_and_column(tmp_path, exports):
    folder, out = exports
    with pytest.raises(InputError) as info:
        load_sources(tmp_path / "a.duckdb", folder / "metrics.csv", out / "nested.ndjson",
                     log_fields={**NESTED_FIELDS, "service": "kubernetes.labels.application"})
    assert info.value.column == "service"
    assert json_path("kubernetes.labels.application") in str(info.value)
    with pytest.raises(InputError, match="unknown log column.*hostname"):
        load_sources(tmp_path / "b.duckdb", folder / "metrics.csv", out / "nested.ndjson",
                     log_fields={"hostname": "host.name"})


def test_offsets_are_converted_to_utc_and_recorded(tmp_path, exports):
    folder, out = exports
    summary = load_sources(tmp_path / "a.duckdb", folder / "metrics.csv", out / "nested.ndjson", log_fields=NESTED_FIELDS)
    assert summary.time_offsets == {"logs": ["+02:00"]}  # the metrics are written in Z
    first_local = json.loads((out / "nested.ndjson").open().readline())["@timestamp"]
    con = duckdb.connect(str(tmp_path / "a.duckdb"), read_only=True)
    first_utc = con.execute("SELECT min(ts) FROM logs").fetchone()[0]
    con.close()
    assert first_local.endswith("+02:00")
    assert pd.Timestamp(first_local).tz_convert("UTC").tz_localize(None) == pd.Timestamp(first_utc)


def _root(tmp_path, env_home, folder, *log_args) -> dict:
    out = tmp_path / "out"
    result = run_cli("investigate", "--metrics", str(folder / "metrics.csv"), "--events", str(folder / "events.csv"),
                     *log_args, "--auto-approve", "--quiet", "--out", str(out), env_home=env_home)
    assert result.returncode == 0, result.stderr
    pm = json.loads((out / "postmortem.json").read_text())
    return {"root": pm["root_cause"], "window": pm["incident_window"]}


def test_investigation_over_each_format_finds_the_csv_root_cause(exports, tmp_path, state_dir):
    folder, out = exports
    truth = json.loads((folder / "truth.json").read_text())
    expected = _root(tmp_path / "csv", state_dir, folder, "--logs", str(folder / "logs.csv"))
    assert expected["root"]["service"] == truth["root_service"]
    fields = [arg for target, source in NESTED_FIELDS.items() for arg in ("--log-field", f"{target}={source}")]
    runs = {
        "loki": ["--logs", str(out / "loki.json")],
        "otlp": ["--logs", str(out / "otlp.ndjson"), "--log-format", "otlp"],
        "ndjson": ["--logs", str(out / "nested.ndjson"), "--log-format", "ndjson", *fields],
    }
    for name, args in runs.items():
        assert _root(tmp_path / name, state_dir, folder, *args) == expected, name


def test_cli_log_field_without_equals_is_a_usage_error(exports, tmp_path, state_dir):
    folder, out = exports
    result = run_cli("investigate", "--metrics", str(folder / "metrics.csv"), "--logs", str(out / "nested.ndjson"),
                     "--log-field", "service", "--out", str(tmp_path / "out"), env_home=state_dir)
    assert result.returncode == 2
    assert "--log-field 'service'" in result.stderr and "TARGET=SOURCE.PATH" in result.stderr


def test_loki_level_falls_back_to_the_line(tmp_path, exports):
    folder, _ = exports
    doc = {"status": "success", "data": {"resultType": "streams", "result": [
        {"stream": {"service_name": "api"}, "values": [
            ["1772355240000000000", "level=error msg=\"upstream reset\""],
            ["1772355241000000000", "{\"level\":\"warning\",\"msg\":\"slow\"}"],
            ["1772355242000000000", "no level here"]]}]}}
    path = tmp_path / "loki.json"
    path.write_text(json.dumps(doc))
    load_sources(tmp_path / "a.duckdb", folder / "metrics.csv", path)
    con = duckdb.connect(str(tmp_path / "a.duckdb"), read_only=True)
    assert con.execute("SELECT service, level FROM logs ORDER BY ts").fetchall() == [
        ("api", "ERROR"), ("api", "WARN"), ("api", None)]
    con.close()


def test_field_mapping_renames_csv_columns(tmp_path, exports):
    folder, _ = exports
    path = tmp_path / "app.csv"
    path.write_text("time,svc,severity,text,service\n"
                    "2026-03-01T10:00:00+01:00,checkout,err,pool exhausted,ignored\n"
                    "2026-03-01T10:00:05+01:00,cart,info,ok,ignored\n")
    summary = load_sources(tmp_path / "a.duckdb", folder / "metrics.csv", path,
                           log_fields={"ts": "time", "service": "svc", "level": "severity", "message": "text"})
    con = duckdb.connect(str(tmp_path / "a.duckdb"), read_only=True)
    rows = con.execute("SELECT CAST(ts AS VARCHAR), service, level, message FROM logs ORDER BY ts").fetchall()
    con.close()
    assert rows == [("2026-03-01 09:00:00", "checkout", "ERROR", "pool exhausted"), ("2026-03-01 09:00:05", "cart", "INFO", "ok")]
    assert summary.time_offsets == {"logs": ["+01:00"]}
    with pytest.raises(InputError, match="no column 'host'.*columns found: time, svc"):
        load_sources(tmp_path / "b.duckdb", folder / "metrics.csv", path, log_fields={"service": "host.name"})
