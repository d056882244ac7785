"""Which chat model drives the graph, and how far its answers are trusted.

Without a configured model the offline analyst answers, exactly as before (`answering_model` is
the one place that decides). With one, every call goes through `bounded_attempts`, a tenacity
loop: the reply is validated (tool names, argument types, JSON, the answer schema, semantic
checks such as "cite only existing evidence ids"); a rejected reply is kept for the record and
goes back to the model with the error for another try, at most `llm_retries` times; request
errors (timeouts, 429, 5xx, connection failures) are retried the same way, after the wait the
server asks for (Retry-After) or a short back-off. When the tries or the per-run token budget
run out, the offline analyst answers that step and a `ModelFallback` says so. A run never dies
because the model misbehaved.
"""

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
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
from langchain_core.utils.json import parse_json_markdown
from pydantic import BaseModel, ValidationError
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_incrementing

from graph.analyst import OfflineAnalyst
from graph.configuration import Configuration
from graph.prompts import with_context
from graph.redaction import redact_messages
from graph.state import ModelFallback, RejectedOutput

T = TypeVar("T")

RAW_OUTPUT_CHARS = 4000  # of a rejected reply kept in the record
FEEDBACK_CHARS = 1500  # of a rejected reply echoed back to the model
MAX_RETRY_WAIT_S = 5.0  # longest Retry-After we wait for; a longer one is cut to it
ERROR_BACKOFF_S = 0.5  # per attempt, after a 5xx or a connection error


class ModelOutputError(ValueError):
    """A reply that failed validation; the message is what the model is told to fix."""


class RequestFailed(Exception):
    """A request that brought no reply. `reason` is recorded; the next try waits `retry_after`
    (the server's Retry-After), else backs off when `backoff`, else follows at once."""

    def __init__(self, reason: str, *, retry_after: float | None = None, backoff: bool = False):
        super().__init__(reason)
        self.reason, self.retry_after, self.backoff = reason, retry_after, backoff


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
    """One step's answer plus what it cost and what was rejected on the way.

    `by_model`: the configured model gave the answer (False: the offline analyst did, because
    no model is configured or the model's tries ran out)."""

    value: Any
    usage: ModelUsage = field(default_factory=ModelUsage)
    rejected: list[RejectedOutput] = field(default_factory=list)
    fallback: ModelFallback | None = None
    by_model: bool = False

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


def answering_model(node: str, settings: Configuration, state: dict, *, sticky: bool = False) -> BaseChatModel | None:
    """The configured model that answers a step of `node`, or None when the offline analyst
    does: no model is configured, or (`sticky`) the model already failed a step of this node in
    this run, so the offline analyst finishes it rather than paying the retries (and timeouts)
    again at every step."""
    if not settings.uses_llm:
        return None
    if sticky and any(f.node == node for f in state.get("model_fallbacks", [])):
        return None
    return chat_model(settings)


