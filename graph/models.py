"""Which chat model drives the graph, and how far its answers are trusted.

Without a configured model the offline analyst answers, exactly as before. With one, every call
goes through `_attempts`: the reply is validated (tool names, argument types, JSON, the answer
schema, semantic checks such as "cite only existing evidence ids"); a rejected reply is kept for
the record and the error is fed back for another try, at most `llm_retries` times; request
errors (timeouts, 429, 5xx, connection failures) are retried the same way. When the tries or the
per-run token budget run out, the offline analyst answers that step and a `ModelFallback` says so.
A run never dies because the model misbehaved.
"""

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from pydantic import BaseModel, ValidationError

from graph.analyst import OfflineAnalyst
from graph.configuration import Configuration
from graph.prompts import with_context
from graph.redaction import redact_messages
from graph.state import ModelFallback, RejectedOutput

T = TypeVar("T")

RAW_OUTPUT_CHARS = 4000  # of a rejected reply kept in the record
FEEDBACK_CHARS = 1500  # of a rejected reply echoed back to the model
MAX_RETRY_WAIT_S = 5.0  # longest Retry-After we honour; beyond it the step falls back instead
ERROR_BACKOFF_S = 0.5  # per attempt, after a 5xx or a connection error


class ModelOutputError(ValueError):
    """A reply that failed validation; the message is what the model is told to fix."""


@dataclass
class ModelUsage:
    tokens_in: int = 0
    tokens_out: int = 0
    calls: int = 0

    @property
    def total(self) -> int:
        return self.tokens_in + self.tokens_out

    def add(self, other: "ModelUsage") -> None:
        self.tokens_in += other.tokens_in
        self.tokens_out += other.tokens_out
        self.calls += other.calls


@dataclass
class ModelOutcome:
    """One step's answer plus what it cost and what was rejected on the way."""

    value: Any
    usage: ModelUsage = field(default_factory=ModelUsage)
    rejected: list[RejectedOutput] = field(default_factory=list)
    fallback: ModelFallback | None = None

    def state_update(self) -> dict:
        return outcomes_update([self])


def outcomes_update(outcomes: list[ModelOutcome]) -> dict:
    """The keys a node merges into its update for the model calls it made (`timed` folds
    `model_usage` into the node's NodeRun)."""
    usage = ModelUsage()
    for outcome in outcomes:
        usage.add(outcome.usage)
    update: dict[str, Any] = {"model_usage": usage}
    rejected = [r for outcome in outcomes for r in outcome.rejected]
    fallbacks = [outcome.fallback for outcome in outcomes if outcome.fallback]
    if rejected:
        update["model_rejections"] = rejected
    if fallbacks:
        update["model_fallbacks"] = fallbacks
    return update


def chat_model(settings: Configuration) -> BaseChatModel:
    if not settings.uses_llm:
        return OfflineAnalyst()
    from langchain_openai import (
        ChatOpenAI,  # imported lazily: the offline path never needs it
    )

    cap = {}
    if settings.max_output_tokens:
        cap["max_tokens"] = settings.max_output_tokens  # sent as max_completion_tokens
        if settings.base_url and "api.openai.com" not in settings.base_url:
            # llama.cpp, Ollama and older vLLM read only the legacy field (OpenAI rejects both at once).
            cap["extra_body"] = {"max_tokens": settings.max_output_tokens}
    return ChatOpenAI(
        model=settings.model,
        base_url=settings.base_url,
        api_key=os.environ.get("OPENAI_API_KEY") or "not-needed",
        temperature=settings.temperature,
        use_responses_api=False,
        stream_usage=True,
        timeout=settings.llm_timeout_s,
        max_retries=0,  # `_attempts` owns retries, so they are bounded, recorded and fed back
        **cap,
    )


def model_settings(settings: Configuration) -> dict:
    """What the postmortem records about the model a run used."""
    if not settings.uses_llm:
        return {"model": settings.model}
    return {
        "model": settings.model,
        "base_url": settings.base_url or "https://api.openai.com/v1",
        "temperature": settings.temperature,
        "redact": settings.redact,
        "token_budget": settings.token_budget,
        "llm_retries": settings.llm_retries,
        "llm_timeout_s": settings.llm_timeout_s,
        "structured_output": settings.structured_output,
        "max_output_tokens": settings.max_output_tokens,
        "max_steps": settings.max_steps,
    }


def tokens_spent(state: dict) -> int:
    return sum(r.tokens_in + r.tokens_out for r in state.get("node_runs", []))


# ---------------------------------------------------------------- the two kinds of call


