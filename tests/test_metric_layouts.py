"""Metrics per service: long, per-pod wide, per-pod folders and <service>:<metric> columns, pods
mapped to their services; the global table the detector reads and service_metrics beside it."""
from __future__ import annotations

import json
import struct
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from tests.processes import run_cli
from tools.contract import InputError
from tools.loader import load_sources
from tools.sources.datasets import confined_inputs
from tools.sources.pods import ServiceMap, service_of

LOGS = "ts,service,level,message\n2024-06-01T10:00:05Z,checkout,INFO,ok\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, metrics: Path | str, **kw):
    db = tmp_path / "db.duckdb"
    summary = load_sources(db, metrics, write(tmp_path / "logs.csv", LOGS), **kw)
    con = duckdb.connect(str(db), read_only=True)
    try:
        metrics_rows = con.execute("SELECT * FROM metrics ORDER BY ts").fetchall()
        columns = [r[0] for r in con.execute("DESCRIBE metrics").fetchall()]
        service_rows = con.execute("SELECT * FROM service_metrics ORDER BY ts, service, instance, metric").fetchall()
    finally:
        con.close()
    return summary, columns, metrics_rows, service_rows


@pytest.mark.parametrize(("pod", "service"), [
    ("checkout-7d9f8b6c5d-x2k4q", "checkout"),  # Deployment: ReplicaSet hash + pod hash
    ("ts-travel2-service-5c66d57d58-6mp2b", "ts-travel2-service"),
    ("currencyservice-cf787dd48-vpjrd", "currencyservice"),
    ("db-0", "db"),  # StatefulSet ordinal
    ("kafka-12", "kafka"),
    ("fluentd-x7k2p", "fluentd"),  # DaemonSet: a lone pod hash with a digit
    ("web-https", "web-https"),  # five consonants, no digit: a name part, kept
    ("ts-auth-service", "ts-auth-service"),
    ("api-v2", "api-v2"),
    ("checkout-abcdef-x2k4q", "checkout-abcdef"),  # vowels: no ReplicaSet hash, so a lone pod hash
])
def test_pod_names_map_to_their_workload(pod, service):
    assert service_of(pod) == service


def test_service_map_exact_names_then_patterns_then_the_rule(tmp_path):
    as_csv = ServiceMap.read(write(tmp_path / "map.csv", "pod,service\nlegacy-box-1,billing\npay-*,payments\nlegacy-*,legacy\n"))
    as_json = ServiceMap.read(write(tmp_path / "map.json", json.dumps(
        {"legacy-box-1": "billing", "pay-*": "payments", "legacy-*": "legacy"})))
    for pods in (as_csv, as_json):
        assert pods.service("legacy-box-1") == "billing"  # exact beats the later pattern
        assert pods.service("legacy-box-2") == "legacy"
        assert pods.service("pay-7d9f8b6c5d-x2k4q") == "payments"  # a pattern beats the rule
        assert pods.service("checkout-7d9f8b6c5d-x2k4q") == "checkout"


@pytest.mark.parametrize(("name", "text", "says"), [
    ("map.csv", "pod;service\na;b\n", "expected the header pod,service"),
    ("map.csv", "pod,service\na,\n", "line 2: expected two non-empty values"),
    ("map.json", "[1, 2]", "expected a JSON object"),
    ("map.json", '{"a": 3}', "entry 'a': expected a non-empty service name"),
])
def test_bad_service_maps_name_the_file_and_the_problem(tmp_path, name, text, says):
    path = write(tmp_path / name, text)
    with pytest.raises(InputError) as err:
        ServiceMap.read(path)
    assert str(path) in str(err.value) and says in str(err.value)


def test_long_format_with_pods_averages_a_service_over_its_pods(tmp_path):
    metrics = write(tmp_path / "m.csv", "ts,service,pod,metric,value\n"
                    "2024-06-01T10:00:00Z,checkout,checkout-7d9f8b6c5d-aaaa2,cpu,1\n"
                    "2024-06-01T10:00:00Z,checkout,checkout-7d9f8b6c5d-bbbb2,cpu,3\n"
                    "2024-06-01T10:00:00Z,payments,payments-0,p95_ms,200\n"
                    "2024-06-01T10:01:00Z,checkout,checkout-7d9f8b6c5d-aaaa2,cpu,5\n"
                    "2024-06-01T10:01:00Z,payments,payments-0,p95_ms,\n")
    summary, columns, rows, long = load(tmp_path, metrics)
    assert columns == ["ts", "checkout:cpu", "payments:p95_ms"] == ["ts"] + summary.metric_columns
    assert rows == [(datetime(2024, 6, 1, 10, 0), 2.0, 200.0), (datetime(2024, 6, 1, 10, 1), 5.0, None)]
    assert long[0] == (datetime(2024, 6, 1, 10, 0), "checkout", "checkout-7d9f8b6c5d-aaaa2", "cpu", 1.0)
    assert len(long) == 4  # the empty value is no row
    assert (summary.metric_services, summary.service_metric_rows) == (["checkout", "payments"], 4)


