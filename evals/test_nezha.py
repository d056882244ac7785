"""The Nezha harness on a hand-written folder in Nezha's layout (the real data is not vendored)."""

import gzip
import json
import re

import pandas as pd

from evals import nezha

PODS = ("cart-579f59597d-wc2lz", "frontend-579b9bff58-t2dbm")
FAULT_AT = pd.Timestamp("2022-08-22 10:30:20")


def write_gz(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(text)


def nezha_folder(root):
    day = root / "rca_data" / "2022-08-22"
    day.mkdir(parents=True)
    faults = {"10": [{"inject_time": str(FAULT_AT), "inject_timestamp": "0", "inject_pod": PODS[0], "inject_type": "cpu_contention"}]}
    (day / "2022-08-22-fault_list.json").write_text(json.dumps(faults))
    start = pd.Timestamp("2022-08-22 09:00:09")
    for pod in PODS:
        rows = ["Time,TimeStamp,PodName,CpuUsageRate(%),PodServerLatencyP95(s),NodeCpuUsageRate(%)"]
        for i in range(120):
            ts = start + pd.Timedelta(minutes=i)
            hot = pod == PODS[0] and FAULT_AT.floor("min") <= ts < FAULT_AT + pd.Timedelta(minutes=3)
            cpu = 90.0 if hot else 10.0 + (i % 5) * 0.5
            rows.append(f"{ts} +0000 UTC m=+{60 * i}.1,{int(ts.timestamp())},{pod},{cpu},{0.01 + (i % 3) * 0.001},{50 + i % 7}")
        write_gz(day / "metric" / f"{pod}_metric.csv.gz", "\n".join(rows) + "\n")
    record = json.dumps({"log": "10:30:30.500 ERROR c.CartService cart is slow\n", "stream": "stdout", "time": "2022-08-22T10:30:30Z"})
    log = pd.DataFrame({"Timestamp": ["2022-08-22T10:30:30.5Z"], "TimeUnixNano": [0], "Node": ["n"], "PodName": [PODS[1]],
                        "Container": ["server"], "TraceID": ["t1"], "SpanID": ["s1"], "Log": [record]})
    write_gz(day / "log" / "10_30_log.csv.gz", log.to_csv(index=False))
    return root


def test_one_fault_end_to_end(tmp_path, capsys):
    root = nezha_folder(tmp_path / "nezha")
    assert nezha.main([str(root), "--timeout", "240"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| 2022-08-22#01"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:5] == ["OnlineBoutique", "cpu_contention", "cart"]
    assert cells[6].split(", ")[0] == "cart"  # the baseline sees the root's own CPU jump
    assert cells[8] == "1"  # the one log line inside the window
    assert not cells[5].startswith("FAILED"), cells[5]
    assert re.search(r"^cases=1 ac1=[01]\.000 ac3=[01]\.000 window_hit=[01]\.000 failed=0$", out, re.M)


def test_adapter_writes_the_window_as_a_user_would_pass_it(tmp_path):
    root = nezha_folder(tmp_path / "nezha")
    fault = nezha.faults_of(root, "2022-08-22")[0]
    metrics, logs, lines = nezha.write_case(root, fault, nezha.pod_metrics(root, "2022-08-22"), tmp_path / "case")
    frame = pd.read_csv(metrics / f"{PODS[0]}.csv")
    assert list(frame.columns)[:3] == ["ts", "PodName", "CpuUsageRate(%)"]  # Time left out, TimeStamp as ts
    times = pd.to_datetime(frame["ts"]).dt.tz_localize(None)
    assert times.min() >= FAULT_AT - nezha.BEFORE and times.max() < FAULT_AT + nezha.AFTER
    assert lines == 1 and pd.read_csv(logs)["service"].tolist() == ["frontend"]


def test_window_hit_means_a_shared_minute_with_the_fault():
    fault = nezha.Fault("2022-08-22", 1, FAULT_AT, PODS[0], "cpu_contention")
    assert nezha.window_hit({"start": "2022-08-22T10:10:00Z", "end": "2022-08-22T10:31:00Z"}, fault)
    assert nezha.window_hit({"start": "2022-08-22T10:32:00Z", "end": "2022-08-22T10:40:00Z"}, fault)
    assert not nezha.window_hit({"start": "2022-08-22T10:34:00Z", "end": "2022-08-22T10:40:00Z"}, fault)
    assert not nezha.window_hit(None, fault)


def test_missing_data_is_skipped_and_told_mode_is_not_available(tmp_path, capsys):
    assert nezha.main([str(tmp_path / "absent")]) == 0
    assert capsys.readouterr().out.startswith("skipped: no Nezha data at")
    root = nezha_folder(tmp_path / "nezha")
    assert nezha.main([str(root), "--mode", "told"]) == 2
    assert "mode told is not available yet" in capsys.readouterr().out
