"""write: postmortem.json, postmortem.md and timeline.png into the output directory."""

from langchain_core.runnables import RunnableConfig

from graph.configuration import Configuration
from graph.nodes.timing import timed
from graph.report import build_postmortem, write_postmortem
from graph.state import IncidentState


@timed("write")
def write(state: IncidentState, config: RunnableConfig) -> dict:
    settings = Configuration.from_runnable_config(config)
    thread_id = (config.get("configurable") or {}).get("thread_id", "default")
    postmortem = build_postmortem(state, thread_id, settings.model)
    artifacts = write_postmortem(postmortem, state["db_path"], state["out_dir"])
    return {"artifacts": artifacts}
