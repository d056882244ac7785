"""What an HTTP client must not be able to do, each tried against a real server process:
choose the operator's settings (model endpoint, key, limits, the human gate), finish a waiting
incident without the one-time decision, write outside the state dir through a thread id, stall
the server or read the disk through a path, act cross-site from a browser, or send unbounded
bodies; and what the server shows without a key."""

import json
import os
import re
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psutil
import pytest

from serving.security import UNAUTHENTICATED
from tests.processes import ServerProcess
from tests.test_server import truth, upload, wait_status

ALICE, BOB = "alice-key-0123", "bob-key-4567"
TRUSTED_ORIGIN = "https://ops.example.com"
SCENARIOS = {"cp": ("conn_pool_exhaustion", 11), "ml": ("memory_leak", 12), "bd": ("bad_deploy", 13)}
GRAPH_ROUTES = ("invoke", "stream", "stream_log", "stream_events", "batch")


def paths(name: str) -> dict:
    """A graph input naming one scenario's files under the data directory."""
    return {"inputs": {k: f"{name}/{k}.csv" for k in ("metrics", "logs", "events")}}


def graph_body(route: str, graph_input: dict, config: dict | None = None) -> dict:
    body = {"inputs": [graph_input]} if route == "batch" else {"input": graph_input}
    return {**body, "config": config} if config is not None else body


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, scenario_dir) -> Path:
    """Scenarios, plus what a hostile path would aim at: symlink loops, a link to /etc, a
    Parquet-named link to /etc/passwd and a folder of more files than a dataset may have."""
    root = tmp_path_factory.mktemp("security") / "data"
    for name, (fault, seed) in SCENARIOS.items():
        shutil.copytree(scenario_dir(fault, seed), root / name)
    loops = root / "loops"
    loops.mkdir()
    for name, target in (("loop1", "."), ("loop2", "."), ("up", "..")):
        (loops / name).symlink_to(target)
    (loops / "notes.txt").write_text("not telemetry")
    (root / "etc-link").symlink_to("/etc")
    (root / "pw.parquet").symlink_to("/etc/passwd")
    many = root / "many"
    many.mkdir()
    for i in range(10_001):
        (many / f"part-{i:05d}.parquet").touch()
    return root


@pytest.fixture(scope="module")
def secured(data_dir) -> ServerProcess:
    """Named keys (alice, bob), the data directory and one trusted web origin."""
    server = ServerProcess(data_dir.parent / "home" / "state", {
        "INCIDENT_GRAPH_API_KEYS": f"alice:{ALICE},bob:{BOB}",
        "INCIDENT_GRAPH_DATA_DIR": str(data_dir),
        "INCIDENT_GRAPH_ALLOWED_ORIGINS": TRUSTED_ORIGIN,
    }).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def open_server(data_dir) -> ServerProcess:
    """The default: no API key; on every interface, as `serve --host 0.0.0.0` would."""
    server = ServerProcess(data_dir.parent / "open-home" / "state", {"INCIDENT_GRAPH_DATA_DIR": str(data_dir)}, host="0.0.0.0").start()
    yield server
    server.stop()


def client(server: ServerProcess, key: str | None = ALICE, timeout: float = 60) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=timeout, headers={"authorization": f"Bearer {key}"} if key else {})


def waiting_incident(c: httpx.Client, scenario_dir, name: str) -> str:
    tid = c.post("/incidents", files=upload(scenario_dir(*SCENARIOS[name]))).raise_for_status().json()["thread_id"]
    wait_status(c, tid, {"waiting_for_approval"})
    return tid


