"""The mitigation plan as the approver sees it, and the hypothesis it answers."""

from graph.state import Hypothesis, IncidentState, Mitigation
from tools.mitigations import prod_change_in


def leading_hypothesis(state: IncidentState) -> Hypothesis | None:
    """The best standing hypothesis; one the critic could not confirm never leads."""
    confirmed = [h for h in state.get("hypotheses", []) if not h.unconfirmed]
    standing = [h for h in confirmed if h.status != "overturned"]
    return (standing or confirmed or [None])[0]


def labelled(plan: list[Mitigation]) -> list[Mitigation]:
    """The plan with `touches_prod` derived from the steps too: a model or an edited plan that
    labels a restart or a rollback as 'no prod change' is shown as touching production."""
    out = []
    for m in plan:
        reason = None if m.touches_prod else prod_change_in(m.steps)
        out.append(m.model_copy(update={"touches_prod": True, "prod_change": reason}) if reason else m)
    return out
