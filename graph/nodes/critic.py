"""critic: bounded rounds of challenges to each hypothesis; may reorder or overturn them.

First a citation check that no model can talk its way past (`tools.ranking.grounding_verdicts`):
every cited evidence id must exist and the cited evidence must show the hypothesis's service; a
hypothesis that fails is overturned and marked unconfirmed. Then the rounds: every round holds
the statistical challenges (`tools.ranking.challenge_verdicts`), the ground truth a model's
opinions are weighed against; an LLM's verdicts (validated: known hypotheses, existing evidence
ids) come next to them. The offline analyst's verdicts are those challenges.
"""

from langchain_core.runnables import RunnableConfig

from graph.configuration import Configuration
from graph.evidence import evidence_digest
from graph.models import ModelOutputError, ask_structured, outcomes_update
from graph.prompts import CRITIC_SYSTEM
from graph.state import CriticReport, CriticVerdict, Hypothesis, IncidentState
from graph.timing import timed
from tools.ranking import Findings, apply_verdicts, challenge_verdicts, grounding_verdicts


@timed("critic")
def critic(state: IncidentState, config: RunnableConfig) -> dict:
    settings = Configuration.from_runnable_config(config)
    evidence = state.get("evidence", [])
    known = {e.id for e in evidence}
    digest = evidence_digest(evidence, settings.tool_result_tokens)
    findings = Findings.from_evidence(digest)  # the statistics read what the model is shown
    hypotheses = [h.model_dump() for h in state.get("hypotheses", [])]
    transcript = [CriticVerdict.model_validate(v) for v in grounding_verdicts(hypotheses, [e.model_dump() for e in evidence])]
    if transcript:
        failed = {v.hypothesis_id: v.finding for v in transcript}
        hypotheses = apply_verdicts([{**h, "unconfirmed": failed.get(h["id"])} for h in hypotheses], _dumped(transcript))
    outcomes = []
    for round_no in range(1, settings.critic_rounds + 1):
        if not hypotheses:
            break
        context = {"round": round_no, "hypotheses": hypotheses, "evidence": digest}
        ids = {h["id"] for h in hypotheses}
        outcome = ask_structured(
            CriticReport, CRITIC_SYSTEM, f"Critique round {round_no}.", context, settings, config,
            node="critic", state=state, check=lambda report, ids=ids: check_verdicts(report, ids, known),
            spent_in_node=sum(o.usage.total for o in outcomes),
        )
        outcomes.append(outcome)
        if outcome.by_model:
            statistical = [CriticVerdict.model_validate(v) for v in challenge_verdicts(findings, hypotheses, round_no)]
            verdicts = statistical + [v.model_copy(update={"round": round_no, "source": "model"}) for v in outcome.value.verdicts]
        else:
            verdicts = outcome.value.verdicts if outcome.value else []  # the offline analyst's are the statistical ones
        verdicts = [v for v in verdicts if v.hypothesis_id in ids and set(v.evidence_ids) <= known]
        if not verdicts:
            break
        before = [h["id"] for h in hypotheses]
        hypotheses = apply_verdicts(hypotheses, _dumped(verdicts))
        transcript += verdicts
        if [h["id"] for h in hypotheses] == before and round_no > 1:
            break
    return {
        "hypotheses": [Hypothesis.model_validate(h) for h in hypotheses],
        "critic_transcript": transcript,
        **outcomes_update(outcomes),
    }


def _dumped(verdicts: list[CriticVerdict]) -> list[dict]:
    return [v.model_dump() for v in verdicts]


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
