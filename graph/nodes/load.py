"""load: metrics, logs and change events into the incident's DuckDB file (once)."""

import os
from dataclasses import asdict
from pathlib import Path

from langchain_core.runnables import RunnableConfig

from graph.configuration import Configuration, thread_id_of, thread_path
from graph.state import IncidentState
from graph.timing import timed
from tools.loader import load_sources
from tools.sources.datasets import confined_inputs


def database_path(settings: Configuration, config: RunnableConfig) -> Path:
    return thread_path(Path(settings.state_dir) / "work", thread_id_of(config), ".duckdb")


@timed("load")
def load(state: IncidentState, config: RunnableConfig) -> dict:
    settings = Configuration.from_runnable_config(config)
    db_path = database_path(settings, config)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    files = dict(state["inputs"])
    if settings.input_roots:  # set by the server: inputs must lie under its data directory or uploads
        files = confined_inputs([Path(root) for root in settings.input_roots.split(os.pathsep)], files)
    summary = load_sources(db_path, files["metrics"], files["logs"], files.get("events"),
                           log_format=files.get("log_format", "auto"), log_fields=files.get("log_fields"),
                           service_map=files.get("service_map"))
    return {"db_path": str(db_path), "load_summary": asdict(summary)}
