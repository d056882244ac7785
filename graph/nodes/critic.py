"""critic: bounded rounds of challenges to each hypothesis; may reorder or overturn them.

First a citation check that no model can talk its way past: every cited evidence id must exist
and the cited evidence must show the hypothesis's service; a hypothesis that fails is overturned
and marked unconfirmed. Then the rounds: offline, the statistical challenges; with an LLM, the
model's verdicts (validated: known hypotheses, existing evidence ids) next to the same
statistical challenges, which are the ground truth the model's opinions are weighed against.
"""

import json

from langchain_core.runnables import RunnableConfig

from graph.analyst import critique
from graph.configuration import Configuration
from graph.evidence import evidence_digest
from graph.models import ModelOutputError, ask_structured, outcomes_update
from graph.prompts import CRITIC_SYSTEM
from graph.state import CriticReport, CriticVerdict, Evidence, Hypothesis, IncidentState
from graph.timing import timed

SEVERITY = {"upheld": 0, "weakened": 1, "overturned": 2}
GROUNDING_CHALLENGE = "Do its citations exist, and do they show this service?"


@timed("critic")
def critic(state: IncidentState, config: RunnableConfig) -> dict:
    settings = Configuration.from_runnable_config(config)
    evidence = state.get("evidence", [])
    known = {e.id for e in evidence}
    digest = evidence_digest(evidence, settings.tool_result_chars)
    hypotheses = [h.model_copy() for h in state.get("hypotheses", [])]
    transcript = grounding_verdicts(hypotheses, evidence)
    if transcript:
        failed = {v.hypothesis_id: v.finding for v in transcript}
        hypotheses = apply_verdicts([h.model_copy(update={"unconfirmed": failed.get(h.id)}) for h in hypotheses], transcript)
    outcomes = []
    for round_no in range(1, settings.critic_rounds + 1):
        if not hypotheses:
            break
        context = {"round": round_no, "hypotheses": [h.model_dump() for h in hypotheses], "evidence": digest}
        ids = {h.id for h in hypotheses}
        outcome = ask_structured(
            CriticReport, CRITIC_SYSTEM, f"Critique round {round_no}.", context, settings, config,
            node="critic", state=state, check=lambda report, ids=ids: check_verdicts(report, ids, known),
            spent_in_node=sum(o.usage.total for o in outcomes),
        )
        outcomes.append(outcome)
        verdicts = outcome.value.verdicts if outcome.value else []
        if settings.uses_llm and outcome.fallback is None:
            model_verdicts = [v.model_copy(update={"round": round_no, "source": "model"}) for v in verdicts]
            verdicts = CriticReport.model_validate(critique(context)).verdicts + model_verdicts
        verdicts = [v for v in verdicts if v.hypothesis_id in ids and set(v.evidence_ids) <= known]
        if not verdicts:
            break
        before = [h.id for h in hypotheses]
        hypotheses = apply_verdicts(hypotheses, verdicts)
        transcript += verdicts
        if [h.id for h in hypotheses] == before and round_no > 1:
            break
    return {"hypotheses": hypotheses, "critic_transcript": transcript, **outcomes_update(outcomes)}


def check_verdicts(report: CriticReport, hypothesis_ids: set[str], known: set[str]) -> None:
    """A model's verdicts must be about the hypotheses it was shown and cite existing evidence."""
    problems = []
    for v in report.verdicts:
        if v.hypothesis_id not in hypothesis_ids:
            problems.append(f"there is no hypothesis '{v.hypothesis_id}' (ids: {', '.join(sorted(hypothesis_ids))})")
        missing = [i for i in v.evidence_ids if i not in known]
        if missing:
            problems.append(f"verdict on {v.hypothesis_id} cites evidence that does not exist: {', '.join(missing)}")
    if problems:
        raise ModelOutputError("; ".join(problems) + ". Cite only evidence ids from the context.")


def mentions(item: Evidence, service: str) -> bool:
    return service in item.summary or service in json.dumps(item.data, default=str)


def grounding_verdicts(hypotheses: list[Hypothesis], evidence: list[Evidence]) -> list[CriticVerdict]:
    """Overturn hypotheses whose citations do not exist or none of which shows their service."""
    by_id = {e.id: e for e in evidence}
    verdicts = []
    for h in hypotheses:
        missing = [i for i in h.evidence_ids if i not in by_id]
        cited = [by_id[i] for i in h.evidence_ids if i in by_id]
        if missing:
            finding = f"Unconfirmed: it cites evidence that does not exist ({', '.join(missing)})."
        elif not any(mentions(e, h.service) for e in cited):
            finding = f"Unconfirmed: none of the cited evidence ({', '.join(e.id for e in cited)}) shows {h.service}."
        else:
            continue
        verdicts.append(
            CriticVerdict(
                hypothesis_id=h.id, round=1, challenge=GROUNDING_CHALLENGE, finding=finding, verdict="overturned",
                confidence_delta=-0.5, evidence_ids=[e.id for e in cited], source="grounding",
            )
        )
    return verdicts


def apply_verdicts(hypotheses: list[Hypothesis], verdicts: list[CriticVerdict]) -> list[Hypothesis]:
    """Adjust confidences and statuses, then rank: overturned last, then by confidence."""
    by_id = {h.id: h for h in hypotheses}
    for v in verdicts:
        h = by_id[v.hypothesis_id]
        h.confidence = min(0.99, max(0.01, h.confidence + v.confidence_delta))
        if h.status == "proposed" or SEVERITY[v.verdict] > SEVERITY[h.status]:
            h.status = v.verdict  # the worst verdict so far stands
    return sorted(hypotheses, key=lambda h: (h.status == "overturned", -h.confidence, h.id))
