"""load: metrics, logs and change events into the incident's DuckDB file (once)."""

import os
from dataclasses import asdict
from pathlib import Path

from langchain_core.runnables import RunnableConfig

from graph.configuration import Configuration
from graph.nodes.timing import timed
from graph.state import IncidentState
from tools.loader import InputError, load_sources
from tools.sources.datasets import dataset_files, is_dataset


def database_path(settings: Configuration, config: RunnableConfig) -> Path:
    thread_id = (config.get("configurable") or {}).get("thread_id", "default")
    return Path(settings.state_dir) / "work" / f"{thread_id}.duckdb"


FILE_INPUTS = ("metrics", "logs", "events")


def confined_inputs(roots: list[Path], files: dict) -> dict:
    """Input paths resolved against the first root; any outside every root (via `..`, an absolute
    path or a symlink) is refused."""
    bases = [root.resolve() for root in roots]
    confined = dict(files)
    for key in FILE_INPUTS:
        if not files.get(key):
            continue
        resolved = (bases[0] / files[key]).resolve()
        # A Parquet directory or glob: every file it expands to must be inside too (a symlinked
        # folder matched by `*` is only seen after expansion).
        expanded = dataset_files(files[key], str(bases[0] / files[key])) if is_dataset(bases[0] / files[key]) else [resolved]
        for path in expanded:
            if not any(path.is_relative_to(base) for base in bases):
                raise InputError(files[key], f"{path} is outside the data directory {bases[0]}; only files under it can be investigated")
        confined[key] = str(bases[0] / files[key]) if is_dataset(bases[0] / files[key]) else str(resolved)
    return confined


@timed("load")
def load(state: IncidentState, config: RunnableConfig) -> dict:
    settings = Configuration.from_runnable_config(config)
    db_path = database_path(settings, config)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    files = dict(state["inputs"])
    if settings.input_roots:
        files = confined_inputs([Path(root) for root in settings.input_roots.split(os.pathsep)], files)
    summary = load_sources(db_path, files["metrics"], files["logs"], files.get("events"),
                           log_format=files.get("log_format", "auto"), log_fields=files.get("log_fields"))
    return {"db_path": str(db_path), "load_summary": asdict(summary)}
