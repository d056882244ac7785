"""detect: the incident window across all metrics, or "no incident"."""

from langchain_core.runnables import RunnableConfig

from graph.evidence import make_evidence, to_jsonable
from graph.state import Detection, IncidentState, IncidentWindow
from graph.timing import timed
from tools.detection import METRICS_SQL, DetectorSettings, detect_window, metrics_frame
from tools.sql_sandbox import connect_readonly
from tools.times import iso_utc


@timed("detect")
def detect(state: IncidentState, config: RunnableConfig) -> dict:
    with connect_readonly(state["db_path"]) as con:
        metrics = metrics_frame(con)
    settings = DetectorSettings()
    found = detect_window(metrics, settings)
    window = IncidentWindow(start=iso_utc(found.start), end=iso_utc(found.end)) if found.incident_detected else None
    signals = [to_jsonable(vars(s)) for s in found.signals]
    if window:
        described = ", ".join(f"{s['metric']} peak {s['peak']:.4g} vs baseline {s['baseline']:.4g}" for s in signals[:3])
        summary = f"Incident window {iso_utc(window.start)} to {iso_utc(window.end)} ({window.minutes:.0f} min): {described}."
    else:
        blips = sum(1 for c in found.candidates if c["is_blip"])
        summary = f"No incident: no metric deviation lasted {settings.min_minutes:.0f} min or more ({blips} short blip(s) ignored)."
    args = {"metrics": list(metrics.columns), "rows": len(metrics), "settings": vars(settings)}
    item = make_evidence(
        "detect_window",
        args,
        method=(
            f"{METRICS_SQL}; per metric: residual against a rolling-median baseline re-fitted without the "
            f"anomalous stretch, scaled by MAD; window grown from |z| >= {settings.core_z} out to |z| >= "
            f"{settings.edge_z}; stretches under {settings.min_minutes} min are blips"
        ),
        summary=summary,
        data={"window": window.model_dump(mode="json") if window else None, "signals": signals, "candidates": found.candidates},
    )
    detection = Detection(incident_detected=found.incident_detected, window=window, signals=signals, evidence_id=item.id)
    return {"detection": detection, "evidence": [item]}


def route_after_detect(state: IncidentState) -> str:
    return "investigate" if state["detection"].incident_detected else "write"
