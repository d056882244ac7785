"""load: metrics, logs and change events into the incident's DuckDB file (once)."""

from dataclasses import asdict
from pathlib import Path

from langchain_core.runnables import RunnableConfig

from graph.configuration import Configuration
from graph.nodes.timing import timed
from graph.state import IncidentState
from tools.loader import load_sources


def database_path(settings: Configuration, config: RunnableConfig) -> Path:
    thread_id = (config.get("configurable") or {}).get("thread_id", "default")
    return Path(settings.state_dir) / "work" / f"{thread_id}.duckdb"


@timed("load")
def load(state: IncidentState, config: RunnableConfig) -> dict:
    settings = Configuration.from_runnable_config(config)
    db_path = database_path(settings, config)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    files = state["inputs"]
    summary = load_sources(db_path, files["metrics"], files["logs"], files.get("events"))
    return {"db_path": str(db_path), "load_summary": asdict(summary)}