def test_per_pod_wide_file_maps_pods_and_aligns_their_scrape_seconds(tmp_path):
    # Two pods of one service scraped a few seconds apart: one row a minute in metrics, the
    # raw times kept in service_metrics.
    metrics = write(tmp_path / "pods.csv", "ts,PodName,CpuUsage(m),Latency P95 (s)\n"
                    "2024-06-01T10:00:09Z,cart-579f59597d-wc2lz,10,0.1\n"
                    "2024-06-01T10:00:11Z,cart-579f59597d-x7k2p,30,0.3\n"
                    "2024-06-01T10:01:10Z,cart-579f59597d-wc2lz,20,0.2\n"
                    "2024-06-01T10:01:12Z,cart-579f59597d-x7k2p,40,\n"
                    "2024-06-01T10:02:09Z,cart-579f59597d-wc2lz,50,0.5\n")
    summary, columns, rows, long = load(tmp_path, metrics)
    assert columns == ["ts", "cart:cpuusage_m", "cart:latency_p95_s"]
    assert rows == [(datetime(2024, 6, 1, 10, 0), 20.0, pytest.approx(0.2)), (datetime(2024, 6, 1, 10, 1), 30.0, 0.2),
                    (datetime(2024, 6, 1, 10, 2), 50.0, 0.5)]
    assert {r[2] for r in long} == {"cart-579f59597d-wc2lz", "cart-579f59597d-x7k2p"}
    assert long[0][0] == datetime(2024, 6, 1, 10, 0, 9)
    assert (summary.start, summary.end, summary.metrics_rows) == ("2024-06-01T10:00:00Z", "2024-06-01T10:02:00Z", 3)


def test_a_service_map_overrides_the_pod_rule(tmp_path):
    metrics = write(tmp_path / "pods.csv", "ts,pod,cpu\n2024-06-01T10:00:00Z,legacy-box-1,1\n2024-06-01T10:00:00Z,db-0,2\n")
    service_map = write(tmp_path / "map.json", '{"legacy-*": "billing"}')
    summary, columns, _, _ = load(tmp_path, metrics, service_map=service_map)
    assert columns == ["ts", "billing:cpu", "db:cpu"]
    assert summary.metric_services == ["billing", "db"]


def test_folder_of_per_pod_files_takes_the_pod_from_the_file_name(tmp_path):
    folder = tmp_path / "pods"
    write(folder / "checkout-7d9f8b6c5d-x2k4q_metrics.csv", "ts,cpu\n2024-06-01T10:00:00Z,1\n2024-06-01T10:01:00Z,2\n")
    write(folder / "checkout-7d9f8b6c5d-b2c4d_metrics.csv", "ts,cpu\n2024-06-01T10:00:00Z,3\n2024-06-01T10:01:00Z,4\n")
    write(folder / "nested" / "payments-0.csv", "ts,cpu,mem\n2024-06-01T10:00:00Z,5,6\n")
    for given in (folder, str(folder / "**" / "*.csv")):
        summary, columns, rows, long = load(tmp_path, given)
        assert columns == ["ts", "checkout:cpu", "payments:cpu", "payments:mem"]
        assert rows == [(datetime(2024, 6, 1, 10, 0), 2.0, 5.0, 6.0), (datetime(2024, 6, 1, 10, 1), 3.0, None, None)]
        assert {(r[1], r[2]) for r in long} == {("checkout", "checkout-7d9f8b6c5d-x2k4q"),
                                                ("checkout", "checkout-7d9f8b6c5d-b2c4d"), ("payments", "payments-0")}


def test_folder_of_files_that_split_one_range_is_one_global_table(tmp_path):
    # One file per day, no timestamp in two files: today's global table, read across files.
    folder = tmp_path / "days"
    write(folder / "day1.csv", "ts,rps\n2024-06-01T10:00:00Z,1\n")
    write(folder / "day2.csv", "ts,rps\n2024-06-02T10:00:00Z,2\n")
    summary, columns, rows, long = load(tmp_path, folder)
    assert columns == ["ts", "rps"] and [r[1] for r in rows] == [1.0, 2.0]
    assert long == [] and summary.metric_services == []


def test_service_metric_columns_keep_their_names_beside_global_ones(tmp_path):
    metrics = write(tmp_path / "m.csv", "ts,rps,checkout:p95_ms,ts-order-service:CPU Usage\n"
                    "2024-06-01T10:00:00Z,100,200,0.5\n2024-06-01T10:01:00Z,110,,0.7\n")
    summary, columns, rows, long = load(tmp_path, metrics)
    assert columns == ["ts", "rps", "checkout:p95_ms", "ts-order-service:cpu_usage"]
    assert rows[1] == (datetime(2024, 6, 1, 10, 1), 110.0, None, 0.7)
    assert long == [(datetime(2024, 6, 1, 10, 0), "checkout", None, "p95_ms", 200.0),
                    (datetime(2024, 6, 1, 10, 0), "ts-order-service", None, "cpu_usage", 0.5),
                    (datetime(2024, 6, 1, 10, 1), "ts-order-service", None, "cpu_usage", 0.7)]
    assert summary.metric_services == ["checkout", "ts-order-service"]


