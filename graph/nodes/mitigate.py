"""mitigate: reversible mitigations for the leading hypothesis's mechanism."""

from langchain_core.runnables import RunnableConfig

from graph.configuration import Configuration
from graph.models import ask_structured
from graph.plans import labelled, leading_hypothesis
from graph.prompts import MITIGATE_SYSTEM
from graph.state import IncidentState, MitigationPlan
from graph.timing import timed


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
    mitigations = labelled([m.model_copy(update={"hypothesis_id": lead.id, "status": "proposed"}) for m in plan])
    return {"mitigations": mitigations, **outcome.state_update()}
