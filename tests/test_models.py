"""graph.models without a server: structured parsing, the bounded (tenacity) retry loop with its
feedback, and who answers a step; and the offline analyst's structured output."""

import json

import httpx
import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.output_parsers import PydanticOutputParser
from langchain_core.utils.function_calling import convert_to_openai_tool

from graph.analyst import OfflineAnalyst
from graph.configuration import Configuration
from graph.models import (
    MAX_RETRY_WAIT_S,
    ModelOutputError,
    answering_model,
    bounded_attempts,
    json_from_text,
    parse_structured,
)
from graph.prompts import with_context
from graph.state import CriticReport, HypothesisSet, ModelFallback

HYPOTHESIS = {"id": "H1", "service": "db", "kind": "Errors", "mechanism": "disk", "signature": "disk full",
              "confidence": 0.8, "summary": "db is full.", "evidence_ids": ["ev-log-pattern-scan-00000001"]}
WHOLE = json.dumps({"hypotheses": [HYPOTHESIS]})


def answer(raw: AIMessage, parsed=None, error=None) -> dict:
    return {"raw": raw, "parsed": parsed, "parsing_error": error}


def call(name: str, args) -> dict:
    return {"name": name, "args": args, "id": "c1", "type": "tool_call"}


# ---------------------------------------------------------------- structured parsing


def test_a_forced_call_is_the_answer():
    value = parse_structured(answer(AIMessage("", tool_calls=[call("HypothesisSet", json.loads(WHOLE))])), HypothesisSet, "function_calling")
    assert isinstance(value, HypothesisSet) and value.hypotheses[0].service == "db"
    parsed = HypothesisSet.model_validate_json(WHOLE)
    assert parse_structured(answer(AIMessage("", tool_calls=[call("HypothesisSet", {})]), parsed), HypothesisSet, "function_calling") is parsed


def test_what_is_wrong_with_a_structured_reply_is_said():
    def error(raw: AIMessage, method="function_calling") -> str:
        with pytest.raises(ModelOutputError) as caught:
            parse_structured(answer(raw), HypothesisSet, method)
        return str(caught.value)

    broken = AIMessage("", invalid_tool_calls=[{"name": "HypothesisSet", "args": '{"hypotheses": [', "id": "c1", "error": "bad"}])
    assert error(broken).startswith("the arguments of your HypothesisSet call are not valid JSON: '{\"hypotheses\": ['")
    assert error(AIMessage("")) == "no HypothesisSet tool call in the reply"
    assert error(AIMessage("", tool_calls=[call("Other", {})])) == "no HypothesisSet tool call in the reply"
    invalid = error(AIMessage("", tool_calls=[call("HypothesisSet", {"hypotheses": []})]))
    assert invalid == "HypothesisSet failed validation: hypotheses: List should have at least 1 item after validation, not 0"
    refused = AIMessage("", additional_kwargs={"refusal": "I can't."}, tool_calls=[call("HypothesisSet", json.loads(WHOLE))])
    assert error(refused) == "the model refused: I can't."
    assert error(AIMessage("Sure! Here is my analysis."), "json_mode").startswith("the reply is not valid JSON (Expecting value at char 0)")


def test_a_server_that_ignores_the_tool_choice_may_answer_in_the_content():
    value = parse_structured(answer(AIMessage(f"```json\n{WHOLE}\n```")), HypothesisSet, "function_calling")
    assert value.hypotheses[0].id == "H1"


def test_json_mode_reads_fenced_json_and_refuses_a_truncated_reply_langchain_would_complete():
    assert parse_structured(answer(AIMessage(f"Here it is:\n```json\n{WHOLE}\n```")), HypothesisSet, "json_mode").hypotheses[0].service == "db"
    # A reply cut off mid-way (max_tokens): langchain's JSON parser closes it into a valid answer...
    truncated = '{"hypotheses": [' + json.dumps(HYPOTHESIS) + ', '
    completed = PydanticOutputParser(pydantic_object=HypothesisSet).parse(truncated)
    assert [h.id for h in completed.hypotheses] == ["H1"]
    # ...which is not what the model said: the model is told to answer again.
    with pytest.raises(ModelOutputError, match=r"the reply is not valid JSON"):
        parse_structured(answer(AIMessage(truncated), parsed=completed), HypothesisSet, "json_mode")


