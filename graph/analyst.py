"""The offline analyst: a deterministic LangChain chat model.

It answers exactly where an LLM would: in the ReAct loop it emits tool calls (and then a final
answer) from the tool results it has read; asked for a structured output (hypotheses, critic
verdicts, a mitigation plan) it answers with a tool call of that schema, built from the
evidence in the prompt. The graph cannot tell it from an LLM, so both paths run the same code.
"""

import json
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool

from graph.prompts import split_context
from tools.mitigations import playbooks_for
from tools.suspects import Suspect, build_suspects, first_look_score, softmax

SCOUTING_TOOLS = ("log_pattern_scan", "service_error_onsets", "change_events")
MAX_HYPOTHESES = 3


class OfflineAnalyst(BaseChatModel):
    """Deterministic analyst; see the module docstring."""

    @property
    def _llm_type(self) -> str:
        return "incident-graph-offline-analyst"

    def bind_tools(self, tools: list[Any], *, tool_choice: Any = None, **kwargs: Any):
        formatted = [convert_to_openai_tool(t) for t in tools]
        return self.bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        tools = [t["function"]["name"] for t in kwargs.get("tools") or []]
        context = _last_context(messages)
        if kwargs.get("tool_choice") == "any" and len(tools) == 1 and tools[0] in STRUCTURED_ANSWERS:
            payload = STRUCTURED_ANSWERS[tools[0]](context)
            message = AIMessage(content="", tool_calls=[_call(tools[0], payload, f"{tools[0]}-0")])
        else:
            message = next_investigation_step(messages, context)
        return ChatResult(generations=[ChatGeneration(message=message)])


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
    step = sum(1 for m in messages if isinstance(m, AIMessage))
    missing = [name for name in SCOUTING_TOOLS if name not in results]
    if missing:
        calls = [_call(name, {}, f"call-{step}-{i}") for i, name in enumerate(missing)]
        return AIMessage(content="Scouting the window: log templates, failure onsets and recent changes.", tool_calls=calls)
    suspects = ranked_suspects(_data(results, "log_pattern_scan"), _data(results, "service_error_onsets"), _data(results, "change_events"))
    if "sql_investigate" not in results and suspects and context.get("window"):
        query = ordering_query([s.service for s in suspects[:MAX_HYPOTHESES]], context["window"]["start"])
        return AIMessage(
            content="Checking the minute-by-minute order of failures around the window start.",
            tool_calls=[_call("sql_investigate", {"query": query}, f"call-{step}-0")],
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


def scored_suspects(scan: dict, onsets: dict, changes: dict) -> list[tuple[float, Suspect]]:
    """Every suspect with its first-look score, best first."""
    suspects = list(build_suspects(scan, onsets, changes).values())
    known = [s.onset_minutes for s in suspects if s.onset_minutes is not None]
    earliest = min(known) if known else None
    max_excess = max((s.excess_errors for s in suspects), default=0.0)
    scored = [(first_look_score(s, earliest, max_excess), s) for s in suspects]
    scored.sort(key=lambda pair: (-pair[0], pair[1].service))
    return scored


def ranked_suspects(scan: dict, onsets: dict, changes: dict) -> list[Suspect]:
    return [s for _, s in scored_suspects(scan, onsets, changes)]


def statistical_shares(context: dict) -> dict[str, tuple[Suspect, float]]:
    """service -> (suspect, its softmax share of the first-look scores of all suspects): the
    statistical ranking an LLM's hypotheses are merged with."""
    ev = _evidence_by_tool(context)
    scored = scored_suspects(*(ev.get(t, {}).get("data", {}) for t in SCOUTING_TOOLS))
    shares = softmax([score for score, _ in scored])
    return {s.service: (s, share) for (_, s), share in zip(scored, shares)}


# ---------------------------------------------------------------- structured answers


def _evidence_by_tool(context: dict) -> dict[str, dict]:
    latest: dict[str, dict] = {}
    for item in context.get("evidence", []):
        latest[item["tool"]] = item
    return latest


def _suspect_inputs(context: dict) -> tuple[dict[str, Suspect], dict[str, dict]]:
    ev = _evidence_by_tool(context)
    suspects = build_suspects(*(ev.get(t, {}).get("data", {}) for t in SCOUTING_TOOLS))
    return suspects, ev


def propose_hypotheses(context: dict) -> dict:
    ev = _evidence_by_tool(context)
    ranked = ranked_suspects(*(ev.get(t, {}).get("data", {}) for t in SCOUTING_TOOLS))[:MAX_HYPOTHESES]
    known = [s.onset_minutes for s in ranked if s.onset_minutes is not None]
    max_excess = max((s.excess_errors for s in ranked), default=0.0)
    scores = [first_look_score(s, min(known) if known else None, max_excess) for s in ranked]
    confidences = softmax(scores)
    hypotheses = []
    for rank, (suspect, confidence) in enumerate(zip(ranked, confidences), start=1):
        cited = [ev[t]["id"] for t in ("log_pattern_scan", "service_error_onsets") if t in ev]
        if suspect.change is not None and "change_events" in ev:
            cited.append(ev["change_events"]["id"])
        if "sql_investigate" in ev:
            cited.append(ev["sql_investigate"]["id"])
        hypotheses.append(
            {
                "id": f"H{rank}",
                "service": suspect.service,
                "kind": suspect.error_kind or suspect.mechanism,
                "mechanism": suspect.mechanism,
                "signature": suspect.signature or "(no log lines of its own; named by its callers)",
                "confidence": round(confidence, 3),
                "summary": _hypothesis_summary(suspect),
                "evidence_ids": cited,
                "support": suspect.as_dict(),
            }
        )
    return {"hypotheses": hypotheses}


def _hypothesis_summary(s: Suspect) -> str:
    parts = [f"{s.service} is the origin"]
    if s.onset:
        parts.append(f"its error rate rose first at {s.onset} ({s.onset_minutes:+.1f} min from the window start)")
    if s.signature:
        parts.append(f"dominant new template '{s.signature}' ({s.excess_errors:.0f} lines above baseline)")
    if s.blamed_by:
        parts.append(f"named by {', '.join(s.blamed_by)}")
    if s.change:
        parts.append(f"{s.change['kind']} on it {s.change['minutes_before_window']:.0f} min before the window")
    return "; ".join(parts) + "."


def critique(context: dict) -> dict:
    suspects, ev = _suspect_inputs(context)
    round_no = int(context.get("round", 1))
    hypotheses = context.get("hypotheses", [])
    onset_id = ev.get("service_error_onsets", {}).get("id")
    scan_id = ev.get("log_pattern_scan", {}).get("id")
    change_id = ev.get("change_events", {}).get("id")
    verdicts = []
    if round_no == 1:
        for h in hypotheses:
            s = suspects.get(h["service"], Suspect(service=h["service"]))
            for challenge, (finding, verdict, delta, ids) in _challenges(s, suspects, onset_id, scan_id, change_id).items():
                verdicts.append(_verdict(h["id"], round_no, challenge, finding, verdict, delta, ids))
    elif len(hypotheses) >= 2:
        verdicts.append(_head_to_head(hypotheses[0], hypotheses[1], suspects, round_no, [i for i in (onset_id, scan_id) if i]))
    return {"verdicts": verdicts}


def _verdict(hid: str, round_no: int, challenge: str, finding: str, verdict: str, delta: float, ids: list) -> dict:
    return {
        "hypothesis_id": hid,
        "round": round_no,
        "challenge": challenge,
        "finding": finding,
        "verdict": verdict,
        "confidence_delta": delta,
        "evidence_ids": [i for i in ids if i],
    }


def _challenges(s: Suspect, suspects: dict[str, Suspect], onset_id, scan_id, change_id) -> dict[str, tuple]:
    out = {}
    callers = [suspects[c] for c in s.blamed_by if c in suspects]
    if s.onset_minutes is None:
        out[f"Did {s.service} fail before its callers?"] = (
            f"{s.service} shows no significant rise in its own error lines"
            + (f"; {', '.join(s.blamed_by)} name it in their errors." if s.blamed_by else "."),
            "upheld" if s.blamed_by else "weakened",
            0.0 if s.blamed_by else -0.15,
            [onset_id, scan_id],
        )
    else:
        earlier = [c for c in callers if c.onset_minutes is not None and c.onset_minutes < s.onset_minutes - 1.0]
        if earlier:
            out[f"Did {s.service} fail before its callers?"] = (
                f"No: {', '.join(c.service for c in earlier)} failed earlier than {s.service} ({s.onset}).",
                "weakened", -0.15, [onset_id],
            )
        else:
            later = ", ".join(f"{c.service} at {c.onset}" for c in callers if c.onset) or "no caller failed before it"
            out[f"Did {s.service} fail before its callers?"] = (
                f"Yes: {s.service} at {s.onset}; {later}.", "upheld", 0.1, [onset_id],
            )
    if s.signature_lift is not None:
        noisy = s.signature_lift < 3.0
        out["Is the signal also present before the window?"] = (
            f"'{s.signature}' runs at {s.signature_baseline_per_min}/min outside the window; lift {s.signature_lift}x inside it.",
            "overturned" if noisy else "upheld",
            -0.5 if noisy else 0.05,
            [scan_id],
        )
    if s.blames:
        victim = s.own_share < 0.5
        out[f"Do {s.service}'s own messages blame another service?"] = (
            f"{s.service}'s errors name {', '.join(s.blames)}; {s.own_share:.0%} of its excess errors are its own.",
            "overturned" if victim else "weakened",
            -0.4 if victim else -0.1,
            [scan_id],
        )
    others_changed = [o for o in suspects.values() if o.change and o.service != s.service]
    if s.change:
        out["Did a change precede it?"] = (
            f"Yes: {s.change['kind']} on {s.service} at {s.change['ts']} ({s.change['description']}), "
            f"{s.change['minutes_before_window']:.0f} min before the window.",
            "upheld", 0.1, [change_id],
        )
    elif others_changed:
        out["Did a change precede it?"] = (
            f"No change on {s.service}; changes on {', '.join(o.service for o in others_changed)} preceded the window.",
            "weakened", -0.05, [change_id],
        )
    return out


def _head_to_head(leader: dict, runner: dict, suspects: dict[str, Suspect], round_no: int, ids: list) -> dict:
    a = suspects.get(leader["service"], Suspect(service=leader["service"]))
    b = suspects.get(runner["service"], Suspect(service=runner["service"]))
    if b.service in a.blames and (b.onset_minutes is None or a.onset_minutes is None or b.onset_minutes <= a.onset_minutes):
        return _verdict(leader["id"], round_no, f"Is {a.service} the root, or a victim of {b.service}?",
                        f"{a.service}'s errors name {b.service}, which failed no later: {a.service} looks like a victim.",
                        "overturned", -0.5, ids)
    return _verdict(leader["id"], round_no, f"Does {a.service} still lead over {b.service}?",
                    f"{a.service} ({a.onset or 'no onset'}) does not depend on {b.service}'s failure in the evidence.",
                    "upheld", 0.0, ids)


def plan_mitigations(context: dict) -> dict:
    h = context["hypothesis"]
    change = (h.get("support") or {}).get("change")
    plan = []
    for i, book in enumerate(playbooks_for(h["mechanism"], change), start=1):
        fmt = {"service": h["service"]}
        plan.append(
            {
                "id": f"M{i}",
                "hypothesis_id": h["id"],
                "mechanism": h["mechanism"],
                "title": book.title.format(**fmt),
                "steps": [step.format(**fmt) for step in book.steps],
                "rollback": book.rollback.format(**fmt),
                "owner": book.owner.format(**fmt),
                "eta_minutes": book.eta_minutes,
                "touches_prod": book.touches_prod,
                "reversible": True,
            }
        )
    return {"mitigations": plan}


STRUCTURED_ANSWERS = {
    "HypothesisSet": propose_hypotheses,
    "CriticReport": critique,
    "MitigationPlan": plan_mitigations,
}
