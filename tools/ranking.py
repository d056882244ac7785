"""The statistics the critic checks claims against: ranking suspects, proposing and challenging
hypotheses, merging a model's hypotheses with the ranking, and the plan for the leading one.

Pure functions over what the scouting tools found (`Findings`), no model and no I/O. The
offline analyst answers with them; the hypothesize and critic nodes apply them to any model's
answer too, so both modes run the same statistics. Hypotheses, verdicts, evidence and
mitigations travel as plain dicts with the fields of the graph's pydantic models (Hypothesis,
CriticVerdict, Evidence, Mitigation), which validate them; this package imports no graph code.

Confidence has one definition (`rank`): the softmax of the first-look scores of the top
`MAX_HYPOTHESES` suspects, all scored on one scale (the earliest onset and the largest excess
among every suspect); a suspect below them has confidence 0.
"""

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from tools.mitigations import CATALOGUE, classify_mechanism, playbooks_for
from tools.suspects import Suspect, build_suspects

# The evidence the statistics read, by the name of the tool that recorded it.
SCAN_TOOL, ONSETS_TOOL, CHANGES_TOOL, ORDERING_TOOL = "log_pattern_scan", "service_error_onsets", "change_events", "sql_investigate"
SCOUTING_TOOLS = (SCAN_TOOL, ONSETS_TOOL, CHANGES_TOOL)

MAX_HYPOTHESES = 3  # proposed by the statistics, and sharing the confidence
MODEL_WEIGHT = 0.4  # of a merged confidence; the rest is the statistical confidence
MAX_MERGED = 5  # hypotheses kept after merging a model's with the statistics'

SEVERITY = {"upheld": 0, "weakened": 1, "overturned": 2}
GROUNDING_CHALLENGE = "Do its citations exist, and do they show this service?"


@dataclass(frozen=True)
class Findings:
    """The scouting tools' results (their `data`) and the evidence ids to cite for them."""

    scan: Mapping[str, Any] = field(default_factory=dict)
    onsets: Mapping[str, Any] = field(default_factory=dict)
    changes: Mapping[str, Any] = field(default_factory=dict)
    ids: Mapping[str, str] = field(default_factory=dict)  # tool name -> id of its latest result

    @classmethod
    def from_evidence(cls, items: Iterable[Mapping[str, Any]]) -> "Findings":
        """From evidence items (`tool`, `id`, `data`), as a prompt's digest or the state holds
        them; the latest item per tool counts."""
        latest: dict[str, Mapping[str, Any]] = {}
        for item in items:
            latest[item["tool"]] = item
        data = {tool: latest.get(tool, {}).get("data", {}) for tool in SCOUTING_TOOLS}
        ids = {tool: item["id"] for tool, item in latest.items() if item.get("id")}
        return cls(scan=data[SCAN_TOOL], onsets=data[ONSETS_TOOL], changes=data[CHANGES_TOOL], ids=ids)

    def suspects(self) -> dict[str, Suspect]:
        return build_suspects(dict(self.scan), dict(self.onsets), dict(self.changes))


# ---------------------------------------------------------------- scores and confidence


def first_look_scores(
    onset_minutes: ArrayLike, excess_errors: ArrayLike, changed: ArrayLike, callers: ArrayLike
) -> np.ndarray:
    """One score per suspect: who failed first, how much, whether a change preceded it, who names it.

    `onset_minutes`: minutes from the window start, NaN for a suspect without an onset of its
    own; `excess_errors`: error lines above baseline; `changed`: a change preceded it;
    `callers`: how many services name it in their errors. Scored on the scale of the suspects
    given (the earliest onset, the largest excess):

        2 exp(-(onset - earliest) / 5)      0 without an onset
      + log1p(excess) / log1p(max excess)   0 when no suspect has excess errors
      + 1                                   when a change preceded it
      + 0.5 per caller, at most 2
    """
    onset = np.asarray(onset_minutes, dtype=float)
    excess = np.asarray(excess_errors, dtype=float)
    scores = np.zeros(onset.shape)
    known = ~np.isnan(onset)
    if known.any():
        lag = np.maximum(onset[known] - onset[known].min(), 0.0)
        scores[known] = 2.0 * np.exp(-lag / 5.0)
    top = excess.max(initial=0.0)
    if top > 0:
        scores = scores + np.log1p(np.maximum(excess, 0.0)) / np.log1p(top)
    scores = scores + np.where(np.asarray(changed, dtype=bool), 1.0, 0.0)
    return scores + 0.5 * np.minimum(np.asarray(callers, dtype=float), 2.0)


