"""A decision whose claim was taken by a process that died before applying it: the decision is
stored with its claim, and a later `resume` (CLI) or the recovery sweep (server) applies that
one, never another. The crash is left as a killed process leaves it: the claim and its decision
written by the entry point's own function, and no resume.

Real processes: `python cli.py` and `incident-graph serve`, on real checkpoint files.
"""

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

from cli import claim_decision, local_user
from graph.checkpointing import decision_claim_key
from graph.state import Decision
from serving.index import open_sqlite_index
from tests.processes import run_cli, waiting_request_id

pytestmark = pytest.mark.integration

FAULT, SEED = "tls_cert_expiry", 7


def wait_status(client: httpx.Client, thread: str, wanted: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while (view := client.get(f"/incidents/{thread}").raise_for_status().json())["status"] != wanted:
        assert time.monotonic() < deadline, f"{thread} still {view['status']} after {timeout} s"
        time.sleep(0.2)
    return view


def test_cli_resume_finishes_a_decision_whose_process_died_after_its_claim(scenario_dir, tmp_path):
    case, home, out = scenario_dir(FAULT, SEED), tmp_path / "home", tmp_path / "out"
    files = ["--metrics", str(case / "metrics.csv"), "--logs", str(case / "logs.csv"), "--events", str(case / "events.csv")]
    started = run_cli("investigate", *files, "--out", str(out), "--thread-id", "crashed", "--quiet", env_home=home)
    assert started.returncode == 3, started.stderr
    store = home / "checkpoints.sqlite"
    # What `resume --reject ... --by alice` leaves when it is killed right after its claim.
    claimed = Decision(action="reject", note="not during the sale", by="alice", authenticated_as=local_user())
    claim_decision(store, "crashed", waiting_request_id(store, "crashed"), claimed)

    second = run_cli("resume", "--thread-id", "crashed", "--approve", "--by", "bob", "--out", str(out), env_home=home)
    assert second.returncode == 2, second.stdout + second.stderr
    assert "error: thread crashed is already decided: reject by alice claimed at " in second.stderr, second.stderr
    assert f"a plain resume finishes it: incident-graph resume --thread-id crashed --out {out}" in second.stderr
    assert not out.exists()

    finished = run_cli("resume", "--thread-id", "crashed", "--out", str(out), env_home=home)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "finishing the decision reject by alice claimed at " in finished.stdout
    approval = json.loads((out / "postmortem.json").read_text())["approval"]
    assert (approval["action"], approval["by"], approval["note"]) == ("reject", "alice", "not during the sale")
    assert approval["authenticated_as"] == local_user()

    late = run_cli("resume", "--thread-id", "crashed", "--approve", "--out", str(out), env_home=home)
    assert late.returncode == 2 and "already decided: reject by alice" in late.stderr and "it has finished" in late.stderr


async def claim_as_the_server_does(store: Path, thread: str, request: str, decision: Decision) -> None:
    """`POST /incidents/{id}/decision` up to its claim: the worker is killed before it resumes the run."""
    async with open_sqlite_index(store) as index:
        assert await index.claim(decision_claim_key(thread, request), "worker killed after its claim",
                                 decision.model_dump(mode="json", exclude_none=True))


def test_server_recovery_applies_a_decision_whose_worker_died_after_its_claim(live_server, scenario_dir, tmp_path):
    case, home = scenario_dir(FAULT, SEED), tmp_path / "home"
    first = live_server(home=home)
    with httpx.Client(base_url=first.url, timeout=30) as client:
        files = {name: (f"{name}.csv", (case / f"{name}.csv").read_bytes(), "text/csv") for name in ("metrics", "logs", "events")}
        thread = client.post("/incidents", files=files).json()["thread_id"]
        wait_status(client, thread, "waiting_for_approval")
    first.kill()
    store = home / "checkpoints.sqlite"
    claimed = Decision(action="reject", note="wait for the vendor", by="frank", authenticated_as="api-key")
    asyncio.run(claim_as_the_server_does(store, thread, waiting_request_id(store, thread), claimed))

    revived = live_server(home=home, INCIDENT_GRAPH_RECOVER_AFTER_S="0")
    with httpx.Client(base_url=revived.url, timeout=30) as client:
        refused = client.post(f"/incidents/{thread}/decision", json={"action": "approve", "by": "mallory"})
        assert refused.status_code == 409, refused.text  # whether the sweep has resumed it yet or not
        wait_status(client, thread, "done")
        approval = client.get(f"/incidents/{thread}/postmortem.json").json()["approval"]
    assert (approval["action"], approval["by"], approval["note"]) == ("reject", "frank", "wait for the vendor")
    assert approval["authenticated_as"] == "api-key"
