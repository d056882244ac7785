"""The investigation capabilities of `tools/` exposed as LangChain tools.

Each call opens the incident's database read-only, runs the plain function, and returns a
`Command` that appends a ToolMessage (what the model reads: an evidence id, a one-line summary
and the numbers, cut to a budget) and the full `Evidence` item (what the postmortem cites).
"""

from typing import Annotated

import pandas as pd
from langchain_core.messages import ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import InjectedToolCallId, tool
from langgraph.prebuilt import InjectedState
from langgraph.types import Command

from graph.configuration import Configuration
from graph.evidence import make_evidence, model_view
from graph.state import Evidence
from tools.changes import recent_changes
from tools.logscan import log_pattern_scan as scan_templates
from tools.onsets import service_error_onsets as rank_onsets
from tools.sql_sandbox import SqlRejected, SqlTimeout, connect_readonly, run_sql
from tools.times import naive_utc


def _respond(item: Evidence, tool_call_id: str, config: RunnableConfig) -> Command:
    budget = Configuration.from_runnable_config(config).tool_result_tokens
    message = ToolMessage(model_view(item, budget), tool_call_id=tool_call_id, name=item.tool, artifact=item.id)
    return Command(update={"evidence": [item], "messages": [message]})


def _window(state: dict, start: str | None, end: str | None) -> tuple[pd.Timestamp, pd.Timestamp]:
    window = state["detection"].window
    return naive_utc(start or window.start), naive_utc(end or window.end)


@tool
def log_pattern_scan(
    state: Annotated[dict, InjectedState],
    tool_call_id: Annotated[str, InjectedToolCallId],
    config: RunnableConfig,
    start: str | None = None,
    end: str | None = None,
    top_k: int = 10,
) -> Command:
    """Mine WARN/ERROR log templates and rank them by how much louder they are in the window
    [start, end) than outside it (defaults: the detected incident window). Returns per-template
    service, counts, lift over baseline, first occurrence, an example line and which other
    services the messages name."""
    ws, we = _window(state, start, end)
    with connect_readonly(state["db_path"]) as con:
        result = scan_templates(con, ws, we, top_k=top_k)
    tops = result["templates"][:3]
    summary = (
        "; ".join(f"{t['service']}: '{t['template']}' x{t['window_count']} (lift {t['lift']})" for t in tops)
        or "no WARN/ERROR template is significantly louder in the window than outside it"
    )
    args = {"start": ws.isoformat(), "end": we.isoformat(), "top_k": top_k}
    method = result.pop("sql").strip() + "\n-- then Drain template mining per service and a Poisson test of window vs. outside rates"
    item = make_evidence("log_pattern_scan", args, method=method, summary=summary, data=result)
    return _respond(item, tool_call_id, config)


@tool
def service_error_onsets(
    state: Annotated[dict, InjectedState],
    tool_call_id: Annotated[str, InjectedToolCallId],
    config: RunnableConfig,
    start: str | None = None,
    end: str | None = None,
) -> Command:
    """For every service, find the minute its WARN/ERROR lines became significantly more frequent
    than its own baseline (looking back before the window start too), ranked earliest first:
    who started failing first."""
    ws, we = _window(state, start, end)
    lookback = Configuration.from_runnable_config(config).onset_lookback_minutes
    with connect_readonly(state["db_path"]) as con:
        result = rank_onsets(con, ws, we, lookback_minutes=lookback)
    summary = (
        ", then ".join(
            f"{o['service']} at {o['onset']} ({o['onset_minutes_from_window_start']:+.1f} min)" for o in result["onsets"][:4]
        )
        or "no service's error rate rose significantly"
    )
    args = {"start": ws.isoformat(), "end": we.isoformat(), "lookback_minutes": lookback}
    method = result.pop("sql").strip() + "\n-- per service: Poisson tail test of each minute against the rate outside the scan"
    item = make_evidence("service_error_onsets", args, method=method, summary="Onsets: " + summary, data=result)
    return _respond(item, tool_call_id, config)


@tool
def change_events(
    state: Annotated[dict, InjectedState],
    tool_call_id: Annotated[str, InjectedToolCallId],
    config: RunnableConfig,
    lookback_minutes: int | None = None,
) -> Command:
    """List deploys, config changes and feature flags from `lookback_minutes` before the
    incident window to its end, nearest first, with how long before the window each happened."""
    ws, we = _window(state, None, None)
    lookback = lookback_minutes or Configuration.from_runnable_config(config).change_lookback_minutes
    with connect_readonly(state["db_path"]) as con:
        result = recent_changes(con, ws, we, lookback_minutes=lookback)
    summary = (
        "; ".join(
            f"{c['kind']} on {c['service']} {c['minutes_before_window']:.0f} min before the window" for c in result["changes"][:4]
        )
        or f"no change event in the {lookback} min before the window"
    )
    args = {"start": ws.isoformat(), "end": we.isoformat(), "lookback_minutes": lookback}
    item = make_evidence("change_events", args, method=result.pop("sql").strip(), summary=summary, data=result)
    return _respond(item, tool_call_id, config)


@tool
def sql_investigate(
    query: str,
    state: Annotated[dict, InjectedState],
    tool_call_id: Annotated[str, InjectedToolCallId],
    config: RunnableConfig,
) -> Command:
    """Run one read-only SELECT (DuckDB SQL) over the tables metrics(ts, ...numeric columns),
    logs(ts, service, level, message, error_kind, endpoint, latency_ms, region, trace_id) and
    events(ts, service, kind, description). Time- and row-limited; no files, no network, no writes."""
    settings = Configuration.from_runnable_config(config)
    try:
        result = run_sql(state["db_path"], query, timeout_s=settings.sql_timeout_s, max_rows=settings.sql_max_rows)
    except (SqlRejected, SqlTimeout) as exc:
        # The refusal goes back to the model so it can correct itself; it is not evidence.
        message = ToolMessage(f"ERROR: {exc}", tool_call_id=tool_call_id, name="sql_investigate", status="error")
        return Command(update={"messages": [message]})
    except Exception as exc:  # a DuckDB error in the model's SQL (unknown column, syntax)
        message = ToolMessage(f"ERROR: {type(exc).__name__}: {exc}", tool_call_id=tool_call_id, name="sql_investigate", status="error")
        return Command(update={"messages": [message]})
    rows = [dict(zip(result.columns, row)) for row in result.rows]
    args = {"query": query}
    summary = f"{result.row_count} row(s){' (truncated)' if result.truncated else ''}, columns {', '.join(result.columns)}"
    item = make_evidence("sql_investigate", args, method=query, summary=summary,
                         data={"columns": result.columns, "rows": rows, "truncated": result.truncated})
    return _respond(item, tool_call_id, config)


INVESTIGATION_TOOLS = [log_pattern_scan, service_error_onsets, change_events, sql_investigate]