def softmax(scores: ArrayLike, temperature: float = 1.0) -> np.ndarray:
    x = np.asarray(scores, dtype=float)
    if x.size == 0:
        return np.zeros(0)
    weights = np.exp((x - x.max()) / temperature)
    return weights / weights.sum()


@dataclass(frozen=True)
class Ranked:
    suspect: Suspect
    score: float  # first-look score, on the scale of every suspect
    confidence: float  # softmax over the top MAX_HYPOTHESES scores; 0.0 below them


def rank(findings: Findings) -> list[Ranked]:
    """Every suspect, best first (ties by service name), with its score and confidence."""
    suspects = list(findings.suspects().values())
    scores = first_look_scores(
        [np.nan if s.onset_minutes is None else s.onset_minutes for s in suspects],
        [s.excess_errors for s in suspects],
        [s.change is not None for s in suspects],
        [len(s.blamed_by) for s in suspects],
    )
    order = sorted(range(len(suspects)), key=lambda i: (-scores[i], suspects[i].service))
    shares = softmax(scores[order[:MAX_HYPOTHESES]])
    confidence = np.zeros(len(suspects))
    confidence[order[:MAX_HYPOTHESES]] = shares
    return [Ranked(suspects[i], float(scores[i]), float(confidence[i])) for i in order]


def ranked_suspects(findings: Findings) -> list[Suspect]:
    return [r.suspect for r in rank(findings)]


# ---------------------------------------------------------------- hypotheses


def propose_hypotheses(findings: Findings) -> list[dict]:
    """The statistics' hypotheses: the top suspects, each citing the evidence that shows it."""
    ids = findings.ids
    hypotheses = []
    for number, r in enumerate(rank(findings)[:MAX_HYPOTHESES], start=1):
        s = r.suspect
        cited = [ids[t] for t in (SCAN_TOOL, ONSETS_TOOL) if t in ids]
        if s.change is not None and CHANGES_TOOL in ids:
            cited.append(ids[CHANGES_TOOL])
        if ORDERING_TOOL in ids:
            cited.append(ids[ORDERING_TOOL])
        hypotheses.append(
            {
                "id": f"H{number}",
                "service": s.service,
                "kind": s.error_kind or s.mechanism,
                "mechanism": s.mechanism,
                "signature": s.signature or "(no log lines of its own; named by its callers)",
                "confidence": round(r.confidence, 3),
                "summary": hypothesis_summary(s),
                "evidence_ids": cited,
                "support": s.as_dict(),
            }
        )
    return hypotheses


def hypothesis_summary(s: Suspect) -> str:
    parts = [f"{s.service} is the origin"]
    if s.onset:
        parts.append(f"its error rate rose first at {s.onset} ({s.onset_minutes:+.1f} min from the window start)")
    if s.signature:
        parts.append(f"dominant new template '{s.signature}' ({s.excess_errors:.0f} lines above baseline)")
    if s.blamed_by:
        parts.append(f"named by {', '.join(s.blamed_by)}")
    if s.change:
        parts.append(f"{s.change['kind']} on it {s.change['minutes_before_window']:.0f} min before the window")
    return "; ".join(parts) + "."


def merge_with_statistics(proposed: Sequence[Mapping[str, Any]], findings: Findings) -> list[dict]:
    """A model's hypotheses and the statistics' as one list, re-ranked by
    MODEL_WEIGHT * model confidence + (1 - MODEL_WEIGHT) * statistical confidence.

    A fluent model naming a loud but innocent service cannot outvote who failed first, how much
    above baseline and who blames whom; a statistical hypothesis the model did not name keeps
    its share (and its citations), so the true root is not lost when the model overlooks it.
    """
    ranking = {r.suspect.service: r for r in rank(findings)}
    merged: list[dict] = []
    named: set[str] = set()
    for h in proposed:
        if h["service"] in named:
            continue
        named.add(h["service"])
        found = ranking.get(h["service"])
        suspect, share = (found.suspect, found.confidence) if found else (None, 0.0)
        mechanism = h["mechanism"] if h["mechanism"] in CATALOGUE else (
            suspect.mechanism if suspect else classify_mechanism(f"{h['signature']} {h['kind']}")
        )
        merged.append(
            {
                **h,
                "confidence": round(MODEL_WEIGHT * h["confidence"] + (1 - MODEL_WEIGHT) * share, 3),
                "mechanism": mechanism,
                "status": "proposed",
                "source": "model+statistics" if suspect else "model",
                "unconfirmed": None,
                "support": {**(suspect.as_dict() if suspect else {}), "model_confidence": h["confidence"],
                            "statistical_share": round(share, 3)},
            }
        )
    for statistical in propose_hypotheses(findings):
        if statistical["service"] in named:
            continue
        share = ranking[statistical["service"]].confidence
        merged.append(
            {
                **statistical,
                "confidence": round((1 - MODEL_WEIGHT) * share, 3),
                "status": "proposed",
                "source": "statistics",
                "unconfirmed": None,
                "support": {**statistical["support"], "model_confidence": 0.0, "statistical_share": round(share, 3)},
            }
        )
    merged.sort(key=lambda h: (-h["confidence"], h["service"]))
    return [{**h, "id": f"H{number}"} for number, h in enumerate(merged[:MAX_MERGED], start=1)]