def test_global_wide_table_has_no_service_metrics(tmp_path):
    summary, columns, rows, long = load(tmp_path, write(tmp_path / "m.csv", "ts,rps,p95_ms\n2024-06-01T10:00:00Z,1,2\n"))
    assert columns == ["ts", "rps", "p95_ms"] and rows == [(datetime(2024, 6, 1, 10, 0), 1.0, 2.0)]
    assert long == [] and (summary.metric_services, summary.service_metric_rows) == ([], 0)


def test_errors_name_the_file_the_column_and_what_was_expected(tmp_path):
    folder = tmp_path / "pods"
    write(folder / "a-0.csv", "ts,cpu\n2024-06-01T10:00:00Z,1\n")
    bad = write(folder / "b-0.csv", "ts,cpu\n2024-06-01T10:00:00Z,1\n2024-06-01T10:01:00Z,high\n")
    with pytest.raises(InputError) as err:
        load(tmp_path, folder)
    assert (err.value.file, err.value.column) == (str(bad), "cpu")
    assert "non-numeric value at data row 2: 'high'" in str(err.value) and "must be numeric" in str(err.value)

    long = write(tmp_path / "long.csv", "ts,metric,value\n2024-06-01T10:00:00Z,cpu,1\n")
    with pytest.raises(InputError, match="needs a service, pod or instance column"):
        load(tmp_path, long)

    empty_pod = write(tmp_path / "pods.csv", "ts,pod,cpu\n2024-06-01T10:00:00Z,a-0,1\n2024-06-01T10:00:00Z,,2\n")
    with pytest.raises(InputError) as err:
        load(tmp_path, empty_pod)
    assert err.value.column == "pod" and "empty value at data row 2" in str(err.value)

    write(folder / "c-0.parquet", "not really parquet")
    with pytest.raises(InputError, match="files of one format"):
        load(tmp_path, folder)


def png_size(path: Path) -> tuple[int, int]:
    return struct.unpack(">II", path.read_bytes()[16:24])


def test_cli_investigates_a_folder_of_per_pod_files_with_a_service_map(tmp_path):
    # 2 services x 2 pods x 8 metrics: more series than the chart has panels for.
    folder = tmp_path / "pods"
    for pod in ("shop-7d9f8b6c5d-x2k4q", "shop-7d9f8b6c5d-b2c4d", "node-agent-1", "node-agent-2"):
        lines = ["ts,pod," + ",".join(f"m{i}" for i in range(8))]
        for minute in range(120):
            level = 50.0 if pod.startswith("shop") and 80 <= minute < 95 else 1.0
            lines.append(f"2024-06-01T{10 + minute // 60:02d}:{minute % 60:02d}:00Z,{pod},"
                         + ",".join(f"{level * (i + 1) + (minute % 3) * 0.01:.2f}" for i in range(8)))
        write(folder / f"{pod}.csv", "\n".join(lines) + "\n")
    service_map = write(tmp_path / "map.csv", "pattern,service\nnode-agent-*,agent\n")
    out = tmp_path / "out"
    run = run_cli("investigate", "--metrics", str(folder), "--logs", str(write(tmp_path / "logs.csv", LOGS)),
                  "--service-map", str(service_map), "--out", str(out), "--auto-approve", env_home=tmp_path / "home")
    assert run.returncode == 0, run.stderr
    assert "for 2 services" in run.stdout and "and 4 more" in run.stdout
    pm = json.loads((out / "postmortem.json").read_text())
    assert pm["metadata"]["inputs"]["service_map"] == str(service_map.resolve())
    assert pm["metadata"]["data"]["metric_services"] == ["agent", "shop"]
    assert pm["incident_detected"] and pm["incident_window"]["start"].startswith("2024-06-01T11:2")
    assert png_size(out / "timeline.png")[1] < 110 * (1.9 * 12 + 1)  # 12 panels, not 16


@pytest.mark.parametrize("given", ["../map.csv", "/etc/passwd", "sub/../../map.csv", "map\0.csv"])
def test_a_service_map_outside_the_data_directory_is_refused_like_any_input(tmp_path, given):
    # The server confines every file input; the service map is one (a path from an HTTP client).
    root = tmp_path / "data"
    root.mkdir()
    write(tmp_path / "map.csv", "pod,service\na,b\n")
    with pytest.raises(InputError):
        confined_inputs([root], {"metrics": "m.csv", "service_map": given})
    assert confined_inputs([root], {"service_map": "map.csv"})["service_map"] == str(root.resolve() / "map.csv")
