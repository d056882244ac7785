"""hypothesize: ranked root-cause hypotheses, each citing evidence ids.

The answering model proposes: the offline analyst answers with the statistical ranking
(`tools.ranking`); an LLM's hypotheses are merged with that ranking (`merge_with_statistics`),
so a fluent model naming a loud but innocent service cannot outvote who failed first, how much
above baseline, and who blames whom. Citations are checked by the critic, which marks
hypotheses it cannot confirm.
"""

from langchain_core.runnables import RunnableConfig

from graph.configuration import Configuration
from graph.evidence import evidence_digest
from graph.models import ask_structured
from graph.prompts import HYPOTHESIZE_SYSTEM
from graph.state import Hypothesis, HypothesisSet, IncidentState
from graph.timing import timed
from tools.ranking import Findings, merge_with_statistics


@timed("hypothesize")
def hypothesize(state: IncidentState, config: RunnableConfig) -> dict:
    settings = Configuration.from_runnable_config(config)
    evidence = state.get("evidence", [])
    context = {"window": state["detection"].window.model_dump(mode="json"), "evidence": evidence_digest(evidence, settings.tool_result_tokens)}
    outcome = ask_structured(
        HypothesisSet, HYPOTHESIZE_SYSTEM, "Propose ranked hypotheses.", context, settings, config, node="hypothesize", state=state
    )
    if outcome.value is None:
        # No service stands out (an empty or unusable answer): the postmortem says "unconfirmed".
        hypotheses: list[Hypothesis] = []
    elif outcome.by_model:
        # The statistics read the same digest the model was shown.
        proposed = [h.model_dump() for h in outcome.value.hypotheses]
        hypotheses = [Hypothesis.model_validate(h) for h in merge_with_statistics(proposed, Findings.from_evidence(context["evidence"]))]
    else:
        hypotheses = outcome.value.hypotheses  # the offline analyst's answer is the statistics
    return {"hypotheses": hypotheses, **outcome.state_update()}