# ---------------------------------------------------------------- the critic's challenges


def challenge_verdicts(findings: Findings, hypotheses: Sequence[Mapping[str, Any]], round_no: int) -> list[dict]:
    """The statistical verdicts of one critic round: round 1 puts the standard challenges to
    every hypothesis; later rounds set the leader against the runner-up."""
    suspects = findings.suspects()
    ids = findings.ids
    verdicts = []
    if round_no == 1:
        for h in hypotheses:
            s = suspects.get(h["service"], Suspect(service=h["service"]))
            for challenge, (finding, verdict, delta, cited) in challenges(s, suspects, ids).items():
                verdicts.append(_verdict(h["id"], round_no, challenge, finding, verdict, delta, cited))
    elif len(hypotheses) >= 2:
        cited = [ids.get(ONSETS_TOOL), ids.get(SCAN_TOOL)]
        verdicts.append(_head_to_head(hypotheses[0], hypotheses[1], suspects, round_no, cited))
    return verdicts


def _verdict(hid: str, round_no: int, challenge: str, finding: str, verdict: str, delta: float, ids: Iterable) -> dict:
    return {
        "hypothesis_id": hid,
        "round": round_no,
        "challenge": challenge,
        "finding": finding,
        "verdict": verdict,
        "confidence_delta": delta,
        "evidence_ids": [i for i in ids if i],
    }


def challenges(s: Suspect, suspects: Mapping[str, Suspect], ids: Mapping[str, str]) -> dict[str, tuple]:
    """challenge -> (finding, verdict, confidence delta, evidence ids) for one suspect."""
    onset_id, scan_id, change_id = ids.get(ONSETS_TOOL), ids.get(SCAN_TOOL), ids.get(CHANGES_TOOL)
    out = {}
    callers = [suspects[c] for c in s.blamed_by if c in suspects]
    if s.onset_minutes is None:
        out[f"Did {s.service} fail before its callers?"] = (
            f"{s.service} shows no significant rise in its own error lines"
            + (f"; {', '.join(s.blamed_by)} name it in their errors." if s.blamed_by else "."),
            "upheld" if s.blamed_by else "weakened",
            0.0 if s.blamed_by else -0.15,
            [onset_id, scan_id],
        )
    else:
        earlier = [c for c in callers if c.onset_minutes is not None and c.onset_minutes < s.onset_minutes - 1.0]
        if earlier:
            out[f"Did {s.service} fail before its callers?"] = (
                f"No: {', '.join(c.service for c in earlier)} failed earlier than {s.service} ({s.onset}).",
                "weakened", -0.15, [onset_id],
            )
        else:
            later = ", ".join(f"{c.service} at {c.onset}" for c in callers if c.onset) or "no caller failed before it"
            out[f"Did {s.service} fail before its callers?"] = (
                f"Yes: {s.service} at {s.onset}; {later}.", "upheld", 0.1, [onset_id],
            )
    if s.signature_lift is not None:
        noisy = s.signature_lift < 3.0
        out["Is the signal also present before the window?"] = (
            f"'{s.signature}' runs at {s.signature_baseline_per_min}/min outside the window; lift {s.signature_lift}x inside it.",
            "overturned" if noisy else "upheld",
            -0.5 if noisy else 0.05,
            [scan_id],
        )
    if s.blames:
        victim = s.own_share < 0.5
        out[f"Do {s.service}'s own messages blame another service?"] = (
            f"{s.service}'s errors name {', '.join(s.blames)}; {s.own_share:.0%} of its excess errors are its own.",
            "overturned" if victim else "weakened",
            -0.4 if victim else -0.1,
            [scan_id],
        )
    others_changed = [o for o in suspects.values() if o.change and o.service != s.service]
    if s.change:
        out["Did a change precede it?"] = (
            f"Yes: {s.change['kind']} on {s.service} at {s.change['ts']} ({s.change['description']}), "
            f"{s.change['minutes_before_window']:.0f} min before the window.",
            "upheld", 0.1, [change_id],
        )
    elif others_changed:
        out["Did a change precede it?"] = (
            f"No change on {s.service}; changes on {', '.join(o.service for o in others_changed)} preceded the window.",
            "weakened", -0.05, [change_id],
        )
    return out


