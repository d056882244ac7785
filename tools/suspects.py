"""Suspect services and their features, derived from the scan, onset and change results.

Pure functions over the tools' outputs: no model, no I/O. `tools.ranking` scores and ranks
suspects by these features, and the critic (offline or LLM) is checked against them.
"""

from dataclasses import asdict, dataclass, field

from tools.mitigations import classify_mechanism

# Changes this close before the window (or this far into it) can plausibly have caused it.
CAUSAL_CHANGE_MINUTES = 60.0
CHANGE_INSIDE_GRACE_MINUTES = 5.0


@dataclass
class Suspect:
    service: str
    excess_errors: float = 0.0
    onset_minutes: float | None = None  # relative to the window start; negative = before it
    onset: str | None = None
    signature: str | None = None
    signature_lift: float | None = None
    signature_baseline_per_min: float | None = None
    example: str | None = None
    error_kind: str | None = None
    blamed_by: list[str] = field(default_factory=list)
    blames: list[str] = field(default_factory=list)
    own_share: float = 1.0  # share of the excess that does not name another service
    change: dict | None = None
    mechanism: str = "unknown"

    def as_dict(self) -> dict:
        return asdict(self)


def build_suspects(scan: dict, onsets: dict, changes: dict) -> dict[str, Suspect]:
    suspects: dict[str, Suspect] = {}

    def get(name: str) -> Suspect:
        return suspects.setdefault(name, Suspect(service=name))

    by_service: dict[str, list[dict]] = {}
    for t in scan.get("templates", []):
        by_service.setdefault(t["service"], []).append(t)
    for service, templates in by_service.items():
        s = get(service)
        s.excess_errors = float(sum(t["excess"] for t in templates))
        own = [t for t in templates if not t["mentions"]]
        s.own_share = sum(t["excess"] for t in own) / s.excess_errors if s.excess_errors > 0 else 0.0
        top = max(own or templates, key=lambda t: t["excess"])
        s.signature, s.example, s.error_kind = top["template"], top["example"], top["error_kind"]
        s.signature_lift, s.signature_baseline_per_min = top["lift"], top["baseline_per_min"]
        s.blames = sorted({m for t in templates for m in t["mentions"]})
    for mention in scan.get("mentions", []):
        target = get(mention["to"])
        if mention["from"] not in target.blamed_by:
            target.blamed_by.append(mention["from"])
    for o in onsets.get("onsets", []):
        s = get(o["service"])
        s.onset, s.onset_minutes = o["onset"], o["onset_minutes_from_window_start"]
    for c in changes.get("changes", []):
        lead = c["minutes_before_window"]
        if c["service"] in suspects and -CHANGE_INSIDE_GRACE_MINUTES <= lead <= CAUSAL_CHANGE_MINUTES:
            s = suspects[c["service"]]
            if s.change is None or abs(lead) < abs(s.change["minutes_before_window"]):
                s.change = c
    for s in suspects.values():
        s.blamed_by.sort()
        s.mechanism = classify_mechanism(" ".join(filter(None, [s.signature, s.error_kind])), s.change)
    return suspects
