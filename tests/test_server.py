"""The HTTP server in its own process on loopback, driven by real clients (httpx, RemoteRunnable)."""

import asyncio
import json
import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests.processes import ServerProcess

KEY = "s3cret-test-key"


def upload(scenario: Path, events: bool = True) -> dict:
    names = ["metrics", "logs"] + (["events"] if events else [])
    return {name: (f"{name}.csv", (scenario / f"{name}.csv").read_bytes(), "text/csv") for name in names}


def wait_status(client: httpx.Client, thread_id: str, wanted: set[str], timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = client.get(f"/incidents/{thread_id}").raise_for_status().json()
        if view["status"] in wanted:
            return view
        time.sleep(0.2)
    raise TimeoutError(f"{thread_id} still {view['status']} after {timeout} s")


def truth(scenario: Path) -> dict:
    return json.loads((scenario / "truth.json").read_text())


@pytest.fixture
def data_dir(tmp_path, scenario_dir) -> Path:
    """A data directory holding two scenarios, as an operator would configure it."""
    root = tmp_path / "data"
    for fault, seed in (("conn_pool_exhaustion", 11), ("memory_leak", 12)):
        shutil.copytree(scenario_dir(fault, seed), root / fault)
    return root


def test_two_concurrent_uploaded_incidents_keep_their_own_state(live_server, scenario_dir):
    server = live_server()
    cases = [scenario_dir("conn_pool_exhaustion", 11), scenario_dir("memory_leak", 12)]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        started = [client.post("/incidents", files=upload(case)) for case in cases]
        assert [r.status_code for r in started] == [202, 202]
        ids = [r.json()["thread_id"] for r in started]
        assert len(set(ids)) == 2
        views = [wait_status(client, tid, {"waiting_for_approval"}) for tid in ids]
        for view, case in zip(views, cases):
            assert view["hypotheses"][0]["service"] == truth(case)["root_service"]
            assert view["approval_request"]["mitigations"]
            assert view["evidence"], "hypotheses are shown with the evidence they cite"
            cited = {e["id"] for e in view["evidence"]}
            assert set(view["hypotheses"][0]["evidence_ids"]) <= cited

        listed = {i["thread_id"]: i for i in client.get("/incidents").json()}
        assert set(ids) <= set(listed) and all(listed[t]["status"] == "waiting_for_approval" for t in ids)
        assert "inputs" not in listed[ids[0]]["source"], "server paths stay private"

        assert client.post(f"/incidents/{ids[0]}/decision", json={"action": "approve", "by": "alice"}).status_code == 202
        assert client.post(f"/incidents/{ids[1]}/decision", json={"action": "reject", "note": "not now", "by": "bob"}).status_code == 202
        done = [wait_status(client, tid, {"done"}) for tid in ids]
        postmortems = [client.get(f"/incidents/{tid}/postmortem.json").json() for tid in ids]
    for view, pm, case, who in zip(done, postmortems, cases, ("alice", "bob")):
        assert pm["root_cause"]["service"] == truth(case)["root_service"]
        assert pm["approval"]["by"] == who
        assert view["approval"]["action"] == ("approve" if who == "alice" else "reject")
    assert postmortems[0]["metadata"]["thread_id"] == ids[0] and postmortems[1]["metadata"]["thread_id"] == ids[1]


def test_decision_is_taken_once_and_validated(live_server, scenario_dir):
    server = live_server()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        tid = client.post("/incidents", files=upload(scenario_dir("bad_deploy", 13))).json()["thread_id"]
        early = client.post(f"/incidents/{tid}/decision", json={"action": "approve"})
        wait_status(client, tid, {"waiting_for_approval"})
        bad = client.post(f"/incidents/{tid}/decision", json={"action": "maybe"})
        assert bad.status_code == 422 and "action" in bad.json()["detail"]
        assert client.post("/incidents/incident-nope/decision", json={"action": "approve"}).status_code == 404
        first = client.post(f"/incidents/{tid}/decision", json={"action": "approve", "by": "carol"})
        second = client.post(f"/incidents/{tid}/decision", json={"action": "reject", "note": "too late"})
        assert first.status_code == 202
        assert second.status_code == 409, second.text
        wait_status(client, tid, {"done"})
        third = client.post(f"/incidents/{tid}/decision", json={"action": "approve"})
        assert third.status_code == 409 and "done" in third.json()["detail"]
        pm = client.get(f"/incidents/{tid}/postmortem.json").json()
    # A decision sent while the run was still investigating is refused, not queued.
    assert early.status_code in {409, 202} and (early.status_code == 409 or pm["approval"]["action"] == "approve")
    assert pm["approval"]["by"] == "carol"


def test_concurrent_decisions_resume_exactly_once(live_server, scenario_dir):
    server = live_server()

    async def race() -> list[int]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            tid = (await client.post("/incidents", files=upload(scenario_dir("tls_cert_expiry", 14)))).json()["thread_id"]
            deadline = time.monotonic() + 90
            while (await client.get(f"/incidents/{tid}")).json()["status"] != "waiting_for_approval":
                assert time.monotonic() < deadline, f"{tid} never reached the approval"
                await asyncio.sleep(0.2)
            answers = await asyncio.gather(
                *[client.post(f"/incidents/{tid}/decision", json={"action": "approve", "by": f"user{i}"}) for i in range(6)]
            )
            return sorted(a.status_code for a in answers)

    assert asyncio.run(race()) == [202, 409, 409, 409, 409, 409]


def test_paths_under_the_data_directory_and_nothing_else(live_server, data_dir):
    server = live_server(INCIDENT_GRAPH_DATA_DIR=str(data_dir))
    with httpx.Client(base_url=server.url, timeout=30) as client:
        outside = client.post("/incidents", json={"metrics": "../../../etc/passwd", "logs": "memory_leak/logs.csv"})
        assert outside.status_code == 403 and "outside the data directory" in outside.json()["detail"]
        absolute = client.post("/incidents", json={"metrics": "/etc/hostname", "logs": "memory_leak/logs.csv"})
        assert absolute.status_code == 403
        missing = client.post("/incidents", json={"metrics": "memory_leak/nope.csv", "logs": "memory_leak/logs.csv"})
        assert missing.status_code == 422 and "nope.csv" in missing.json()["detail"]
        ok = client.post("/incidents", json={k: f"memory_leak/{k}.csv" for k in ("metrics", "logs", "events")})
        assert ok.status_code == 202
        view = wait_status(client, ok.json()["thread_id"], {"waiting_for_approval"})
        assert view["hypotheses"][0]["service"] == truth(data_dir / "memory_leak")["root_service"]
        assert client.get("/incidents").json()[0]["source"]["files"]["logs"] == "memory_leak/logs.csv"


def test_uploads_that_are_too_big_or_malformed_are_refused_clearly(live_server, scenario_dir, tmp_path):
    server = live_server(INCIDENT_GRAPH_MAX_UPLOAD_MB="12")
    case = scenario_dir("conn_pool_exhaustion", 11)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        huge = {**upload(case, events=False), "metrics": ("metrics.csv", b"ts,rps\n" + b"2026-01-01T00:00:00Z,1\n" * 600_000, "text/csv")}
        too_big = client.post("/incidents", files=huge)
        assert too_big.status_code == 413 and "MiB" in too_big.json()["detail"]
        no_logs = client.post("/incidents", files={"metrics": upload(case)["metrics"]})
        assert no_logs.status_code == 422 and "'logs'" in no_logs.json()["detail"]
        exe = client.post("/incidents", files={**upload(case, events=False), "logs": ("logs.exe", b"MZ", "application/octet-stream")})
        assert exe.status_code == 422 and "logs.exe" in exe.json()["detail"]
        empty = client.post("/incidents", files={**upload(case, events=False), "logs": ("logs.csv", b"", "text/csv")})
        assert empty.status_code == 422 and "empty" in empty.json()["detail"]
        text_field = client.post("/incidents", data={"metrics": "x", "logs": "y"}, files={"events": upload(case)["events"]})
        assert text_field.status_code == 422
        not_json = client.post("/incidents", content=b"{nope", headers={"content-type": "application/json"})
        assert not_json.status_code == 422
        no_data_dir = client.post("/incidents", json={"metrics": "a.csv", "logs": "b.csv"})
        assert no_data_dir.status_code == 422 and "INCIDENT_GRAPH_DATA_DIR" in no_data_dir.json()["detail"]
        # Readable upload, unusable content: the run fails with the loader's message, nothing written.
        broken = {**upload(case, events=False), "metrics": ("metrics.csv", b"when,rps\nyesterday,1\n", "text/csv")}
        tid = client.post("/incidents", files=broken).json()["thread_id"]
        failed = wait_status(client, tid, {"failed", "done", "waiting_for_approval"})
        assert failed["status"] == "failed" and "metrics.csv" in failed["error"], failed
        assert client.get(f"/incidents/{tid}/postmortem.json").status_code == 404
        assert list((server.home / "incidents").glob(f"{tid}/*")) == []


def test_api_key_guards_every_incident_route(live_server, scenario_dir):
    server = live_server(INCIDENT_GRAPH_API_KEY=KEY)
    case = scenario_dir("conn_pool_exhaustion", 11)
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        for method, path in [("GET", "/incidents"), ("GET", "/incidents/x"), ("POST", "/incidents/x/decision"),
                             ("GET", "/incidents/x/postmortem.json"), ("GET", "/incidents/x/events"), ("POST", "/graph/invoke")]:
            assert anonymous.request(method, path).status_code == 401, path
        assert anonymous.post("/incidents", files=upload(case)).status_code == 401
        assert anonymous.get("/incidents", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert anonymous.get("/").status_code == 200, "the page itself holds no incident data"
    with httpx.Client(base_url=server.url, timeout=30, headers={"authorization": f"Bearer {KEY}"}) as client:
        assert client.post("/incidents", files=upload(case)).status_code == 202
        assert len(client.get("/incidents").json()) == 1


def test_progress_events_stream_until_the_approval_wait(live_server, scenario_dir):
    server = live_server()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        started = time.monotonic()
        tid = client.post("/incidents", files=upload(scenario_dir("dependency_outage", 15))).json()["thread_id"]
        events, first_at = [], None
        with client.stream("GET", f"/incidents/{tid}/events") as stream:
            name = None
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("data:"):
                    first_at = first_at or time.monotonic() - started
                    events.append((name, json.loads(line.split(":", 1)[1])))
    nodes = [data["node"] for name, data in events if name == "node"]
    statuses = [data["status"] for name, data in events if name == "status"]
    assert nodes[:2] == ["load", "detect"] and "hypothesize" in nodes and "approve" not in nodes
    assert statuses[-1] == "waiting_for_approval"
    assert first_at is not None


def test_remote_runnable_runs_stop_at_the_approval_and_are_decided_through_the_api(live_server, data_dir):
    from langserve import RemoteRunnable

    server = live_server(INCIDENT_GRAPH_DATA_DIR=str(data_dir))
    inputs = {"inputs": {k: f"conn_pool_exhaustion/{k}.csv" for k in ("metrics", "logs", "events")}}
    invoked = RemoteRunnable(f"{server.url}/graph", headers={"x-thread-id": "remote-1"}).invoke(inputs)
    assert invoked["hypotheses"][0]["service"] == truth(data_dir / "conn_pool_exhaustion")["root_service"]
    assert invoked.get("approval") is None and not invoked.get("artifacts"), "the run waits for a human"

    chunks = list(RemoteRunnable(f"{server.url}/graph", headers={"x-thread-id": "remote-2"}).stream(
        {"inputs": {k: f"memory_leak/{k}.csv" for k in ("metrics", "logs", "events")}}))
    updates = {node: update for chunk in chunks for node, update in chunk.items()}
    assert {"load", "detect", "investigate", "hypothesize", "critic", "mitigate"} <= set(updates), list(updates)
    assert "write" not in updates
    assert updates["hypothesize"]["hypotheses"][0]["service"] == truth(data_dir / "memory_leak")["root_service"]
    # Each request ran in its own thread of the server's checkpointer, which the incident API
    # knows: the human decides there, once, and the postmortem is written under the state dir.
    threads = (("remote-1", "conn_pool_exhaustion"), ("remote-2", "memory_leak"))
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for tid, fault in threads:
            view = client.get(f"/incidents/{tid}").json()
            assert view["status"] == "waiting_for_approval" and view["hypotheses"][0]["service"] == truth(data_dir / fault)["root_service"]
            assert client.post(f"/incidents/{tid}/decision", json={"action": "approve", "by": "remote"}).status_code == 202
        for tid, fault in threads:
            wait_status(client, tid, {"done"})
            pm = client.get(f"/incidents/{tid}/postmortem.json").json()
            assert pm["approval"]["action"] == "approve" and pm["root_cause"]["service"] == truth(data_dir / fault)["root_service"]
    assert (server.home / "incidents" / "remote-1" / "postmortem.json").is_file()
    # stream_events and the playground are served too.
    body = {"input": {"inputs": {k: f"memory_leak/{k}.csv" for k in ("metrics", "logs", "events")}}}
    with httpx.stream("POST", f"{server.url}/graph/stream_events", json=body, headers={"x-thread-id": "remote-3"}, timeout=120) as events:
        kinds = {json.loads(line[5:]).get("event") for line in events.iter_lines() if line.startswith("data:") and line[5:].strip().startswith("{")}
    assert {"on_chain_start", "on_chain_end"} <= kinds
    assert httpx.get(f"{server.url}/graph/playground/", follow_redirects=True).status_code == 200
    # A path outside the data directory is refused inside the run, naming the file.
    with pytest.raises(httpx.HTTPStatusError, match="403"):
        RemoteRunnable(f"{server.url}/graph").invoke({"inputs": {"metrics": "/etc/passwd", "logs": "/etc/passwd"}})
    refused = httpx.post(f"{server.url}/graph/invoke", json={"input": {"inputs": {"metrics": "/etc/passwd", "logs": "x.csv"}}})
    assert refused.status_code == 403 and "/etc/passwd: outside the data directory" in refused.json()["detail"]


def test_waiting_incident_survives_a_server_restart(live_server, scenario_dir, tmp_path):
    home = tmp_path / "shared-home"
    first = live_server(home=home)
    case = scenario_dir("config_rate_limit", 16)
    with httpx.Client(base_url=first.url, timeout=30) as client:
        tid = client.post("/incidents", files=upload(case)).json()["thread_id"]
        wait_status(client, tid, {"waiting_for_approval"})
    first.kill()
    second = live_server(home=home)
    with httpx.Client(base_url=second.url, timeout=30) as client:
        assert client.get(f"/incidents/{tid}").json()["status"] == "waiting_for_approval"
        assert client.post(f"/incidents/{tid}/decision", json={"action": "approve", "by": "dave"}).status_code == 202
        wait_status(client, tid, {"done"})
        pm = client.get(f"/incidents/{tid}/postmortem.json").json()
    assert pm["approval"]["by"] == "dave" and pm["root_cause"]["service"] == truth(case)["root_service"]


def stable_part(pm: dict) -> dict:
    """What two runs over the same inputs must agree on; ids, clocks and timings excluded."""
    return {
        "window": pm["incident_window"],
        "root_cause": pm["root_cause"],
        "hypotheses": [(h["service"], h["kind"], h["confidence"], h["status"]) for h in pm["hypotheses"]],
        "mitigations": [(m["title"], m["status"]) for m in pm["mitigations"]],
    }


def test_server_killed_mid_run_resumes_the_incident_on_restart(live_server, scenario_dir, tmp_path):
    case = scenario_dir("db_latency_ramp", 17)
    reference = live_server(home=tmp_path / "reference")
    with httpx.Client(base_url=reference.url, timeout=30) as client:
        ref_id = client.post("/incidents", files=upload(case)).json()["thread_id"]
        wait_status(client, ref_id, {"waiting_for_approval"})
        client.post(f"/incidents/{ref_id}/decision", json={"action": "approve", "by": "erin"})
        wait_status(client, ref_id, {"done"})
        expected = client.get(f"/incidents/{ref_id}/postmortem.json").json()

    home = tmp_path / "crash-home"
    doomed = live_server(home=home, INCIDENT_GRAPH_RECOVER_AFTER_S="0")
    with httpx.Client(base_url=doomed.url, timeout=30) as client:
        tid = client.post("/incidents", files=upload(case)).json()["thread_id"]
        deadline = time.monotonic() + 90
        while not client.get(f"/incidents/{tid}").json().get("node_runs"):
            assert time.monotonic() < deadline, f"{tid} checkpointed no node"
            time.sleep(0.02)  # kill once the first node is checkpointed, before the run finishes
        killed_in = client.get(f"/incidents/{tid}").json()
    doomed.kill()
    assert killed_in["status"] == "running"
    revived = live_server(home=home, INCIDENT_GRAPH_RECOVER_AFTER_S="0")
    with httpx.Client(base_url=revived.url, timeout=30) as client:
        wait_status(client, tid, {"waiting_for_approval"})
        client.post(f"/incidents/{tid}/decision", json={"action": "approve", "by": "erin"})
        wait_status(client, tid, {"done"})
        resumed = client.get(f"/incidents/{tid}/postmortem.json").json()
        runs = [r["node"] for r in client.get(f"/incidents/{tid}").json()["node_runs"]]
    assert stable_part(resumed) == stable_part(expected)
    assert runs.count("load") == 1, "the checkpointed load node is not run again"


def test_postgres_checkpointer_and_two_workers_share_incidents(live_server, scenario_dir, postgres_dsn, tmp_path):
    """Two server processes, one PostgreSQL: started on one, decided through the other."""
    home = tmp_path / "pg-home"
    first = live_server(home=home, INCIDENT_GRAPH_POSTGRES_DSN=postgres_dsn)
    second = live_server(home=home, INCIDENT_GRAPH_POSTGRES_DSN=postgres_dsn)
    case = scenario_dir("conn_pool_exhaustion", 11)
    with httpx.Client(base_url=first.url, timeout=30) as a, httpx.Client(base_url=second.url, timeout=30) as b:
        tid = a.post("/incidents", files=upload(case)).json()["thread_id"]
        wait_status(b, tid, {"waiting_for_approval"})
        assert [i["thread_id"] for i in b.get("/incidents").json()] == [tid]
        assert b.post(f"/incidents/{tid}/decision", json={"action": "approve", "by": "frank"}).status_code == 202
        assert a.post(f"/incidents/{tid}/decision", json={"action": "approve", "by": "gina"}).status_code == 409
        wait_status(a, tid, {"done"})
        pm = a.get(f"/incidents/{tid}/postmortem.json").json()
    assert pm["approval"]["by"] == "frank" and pm["root_cause"]["service"] == truth(case)["root_service"]
    assert not (home / "checkpoints.sqlite").exists(), "with a DSN nothing goes to the SQLite file"

    import psycopg

    with psycopg.connect(postgres_dsn) as conn:
        threads = {row[0] for row in conn.execute("SELECT DISTINCT thread_id FROM checkpoints")}
    assert tid in threads


def test_uvicorn_workers_on_one_port_share_incidents_through_postgres(live_server, scenario_dir, postgres_dsn, tmp_path):
    """`incident-graph serve --workers 2`: requests land on either worker, state is one."""
    server = live_server(home=tmp_path / "workers-home", workers=2, INCIDENT_GRAPH_POSTGRES_DSN=postgres_dsn)
    cases = [scenario_dir("conn_pool_exhaustion", 11), scenario_dir("memory_leak", 12)]
    workers_seen = set()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        ids = [client.post("/incidents", files=upload(case)).json()["thread_id"] for case in cases]
        for tid in ids:
            wait_status(client, tid, {"waiting_for_approval"})
        # New connections spread over the workers, unevenly on a loaded machine (the kernel may
        # hand a burst of accepts to one process): keep connecting until both answered.
        deadline = time.monotonic() + 60
        while len(workers_seen) < 2 and time.monotonic() < deadline:
            with httpx.Client(base_url=server.url, timeout=30) as fresh:
                workers_seen.add(fresh.get("/status").json()["worker"])
            time.sleep(0.05)
        answers = []
        for tid in ids:
            for attempt in range(3):
                with httpx.Client(base_url=server.url, timeout=30) as fresh:
                    answers.append(fresh.post(f"/incidents/{tid}/decision", json={"action": "approve", "by": f"w{attempt}"}).status_code)
        for tid, case in zip(ids, cases):
            wait_status(client, tid, {"done"})
            pm = client.get(f"/incidents/{tid}/postmortem.json").json()
            assert pm["root_cause"]["service"] == truth(case)["root_service"] and pm["approval"]["by"] == "w0"
    assert len(workers_seen) == 2, workers_seen
    assert sorted(answers) == [202, 202, 409, 409, 409, 409]


def test_workers_setting_up_one_fresh_postgres_at_once_all_start(postgres_dsn):
    """Six processes' worth of checkpointer setups on one fresh database at the same moment: with a
    blocking pg_advisory_lock, a waiter's snapshot deadlocked the holder's CREATE INDEX
    CONCURRENTLY and PostgreSQL failed one worker's startup (a uvicorn --workers 2 run, under load)."""
    from graph.checkpointing import open_postgres_saver

    async def start_one() -> str:
        async with open_postgres_saver(postgres_dsn) as saver:
            return type(saver).__name__

    async def start_all() -> list:
        return await asyncio.gather(*(start_one() for _ in range(6)), return_exceptions=True)

    assert asyncio.run(start_all()) == ["AsyncPostgresSaver"] * 6


def test_unreachable_postgres_is_a_clear_startup_error(tmp_path):
    server = ServerProcess(tmp_path / "home", {"INCIDENT_GRAPH_POSTGRES_DSN": "postgresql://nobody@127.0.0.1:1/none"})
    with pytest.raises(RuntimeError, match="PostgreSQL checkpointer unreachable"):
        server.start()
    server.stop()


def test_corrupt_checkpoint_file_is_a_clear_startup_error(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "checkpoints.sqlite").write_bytes(b"this is not a database" * 100)
    server = ServerProcess(home, {})
    with pytest.raises(RuntimeError, match="unreadable"):
        server.start()
    server.stop()
    assert (home / "checkpoints.sqlite").read_bytes() == b"this is not a database" * 100