def _head_to_head(leader: Mapping, runner: Mapping, suspects: Mapping[str, Suspect], round_no: int, ids: list) -> dict:
    a = suspects.get(leader["service"], Suspect(service=leader["service"]))
    b = suspects.get(runner["service"], Suspect(service=runner["service"]))
    if b.service in a.blames and (b.onset_minutes is None or a.onset_minutes is None or b.onset_minutes <= a.onset_minutes):
        return _verdict(leader["id"], round_no, f"Is {a.service} the root, or a victim of {b.service}?",
                        f"{a.service}'s errors name {b.service}, which failed no later: {a.service} looks like a victim.",
                        "overturned", -0.5, ids)
    return _verdict(leader["id"], round_no, f"Does {a.service} still lead over {b.service}?",
                    f"{a.service} ({a.onset or 'no onset'}) does not depend on {b.service}'s failure in the evidence.",
                    "upheld", 0.0, ids)


def mentions(item: Mapping[str, Any], service: str) -> bool:
    """Does an evidence item (its summary or its data) show `service`?"""
    return service in item.get("summary", "") or service in json.dumps(item.get("data", {}), default=str)


def grounding_verdicts(hypotheses: Sequence[Mapping[str, Any]], evidence: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Overturn hypotheses whose citations do not exist or none of which shows their service."""
    by_id = {e["id"]: e for e in evidence}
    verdicts = []
    for h in hypotheses:
        missing = [i for i in h["evidence_ids"] if i not in by_id]
        cited = [by_id[i] for i in h["evidence_ids"] if i in by_id]
        if missing:
            finding = f"Unconfirmed: it cites evidence that does not exist ({', '.join(missing)})."
        elif not any(mentions(e, h["service"]) for e in cited):
            finding = f"Unconfirmed: none of the cited evidence ({', '.join(e['id'] for e in cited)}) shows {h['service']}."
        else:
            continue
        verdicts.append(
            {
                "hypothesis_id": h["id"], "round": 1, "challenge": GROUNDING_CHALLENGE, "finding": finding,
                "verdict": "overturned", "confidence_delta": -0.5, "evidence_ids": [e["id"] for e in cited], "source": "grounding",
            }
        )
    return verdicts


def apply_verdicts(hypotheses: Sequence[Mapping[str, Any]], verdicts: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Adjust confidences (kept in [0.01, 0.99]) and statuses (the worst verdict so far stands),
    then rank: overturned last, then by confidence. Every verdict must name a given hypothesis."""
    adjusted = [dict(h) for h in hypotheses]
    by_id = {h["id"]: h for h in adjusted}
    for v in verdicts:
        h = by_id[v["hypothesis_id"]]
        h["confidence"] = min(0.99, max(0.01, h["confidence"] + v["confidence_delta"]))
        status = h.get("status", "proposed")
        if status == "proposed" or SEVERITY[v["verdict"]] > SEVERITY[status]:
            h["status"] = v["verdict"]
    return sorted(adjusted, key=lambda h: (h.get("status") == "overturned", -h["confidence"], h["id"]))


# ---------------------------------------------------------------- the plan


def mitigation_plan(hypothesis: Mapping[str, Any]) -> list[dict]:
    """The catalogue's reversible mitigations for a hypothesis's mechanism, safest first."""
    change = (hypothesis.get("support") or {}).get("change")
    fmt = {"service": hypothesis["service"]}
    return [
        {
            "id": f"M{number}",
            "hypothesis_id": hypothesis["id"],
            "mechanism": hypothesis["mechanism"],
            "title": book.title.format(**fmt),
            "steps": [step.format(**fmt) for step in book.steps],
            "rollback": book.rollback.format(**fmt),
            "owner": book.owner.format(**fmt),
            "eta_minutes": book.eta_minutes,
            "touches_prod": book.touches_prod,
            "reversible": True,
        }
        for number, book in enumerate(playbooks_for(hypothesis["mechanism"], change), start=1)
    ]
