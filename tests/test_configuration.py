"""Typed configuration: bounds, what a client may set, thread ids, and the recursion limit."""

import json
import os

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from graph.configuration import (
    CLIENT_SETTABLE,
    ClientSettingRefused,
    Configuration,
    InvalidThreadId,
    client_overrides,
    runnable_config,
    thread_path,
    validate_thread_id,
)
from graph.graph import build_graph
from tests.fake_openai_server import FakeOpenAIServer, Reply


@pytest.mark.parametrize("name, value", [
    ("max_steps", 0), ("max_steps", 10_000), ("llm_timeout_s", 100_000), ("llm_retries", 300), ("critic_rounds", 99),
    ("token_budget", 0), ("sql_timeout_s", 0), ("sql_max_rows", 10**9), ("temperature", -1), ("approver", "x" * 500),
    ("structured_output", "xml"), ("max_steps", "many"),
])
def test_out_of_bounds_settings_are_clear_errors(name, value):
    with pytest.raises(ValueError, match=f"'{name}'"):
        Configuration.from_runnable_config({"configurable": {name: value}})


def test_operator_defaults_come_from_the_environment_but_never_auto_approve(monkeypatch):
    monkeypatch.setenv("INCIDENT_GRAPH_MAX_STEPS", "12")
    monkeypatch.setenv("INCIDENT_GRAPH_REDACT", "false")
    monkeypatch.setenv("INCIDENT_GRAPH_AUTO_APPROVE", "true")
    settings = Configuration.from_runnable_config({})
    assert settings.max_steps == 12 and settings.redact is False
    assert settings.auto_approve is False, "the human gate is never turned off by the environment"
    monkeypatch.setenv("INCIDENT_GRAPH_MAX_STEPS", "0")
    with pytest.raises(ValueError, match="'max_steps'"):
        Configuration.from_runnable_config({})


@pytest.mark.parametrize("key", ["base_url", "model", "llm_timeout_s", "llm_retries", "redact", "auto_approve", "approver",
                                 "max_steps", "token_budget", "critic_rounds", "sql_timeout_s", "sql_max_rows", "state_dir",
                                 "artifacts_dir", "input_roots", "not_a_setting"])
def test_a_client_cannot_set_operator_settings(key):
    with pytest.raises(ClientSettingRefused, match=key):
        client_overrides({key: "x"})


def test_a_client_may_set_analysis_windows_within_bounds():
    assert CLIENT_SETTABLE == {"change_lookback_minutes", "onset_lookback_minutes", "window"}
    assert client_overrides({"onset_lookback_minutes": 30, "thread_id": "t1"}) == {"onset_lookback_minutes": 30}
    assert client_overrides({"window": "2"}) == {"window": "2"}
    with pytest.raises(ClientSettingRefused, match="onset_lookback_minutes"):
        client_overrides({"onset_lookback_minutes": 10**9})
    with pytest.raises(ClientSettingRefused, match="window"):
        client_overrides({"window": "2024-06-02..2024-06-01"})


@pytest.mark.parametrize("bad", ["", "../x", "../../../../elsewhere/x", "/abs/path", "a/b", "a\\b", ".hidden", "x\x00y",
                                 "-flag", "a" * 129, "ünïcode", None, 7])
def test_thread_ids_that_could_name_another_path_are_refused(bad, tmp_path):
    with pytest.raises(InvalidThreadId):
        validate_thread_id(bad)
    with pytest.raises(InvalidThreadId):
        thread_path(tmp_path, bad, ".duckdb")


@pytest.mark.parametrize("good", ["incident-0123abcd", "remote-1", "eval-1a2b", "9f1c2e3a-0b7d-4c1e-9a55-2f0e5b7c8d90", "a.b_c"])
def test_valid_thread_ids_stay_in_their_directory(good, tmp_path):
    assert thread_path(tmp_path, good, ".duckdb").parent == tmp_path.resolve()


def test_recursion_limit_follows_max_steps():
    assert runnable_config("t", {"max_steps": 40})["recursion_limit"] > 2 * 40
    with pytest.raises(InvalidThreadId):
        runnable_config("../t", {})


def _always_calls_tools(body: dict) -> Reply:
    """A model that never concludes: every investigation turn asks for another tool call;
    structured steps get an unparseable answer, so the offline analyst takes them over."""
    tools = [t["function"]["name"] for t in body.get("tools") or []]
    if "change_events" in tools and len(tools) > 1:
        return Reply(tool_calls=[("change_events", {})])
    return Reply(content="not json")


@pytest.mark.integration
def test_a_model_that_keeps_calling_tools_ends_at_max_steps_not_in_a_recursion_error(tmp_path, state_dir, scenario_dir):
    case = scenario_dir("conn_pool_exhaustion", 41)
    with FakeOpenAIServer(_always_calls_tools) as server:
        app = build_graph(InMemorySaver())
        config = runnable_config("loop", {"model": "fake-model", "base_url": server.base_url, "max_steps": 40,
                                          "auto_approve": True, "llm_retries": 0, "state_dir": str(state_dir)})
        inputs = {k: str(case / f"{k}.csv") for k in ("metrics", "logs", "events")}
        state = app.invoke({"inputs": inputs, "out_dir": str(tmp_path / "out")}, config)
        investigation_calls = sum(1 for body in server.requests if "change_events" in json.dumps(body.get("tools") or []))
    assert investigation_calls == 40, "the model was asked once per step, up to max_steps"
    assert state["artifacts"] and os.path.exists(state["artifacts"]["postmortem.json"])
