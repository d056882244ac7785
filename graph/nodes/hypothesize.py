"""hypothesize: ranked root-cause hypotheses, each citing evidence ids.

Offline, the analyst's statistical ranking is the answer. With an LLM, the model's hypotheses
are merged with that ranking (`merge_with_statistics`): a fluent model naming a loud but
innocent service cannot outvote who failed first, how much above baseline, and who blames whom.
Citations are checked by the critic, which marks hypotheses it cannot confirm.
"""

from langchain_core.runnables import RunnableConfig

from graph.analyst import propose_hypotheses, statistical_shares
from graph.configuration import Configuration
from graph.evidence import evidence_digest
from graph.models import ask_structured
from graph.prompts import HYPOTHESIZE_SYSTEM
from graph.state import Hypothesis, HypothesisSet, IncidentState
from graph.timing import timed
from tools.mitigations import CATALOGUE, classify_mechanism

MODEL_WEIGHT = 0.4  # of a merged confidence; the rest is the statistical share
MAX_MERGED = 5


@timed("hypothesize")
def hypothesize(state: IncidentState, config: RunnableConfig) -> dict:
    settings = Configuration.from_runnable_config(config)
    evidence = state.get("evidence", [])
    context = {"window": state["detection"].window.model_dump(), "evidence": evidence_digest(evidence, settings.tool_result_chars)}
    outcome = ask_structured(
        HypothesisSet, HYPOTHESIZE_SYSTEM, "Propose ranked hypotheses.", context, settings, config, node="hypothesize", state=state
    )
    if outcome.value is None:
        # No service stands out (an empty or unusable answer): the postmortem says "unconfirmed".
        hypotheses: list[Hypothesis] = []
    elif settings.uses_llm and outcome.fallback is None:
        hypotheses = merge_with_statistics(outcome.value.hypotheses, context)
    else:
        hypotheses = outcome.value.hypotheses
    return {"hypotheses": hypotheses, **outcome.state_update()}


def merge_with_statistics(proposed: list[Hypothesis], context: dict) -> list[Hypothesis]:
    """The model's hypotheses and the statistical ranking as one list, re-ranked by
    MODEL_WEIGHT * model confidence + (1 - MODEL_WEIGHT) * statistical share.

    A service the model did not name keeps its statistical share (and the offline analyst's
    citations), so the true root is not lost when the model overlooks it.
    """
    shares = statistical_shares(context)
    merged: list[Hypothesis] = []
    named: set[str] = set()
    for h in proposed:
        if h.service in named:
            continue
        named.add(h.service)
        suspect, share = shares.get(h.service, (None, 0.0))
        mechanism = h.mechanism if h.mechanism in CATALOGUE else (
            suspect.mechanism if suspect else classify_mechanism(f"{h.signature} {h.kind}")
        )
        merged.append(
            h.model_copy(
                update={
                    "confidence": round(MODEL_WEIGHT * h.confidence + (1 - MODEL_WEIGHT) * share, 3),
                    "mechanism": mechanism,
                    "status": "proposed",
                    "source": "model+statistics" if suspect else "model",
                    "unconfirmed": None,
                    "support": {**(suspect.as_dict() if suspect else {}), "model_confidence": h.confidence, "statistical_share": round(share, 3)},
                }
            )
        )
    for offline in propose_hypotheses(context)["hypotheses"]:
        if offline["service"] in named:
            continue
        share = shares[offline["service"]][1]
        merged.append(
            Hypothesis.model_validate(
                {
                    **offline,
                    "confidence": round((1 - MODEL_WEIGHT) * share, 3),
                    "source": "statistics",
                    "support": {**offline["support"], "model_confidence": 0.0, "statistical_share": round(share, 3)},
                }
            )
        )
    merged.sort(key=lambda h: (-h.confidence, h.service))
    return [h.model_copy(update={"id": f"H{rank}"}) for rank, h in enumerate(merged[:MAX_MERGED], start=1)]
