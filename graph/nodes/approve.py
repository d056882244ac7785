"""approve: the human gate. Nothing that touches production goes ahead without a decision."""

from langchain_core.runnables import RunnableConfig
from langgraph.types import interrupt
from pydantic import ValidationError

from graph.configuration import Configuration
from graph.plans import labelled, leading_hypothesis
from graph.state import Approval, Decision, IncidentState
from graph.timing import timed
from tools.times import utc_now_iso


def approval_request(state: IncidentState) -> dict:
    lead = leading_hypothesis(state)
    return {
        "question": "Approve, reject (with a note) or edit the mitigation plan.",
        "incident_window": state["detection"].window.model_dump(mode="json") if state["detection"].window else None,
        "leading_hypothesis": lead.model_dump() if lead else None,
        "mitigations": [m.model_dump() for m in state.get("mitigations", [])],
        "answer_schema": {"action": "approve | reject | edit", "note": "str", "by": "str", "mitigations": "[Mitigation] for edit"},
    }


@timed("approve")
def approve(state: IncidentState, config: RunnableConfig) -> dict:
    settings = Configuration.from_runnable_config(config)
    plan = state.get("mitigations", [])
    if not plan:
        return {"approval": Approval(action="not-needed", by=settings.approver, at=utc_now_iso(), note="no mitigation was proposed")}
    if settings.auto_approve:
        decision = Decision(action="approve", by=f"{settings.approver} (auto-approve)")
        action = "auto-approve"
    else:
        request = approval_request(state)
        # Everything above is recomputed when the node resumes; it has no side effects.
        while True:
            answer = interrupt(request)
            try:
                decision = Decision.model_validate(answer)
                break
            except ValidationError as exc:
                request = {**approval_request(state), "error": f"invalid decision: {exc.errors()[0]['msg']}"}
        action = decision.action
    if decision.action == "edit":
        plan = labelled(decision.mitigations or [])
    status = "rejected" if decision.action == "reject" else "approved"
    decided = [m.model_copy(update={"status": status}) for m in plan]
    approval = Approval(
        action=action,
        note=decision.note,
        by=decision.by,
        authenticated_as=decision.authenticated_as,
        at=utc_now_iso(),
        approved=[m.id for m in decided if m.status == "approved"],
        rejected=[m.id for m in decided if m.status == "rejected"],
    )
    return {"mitigations": decided, "approval": approval}