class Recorder(ThreadingHTTPServer):
    """An HTTP server that only records what reaches it: where a stolen key would be sent."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), RecordingHandler)
        self.requests: list[str] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class RecordingHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.server.requests.append(f"{self.command} {self.path} {self.headers.get('authorization')}")
        self.send_response(500)
        self.end_headers()

    do_GET = do_POST

    def log_message(self, *args) -> None:
        pass


def test_a_client_cannot_choose_operator_settings_on_any_graph_route(secured, data_dir):
    recorder = Recorder()
    refused = {"base_url": recorder.url, "llm_timeout_s": 100_000, "llm_retries": 300, "redact": False, "max_steps": 10_000,
               "model": "gpt-4o", "auto_approve": True, "approver": "alice (CISO)", "state_dir": "/tmp/elsewhere",
               "artifacts_dir": "/tmp/elsewhere"}
    work = secured.home / "work"
    runs_before = sorted(work.glob("*.duckdb")) if work.exists() else []
    try:
        with client(secured) as c:
            for route in GRAPH_ROUTES:
                for key, value in refused.items():
                    answer = c.post(f"/graph/{route}", json=graph_body(route, paths("cp"), {"configurable": {key: value}}))
                    assert answer.status_code == 403, (route, key, answer.text)
                    assert key in answer.json()["detail"] and "onset_lookback_minutes" in answer.json()["detail"]
            # A batch's per-input configs are checked one by one.
            listed = c.post("/graph/batch", json={"inputs": [paths("cp")] * 2, "config": [{}, {"configurable": {"base_url": recorder.url}}]})
            assert listed.status_code == 403 and "base_url" in listed.json()["detail"]
            too_far = c.post("/graph/invoke", json=graph_body("invoke", paths("cp"), {"configurable": {"onset_lookback_minutes": 10**9}}))
            assert too_far.status_code == 403 and "onset_lookback_minutes" in too_far.json()["detail"]

            allowed = c.post("/graph/invoke", json=graph_body("invoke", paths("cp"), {"configurable": {"onset_lookback_minutes": 30}}),
                             headers={"x-thread-id": "window-30"})
            assert allowed.status_code == 200, allowed.text
            assert allowed.json()["output"]["hypotheses"][0]["service"] == truth(data_dir / "cp")["root_service"]
            assert c.get("/incidents/window-30").json()["status"] == "waiting_for_approval", "the human gate still stands"
    finally:
        recorder.shutdown()
    assert recorder.requests == [], "the server sent nothing (and no key) to a client's endpoint"
    assert sorted(work.glob("*.duckdb")) == sorted({*runs_before, work / "window-30.duckdb"}), "refused requests started no run"


def test_a_waiting_incident_is_decided_only_through_its_one_time_claim(secured, scenario_dir):
    with client(secured, ALICE) as alice:
        tid = waiting_incident(alice, scenario_dir, "bd")
        # The probe that finished it before: LangServe on the waiting thread, gate switched off.
        probe = graph_body("invoke", paths("bd"), {"configurable": {"auto_approve": True, "approver": "alice (CISO)"}})
        answer = alice.post("/graph/invoke", json=probe, headers={"x-thread-id": tid})
        assert answer.status_code == 403 and "auto_approve" in answer.json()["detail"]
        # Without settings LangServe still neither restarts nor continues an existing thread.
        for route in GRAPH_ROUTES:
            again = alice.post(f"/graph/{route}", json=graph_body(route, paths("bd")), headers={"x-thread-id": tid})
            assert again.status_code == 409 and "already exists" in again.json()["detail"], (route, again.text)
        assert alice.get(f"/incidents/{tid}").json()["status"] == "waiting_for_approval"
        forged = alice.post(f"/incidents/{tid}/decision", json={"action": "approve", "authenticated_as": "ciso"})
        assert forged.status_code == 422 and "authenticated_as" in forged.json()["detail"]
    with client(secured, BOB) as bob:
        decided = bob.post(f"/incidents/{tid}/decision", json={"action": "approve", "by": "alice (CISO)", "note": "go"})
        assert decided.status_code == 202 and decided.json()["authenticated_as"] == "bob"
        assert bob.post(f"/incidents/{tid}/decision", json={"action": "reject"}).status_code == 409
        wait_status(bob, tid, {"done"})
        approval = bob.get(f"/incidents/{tid}/postmortem.json").json()["approval"]
    assert approval["action"] == "approve" and approval["by"] == "alice (CISO)", "`by` is the label the decider typed"
    assert approval["authenticated_as"] == "bob", "who decided is the key's owner"


def test_thread_ids_that_name_other_paths_are_refused(secured):
    outside = secured.home.parent
    victim = outside / "victim" / "x.duckdb"
    victim.parent.mkdir(exist_ok=True)
    victim.write_bytes(b"precious")
    with client(secured) as c:
        for thread_id in ("../../escaped/x", str(victim.with_suffix("")), "../x", ".hidden", "a b", "x" * 129):
            answer = c.post("/graph/invoke", json=graph_body("invoke", paths("cp")), headers={"x-thread-id": thread_id})
            assert answer.status_code == 422 and "thread id" in answer.json()["detail"], (thread_id, answer.text)
        for method, path in (("GET", "/incidents/.hidden"), ("GET", "/incidents/-x/events"), ("GET", "/incidents/.x/postmortem.json"),
                             ("POST", "/incidents/.x/decision")):
            answer = c.request(method, path, json={"action": "approve"} if method == "POST" else None)
            assert answer.status_code == 422 and "thread id" in answer.json()["detail"], (path, answer.text)
    assert not (outside / "escaped").exists() and not (secured.home / "x.duckdb").exists()
    assert victim.read_bytes() == b"precious" and sorted(victim.parent.iterdir()) == [victim]


def test_a_glob_over_symlink_loops_returns_promptly_while_the_server_keeps_answering(secured):
    outcome: dict = {}

    def glob_request() -> None:
        started = time.monotonic()
        with client(secured, timeout=120) as c:
            outcome["answer"] = c.post("/incidents", json={"metrics": "cp/metrics.csv", "logs": "loops/**/*.zzz"})
        outcome["seconds"] = time.monotonic() - started

    request = threading.Thread(target=glob_request)
    request.start()
    health_seconds = []
    while request.is_alive() or not health_seconds:
        started = time.monotonic()
        httpx.get(f"{secured.url}/healthz", timeout=1).raise_for_status()
        health_seconds.append(time.monotonic() - started)
        time.sleep(0.05)
    request.join()
    assert max(health_seconds) < 1
    assert outcome["seconds"] < 10 and outcome["answer"].status_code == 422
    assert "no files match" in outcome["answer"].json()["detail"]
    with client(secured) as c:
        too_many = c.post("/incidents", json={"metrics": "cp/metrics.csv", "logs": "many/*.parquet"})
        assert too_many.status_code == 422 and "more than 10000 files" in too_many.json()["detail"]
        started = time.monotonic()
        absolute = c.post("/incidents", json={"metrics": "cp/metrics.csv", "logs": "/usr/**/*.zzz"})
        assert absolute.status_code == 403 and time.monotonic() - started < 1, "refused before any listing"


def test_path_refusals_reveal_nothing_outside_the_data_directory(secured, data_dir):
    server_paths = {str(data_dir), str(data_dir.resolve()), str(secured.home)}
    elsewhere = re.compile(r"/etc|/root|/usr|passwd|ssh_config|bashrc")
    probes = ["/etc/*", "/etc/ssh/*", "/root/.*", "/usr/**/*.zzz", "../../../../etc/passwd", "etc-link/*", "etc-link/ssh/*",
              "etc-link/passwd", "pw.parquet", "*.parquet"]
    with client(secured) as c:

        def refusal(logs: str) -> tuple[int, str]:
            answer = c.post("/incidents", json={"metrics": "cp/metrics.csv", "logs": logs})
            return answer.status_code, answer.json()["detail"]

        for probe in probes:
            status, detail = refusal(probe)
            assert status == 403, (probe, detail)
            assert not elsewhere.search(detail.replace(probe, "")), f"{probe}: {detail}"
            assert not any(p in detail for p in server_paths), f"{probe}: {detail}"
        # The same answer whether or not the target exists.
        for there, absent in (("/etc/passwd", "/etc/no-such-file"), ("etc-link/passwd", "etc-link/no-such-file"),
                              ("../../etc/passwd", "../../etc/no-such-file")):
            (status_a, detail_a), (status_b, detail_b) = refusal(there), refusal(absent)
            assert status_a == status_b == 403 and detail_a.replace(there, "P") == detail_b.replace(absent, "P")
        nul = c.post("/incidents", json={"metrics": "cp/metrics.csv\u0000.txt", "logs": "cp/logs.csv"})
        assert nul.status_code == 422 and "NUL" in nul.json()["detail"]


def test_dataset_listing_is_bounded_in_files_and_time(tmp_path):
    from tools.contract import InputError
    from tools.sources.datasets import dataset_files

    for i in range(6):
        (tmp_path / f"p{i}.parquet").touch()
    (tmp_path / "loop").symlink_to(".")
    assert len(dataset_files("logs", tmp_path / "**" / "*.parquet")) == 6, "the loop is not followed"
    with pytest.raises(InputError, match="more than 5 files"):
        dataset_files("logs", tmp_path / "*.parquet", max_files=5)
    with pytest.raises(InputError, match="took too long"):
        dataset_files("logs", tmp_path, seconds=0)


def test_cross_site_requests_are_refused_and_an_open_server_warns(open_server, scenario_dir):
    evil = {"origin": "https://evil.example"}
    with client(open_server, key=None) as c:
        tid = waiting_incident(c, scenario_dir, "cp")
        decision = f"/incidents/{tid}/decision"
        # What a page on another site can make a browser send: no preflight for these.
        text = c.post(decision, content=b'{"action": "approve"}', headers={**evil, "content-type": "text/plain"})
        assert text.status_code == 403 and "cross-site" in text.json()["detail"]
        form = c.post(decision, data={"action": "approve"}, headers={"referer": "https://evil.example/page"})
        assert form.status_code == 403
        assert c.post(decision, json={"action": "approve"}, headers={"origin": "null"}).status_code == 403
        assert c.post("/graph/invoke", json=graph_body("invoke", paths("cp")), headers=evil).status_code == 403
        assert c.post("/incidents", files=upload(scenario_dir(*SCENARIOS["cp"])), headers=evil).status_code == 403
        not_json = c.post(decision, content=b'{"action": "approve"}', headers={"content-type": "text/plain"})
        assert not_json.status_code == 415
        assert c.post("/graph/invoke", content=b"{}", headers={"content-type": "text/plain"}).status_code == 415
        assert c.get(f"/incidents/{tid}").json()["status"] == "waiting_for_approval", "nothing above decided it"
        # The server's own page (same origin) and non-browser clients (no Origin) go through.
        same_site = c.post(decision, json={"action": "approve", "by": "page"}, headers={"origin": open_server.url})
        assert same_site.status_code == 202 and same_site.json()["authenticated_as"] == UNAUTHENTICATED
        wait_status(c, tid, {"done"})
        assert c.get(f"/incidents/{tid}/postmortem.json").json()["approval"]["authenticated_as"] == UNAUTHENTICATED
    log = open_server.log.read_text()
    assert re.search(r"WARNING.*NO API KEY: listening on 0\.0\.0\.0", log), log[-2000:]


def test_a_listed_origin_may_send_state_changes(secured):
    with client(secured) as c:
        listed = c.post("/incidents/incident-nope/decision", json={"action": "approve"}, headers={"origin": TRUSTED_ORIGIN})
        assert listed.status_code == 404
        other = c.post("/incidents/incident-nope/decision", json={"action": "approve"}, headers={"origin": "https://ops.example.org"})
        assert other.status_code == 403


def test_each_batch_input_runs_in_its_own_thread(secured, data_dir):
    names = ("cp", "ml", "cp")
    with client(secured, timeout=300) as c:
        answer = c.post("/graph/batch", json={"inputs": [paths(n) for n in names]})
        assert answer.status_code == 200, answer.text
        outputs = answer.json()["output"]
        thread_ids = answer.headers["x-thread-id"].split(",")
        assert len(outputs) == 3 and len(set(thread_ids)) == 3
        for name, output, tid in zip(names, outputs, thread_ids):
            root = truth(data_dir / name)["root_service"]
            assert output["hypotheses"][0]["service"] == root
            view = c.get(f"/incidents/{tid}").json()
            assert view["status"] == "waiting_for_approval" and view["hypotheses"][0]["service"] == root
        shared = c.post("/graph/batch", json={"inputs": [paths("cp")] * 2}, headers={"x-thread-id": "one-for-all"})
        assert shared.status_code == 422 and "one thread per input" in shared.json()["detail"]


def test_request_bodies_are_bounded_while_they_stream(secured, scenario_dir):
    server_process = psutil.Process(secured.process.pid)
    with client(secured) as c:
        tid = waiting_incident(c, scenario_dir, "ml")
        decision = f"/incidents/{tid}/decision"
        rss_before = server_process.memory_info().rss
        note = "x" * (2 * 2**20)
        started = time.monotonic()
        declared = c.post(decision, json={"action": "reject", "note": note})
        assert declared.status_code == 413 and "INCIDENT_GRAPH_MAX_JSON_KB" in declared.json()["detail"]
        chunks = [b'{"action": "reject", "note": "'] + [b"x" * 65536] * 32 + [b'"}']
        chunked = c.post(decision, content=iter(chunks), headers={"content-type": "application/json"})
        assert chunked.status_code == 413, "no Content-Length: bounded while it streams"
        for path, body in (("/graph/invoke", {"input": {"inputs": {"metrics": note, "logs": "x"}}}),
                           ("/incidents", {"metrics": note, "logs": "x"})):
            assert c.post(path, json=body).status_code == 413, path
        assert time.monotonic() - started < 5
        assert server_process.memory_info().rss - rss_before < 64 * 2**20
        long_note = c.post(decision, json={"action": "reject", "note": "x" * 5000})
        assert long_note.status_code == 422 and "note" in long_note.json()["detail"]
        assert c.get(f"/incidents/{tid}").json()["status"] == "waiting_for_approval"
        assert c.post(decision, json={"action": "reject", "note": "not now"}).status_code == 202


def test_the_run_config_follows_the_operators_max_steps(monkeypatch, tmp_path):
    """Both the incident API and LangServe build their runs with `Investigations.config`."""
    from graph.checkpointing import DeferredSaver
    from graph.configuration import Configuration
    from server import Investigations
    from serving.settings import ServerSettings

    monkeypatch.setenv("INCIDENT_GRAPH_MAX_STEPS", "40")
    config = Investigations(ServerSettings(state_dir=tmp_path), DeferredSaver()).config("incident-1")
    assert config["recursion_limit"] > 2 * 40, "two super-steps per ReAct step, plus the outer graph"
    assert config["recursion_limit"] == Configuration.from_runnable_config(config).recursion_limit


def test_docs_and_worker_status_need_the_key_and_errors_show_no_server_paths(secured, data_dir, scenario_dir):
    guarded = ("/docs", "/redoc", "/openapi.json", "/status", "/graph/playground/", "/graph/input_schema")
    with client(secured, key=None) as anonymous:
        for path in guarded:
            assert anonymous.get(path).status_code == 401, path
        assert anonymous.get("/healthz").json() == {"ok": True}
    server_paths = (str(secured.home), str(secured.home.resolve()), str(data_dir), str(data_dir.resolve()))
    with client(secured) as c:
        assert c.get("/docs").status_code == 200 and "paths" in c.get("/openapi.json").json()
        assert set(c.get("/status").json()) == {"worker", "running"}
        # The loader's messages name files by the client's view of them, through LangServe ...
        missing = c.post("/graph/invoke", json={"input": {"inputs": {"metrics": "cp/metrics.csv", "logs": "cp/nope.csv"}}})
        assert missing.status_code == 422 and "<data>/cp/nope.csv" in missing.json()["detail"]
        # ... and in a failed incident's error.
        case = scenario_dir(*SCENARIOS["cp"])
        broken = {**upload(case, events=False), "metrics": ("metrics.csv", b"when,rps\nyesterday,1\n", "text/csv")}
        tid = c.post("/incidents", files=broken).json()["thread_id"]
        failed = wait_status(c, tid, {"failed", "done", "waiting_for_approval"})
        assert failed["status"] == "failed" and f"<uploads>/{tid}/metrics.csv" in failed["error"], failed
        with c.stream("GET", f"/incidents/{tid}/events") as events:
            streamed = "".join(events.iter_lines())
    for shown in (missing.text, json.dumps(failed), streamed):
        assert not any(p in shown for p in server_paths), shown[:500]
    assert os.path.isdir(secured.home / "uploads" / tid), "the upload itself stays on the server"
