"""The naive baseline the product is compared with (re-implemented from the description of the
seed notebook, ``shared/seeds/001_*.txt``; no code copied).

* Window: a rolling z-score on ``p95_ms``: each point is compared with the mean and the
  (population) standard deviation of the previous ``window`` points (75), and flagged when
  ``|z| >= threshold`` (3.2); a point needs at least ``max(10, window // 4)`` points of history.
  Flagged points form contiguous groups; the longest group spanning >= 10 minutes wins (ties:
  more points), else the longest group of any span. No flagged point = "no incident".
* Diagnosis: among the WARN/ERROR log lines inside that window, the service with the most lines
  is the root (the services ranked by that count are the hypotheses, top 3), the most frequent
  ``error_kind`` is the kind, and - for logs without ``error_kind`` - the most frequent masked
  message is the signature.

Two choices the notebook leaves open, made explicitly here:

* the notebook reports the last flagged minute as the window end; the eval windows are
  half-open ``[start, end)``, so the baseline's end is the last flagged minute + one step;
* "the top message" is counted after masking numbers and ids (``tools.templates.mask_message``),
  otherwise nearly every raw line is unique and the "top" one is an arbitrary single line.

The result is a postmortem-shaped dict, scored by the same ``evals.scoring.score_case``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tools.templates import mask_message
from tools.times import iso_utc

WINDOW = 75
THRESHOLD = 3.2
MIN_SPAN_MINUTES = 10
METRIC = "p95_ms"
EVIDENCE_IDS = ("baseline-zscore-p95", "baseline-log-counts")


def zscore_flags(values, window: int = WINDOW, threshold: float = THRESHOLD) -> np.ndarray:
    """Flag points whose |z| against the previous `window` points is >= `threshold` (vectorised)."""
    x = pd.Series(np.asarray(values, dtype=float))
    history = x.shift(1).rolling(window, min_periods=max(10, window // 4))
    mean = history.mean()
    std = history.std(ddof=0) + 1e-9
    z = ((x - mean) / std).abs()
    return (z >= threshold).fillna(False).to_numpy(dtype=bool)


def flagged_groups(flags: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous runs of True as (first index, last index), in order."""
    padded = np.concatenate(([0], np.asarray(flags, dtype=np.int8), [0]))
    edges = np.diff(padded)
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) - 1
    return list(zip(starts.tolist(), ends.tolist()))


def detect_window(metrics: pd.DataFrame, metric: str = METRIC, window: int = WINDOW, threshold: float = THRESHOLD,
                  min_span_minutes: float = MIN_SPAN_MINUTES) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """The baseline's incident window [start, end) from a metrics frame (ts + `metric`), or None."""
    if metric not in metrics.columns:
        raise ValueError(f"the baseline needs a '{metric}' metric column")
    m = metrics.sort_values("ts").reset_index(drop=True)
    ts = pd.to_datetime(m["ts"])
    groups = flagged_groups(zscore_flags(m[metric].to_numpy(), window, threshold))
    if not groups:
        return None
    spans = [((ts[b] - ts[a]).total_seconds() / 60.0, b - a + 1, a, b) for a, b in groups]
    long_enough = [s for s in spans if s[0] >= min_span_minutes]
    if long_enough:
        _, _, a, b = max(long_enough, key=lambda s: (s[0], s[1]))  # first of equals wins
    else:
        _, _, a, b = max(spans, key=lambda s: s[1])
    step = ts.diff().median() if len(ts) > 1 else pd.Timedelta(minutes=1)
    return ts[a], ts[b] + (step if pd.notna(step) else pd.Timedelta(minutes=1))


def diagnose(logs: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, has_error_kind: bool) -> dict:
    """Top services, error kind and masked message among WARN/ERROR lines in [start, end)."""
    ts = pd.to_datetime(logs["ts"])
    sel = logs[(ts >= start) & (ts < end) & logs["level"].isin(["WARN", "ERROR"])]
    services = sel["service"].dropna().value_counts()
    ranked = services.index.tolist()
    kind = signature = None
    if has_error_kind and "error_kind" in sel.columns:
        kinds = sel["error_kind"].replace("", np.nan).dropna().value_counts()
        kind = kinds.index[0] if len(kinds) else None
    if len(sel):
        masked = sel["message"].dropna().astype(str).map(mask_message).value_counts()
        signature = masked.index[0] if len(masked) else None
    return {"ranked_services": ranked, "kind": kind, "signature": signature, "lines": int(len(sel))}


def baseline_postmortem(metrics: pd.DataFrame, logs: pd.DataFrame, has_error_kind: bool) -> dict:
    """A postmortem-shaped dict (the fields `score_case` reads) for the baseline's diagnosis."""
    window = detect_window(metrics)
    evidence = [{"id": EVIDENCE_IDS[0]}, {"id": EVIDENCE_IDS[1]}]
    if window is None:
        return {
            "incident_detected": False, "incident_window": None, "hypotheses": [], "evidence": evidence,
            "root_cause": {"service": None, "kind": None, "signature": None},
        }
    start, end = window
    d = diagnose(logs, start, end, has_error_kind)
    hypotheses = [
        {"service": s, "kind": d["kind"], "signature": d["signature"], "status": "proposed", "evidence_ids": list(EVIDENCE_IDS)}
        for s in d["ranked_services"][:3]
    ]
    root = d["ranked_services"][0] if d["ranked_services"] else None
    return {
        "incident_detected": True,
        "incident_window": {"start": iso_utc(start), "end": iso_utc(end)},
        "hypotheses": hypotheses,
        "evidence": evidence,
        "root_cause": {"service": root, "kind": d["kind"], "signature": d["signature"]},
    }


