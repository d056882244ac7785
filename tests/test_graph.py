"""The graph in-process: the ReAct loop, the step bound, the interrupt and grounding."""

import json

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from pydantic import ValidationError

from graph.analyst import OfflineAnalyst
from graph.graph import build_graph
from graph.prompts import with_context
from graph.state import HypothesisSet
from graph.tools import INVESTIGATION_TOOLS


def start(app, case, thread, state_dir, out, **configurable):
    config = {"configurable": {"thread_id": thread, "state_dir": str(state_dir), **configurable}, "recursion_limit": 60}
    inputs = {"metrics": str(case / "metrics.csv"), "logs": str(case / "logs.csv"), "events": str(case / "events.csv")}
    return config, app.invoke({"inputs": inputs, "out_dir": str(out)}, config)


def test_offline_analyst_speaks_tool_calls_like_an_llm():
    model = OfflineAnalyst().bind_tools(INVESTIGATION_TOOLS)
    task = HumanMessage(with_context("investigate", {"window": {"start": "2026-01-01T10:00:00Z", "end": "2026-01-01T11:00:00Z"}}))
    first = model.invoke([task])
    assert isinstance(first, AIMessage)
    assert sorted(c["name"] for c in first.tool_calls) == ["change_events", "log_pattern_scan", "service_error_onsets"]
    assert len({c["id"] for c in first.tool_calls}) == 3


def test_offline_analyst_structured_output_is_validated_pydantic():
    answer = OfflineAnalyst().with_structured_output(HypothesisSet)
    with pytest.raises(ValidationError, match="at least 1 item"):
        # No evidence at all: the analyst proposes nothing, and the schema (min 1 hypothesis) rejects it.
        answer.invoke([HumanMessage(with_context("hypothesize", {"evidence": []}))])


def test_full_run_grounds_every_hypothesis_in_existing_evidence(tmp_path, scenario_dir):
    app = build_graph(InMemorySaver())
    case = scenario_dir("dependency_outage", 11)
    _, state = start(app, case, "g1", tmp_path / "s", tmp_path / "o", auto_approve=True)
    ids = {e.id for e in state["evidence"]}
    assert state["hypotheses"]
    for h in state["hypotheses"]:
        assert h.evidence_ids and set(h.evidence_ids) <= ids
    for v in state["critic_transcript"]:
        assert set(v.evidence_ids) <= ids
    tools_used = {e.tool for e in state["evidence"]}
    assert {"detect_window", "log_pattern_scan", "service_error_onsets", "change_events", "sql_investigate"} <= tools_used
    truth = json.loads((case / "truth.json").read_text())
    assert state["hypotheses"][0].service == truth["root_service"]


def test_step_budget_bounds_the_react_loop(tmp_path, scenario_dir):
    app = build_graph(InMemorySaver())
    _, state = start(app, scenario_dir("bad_deploy", 12), "g2", tmp_path / "s", tmp_path / "o", auto_approve=True, max_steps=1)
    ai = [m for m in state["messages"] if isinstance(m, AIMessage)]
    assert len(ai) == 2  # one step with tool calls, then the forced conclusion
    assert "Step budget of 1 reached" in ai[-1].text
    assert not any(isinstance(m, ToolMessage) and m.name == "sql_investigate" for m in state["messages"])


def test_interrupt_rejects_malformed_decisions_and_asks_again(tmp_path, scenario_dir):
    app = build_graph(InMemorySaver())
    config, state = start(app, scenario_dir("config_rate_limit", 13), "g3", tmp_path / "s", tmp_path / "o")
    (pending,) = state["__interrupt__"]
    assert pending.value["mitigations"] and "approve" in pending.value["question"].lower()
    assert not (tmp_path / "o" / "postmortem.json").exists()

    state = app.invoke(Command(resume={"action": "launch-missiles"}), config)
    (again,) = state["__interrupt__"]
    assert "invalid decision" in again.value["error"]

    state = app.invoke(Command(resume={"action": "edit", "mitigations": []}), config)
    assert "invalid decision" in state["__interrupt__"][0].value["error"]

    state = app.invoke(Command(resume={"action": "approve", "by": "carol"}), config)
    assert "__interrupt__" not in state
    assert state["approval"].by == "carol"
    assert (tmp_path / "o" / "postmortem.json").exists()


def test_thread_state_can_be_inspected_while_paused(tmp_path, scenario_dir):
    app = build_graph(InMemorySaver())
    config, _ = start(app, scenario_dir("db_latency_ramp", 14), "g4", tmp_path / "s", tmp_path / "o")
    snapshot = app.get_state(config)
    assert snapshot.next == ("approve",)
    assert snapshot.values["detection"].incident_detected
    history = list(app.get_state_history(config))
    assert len(history) >= 7  # one checkpoint per super-step at least


def test_window_without_any_log_signal_ends_unconfirmed_not_crashed(tmp_path, scenario_dir):
    app = build_graph(InMemorySaver())
    fault, quiet = scenario_dir("tls_cert_expiry", 15), scenario_dir("none", 15)
    config = {"configurable": {"thread_id": "g5", "state_dir": str(tmp_path / "s")}, "recursion_limit": 60}
    # The metrics degrade, but the logs (from a healthy day) show nothing in that window.
    inputs = {"metrics": str(fault / "metrics.csv"), "logs": str(quiet / "logs.csv")}
    state = app.invoke({"inputs": inputs, "out_dir": str(tmp_path / "o")}, config)
    assert "__interrupt__" not in state  # nothing to approve
    assert state["detection"].incident_detected and state["hypotheses"] == []
    assert state["approval"].action == "not-needed"
    pm = json.loads((tmp_path / "o" / "postmortem.json").read_text())
    assert pm["root_cause"]["service"] is None and "unconfirmed" in pm["root_cause"]["summary"]


def test_a_query_that_fails_is_not_asked_again_every_step(tmp_path, scenario_dir):
    """Under load the ordering SQL can hit the time limit; the analyst concludes without it
    instead of re-sending it until the step budget runs out."""
    case = scenario_dir("conn_pool_exhaustion", 12)
    app = build_graph(InMemorySaver())
    _, state = start(app, case, "g-timeout", tmp_path / "s", tmp_path / "o", auto_approve=True, sql_timeout_s=0.001)
    sql_answers = [m for m in state["messages"] if isinstance(m, ToolMessage) and m.name == "sql_investigate"]
    assert len(sql_answers) == 1 and sql_answers[0].status == "error"
    final = state["messages"][-1]
    assert "Step budget" not in final.text and "Leading suspect" in final.text
    truth = json.loads((case / "truth.json").read_text())
    assert state["hypotheses"][0].service == truth["root_service"]
