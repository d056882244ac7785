"""tools.sources.prometheus and `investigate --prometheus` against a real Prometheus server.

The server is Debian's `prometheus` package, started on a loopback port with basic auth
(web.config.file) and a day of history backfilled by `promtool tsdb create-blocks-from
openmetrics` from a generated scenario: the scenario's metrics as gauges, per-service error
counts (from its logs) as a labelled gauge, and a 30-minute hole in cpu_pct.
"""

import base64
import http.server
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import warnings
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from tests.processes import run_cli
from tools.loader import InputError, load_sources
from tools.sources.prometheus import (
    MAX_POINTS,
    PrometheusRange,
    choose_step,
    fetch_metrics,
    resolve_range,
    write_metrics,
)

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    not (PROMETHEUS and PROMTOOL),
    reason="Debian's prometheus package (prometheus, promtool) is not installed; "
           "apt-get install -y --no-install-recommends prometheus",
)

USER, PASSWORD = "oncall", "s3cret-pw"
FAULT, SEED = "conn_pool_exhaustion", 1
GAP = (pd.Timestamp("2026-03-01T02:00:00Z"), pd.Timestamp("2026-03-01T02:30:00Z"))
QUERIES = {
    "rps": "scenario_rps",
    "p95_ms": "scenario_p95_ms",
    "error_rate": "scenario_error_rate",
    "cpu_pct": "scenario_cpu_pct",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _openmetrics(folder: Path) -> str:
    """The scenario's metrics (and per-service ERROR counts per minute) as OpenMetrics text."""
    metrics = pd.read_csv(folder / "metrics.csv", parse_dates=["ts"])
    epoch = (metrics["ts"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    lines = []
    for column in ("rps", "p95_ms", "error_rate", "cpu_pct"):
        keep = np.ones(len(metrics), bool)
        if column == "cpu_pct":
            keep = ~((metrics["ts"] >= GAP[0]) & (metrics["ts"] < GAP[1])).to_numpy()
        lines.append(f"# TYPE scenario_{column} gauge")
        lines += [f"scenario_{column} {v!r} {t}" for v, t in
                  zip(metrics[column][keep].tolist(), epoch[keep].tolist())]
    logs = pd.read_csv(folder / "logs.csv", parse_dates=["ts"], usecols=["ts", "service", "level"])
    minute = logs["ts"].dt.floor("min")
    errors = (logs.assign(minute=minute, err=logs["level"].eq("ERROR"))
              .groupby(["service", "minute"])["err"].sum().unstack(fill_value=0))
    grid = errors.reindex(columns=metrics["ts"], fill_value=0)
    lines.append("# TYPE scenario_log_errors gauge")
    for service, row in grid.iterrows():
        lines += [f'scenario_log_errors{{service="{service}"}} {int(v)} {t}'
                  for v, t in zip(row.tolist(), epoch.tolist())]
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def _wait_ready(url: str, auth: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        try:
            req = urllib.request.Request(url + "/-/ready", headers={"Authorization": auth})
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"prometheus not ready after 60 s:\n{log.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory, scenario_dir):
    """(base URL without credentials, scenario folder, truth) of a running, backfilled server."""
    folder = scenario_dir(FAULT, SEED)
    work = tmp_path_factory.mktemp("prometheus")
    data = work / "data"
    (work / "backfill.om").write_text(_openmetrics(folder))
    subprocess.run([PROMTOOL, "tsdb", "create-blocks-from", "openmetrics",
                    str(work / "backfill.om"), str(data)], check=True, capture_output=True)
    (work / "prometheus.yml").write_text("global: {}\nscrape_configs: []\n")
    with warnings.catch_warnings():
        # the stdlib's crypt (libxcrypt) is the bcrypt we have; deprecated, present until 3.13
        warnings.simplefilter("ignore", DeprecationWarning)
        crypt = pytest.importorskip("crypt", reason="needs the crypt module for a bcrypt hash")
        hashed = crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH))
    (work / "web.yml").write_text(f"basic_auth_users:\n  {USER}: '{hashed}'\n")
    port = _free_port()
    log = work / "prometheus.log"
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={data}",
         f"--web.listen-address=127.0.0.1:{port}", f"--web.config.file={work / 'web.yml'}",
         # the backfilled day lies months in the past: retention must still cover it
         "--storage.tsdb.retention.time=3650d"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, _basic(), process, log)
        yield url, folder, json.loads((folder / "truth.json").read_text())
    finally:
        process.terminate()
        process.wait(timeout=30)


def _basic(user: str = USER, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _day(truth: dict) -> PrometheusRange:
    start = datetime.fromisoformat(truth["period_start"])
    end = datetime.fromisoformat(truth["period_end"]) - timedelta(minutes=1)
    return PrometheusRange(start, end, choose_step(start, end))


def test_fetch_matches_the_backfilled_series(prometheus):
    url, folder, truth = prometheus
    frame = fetch_metrics(url, QUERIES, _day(truth), headers={"Authorization": _basic()})
    source = pd.read_csv(folder / "metrics.csv", parse_dates=["ts"]).set_index("ts")
    got = frame.set_index("ts")
    assert list(got.columns) == list(QUERIES)
    common = got.index.intersection(source.index)
    assert len(common) == len(source)  # every minute of the day came back
    for column in ("rps", "p95_ms", "error_rate"):
        np.testing.assert_allclose(got.loc[common, column], source.loc[common, column], rtol=1e-12)


def test_gap_longer_than_lookback_is_null_and_other_columns_keep_their_values(prometheus, tmp_path):
    url, _, truth = prometheus
    frame = fetch_metrics(url, QUERIES, _day(truth), headers={"Authorization": _basic()})
    path = write_metrics(frame, tmp_path / "metrics.parquet")
    logs = tmp_path / "logs.csv"
    logs.write_text("ts,service,level,message\n2026-03-01T00:00:00Z,a,INFO,hello\n")
    load_sources(tmp_path / "db.duckdb", path, logs)
    con = duckdb.connect(str(tmp_path / "db.duckdb"), read_only=True)
    missing = con.execute("SELECT min(ts), max(ts), count(*), count(rps) FROM metrics "
                          "WHERE cpu_pct IS NULL").fetchone()
    con.close()
    first, last, rows, with_rps = missing
    # Prometheus carries the last sample forward for its 5 minute lookback, then nothing.
    assert GAP[0].tz_localize(None) + pd.Timedelta(minutes=5) <= first
    assert last < GAP[1].tz_localize(None)
    assert rows >= 24 and with_rps == rows


def test_per_service_query_gives_one_column_per_series(prometheus):
    url, folder, truth = prometheus
    frame = fetch_metrics(url, {"errors": "sum by (service) (scenario_log_errors)"}, _day(truth),
                          headers={"Authorization": _basic()})
    services = sorted(pd.read_csv(folder / "logs.csv", usecols=["service"])["service"].unique())
    assert sorted(frame.columns[1:]) == sorted(f"errors_{s}" for s in services)
    root = f"errors_{truth['root_service']}"
    window = frame[(frame.ts >= truth["start"]) & (frame.ts < truth["end"])]
    assert window[root].sum() > 0


def test_automatic_step_stays_within_the_point_limit_on_a_long_range(prometheus):
    url, _, truth = prometheus
    end = datetime.fromisoformat(truth["period_end"])
    rng = resolve_range("60d", end.isoformat(), None)
    assert (rng.end - rng.start).total_seconds() / rng.step_s + 1 <= MAX_POINTS
    frame = fetch_metrics(url, {"rps": "scenario_rps"}, rng, headers={"Authorization": _basic()})
    steps = frame["ts"].diff().dropna().dt.total_seconds()
    assert (steps % rng.step_s == 0).all() and rng.step_s > 60
    assert len(frame) < MAX_POINTS
    # the same range at a step the server would refuse is stopped before sending it
    with pytest.raises(ValueError, match=r"at most 11,000"):
        resolve_range("60d", end.isoformat(), "60s")


def test_bad_promql_names_the_query(prometheus):
    url, _, truth = prometheus
    with pytest.raises(InputError) as info:
        fetch_metrics(url, {"rps": "scenario_rps", "broken": "sum(rate(scenario_rps[5m]"},
                      _day(truth), headers={"Authorization": _basic()})
    text = str(info.value)
    assert "'broken'" in text and "bad_data" in text and "sum(rate(scenario_rps[5m]" in text


def test_unknown_metric_is_an_error_not_an_empty_column(prometheus):
    url, _, truth = prometheus
    with pytest.raises(InputError, match=r"'typo'.*no series"):
        fetch_metrics(url, {"typo": "scenario_rsp"}, _day(truth), headers={"Authorization": _basic()})


def test_credentials_are_sent_and_checked(prometheus):
    url, _, truth = prometheus
    with pytest.raises(InputError, match=r"HTTP 401"):
        fetch_metrics(url, {"rps": "scenario_rps"}, _day(truth))
    with pytest.raises(InputError, match=r"HTTP 401"):
        fetch_metrics(url, {"rps": "scenario_rps"}, _day(truth),
                      headers={"Authorization": _basic(password="wrong")})
    with_userinfo = url.replace("http://", f"http://{USER}:{PASSWORD}@")
    frame = fetch_metrics(with_userinfo, {"rps": "scenario_rps"}, _day(truth))
    assert frame["rps"].notna().sum() > 1000
    with pytest.raises(InputError) as info:  # the password is never echoed in a message
        fetch_metrics(url.replace("http://", f"http://{USER}:{PASSWORD}@"), {"typo": "scenario_rsp"}, _day(truth))
    assert PASSWORD not in str(info.value) and url in str(info.value)


def _investigate(tmp_path, env_home, *source_args):
    out = tmp_path / "out"
    result = run_cli("investigate", *source_args, "--auto-approve", "--quiet", "--out", str(out),
                     env_home=env_home)
    return result, out


def test_investigate_over_prometheus_finds_the_same_incident_as_over_csv(prometheus, tmp_path, state_dir):
    url, folder, truth = prometheus
    logs, events = str(folder / "logs.csv"), str(folder / "events.csv")
    csv_run, csv_out = _investigate(tmp_path / "csv", state_dir, "--metrics", str(folder / "metrics.csv"),
                                    "--logs", logs, "--events", events)
    assert csv_run.returncode == 0, csv_run.stderr
    queries = tmp_path / "queries.yaml"
    queries.write_text("queries:\n" + "".join(f"  {k}: {v}\n" for k, v in QUERIES.items()))
    prom_run, prom_out = _investigate(
        tmp_path / "prom", state_dir, "--prometheus", url, "--queries", str(queries),
        "--prometheus-header", f"Authorization: {_basic()}",
        "--since", truth["period_start"], "--until", truth["period_end"],
        "--logs", logs, "--events", events)
    assert prom_run.returncode == 0, prom_run.stderr
    csv_pm = json.loads((csv_out / "postmortem.json").read_text())
    prom_pm = json.loads((prom_out / "postmortem.json").read_text())
    assert prom_pm["incident_detected"] and prom_pm["root_cause"]["service"] == truth["root_service"]
    assert prom_pm["root_cause"] == csv_pm["root_cause"]
    assert prom_pm["incident_window"] == csv_pm["incident_window"]
    source = prom_pm["metadata"]["inputs"]["metrics_source"]
    assert source["server"] == url and source["queries"] == QUERIES and source["step_seconds"] == 60


@pytest.fixture
def bearer_gateway(prometheus):
    """A reverse proxy in front of the server that admits only `Authorization: Bearer TOKEN`,
    as an auth gateway (oauth2-proxy, a cloud load balancer) would, and forwards with the
    server's basic auth. Prometheus' own web config knows only basic auth."""
    url = prometheus[0]

    class Gateway(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            if self.headers.get("Authorization") != f"Bearer {GATEWAY_TOKEN}":
                self.send_response(401)
                self.end_headers()
                return
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            upstream = urllib.request.Request(url + self.path, data=body, method="POST", headers={
                "Authorization": _basic(), "Content-Type": self.headers["Content-Type"]})
            try:
                with urllib.request.urlopen(upstream, timeout=30) as answer:
                    status, payload = answer.status, answer.read()
            except urllib.error.HTTPError as exc:
                status, payload = exc.code, exc.read()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


GATEWAY_TOKEN = "tkn-7f3a"


def test_bearer_token_from_the_environment_is_sent(prometheus, bearer_gateway, tmp_path, state_dir, monkeypatch):
    _, folder, truth = prometheus
    args = ["--prometheus", bearer_gateway, "--query", "rps=scenario_rps", "--query", "p95_ms=scenario_p95_ms",
            "--since", truth["period_start"], "--until", truth["period_end"], "--logs", str(folder / "logs.csv")]
    monkeypatch.setenv("INCIDENT_GRAPH_PROMETHEUS_TOKEN", "not-the-token")
    refused, _ = _investigate(tmp_path / "refused", state_dir, *args)
    assert refused.returncode == 2 and "HTTP 401" in refused.stderr and "'rps'" in refused.stderr
    monkeypatch.setenv("INCIDENT_GRAPH_PROMETHEUS_TOKEN", GATEWAY_TOKEN)
    admitted, out = _investigate(tmp_path / "admitted", state_dir, *args)
    assert admitted.returncode == 0, admitted.stderr
    pm = json.loads((out / "postmortem.json").read_text())
    assert pm["metadata"]["data"]["metric_columns"] == ["rps", "p95_ms"]


def test_investigate_bad_query_and_unreachable_server_exit_2(prometheus, tmp_path, state_dir):
    url, folder, truth = prometheus
    common = ["--since", truth["period_start"], "--until", truth["period_end"],
              "--logs", str(folder / "logs.csv")]
    bad, _ = _investigate(tmp_path / "bad", state_dir, "--prometheus", url,
                          "--prometheus-header", f"Authorization: {_basic()}",
                          "--query", "rps=scenario_rps", "--query", "p95_ms=histogram_quantile(0.95,", *common)
    assert bad.returncode == 2
    assert "query 'p95_ms'" in bad.stderr and "bad_data" in bad.stderr
    down, _ = _investigate(tmp_path / "down", state_dir, "--prometheus", f"http://127.0.0.1:{_free_port()}",
                           "--query", "rps=scenario_rps", *common)
    assert down.returncode == 2
    assert "cannot reach the server" in down.stderr and "Traceback" not in down.stderr