def tool_step(
    node: str,
    messages: list[BaseMessage],
    tools: list[BaseTool],
    settings: Configuration,
    state: dict,
    config: RunnableConfig | None = None,
) -> ModelOutcome:
    """One ReAct step: an AIMessage whose tool calls name known tools with valid arguments,
    or a final answer in text."""

    def offline() -> AIMessage:
        return OfflineAnalyst().bind_tools(tools).invoke(messages, config)

    if not settings.uses_llm:
        return ModelOutcome(offline())
    bound = chat_model(settings).bind_tools(tools)
    sent = redact_messages(messages) if settings.redact else messages
    by_name = {t.name: t for t in tools}
    hint = f"Call only these tools, with arguments matching their schemas: {', '.join(by_name)}; or conclude in plain text citing evidence ids."
    return _attempts(
        node,
        settings,
        spent=tokens_spent(state),
        request=lambda feedback: bound.invoke(sent + feedback, config),
        parse=lambda reply: checked_tool_calls(reply, by_name, has_results=any(isinstance(m, ToolMessage) for m in messages)),
        hint=hint,
        offline=offline,
    )


def ask_structured(
    schema: type[BaseModel],
    system: str,
    task: str,
    context: dict,
    settings: Configuration,
    config: RunnableConfig | None = None,
    *,
    node: str,
    state: dict,
    check: Callable[[Any], None] | None = None,
    spent_in_node: int = 0,
) -> ModelOutcome:
    """One structured answer validated by `schema` (and `check`, which raises ModelOutputError).

    The value is None when even the offline analyst has no valid answer (e.g. no suspect at all).
    `spent_in_node`: tokens this node already spent on earlier calls (not yet in the state).
    """
    messages = [SystemMessage(system), HumanMessage(with_context(task, context))]

    def offline() -> BaseModel | None:
        try:
            return OfflineAnalyst().with_structured_output(schema).invoke(messages, config)
        except ValidationError:
            return None

    if not settings.uses_llm:
        return ModelOutcome(offline())
    model = chat_model(settings)
    name = schema.__name__
    if settings.structured_output == "json_mode":
        spec = json.dumps(schema.model_json_schema())
        asked = [SystemMessage(f"{system}\n\nReply with one JSON object (no prose) matching this JSON schema:\n{spec}"), messages[1]]
        bound = model.bind(response_format={"type": "json_object"})
        hint = "Reply with one JSON object that matches the schema, and nothing else."
    else:
        asked = messages
        bound = model.bind_tools([schema], tool_choice=name)
        hint = f"Call the tool {name} exactly once, with arguments that satisfy its schema."
    sent = redact_messages(asked) if settings.redact else asked

    def parse(reply: AIMessage) -> BaseModel:
        value = parse_structured(reply, schema, settings.structured_output)
        if check is not None:
            check(value)
        return value

    return _attempts(
        node,
        settings,
        spent=tokens_spent(state) + spent_in_node,
        request=lambda feedback: bound.invoke(sent + feedback, config),
        parse=parse,
        hint=hint,
        offline=offline,
    )


# ---------------------------------------------------------------- validation


def checked_tool_calls(reply: AIMessage, tools: dict[str, BaseTool], has_results: bool) -> AIMessage:
    _refuse_refusals(reply)
    problems = [
        f"the arguments of your call to '{bad.get('name')}' are not valid JSON: {str(bad.get('args'))[:200]!r}"
        for bad in reply.invalid_tool_calls
    ]
    for call in reply.tool_calls:
        tool = tools.get(call["name"])
        if tool is None:
            problems.append(f"there is no tool '{call['name']}' (available: {', '.join(tools)})")
            continue
        try:
            tool.tool_call_schema.model_validate(call["args"])
        except ValidationError as exc:
            problems.append(f"bad arguments for '{call['name']}': {brief_errors(exc)}")
    if not reply.tool_calls and not reply.invalid_tool_calls:
        if not reply.text.strip():
            problems.append("the reply is empty: call a tool or state your conclusion")
        elif not has_results:
            problems.append("a conclusion before any tool result cites no evidence: call the tools first")
    if problems:
        raise ModelOutputError("; ".join(problems))
    return reply


def parse_structured(reply: AIMessage, schema: type[BaseModel], method: str) -> BaseModel:
    _refuse_refusals(reply)
    name = schema.__name__
    if method == "json_mode":
        payload = json_from_text(reply.text)
    else:
        calls = [c for c in reply.tool_calls if c["name"] == name]
        broken = [c for c in reply.invalid_tool_calls if c.get("name") == name]
        if calls:
            payload = calls[0]["args"]
        elif broken:
            raise ModelOutputError(f"the arguments of your {name} call are not valid JSON: {str(broken[0].get('args'))[:200]!r}")
        elif reply.text.strip():
            payload = json_from_text(reply.text)  # servers that ignore tool_choice answer in the content
        else:
            raise ModelOutputError(f"no {name} tool call in the reply")
    try:
        return schema.model_validate(payload)
    except ValidationError as exc:
        raise ModelOutputError(f"{name} failed validation: {brief_errors(exc)}") from exc