def chat_model(settings: Configuration) -> BaseChatModel:
    """The client of the configured OpenAI-compatible model."""
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
        max_retries=0,  # `bounded_attempts` owns retries, so they are bounded, recorded and fed back
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
    or a final answer in text. Once the model failed a step of `node`, the offline analyst
    takes the rest of them."""

    def offline() -> AIMessage:
        return OfflineAnalyst().bind_tools(tools).invoke(messages, config)

    model = answering_model(node, settings, state, sticky=True)
    if model is None:
        return ModelOutcome(offline())
    bound = model.bind_tools(tools)
    sent = redact_messages(messages) if settings.redact else messages
    by_name = {t.name: t for t in tools}
    hint = f"Call only these tools, with arguments matching their schemas: {', '.join(by_name)}; or conclude in plain text citing evidence ids."
    return bounded_attempts(
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

    Both models answer through `with_structured_output(schema, include_raw=True)`. The value is
    None when even the offline analyst has no valid answer (e.g. no suspect at all).
    `spent_in_node`: tokens this node already spent on earlier calls (not yet in the state).
    """
    messages = [SystemMessage(system), HumanMessage(with_context(task, context))]

    def offline() -> BaseModel | None:
        try:
            return OfflineAnalyst().with_structured_output(schema).invoke(messages, config)
        except ValidationError:
            return None

    model = answering_model(node, settings, state)
    if model is None:
        return ModelOutcome(offline())
    name = schema.__name__
    method = settings.structured_output
    if method == "json_mode":
        # JSON mode carries no schema on the wire: the prompt does.
        spec = json.dumps(schema.model_json_schema())
        asked = [SystemMessage(f"{system}\n\nReply with one JSON object (no prose) matching this JSON schema:\n{spec}"), messages[1]]
        structured = model.with_structured_output(schema, method="json_mode", include_raw=True)
        hint = "Reply with one JSON object that matches the schema, and nothing else."
    else:
        asked = messages
        # A forced call of the schema, and nothing else on the wire (parallel_tool_calls unset, as before).
        structured = model.with_structured_output(schema, method="function_calling", include_raw=True, parallel_tool_calls=None)
        hint = f"Call the tool {name} exactly once, with arguments that satisfy its schema."
    sent = redact_messages(asked) if settings.redact else asked

    def parse(answer: Mapping[str, Any]) -> BaseModel:
        value = parse_structured(answer, schema, method)
        if check is not None:
            check(value)
        return value

    return bounded_attempts(
        node,
        settings,
        spent=tokens_spent(state) + spent_in_node,
        request=lambda feedback: structured.invoke(sent + feedback, config),
        parse=parse,
        hint=hint,
        offline=offline,
        reply_of=itemgetter("raw"),
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


def parse_structured(answer: Mapping[str, Any], schema: type[BaseModel], method: str) -> BaseModel:
    """The value of a `with_structured_output(schema, include_raw=True)` answer
    ({"raw", "parsed", "parsing_error"}), or a ModelOutputError that tells the model what to fix.

    langchain's value stands once the reply passed the strict checks: JSON mode's reply must be
    whole JSON (langchain's parser completes a truncated one), and a server that ignored the
    forced tool choice may answer in the content instead.
    """
    reply: AIMessage = answer["raw"]
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
    parsed = answer.get("parsed")
    if isinstance(parsed, schema):
        return parsed
    try:
        return schema.model_validate(payload)
    except ValidationError as exc:
        raise ModelOutputError(f"{name} failed validation: {brief_errors(exc)}") from exc


def json_from_text(text: str) -> Any:
    """The JSON in a reply's text, bare or in a Markdown fence (langchain's `parse_json_markdown`),
    parsed strictly: a truncated reply is an error, never completed."""
    try:
        return parse_json_markdown(text, parser=json.loads)
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


def request_failure(exc: Exception, settings: Configuration) -> RequestFailed:
    """What went wrong with a request, and how the next try should wait."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return RequestFailed(f"timed out after {settings.llm_timeout_s:g} s")
    if isinstance(exc, openai.RateLimitError):
        try:
            wait = float(exc.response.headers.get("retry-after", ERROR_BACKOFF_S))
        except ValueError:
            wait = ERROR_BACKOFF_S
        return RequestFailed(f"rate limited (HTTP 429): {_server_message(exc)}", retry_after=min(max(wait, 0.0), MAX_RETRY_WAIT_S))
    if isinstance(exc, openai.APIStatusError):
        return RequestFailed(f"HTTP {exc.status_code}: {_server_message(exc)}", backoff=exc.status_code >= 500)
    if isinstance(exc, openai.APIConnectionError):
        return RequestFailed(f"connection failed: {exc}", backoff=True)
    # Anything else raised while reading the reply (a body that is not a chat completion, ...).
    return RequestFailed(f"unusable response: {type(exc).__name__}: {exc}")


def _server_message(exc) -> str:
    """The message of an OpenAI-style error body ({"error": {"message": ...}}), else the client's."""
    body = exc.body if isinstance(exc.body, dict) else {}
    return str(body.get("message") or exc.message)


_BACKOFF = wait_incrementing(start=ERROR_BACKOFF_S, increment=ERROR_BACKOFF_S)  # 0.5 s, 1 s, 1.5 s, ...


def wait_before_retry(retry_state: RetryCallState) -> float:
    """Seconds before the next try: the server's Retry-After (capped), a linear back-off after
    a 5xx or a connection error, none after a timeout, another 4xx or a rejected reply."""
    failure = retry_state.outcome.exception() if retry_state.outcome else None
    if isinstance(failure, RequestFailed):
        if failure.retry_after is not None:
            return failure.retry_after
        if failure.backoff:
            return _BACKOFF(retry_state)
    return 0.0


def bounded_attempts(
    node: str,
    settings: Configuration,
    *,
    spent: int,
    request: Callable[[list[BaseMessage]], Any],
    parse: Callable[[Any], T],
    hint: str,
    offline: Callable[[], T],
    reply_of: Callable[[Any], AIMessage] = lambda reply: reply,
    sleep: Callable[[float], None] = time.sleep,
) -> ModelOutcome:
    """At most `llm_retries + 1` tries of `request` (given the feedback so far) and `parse`,
    within the token budget; the offline analyst's answer when they all fail.

    `reply_of` finds the AIMessage in what `request` returns (its usage, the record of a
    rejected reply). Every failed try is recorded; a rejected reply and the reason go back to
    the model (only the latest, so the context stays small).
    """
    usage, rejected = ModelUsage(), []
    feedback: list[BaseMessage] = []
    tries = settings.llm_retries + 1

    def budget_spent(_: RetryCallState | None = None) -> bool:
        return spent + usage.total >= settings.token_budget

    def attempt(number: int) -> T:
        try:
            response = request(feedback)
        except Exception as exc:  # the model's side of the wire is untrusted: record, retry, fall back
            failure = request_failure(exc, settings)
            rejected.append(RejectedOutput(node=node, attempt=number, error=failure.reason))
            raise failure from exc
        reply = reply_of(response)
        usage.add(usage_of(reply))
        try:
            return parse(response)
        except ModelOutputError as exc:
            raw = raw_reply(reply)
            rejected.append(RejectedOutput(node=node, attempt=number, error=str(exc), raw=raw[:RAW_OUTPUT_CHARS]))
            feedback[:] = [AIMessage(raw[:FEEDBACK_CHARS]), HumanMessage(f"Your previous reply was rejected: {exc}. {hint}")]
            raise

    reason = ""
    if not budget_spent():
        retrying = Retrying(
            stop=stop_after_attempt(tries) | budget_spent,
            wait=wait_before_retry,
            retry=retry_if_exception_type((RequestFailed, ModelOutputError)),
            sleep=sleep,
            reraise=True,
        )
        try:
            for try_ in retrying:
                with try_:
                    value = attempt(try_.retry_state.attempt_number)
            return ModelOutcome(value, usage, rejected, by_model=True)
        except RequestFailed as failure:
            reason = failure.reason
        except ModelOutputError as exc:
            reason = f"invalid reply: {exc}"
    if budget_spent() and len(rejected) < tries:
        reason = f"token budget of {settings.token_budget} exhausted ({spent + usage.total} spent)"
    fallback = ModelFallback(node=node, reason=reason, attempts=len(rejected))
    return ModelOutcome(offline(), usage, rejected, fallback)
