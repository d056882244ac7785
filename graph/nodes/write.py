"""write: postmortem.json, postmortem.md and timeline.png into the output directory."""

from pathlib import Path

from langchain_core.runnables import RunnableConfig

from graph.configuration import Configuration
from graph.nodes.timing import timed
from graph.report import build_postmortem, write_postmortem
from graph.state import IncidentState


def output_dir(state: IncidentState, settings: Configuration, thread_id: str) -> Path:
    """The server pins artifacts under its own directory; the CLI writes where it was told."""
    if settings.artifacts_dir:
        return Path(settings.artifacts_dir) / thread_id
    return Path(state.get("out_dir") or Path(settings.state_dir) / "incidents" / thread_id)


@timed("write")
def write(state: IncidentState, config: RunnableConfig) -> dict:
    settings = Configuration.from_runnable_config(config)
    thread_id = (config.get("configurable") or {}).get("thread_id", "default")
    postmortem = build_postmortem(state, thread_id, settings.model)
    artifacts = write_postmortem(postmortem, state["db_path"], str(output_dir(state, settings, thread_id)))
    return {"artifacts": artifacts}
