"""mitigate: reversible mitigations for the leading hypothesis's mechanism."""

from langchain_core.runnables import RunnableConfig

from graph.configuration import Configuration
from graph.models import ask_structured
from graph.nodes.timing import timed
from graph.prompts import MITIGATE_SYSTEM
from graph.state import IncidentState, MitigationPlan


def leading_hypothesis(state: IncidentState):
    standing = [h for h in state.get("hypotheses", []) if h.status != "overturned"]
    return (standing or state.get("hypotheses") or [None])[0]


@timed("mitigate")
def mitigate(state: IncidentState, config: RunnableConfig) -> dict:
    lead = leading_hypothesis(state)
    if lead is None:
        return {"mitigations": []}
    settings = Configuration.from_runnable_config(config)
    plan = ask_structured(MitigationPlan, MITIGATE_SYSTEM, "Propose mitigations.", {"hypothesis": lead.model_dump()}, settings, config)
    mitigations = [m.model_copy(update={"hypothesis_id": lead.id, "status": "proposed"}) for m in plan.mitigations]
    return {"mitigations": mitigations}
