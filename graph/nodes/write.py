"""write: postmortem.json, postmortem.md and timeline.png into the output directory."""

from pathlib import Path

from langchain_core.runnables import RunnableConfig

from graph.configuration import Configuration, thread_id_of, thread_path
from graph.report import build_postmortem, write_postmortem
from graph.state import IncidentState
from graph.timing import timed


def output_dir(state: IncidentState, settings: Configuration, thread_id: str) -> Path:
    """The server pins artifacts under its own directory; the CLI writes where it was told."""
    if settings.artifacts_dir:
        return thread_path(settings.artifacts_dir, thread_id)
    return Path(state.get("out_dir") or thread_path(Path(settings.state_dir) / "incidents", thread_id))


@timed("write")
def write(state: IncidentState, config: RunnableConfig) -> dict:
    settings = Configuration.from_runnable_config(config)
    thread_id = thread_id_of(config)
    postmortem = build_postmortem(state, thread_id, settings.model)
    artifacts = write_postmortem(postmortem, state["db_path"], str(output_dir(state, settings, thread_id)))
    return {"artifacts": artifacts}
