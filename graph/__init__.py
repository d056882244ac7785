"""incident-graph: the LangGraph investigation graph (state, nodes, wiring)."""