def test_json_from_text():
    assert json_from_text(' {"a": 1} ') == {"a": 1}
    assert json_from_text('```\n{"a": [1, 2]}\n```') == {"a": [1, 2]}
    with pytest.raises(ModelOutputError, match=r"not valid JSON \(Expecting"):
        json_from_text('{"a": ')


# ---------------------------------------------------------------- the offline analyst


def critic_prompt() -> list:
    context = {"round": 2, "hypotheses": [{"id": "H1", "service": "a"}, {"id": "H2", "service": "b"}], "evidence": []}
    return [SystemMessage("critic"), HumanMessage(with_context("Critique round 2.", context))]


def test_the_offline_analysts_structured_output_is_a_parsed_forced_call():
    out = OfflineAnalyst().with_structured_output(CriticReport, include_raw=True).invoke(critic_prompt())
    assert out["parsing_error"] is None and isinstance(out["parsed"], CriticReport)
    (raw_call,) = out["raw"].tool_calls
    assert raw_call["name"] == "CriticReport" and raw_call["args"]["verdicts"][0]["challenge"] == "Does a still lead over b?"
    assert parse_structured(out, CriticReport, "function_calling") is out["parsed"]
    plain = OfflineAnalyst().with_structured_output(CriticReport).invoke(critic_prompt())
    assert plain == out["parsed"]


def test_the_offline_analyst_answers_a_schema_only_when_a_tool_choice_names_it():
    tools = [CriticReport]
    named = {"type": "function", "function": {"name": "CriticReport"}}
    for choice in ("CriticReport", named):
        reply = OfflineAnalyst().bind_tools(tools, tool_choice=choice).invoke(critic_prompt())
        assert [c["name"] for c in reply.tool_calls] == ["CriticReport"]
    # Not on langchain-core's internal "any": without a named schema it investigates.
    reply = OfflineAnalyst().bind_tools(tools, tool_choice="any").invoke(critic_prompt())
    assert "CriticReport" not in [c["name"] for c in reply.tool_calls]
    with pytest.raises(ValueError, match="answers only"):
        OfflineAnalyst().with_structured_output(ModelFallback)
    assert convert_to_openai_tool(CriticReport)["function"]["name"] == "CriticReport"


def test_structured_output_with_no_evidence_fails_validation_in_the_raw_answer():
    prompt = [HumanMessage(with_context("hypothesize", {"evidence": []}))]
    out = OfflineAnalyst().with_structured_output(HypothesisSet, include_raw=True).invoke(prompt)
    assert out["parsed"] is None and "at least 1 item" in str(out["parsing_error"])


# ---------------------------------------------------------------- who answers


def test_who_answers_a_step():
    offline = Configuration()
    llm = Configuration(model="m", base_url="http://127.0.0.1:9/v1")
    fell_back = {"model_fallbacks": [ModelFallback(node="investigate:analyst", reason="x", attempts=3)]}
    assert answering_model("hypothesize", offline, {}) is None
    assert type(answering_model("hypothesize", llm, {})).__name__ == "ChatOpenAI"
    assert answering_model("investigate:analyst", llm, fell_back, sticky=True) is None
    assert answering_model("investigate:analyst", llm, fell_back) is not None  # not sticky: asked again
    assert answering_model("critic", llm, fell_back, sticky=True) is not None  # another node's fallback


# ---------------------------------------------------------------- the bounded retry loop


def settings(**values) -> Configuration:
    return Configuration(model="m", base_url="http://127.0.0.1:9/v1", **values)


def reply(text: str, tokens: int = 10) -> AIMessage:
    return AIMessage(text, usage_metadata={"input_tokens": tokens, "output_tokens": 1, "total_tokens": tokens + 1})


def must_say_ok(message: AIMessage) -> str:
    if message.text != "ok":
        raise ModelOutputError(f"expected 'ok', got {message.text!r}")
    return message.text


class Script:
    """A request function replaying replies (an exception is raised) and recording the feedback."""

    def __init__(self, *turns):
        self.turns, self.feedback = list(turns), []

    def __call__(self, feedback):
        self.feedback.append(list(feedback))
        turn = self.turns.pop(0)
        if isinstance(turn, Exception):
            raise turn
        return turn


