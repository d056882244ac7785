"""Mechanism classification and the catalogue of reversible mitigations per mechanism.

The vocabulary is general SRE knowledge (what a pool exhaustion or a certificate failure looks
like in any stack), used only to choose mitigations, never to rank root causes.
"""

import re
from dataclasses import dataclass

# Ordered: the first mechanism whose pattern matches wins.
MECHANISM_PATTERNS: tuple[tuple[str, str], ...] = (
    ("connection_pool", r"\bpool\b|too many connections|connections? (?:exhausted|limit)|no (?:free|available) connection"),
    ("memory", r"\boom\b|out of memory|memory|heap|gc overhead|killed|\brss\b"),
    ("tls_certificate", r"tls|ssl|certificate|x509|handshake|\bcert\b"),
    ("rate_limit", r"rate.?limit|throttl|\b429\b|quota|too many requests"),
    ("deadlock", r"deadlock|lock wait|lock timeout"),
    ("disk", r"disk|no space|enospc|volume full|inode"),
    ("dependency_down", r"refused|unreachable|no route|\bdns\b|unavailable|\b503\b|connection reset|econn"),
    ("slow_dependency", r"slow|took <num>|latency|timeout|timed out|deadline"),
    ("crash_on_release", r"exception|panic|nullpointer|null pointer|segfault|traceback|stack ?trace|undefined|\bnil\b"),
)


def classify_mechanism(text: str, change: dict | None = None) -> str:
    """Mechanism of a fault from its signature / kind, and the change that preceded it."""
    lowered = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text or "").lower()
    for mechanism, pattern in MECHANISM_PATTERNS:
        if re.search(pattern, lowered):
            if mechanism == "crash_on_release" and change and change.get("kind") in {"config", "feature_flag"}:
                return "bad_config"
            return mechanism
    if change is not None:
        return "bad_config" if change.get("kind") in {"config", "feature_flag"} else "crash_on_release"
    return "unknown"


@dataclass(frozen=True)
class Playbook:
    title: str
    steps: tuple[str, ...]
    rollback: str
    owner: str
    eta_minutes: int
    touches_prod: bool


CATALOGUE: dict[str, tuple[Playbook, ...]] = {
    "connection_pool": (
        Playbook("Raise {service}'s connection-pool limit by a bounded step",
                 ("Check the database's max_connections headroom for {service}'s pool",
                  "Raise the pool maximum by at most 50% through config (no redeploy)",
                  "Watch pool wait time and error rate for 10 minutes"),
                 "Set the pool maximum back to its previous value", "service owner of {service}", 15, True),
        Playbook("Shed non-critical traffic to {service}",
                 ("Enable load shedding / lower the concurrency limit for non-critical routes to {service}",),
                 "Disable the shedding rule", "SRE on-call", 10, True),
    ),
    "memory": (
        Playbook("Rolling restart of {service} with a raised memory limit",
                 ("Raise the memory limit of {service} by 25% for the incident",
                  "Restart instances one at a time, waiting for readiness",
                  "Capture a heap profile from one instance before its restart"),
                 "Restore the previous memory limit", "service owner of {service}", 20, True),
        Playbook("Scale {service} out to spread memory pressure",
                 ("Add 50% more replicas of {service}",), "Scale back to the previous replica count", "SRE on-call", 10, True),
    ),
    "tls_certificate": (
        Playbook("Renew or roll back the TLS certificate used by {service}",
                 ("Check the certificate chain and expiry on {service}'s endpoints",
                  "Deploy a valid certificate (or re-point to the previous one)"),
                 "Re-point to the certificate in use before the change", "security / service owner of {service}", 30, True),
    ),
    "rate_limit": (
        Playbook("Relax the rate limit protecting {service}",
                 ("Raise the limit that is rejecting requests by a bounded step, or revert its last change",),
                 "Restore the previous limit", "service owner of {service}", 10, True),
    ),
    "deadlock": (
        Playbook("Kill blocking sessions and serialise the contended write path on {service}",
                 ("List the blocking transactions", "Terminate the blockers", "Lower the worker concurrency of the contended job"),
                 "Restore the previous concurrency", "DBA / service owner of {service}", 20, True),
    ),
    "disk": (
        Playbook("Free disk space on {service}",
                 ("Rotate and compress logs", "Expand the volume by a bounded step"),
                 "Nothing to undo for rotation; shrink the volume later if needed", "SRE on-call", 20, True),
    ),
    "dependency_down": (
        Playbook("Restore {service} and fail callers over or fast",
                 ("Check {service}'s instances and health checks; restart unhealthy ones",
                  "Open callers' circuit breakers to {service} so they fail fast instead of queueing"),
                 "Close the circuit breakers once {service} is healthy", "service owner of {service}", 15, True),
    ),
    "slow_dependency": (
        Playbook("Protect callers from slow {service}",
                 ("Lower callers' timeouts to {service} and cap retries (retry budget)",
                  "Serve cached / degraded responses where available"),
                 "Restore the previous timeout and retry settings", "service owner of callers", 15, True),
        Playbook("Find and stop the slow work on {service}",
                 ("List the slowest queries / endpoints on {service} in the window",
                  "Cancel or throttle the offending batch job or query"),
                 "Re-enable the throttled job", "service owner of {service}", 30, True),
    ),
    "crash_on_release": (
        Playbook("Roll back {service} to the previous release",
                 ("Roll back the most recent deploy of {service}", "Verify its error rate returns to baseline"),
                 "Roll forward to the rolled-back release once fixed", "service owner of {service}", 10, True),
    ),
    "bad_config": (
        Playbook("Revert the recent configuration / feature-flag change on {service}",
                 ("Revert the change to its previous value", "Verify the error rate returns to baseline"),
                 "Re-apply the change", "service owner of {service}", 5, True),
    ),
    "unknown": (
        Playbook("Scale {service} out and shed load while investigating",
                 ("Add replicas of {service}", "Enable load shedding for non-critical routes"),
                 "Scale back and disable shedding", "SRE on-call", 15, True),
    ),
}

