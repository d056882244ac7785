"""The offline analyst: a deterministic LangChain chat model over `tools.ranking`.

It answers exactly where an LLM would: in the ReAct loop it emits tool calls (and then a final
answer) from the tool results it has read; asked for a structured output (hypotheses, critic
verdicts, a mitigation plan) through `with_structured_output`, or by a tool choice that names
one of those schemas, it answers with a call of that schema whose arguments `tools.ranking`
builds from the evidence in the prompt. It holds no statistics of its own. The graph cannot
tell it from an LLM, so both paths run the same code.
"""

import json
from collections.abc import Callable
from operator import itemgetter
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.output_parsers.openai_tools import PydanticToolsParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_openai_tool

from graph.prompts import split_context
from tools.ranking import (
    MAX_HYPOTHESES,
    ORDERING_TOOL,
    SCOUTING_TOOLS,
    Findings,
    challenge_verdicts,
    mitigation_plan,
    propose_hypotheses,
    ranked_suspects,
)


class OfflineAnalyst(BaseChatModel):
    """Deterministic analyst; see the module docstring."""

    @property
    def _llm_type(self) -> str:
        return "incident-graph-offline-analyst"

    def bind_tools(self, tools: list[Any], *, tool_choice: Any = None, **kwargs: Any) -> Runnable:
        formatted = [convert_to_openai_tool(t) for t in tools]
        return self.bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def with_structured_output(self, schema: Any, *, include_raw: bool = False, **kwargs: Any) -> Runnable:
        """A forced call of `schema` (one of STRUCTURED_ANSWERS), parsed into it by langchain's
        PydanticToolsParser; `include_raw` gives {"raw", "parsed", "parsing_error"} as a chat
        model's structured output does. Other keyword arguments (method, ...) change nothing:
        the answer is always a tool call."""
        name = convert_to_openai_tool(schema)["function"]["name"]
        if name not in STRUCTURED_ANSWERS:
            raise ValueError(f"the offline analyst answers only {', '.join(STRUCTURED_ANSWERS)}, not {name}")
        llm = self.bind_tools([schema], tool_choice=name)
        parser = PydanticToolsParser(tools=[schema], first_tool_only=True)
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        unparsed = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parsed.with_fallbacks([unparsed], exception_key="parsing_error")

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        context = _last_context(messages)
        forced = named_tool(kwargs.get("tool_choice"), kwargs.get("tools") or [])
        if forced in STRUCTURED_ANSWERS:
            message = AIMessage(content="", tool_calls=[_call(forced, STRUCTURED_ANSWERS[forced](context), f"{forced}-0")])
        else:
            message = next_investigation_step(messages, context)
        return ChatResult(generations=[ChatGeneration(message=message)])


def named_tool(tool_choice: Any, tools: list[dict]) -> str | None:
    """The bound tool a tool choice names (a name, or OpenAI's {"type": "function", ...} form)."""
    if isinstance(tool_choice, dict):
        tool_choice = (tool_choice.get("function") or {}).get("name")
    names = {t["function"]["name"] for t in tools}
    return tool_choice if isinstance(tool_choice, str) and tool_choice in names else None


def _call(name: str, args: dict, call_id: str) -> dict:
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


def _last_context(messages: list[BaseMessage]) -> dict:
    """The context block of the latest human message that carries one (`split_context` finds it
    exactly: the data in it cannot close or open a block)."""
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            found = split_context(message.text)
            if found is not None:
                return found[1]
    return {}


# ---------------------------------------------------------------- the ReAct loop


def next_investigation_step(messages: list[BaseMessage], context: dict) -> AIMessage:
    results = _tool_results(messages)
    # A tool that answered with an error is not asked again: under load the ordering query can
    # hit the SQL time limit, and asking again every step only spends the step budget.
    attempted = {m.name for m in messages if isinstance(m, ToolMessage)}
    step = sum(1 for m in messages if isinstance(m, AIMessage))
    missing = [name for name in SCOUTING_TOOLS if name not in attempted]
    if missing:
        calls = [_call(name, {}, f"call-{step}-{i}") for i, name in enumerate(missing)]
        return AIMessage(content="Scouting the window: log templates, failure onsets and recent changes.", tool_calls=calls)
    scan, onsets, changes = (_data(results, name) for name in SCOUTING_TOOLS)
    suspects = ranked_suspects(Findings(scan=scan, onsets=onsets, changes=changes))
    if ORDERING_TOOL not in attempted and suspects and context.get("window"):
        query = ordering_query([s.service for s in suspects[:MAX_HYPOTHESES]], context["window"]["start"])
        return AIMessage(
            content="Checking the minute-by-minute order of failures around the window start.",
            tool_calls=[_call(ORDERING_TOOL, {"query": query}, f"call-{step}-0")],
        )
    cited = sorted({m.artifact for m in messages if isinstance(m, ToolMessage) and m.artifact})
    if not suspects:
        return AIMessage(content=f"No service shows errors above its own baseline in the window. Evidence: {', '.join(cited)}.")
    lead = suspects[0]
    onset = f"first significant errors at {lead.onset}" if lead.onset else "no significant errors of its own"
    return AIMessage(content=f"Leading suspect: {lead.service} ({onset}; signature '{lead.signature}'). Evidence: {', '.join(cited)}.")


def _tool_results(messages: list[BaseMessage]) -> dict[str, str]:
    """Latest successful result per tool name."""
    results = {}
    for m in messages:
        if isinstance(m, ToolMessage) and m.status != "error" and m.name:
            results[m.name] = m.text
    return results


def _data(results: dict[str, str], name: str) -> dict:
    try:
        return json.loads(results.get(name, "{}")).get("data", {})
    except json.JSONDecodeError:
        return {}


def ordering_query(services: list[str], window_start: str) -> str:
    names = ", ".join("'" + s.replace("'", "''") + "'" for s in services)
    start = window_start.replace("Z", "").replace("+00:00", "")
    return (
        "SELECT service, time_bucket(INTERVAL 5 MINUTE, ts) AS bucket, "
        "count(*) FILTER (WHERE level IN ('WARN', 'ERROR')) AS problem_lines, "
        "round(quantile_cont(latency_ms, 0.95), 1) AS p95_latency_ms "
        f"FROM logs WHERE service IN ({names}) "
        f"AND ts >= TIMESTAMP '{start}' - INTERVAL 30 MINUTE AND ts < TIMESTAMP '{start}' + INTERVAL 30 MINUTE "
        "GROUP BY ALL ORDER BY bucket, service"
    )


# ---------------------------------------------------------------- structured answers


def _findings(context: dict) -> Findings:
    return Findings.from_evidence(context.get("evidence", []))


STRUCTURED_ANSWERS: dict[str, Callable[[dict], dict]] = {
    "HypothesisSet": lambda context: {"hypotheses": propose_hypotheses(_findings(context))},
    "CriticReport": lambda context: {
        "verdicts": challenge_verdicts(_findings(context), context.get("hypotheses", []), int(context.get("round", 1)))
    },
    "MitigationPlan": lambda context: {"mitigations": mitigation_plan(context["hypothesis"])},
}