def run(script, config, spent=0, sleeps=None, offline=lambda: "offline"):
    return bounded_attempts("node", config, spent=spent, request=script, parse=must_say_ok, hint="Say ok.", offline=offline,
                            sleep=(sleeps.append if sleeps is not None else lambda s: None))


def test_a_rejected_reply_goes_back_to_the_model_with_the_error():
    script = Script(reply("nope"), reply("ok"))
    outcome = run(script, settings())
    assert outcome.value == "ok" and outcome.by_model and outcome.fallback is None
    assert script.feedback[0] == []
    shown, told = script.feedback[1]
    assert json.loads(shown.text)["content"] == "nope"
    assert told.text == "Your previous reply was rejected: expected 'ok', got 'nope'. Say ok."
    (rejected,) = outcome.rejected
    assert (rejected.attempt, rejected.error) == (1, "expected 'ok', got 'nope'") and '"nope"' in rejected.raw
    assert (outcome.usage.calls, outcome.usage.tokens_in, outcome.usage.tokens_out) == (2, 20, 2)


def request_of(url="http://127.0.0.1:9/v1/chat/completions") -> httpx.Request:
    return httpx.Request("POST", url)


def status_error(cls, status, message, headers=None):
    response = httpx.Response(status, headers=headers or {}, request=request_of())
    return cls(message, response=response, body={"message": message})


def test_transport_failures_wait_as_the_server_asks_then_back_off():
    sleeps = []
    script = Script(
        status_error(openai.RateLimitError, 429, "slow down", {"Retry-After": "2"}),
        status_error(openai.InternalServerError, 503, "overloaded"),
        openai.APIConnectionError(request=request_of()),
        status_error(openai.RateLimitError, 429, "way later", {"Retry-After": "3600"}),
        openai.APITimeoutError(request=request_of()),
        reply("ok"),
    )
    outcome = run(script, settings(llm_retries=5, llm_timeout_s=3), sleeps=sleeps)
    assert outcome.value == "ok" and outcome.fallback is None
    assert [r.error for r in outcome.rejected] == [
        "rate limited (HTTP 429): slow down", "HTTP 503: overloaded", "connection failed: Connection error.",
        "rate limited (HTTP 429): way later", "timed out after 3 s",
    ]
    assert [r.attempt for r in outcome.rejected] == [1, 2, 3, 4, 5]
    # Retry-After; back-off of 0.5 s per attempt after a 5xx or a lost connection; a cap; none after a timeout.
    assert [s for s in sleeps if s] == [2.0, 1.0, 1.5, MAX_RETRY_WAIT_S]
    assert all(f == [] for f in script.feedback), "a failed request has no reply to show the model"


def test_when_every_try_fails_the_offline_answer_stands_and_says_why():
    sleeps = []
    script = Script(status_error(openai.BadRequestError, 400, "bad"), reply("nope"), reply("still not"))
    outcome = run(script, settings(llm_retries=2), sleeps=sleeps)
    assert outcome.value == "offline" and not outcome.by_model
    fallback = outcome.fallback
    assert (fallback.node, fallback.reason, fallback.attempts) == ("node", "invalid reply: expected 'ok', got 'still not'", 3)
    assert not any(sleeps) and script.turns == []  # neither a 400 nor a rejected reply is waited for


def test_the_token_budget_stops_the_tries():
    untouched = Script(reply("ok"))
    outcome = run(untouched, settings(token_budget=100), spent=100)
    assert untouched.feedback == [] and outcome.value == "offline"
    assert outcome.fallback.reason == "token budget of 100 exhausted (100 spent)" and outcome.fallback.attempts == 0

    script = Script(reply("nope", tokens=60), reply("ok"))
    outcome = run(script, settings(token_budget=100, llm_retries=3), spent=40)
    assert outcome.value == "offline" and len(script.turns) == 1
    assert outcome.fallback.reason == "token budget of 100 exhausted (101 spent)" and outcome.fallback.attempts == 1


def test_a_failure_that_is_not_the_models_is_not_retried():
    def broken_parse(message):
        raise KeyError("a bug of ours")

    script = Script(reply("ok"), reply("ok"))
    with pytest.raises(KeyError):
        bounded_attempts("node", settings(), spent=0, request=script, parse=broken_parse, hint="", offline=lambda: None,
                         sleep=lambda s: None)
    assert len(script.turns) == 1
