"""LangGraph Studio's server (`langgraph dev`) loads langgraph.json offline; driven by langgraph-sdk."""

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import LLM_ENV, REPO, free_port, wait_http

LANGGRAPH = Path(sys.executable).parent / "langgraph"


@pytest.fixture
def studio_server(tmp_path):
    if not LANGGRAPH.exists():
        pytest.skip("langgraph-cli[inmem] is not installed in this environment (pip install -e '.[dev]')")
    # `langgraph dev` keeps its state in ./.langgraph_api: run it from a copy of the config so
    # the test leaves nothing in the repository.
    workdir = tmp_path / "studio"
    workdir.mkdir()
    config = json.loads((REPO / "langgraph.json").read_text())
    config["dependencies"] = [str(REPO)]
    config["graphs"] = {name: str(REPO / target.removeprefix("./")) for name, target in config["graphs"].items()}
    (workdir / "langgraph.json").write_text(json.dumps(config))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in LLM_ENV and not k.startswith("LANGSMITH")}
    env.update(INCIDENT_GRAPH_HOME=str(tmp_path / "state"), LANGGRAPH_CLI_NO_ANALYTICS="1", PYTHONPATH=str(REPO))
    log = (tmp_path / "studio.log").open("wb")
    process = subprocess.Popen(
        [str(LANGGRAPH), "dev", "--no-browser", "--no-reload", "--port", str(port), "--config", "langgraph.json"],
        cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/ok", process, timeout=120)
        yield f"http://127.0.0.1:{port}"
    except (RuntimeError, TimeoutError) as exc:
        raise RuntimeError(f"{exc}\n{(tmp_path / 'studio.log').read_text()[-3000:]}") from exc
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(workdir / ".langgraph_api", ignore_errors=True)


def test_studio_server_runs_to_the_interrupt_and_resumes(studio_server, scenario_dir, tmp_path):
    from langgraph_sdk import get_client

    case = scenario_dir("conn_pool_exhaustion", 21)
    truth = json.loads((case / "truth.json").read_text())
    out = tmp_path / "studio-out"

    async def drive() -> tuple[dict, dict, dict]:
        client = get_client(url=studio_server)
        assistants = await client.assistants.search(graph_id="incident_graph")
        assert assistants, "langgraph.json's graph is registered"
        thread = await client.threads.create()
        payload = {"inputs": {k: str(case / f"{k}.csv") for k in ("metrics", "logs", "events")}, "out_dir": str(out)}
        paused = await client.runs.wait(thread["thread_id"], "incident_graph", input=payload)
        state = await client.threads.get_state(thread["thread_id"])
        final = await client.runs.wait(
            thread["thread_id"], "incident_graph", command={"resume": {"action": "approve", "by": "studio-user"}}
        )
        return paused, state, final

    paused, state, final = asyncio.run(drive())
    question = paused["__interrupt__"][0]["value"]
    assert question["mitigations"] and question["leading_hypothesis"]["service"] == truth["root_service"]
    assert state["next"] == ["approve"]
    assert state["values"]["hypotheses"][0]["service"] == truth["root_service"]
    assert final["approval"]["by"] == "studio-user"
    postmortem = json.loads(Path(final["artifacts"]["postmortem.json"]).read_text())
    assert postmortem["root_cause"]["service"] == truth["root_service"]
    assert Path(final["artifacts"]["postmortem.json"]).parent == out