def json_from_text(text: str) -> Any:
    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[1] if "\n" in body else ""
        body = body.rsplit("```", 1)[0]
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise ModelOutputError(f"the reply is not valid JSON ({exc.msg} at char {exc.pos})") from exc


def brief_errors(exc: ValidationError, limit: int = 5) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()[:limit]]
    more = exc.error_count() - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _refuse_refusals(reply: AIMessage) -> None:
    refusal = reply.additional_kwargs.get("refusal")
    if refusal:
        raise ModelOutputError(f"the model refused: {refusal}")


def raw_reply(reply: AIMessage) -> str:
    """A rejected reply as received: text, parsed and unparseable tool calls, refusal."""
    record = {
        "content": reply.content,
        "tool_calls": [{"name": c["name"], "args": c["args"]} for c in reply.tool_calls],
        "invalid_tool_calls": [{"name": c.get("name"), "args": c.get("args"), "error": c.get("error")} for c in reply.invalid_tool_calls],
    }
    if reply.additional_kwargs.get("refusal"):
        record["refusal"] = reply.additional_kwargs["refusal"]
    return json.dumps(record, default=str)


# ---------------------------------------------------------------- the bounded retry loop


def usage_of(reply: AIMessage) -> ModelUsage:
    meta = reply.usage_metadata or {}
    return ModelUsage(tokens_in=int(meta.get("input_tokens", 0)), tokens_out=int(meta.get("output_tokens", 0)), calls=1)


def _request_failure(exc: Exception, settings: Configuration, attempt: int) -> tuple[str, float]:
    """What went wrong with a request, and how long to wait before the next one."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return f"timed out after {settings.llm_timeout_s:g} s", 0.0
    if isinstance(exc, openai.RateLimitError):
        try:
            wait = float(exc.response.headers.get("retry-after", ERROR_BACKOFF_S))
        except ValueError:
            wait = ERROR_BACKOFF_S
        return f"rate limited (HTTP 429): {_server_message(exc)}", min(max(wait, 0.0), MAX_RETRY_WAIT_S)
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {_server_message(exc)}", ERROR_BACKOFF_S * attempt if exc.status_code >= 500 else 0.0
    if isinstance(exc, openai.APIConnectionError):
        return f"connection failed: {exc}", ERROR_BACKOFF_S * attempt
    # Anything else raised while reading the reply (a body that is not a chat completion, ...).
    return f"unusable response: {type(exc).__name__}: {exc}", 0.0


def _server_message(exc) -> str:
    """The message of an OpenAI-style error body ({"error": {"message": ...}}), else the client's."""
    body = exc.body if isinstance(exc.body, dict) else {}
    return str(body.get("message") or exc.message)


def _attempts(
    node: str,
    settings: Configuration,
    *,
    spent: int,
    request: Callable[[list[BaseMessage]], AIMessage],
    parse: Callable[[AIMessage], T],
    hint: str,
    offline: Callable[[], T],
) -> ModelOutcome:
    usage, rejected = ModelUsage(), []
    feedback: list[BaseMessage] = []
    reason = ""
    for attempt in range(1, settings.llm_retries + 2):
        if spent + usage.total >= settings.token_budget:
            reason = f"token budget of {settings.token_budget} exhausted ({spent + usage.total} spent)"
            break
        try:
            reply = request(feedback)
        except Exception as exc:  # the model's side of the wire is untrusted: record, retry, fall back
            reason, wait = _request_failure(exc, settings, attempt)
            rejected.append(RejectedOutput(node=node, attempt=attempt, error=reason))
            if attempt <= settings.llm_retries and wait:
                time.sleep(wait)
            continue
        usage.add(usage_of(reply))
        try:
            return ModelOutcome(parse(reply), usage, rejected)
        except ModelOutputError as exc:
            raw = raw_reply(reply)
            reason = f"invalid reply: {exc}"
            rejected.append(RejectedOutput(node=node, attempt=attempt, error=str(exc), raw=raw[:RAW_OUTPUT_CHARS]))
            # Only the latest rejected reply and its error go back: the context stays small.
            feedback = [AIMessage(raw[:FEEDBACK_CHARS]), HumanMessage(f"Your previous reply was rejected: {exc}. {hint}")]
    attempts = len(rejected)
    fallback = ModelFallback(node=node, reason=reason or "no attempt was allowed", attempts=attempts)
    return ModelOutcome(offline(), usage, rejected, fallback)
