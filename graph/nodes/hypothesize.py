"""hypothesize: ranked root-cause hypotheses, each grounded in existing evidence ids."""

from langchain_core.runnables import RunnableConfig
from pydantic import ValidationError

from graph.configuration import Configuration
from graph.models import ask_structured
from graph.nodes.timing import timed
from graph.prompts import HYPOTHESIZE_SYSTEM
from graph.state import HypothesisSet, IncidentState
from graph.tools import evidence_digest


@timed("hypothesize")
def hypothesize(state: IncidentState, config: RunnableConfig) -> dict:
    settings = Configuration.from_runnable_config(config)
    evidence = state.get("evidence", [])
    context = {"window": state["detection"].window.model_dump(), "evidence": evidence_digest(evidence, settings.tool_result_chars)}
    try:
        answer = ask_structured(HypothesisSet, HYPOTHESIZE_SYSTEM, "Propose ranked hypotheses.", context, settings, config)
    except ValidationError:
        # No service stands out (an empty or unusable answer): the postmortem says "unconfirmed".
        return {"hypotheses": []}
    known = {e.id for e in evidence}
    # A hypothesis that cites evidence which does not exist is not grounded: it is dropped.
    grounded = [h for h in answer.hypotheses if set(h.evidence_ids) <= known]
    return {"hypotheses": grounded}
