"""mitigate: reversible mitigations for the leading hypothesis's mechanism."""

from langchain_core.runnables import RunnableConfig

from graph.configuration import Configuration
from graph.models import ask_structured
from graph.nodes.timing import timed
from graph.prompts import MITIGATE_SYSTEM
from graph.state import Hypothesis, IncidentState, MitigationPlan


def leading_hypothesis(state: IncidentState) -> Hypothesis | None:
    """The best standing hypothesis; one the critic could not confirm never leads."""
    confirmed = [h for h in state.get("hypotheses", []) if not h.unconfirmed]
    standing = [h for h in confirmed if h.status != "overturned"]
    return (standing or confirmed or [None])[0]


@timed("mitigate")
def mitigate(state: IncidentState, config: RunnableConfig) -> dict:
    lead = leading_hypothesis(state)
    if lead is None:
        return {"mitigations": []}
    settings = Configuration.from_runnable_config(config)
    outcome = ask_structured(
        MitigationPlan, MITIGATE_SYSTEM, "Propose mitigations.", {"hypothesis": lead.model_dump()}, settings, config,
        node="mitigate", state=state,
    )
    plan = outcome.value.mitigations if outcome.value else []
    mitigations = [m.model_copy(update={"hypothesis_id": lead.id, "status": "proposed"}) for m in plan]
    return {"mitigations": mitigations, **outcome.state_update()}
