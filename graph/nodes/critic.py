"""critic: bounded rounds of challenges to each hypothesis; may reorder or overturn them."""

from langchain_core.runnables import RunnableConfig

from graph.configuration import Configuration
from graph.models import ask_structured
from graph.nodes.timing import timed
from graph.prompts import CRITIC_SYSTEM
from graph.state import CriticReport, CriticVerdict, Hypothesis, IncidentState
from graph.tools import evidence_digest

SEVERITY = {"upheld": 0, "weakened": 1, "overturned": 2}


@timed("critic")
def critic(state: IncidentState, config: RunnableConfig) -> dict:
    settings = Configuration.from_runnable_config(config)
    evidence = state.get("evidence", [])
    known = {e.id for e in evidence}
    digest = evidence_digest(evidence, settings.tool_result_chars)
    hypotheses = [h.model_copy() for h in state.get("hypotheses", [])]
    transcript: list[CriticVerdict] = []
    for round_no in range(1, settings.critic_rounds + 1):
        if not hypotheses:
            break
        context = {"round": round_no, "hypotheses": [h.model_dump() for h in hypotheses], "evidence": digest}
        report = ask_structured(CriticReport, CRITIC_SYSTEM, f"Critique round {round_no}.", context, settings, config)
        ids = {h.id for h in hypotheses}
        verdicts = [v for v in report.verdicts if v.hypothesis_id in ids and set(v.evidence_ids) <= known]
        if not verdicts:
            break
        before = [h.id for h in hypotheses]
        hypotheses = apply_verdicts(hypotheses, verdicts)
        transcript += verdicts
        if [h.id for h in hypotheses] == before and round_no > 1:
            break
    return {"hypotheses": hypotheses, "critic_transcript": transcript}


def apply_verdicts(hypotheses: list[Hypothesis], verdicts: list[CriticVerdict]) -> list[Hypothesis]:
    """Adjust confidences and statuses, then rank: overturned last, then by confidence."""
    by_id = {h.id: h for h in hypotheses}
    for v in verdicts:
        h = by_id[v.hypothesis_id]
        h.confidence = min(0.99, max(0.01, h.confidence + v.confidence_delta))
        if h.status == "proposed" or SEVERITY[v.verdict] > SEVERITY[h.status]:
            h.status = v.verdict  # the worst verdict so far stands
    return sorted(hypotheses, key=lambda h: (h.status == "overturned", -h.confidence, h.id))
