"""Wiring only: nodes, edges and the checkpointer.

`graph` (no checkpointer) is what `langgraph.json` names, because LangGraph Server brings its
own persistence; `build_graph(checkpointer)` compiles the same wiring for the CLI and server.
"""

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph

from graph.configuration import ConfigurableSettings
from graph.nodes.approve import approve
from graph.nodes.critic import critic
from graph.nodes.detect import detect, route_after_detect
from graph.nodes.hypothesize import hypothesize
from graph.nodes.investigate import investigation
from graph.nodes.load import load
from graph.nodes.mitigate import mitigate
from graph.nodes.write import write
from graph.state import IncidentInput, IncidentState


def build_graph(checkpointer: BaseCheckpointSaver | None = None):
    builder = StateGraph(IncidentState, context_schema=ConfigurableSettings, input_schema=IncidentInput)
    builder.add_node("load", load)
    builder.add_node("detect", detect)
    builder.add_node("investigate", investigation)
    builder.add_node("hypothesize", hypothesize)
    builder.add_node("critic", critic)
    builder.add_node("mitigate", mitigate)
    builder.add_node("approve", approve)
    builder.add_node("write", write)
    builder.add_edge(START, "load")
    builder.add_edge("load", "detect")
    builder.add_conditional_edges("detect", route_after_detect, ["investigate", "write"])
    builder.add_edge("investigate", "hypothesize")
    builder.add_edge("hypothesize", "critic")
    builder.add_edge("critic", "mitigate")
    builder.add_edge("mitigate", "approve")
    builder.add_edge("approve", "write")
    builder.add_edge("write", END)
    return builder.compile(checkpointer=checkpointer, name="incident-graph")


graph = build_graph()
