"""investigate: the ReAct subgraph (model node + tool node, bounded steps) over the tools."""

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from graph.configuration import Configuration
from graph.models import model_settings, tool_step
from graph.prompts import INVESTIGATOR_SYSTEM, with_context
from graph.state import IncidentState
from graph.timing import timed
from graph.tools import INVESTIGATION_TOOLS
from tools.times import iso_utc


@timed("investigate:brief")
def brief(state: IncidentState, config: RunnableConfig) -> dict:
    """Open the investigation with the facts every analyst (offline or LLM) starts from."""
    window = state["detection"].window
    context = {
        "window": window.model_dump(mode="json"),
        "metric_signals": state["detection"].signals,
        "detection_evidence_id": state["detection"].evidence_id,
        "tables": {
            "metrics": ["ts"] + state["load_summary"]["metric_columns"],
            "logs": ["ts", "service", "level", "message", "error_kind", "endpoint", "latency_ms", "region", "trace_id"],
            "events": ["ts", "service", "kind", "description"],
        },
        "rows": {k: state["load_summary"][k] for k in ("metrics_rows", "log_rows", "event_rows")},
    }
    task = f"Incident window {iso_utc(window.start)} to {iso_utc(window.end)}. Find the root cause."
    return {
        "messages": [SystemMessage(INVESTIGATOR_SYSTEM), HumanMessage(with_context(task, context))],
        "model_settings": model_settings(Configuration.from_runnable_config(config)),
    }


ANALYST_NODE = "investigate:analyst"


@timed(ANALYST_NODE)
def analyst(state: IncidentState, config: RunnableConfig) -> dict:
    settings = Configuration.from_runnable_config(config)
    steps = sum(1 for m in state["messages"] if isinstance(m, AIMessage))
    if steps >= settings.max_steps:
        return {"messages": [AIMessage(f"Step budget of {settings.max_steps} reached; concluding with the evidence gathered.")]}
    # Once the model failed a step of this investigation, `tool_step` lets the offline analyst finish it.
    outcome = tool_step(ANALYST_NODE, state["messages"], INVESTIGATION_TOOLS, settings, state, config)
    return {"messages": [outcome.value], **outcome.state_update()}


def build_investigation() -> StateGraph:
    builder = StateGraph(IncidentState)
    builder.add_node("brief", brief)
    builder.add_node("analyst", analyst)
    builder.add_node("tools", ToolNode(INVESTIGATION_TOOLS))
    builder.add_edge(START, "brief")
    builder.add_edge("brief", "analyst")
    builder.add_conditional_edges("analyst", tools_condition, {"tools": "tools", END: END})
    builder.add_edge("tools", "analyst")
    return builder


investigation = build_investigation().compile(name="investigate")
