"""An incident's status, read from its latest checkpoint (so every server worker agrees)."""

from collections.abc import Callable
from typing import Any, Literal

from langgraph.types import StateSnapshot
from pydantic import BaseModel

Status = Literal["queued", "running", "waiting_for_approval", "done", "failed"]
FINISHED: frozenset[str] = frozenset({"waiting_for_approval", "done", "failed"})


def _dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_dump(v) for v in value]
    return value


def status_of(snapshot: StateSnapshot) -> tuple[Status, str | None]:
    """(status, error). A task error wins, then a pending interrupt, then unfinished work.

    `next` is also empty between a step's saved writes and the following checkpoint (the first
    one's `__start__` task included): only a thread with no task left has finished."""
    for task in snapshot.tasks:
        if task.error:
            return "failed", f"{task.name}: {task.error}"
    if any(task.interrupts for task in snapshot.tasks):
        return "waiting_for_approval", None
    if not snapshot.values:
        return "queued", None
    if snapshot.next or snapshot.tasks:
        return "running", None
    return "done", None


def pending_interrupt(snapshot: StateSnapshot) -> tuple[str, Any] | None:
    """(interrupt id, the question asked) of the approval the thread waits for, if any."""
    for task in snapshot.tasks:
        for pending in task.interrupts:
            return pending.id, pending.value
    return None


def describe_incident(thread_id: str, snapshot: StateSnapshot, detail: bool,
                      public: Callable[[str], str] = str) -> dict[str, Any]:
    """The JSON the API and the page show. `detail` adds evidence, verdicts and the plan;
    `public` rewrites an error message for clients (without the server's own paths)."""
    status, error = status_of(snapshot)
    error = public(error) if error else None
    values = snapshot.values or {}
    detection = values.get("detection")
    hypotheses = _dump(values.get("hypotheses", []))
    view: dict[str, Any] = {
        "thread_id": thread_id,
        "status": status,
        "current_node": snapshot.next[0] if snapshot.next else None,
        "error": error,
        "incident_detected": detection.incident_detected if detection else None,
        "window": _dump(detection.window) if detection and detection.window else None,
        "investigated_rank": detection.investigated_rank if detection else None,
        "windows": _dump(detection.windows) if detection else [],
        "hypotheses": hypotheses,
        "artifacts": sorted(values.get("artifacts", {})),
        "updated_at": snapshot.created_at,
    }
    if not detail:
        return view
    cited = {eid for h in hypotheses for eid in h.get("evidence_ids", [])}
    cited |= {eid for v in values.get("critic_transcript", []) for eid in v.evidence_ids}
    question = pending_interrupt(snapshot)
    view.update(
        evidence=[_dump(e) for e in values.get("evidence", []) if e.id in cited],
        critic_verdicts=_dump(values.get("critic_transcript", [])),
        mitigations=_dump(values.get("mitigations", [])),
        approval=_dump(values.get("approval")),
        approval_request=question[1] if question else None,
        node_runs=_dump(values.get("node_runs", [])),
    )
    return view