# Always offered first: safe, read-only, nothing in production changes.
CONTAINMENT = Playbook(
    "Freeze deploys to {service} and page its owner",
    ("Freeze the deploy pipeline for {service}", "Page the owning team with this incident's evidence"),
    "Lift the deploy freeze", "incident commander", 5, False,
)


def playbooks_for(mechanism: str, change: dict | None) -> list[Playbook]:
    books = [CONTAINMENT]
    if change is not None and mechanism not in {"crash_on_release", "bad_config"}:
        # A change right before the failure is the cheapest thing to undo, whatever the mechanism.
        books += list(CATALOGUE["bad_config" if change.get("kind") in {"config", "feature_flag"} else "crash_on_release"])
    books += list(CATALOGUE.get(mechanism, CATALOGUE["unknown"]))
    return books


# Steps that change a running system, whatever their proposer (a model, an edited plan) said:
# the approver must see them as production changes. Erring towards "touches prod" is the safe way.
PROD_CHANGE = re.compile(
    r"\b(?:restart\w*|reboot\w*|roll(?:ing|ed|s)?[ -]?back|rollback|redeploy\w*|deploy(?!\s+(?:pipeline|freeze))\w*|"
    r"scal(?:e|ed|es|ing)\s+(?:out|in|up|down|back|to)|kill\w*|terminat\w*|delet\w*|drop\w*|truncat\w*|purg\w*|"
    r"flush\w*|fail\s*over|failover|drain\w*|cordon\w*|evict\w*|rotat\w*|rais\w*|lower\w*|revert\w*|disabl\w*|"
    r"enabl\w*|apply|applied|kubectl|helm|terraform|shut\s*down|shutdown|stop(?:ped|ping|s)?|re-?point\w*|"
    r"(?:add|remov)\w*\s+(?:\S+\s+){0,3}replicas?|expand\w*|shrink\w*|resiz\w*|migrat\w*|cancel\w*|throttl\w*|open\w*\s+\w*\s*circuit|rm\s+-)\b",
    re.IGNORECASE,
)


def prod_change_in(steps: list[str] | tuple[str, ...]) -> str | None:
    """'step 2 says "restart"' when a step changes production, else None."""
    for number, step in enumerate(steps, 1):
        found = PROD_CHANGE.search(step)
        if found:
            return f'step {number} says "{found.group(0)}"'
    return None
