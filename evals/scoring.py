"""Scoring a postmortem against the truth of a labelled case (minute bins, UTC)."""

import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from langgraph.checkpoint.memory import InMemorySaver

from graph.configuration import OFFLINE_MODEL, runnable_config
from graph.graph import build_graph
from graph.report import ARTIFACTS
from tools.templates import mask_message, template_regex


@dataclass
class CaseScore:
    case: str
    fault: str
    detected: bool
    expected_incident: bool
    iou: float | None
    start_error_min: float | None
    end_error_min: float | None
    root_at_1: bool | None
    root_at_3: bool | None
    kind_or_signature: bool | None
    grounded: bool
    seconds: float
    error: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def minute_iou(a_start: str, a_end: str, b_start: str, b_end: str) -> float:
    """Intersection over union of two [start, end) windows, counted in whole minutes."""
    a = pd.date_range(pd.Timestamp(a_start).floor("min"), pd.Timestamp(a_end).ceil("min"), freq="min", inclusive="left")
    b = pd.date_range(pd.Timestamp(b_start).floor("min"), pd.Timestamp(b_end).ceil("min"), freq="min", inclusive="left")
    union = len(a.union(b))
    return len(a.intersection(b)) / union if union else 0.0


def signature_matches(signature: str | None, messages: list[str]) -> bool:
    """Does the reported template stand for one of the root's fault messages (after masking)?"""
    if not signature:
        return False
    pattern = template_regex(signature)
    return any(pattern.match(mask_message(m)) for m in messages)


def score_case(case: str, truth: dict, postmortem: dict, seconds: float) -> CaseScore:
    expected = truth.get("fault", "none") != "none" and truth.get("start") is not None
    detected = bool(postmortem["incident_detected"])
    window = postmortem.get("incident_window")
    iou = start_err = end_err = None
    if expected:
        if window:
            iou = minute_iou(truth["start"], truth["end"], window["start"], window["end"])
            start_err = abs((pd.Timestamp(window["start"]) - pd.Timestamp(truth["start"])).total_seconds()) / 60
            end_err = abs((pd.Timestamp(window["end"]) - pd.Timestamp(truth["end"])).total_seconds()) / 60
        else:
            iou = 0.0
    ranked = [h["service"] for h in postmortem.get("hypotheses", []) if h.get("status") != "overturned"]
    ranked += [h["service"] for h in postmortem.get("hypotheses", []) if h.get("status") == "overturned"]
    root = truth.get("root_service")
    at1 = at3 = kind_ok = None
    if expected:
        at1 = bool(ranked) and ranked[0] == root
        at3 = root in ranked[:3]
        rc = postmortem["root_cause"]
        if truth.get("has_error_kind"):
            kind_ok = at1 and rc.get("kind") == truth.get("root_kind")
        else:
            messages = truth.get("root_messages") or [truth.get("root_message_example") or ""]
            kind_ok = at1 and signature_matches(rc.get("signature"), messages)
    evidence_ids = {e["id"] for e in postmortem.get("evidence", [])}
    grounded = all(h["evidence_ids"] and set(h["evidence_ids"]) <= evidence_ids for h in postmortem.get("hypotheses", []))
    return CaseScore(case, truth.get("fault", "none"), detected, expected, iou, start_err, end_err, at1, at3, kind_ok, grounded, seconds)


def investigate_offline(metrics: str | Path, logs: str | Path, events: str | Path | None, out_dir: str | Path, state_dir: str | Path) -> tuple[dict, float]:
    """Run the whole graph in-process, auto-approving; returns the postmortem and the wall time.

    Always the embedded offline analyst (an OPENAI_API_KEY in the environment must not turn an
    eval run into a network-bound, non-deterministic one)."""
    import json

    app = build_graph(InMemorySaver())
    config = runnable_config(f"eval-{uuid.uuid4().hex[:8]}", {"auto_approve": True, "state_dir": str(state_dir), "model": OFFLINE_MODEL})
    inputs = {"metrics": str(metrics), "logs": str(logs)}
    if events and Path(events).exists():
        inputs["events"] = str(events)
    started = time.perf_counter()
    app.invoke({"inputs": inputs, "out_dir": str(out_dir)}, config)
    seconds = time.perf_counter() - started
    return json.loads((Path(out_dir) / ARTIFACTS[0]).read_text()), seconds
