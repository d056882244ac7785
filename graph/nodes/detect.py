"""detect: every incident window across all metrics, the one to investigate, or "no incident"."""

from langchain_core.runnables import RunnableConfig

from graph.configuration import Configuration
from graph.evidence import make_evidence, to_jsonable
from graph.state import Detection, IncidentState, IncidentWindow, WindowSummary
from graph.timing import timed
from tools.detection import METRICS_SQL, DetectorSettings, FoundWindow, detect_windows, metrics_frame, parse_window_choice
from tools.sql_sandbox import connect_readonly
from tools.times import iso_utc

# Set-aside stretches listed in the evidence: enough to show what was set aside, not a dump of noise.
SET_ASIDE_SHOWN = 20


def summarise(rank: int, window: FoundWindow) -> WindowSummary:
    return WindowSummary(rank=rank, start=window.start.tz_localize("UTC"), end=window.end.tz_localize("UTC"), minutes=round(window.minutes, 1),
                         impact=round(window.impact, 1), peak_z=round(window.peak_z, 1), signals=[s.metric for s in window.signals])


@timed("detect")
def detect(state: IncidentState, config: RunnableConfig) -> dict:
    choice = Configuration.from_runnable_config(config).window
    parsed = parse_window_choice(choice) if choice else 1
    with connect_readonly(state["db_path"]) as con:
        metrics = metrics_frame(con)
    settings = DetectorSettings()
    found = detect_windows(metrics, settings, requested=parsed if isinstance(parsed, tuple) else None)
    windows = [summarise(rank, w) for rank, w in enumerate(found.windows, start=1)]
    if isinstance(parsed, tuple):
        if found.requested is None:
            raise ValueError(f"window {choice}: the metrics are too short to describe it ({'; '.join(found.notes.values())})")
        chosen, rank = found.requested, None
    elif parsed > len(found.windows) and found.windows:
        listed = ", ".join(f"#{w.rank} {iso_utc(w.start)}..{iso_utc(w.end)}" for w in windows)
        raise ValueError(f"window {choice}: only {len(found.windows)} incident window(s) were found: {listed}")
    else:
        chosen, rank = (found.windows[parsed - 1], parsed) if found.windows else (None, None)

    window = IncidentWindow(start=chosen.start.tz_localize("UTC"), end=chosen.end.tz_localize("UTC")) if chosen else None
    signals = [to_jsonable(vars(s)) for s in chosen.signals] if chosen else []
    unjudged = "".join(f"; {metric}: {note}" for metric, note in found.notes.items())
    if window:
        described = ", ".join(f"{s['metric']} peak {s['peak']:.4g} vs baseline {s['baseline']:.4g}" for s in signals[:3]) or "no metric left its baseline"
        which = f"window #{rank} of {len(windows)}" if rank else "the window asked for"
        summary = f"Incident {which}, {iso_utc(window.start)} to {iso_utc(window.end)} ({window.minutes:.0f} min): {described}{unjudged}."
    else:
        summary = (f"No incident: no metric deviation lasted {settings.min_minutes:.0f} min ({settings.min_points} samples) or more "
                   f"that stood out from the range's own excursions ({len(found.set_aside)} set aside: "
                   f"{sum(w.is_blip for w in found.set_aside)} too short, {sum(not w.is_blip for w in found.set_aside)} routine){unjudged}.")
    args = {"metrics": list(metrics.columns), "rows": len(metrics), "settings": vars(settings), "window": choice}
    item = make_evidence(
        "detect_window",
        args,
        method=(
            f"{METRICS_SQL}; per metric: residual against a rolling-median trend plus daily/weekly profiles where the data "
            f"covers two periods, re-fitted without the anomalous stretches (at most {settings.max_mask_share:.0%} masked), "
            f"scaled by MAD floored at the data's resolution; windows grown from |z| >= {settings.core_z} out to |z| >= "
            f"{settings.edge_z}; stretches under {settings.min_minutes} min or {settings.min_points} samples are blips, and those "
            f"whose worst {settings.surprise_minutes:g} min stand less than {settings.surprise_z} standard deviations above the "
            f"rest of the range are routine; "
            f"ranked by impact (z-minutes x signals)"
        ),
        summary=summary,
        data={
            "window": window.model_dump(mode="json") if window else None,
            "investigated_rank": rank,
            "signals": signals,
            "windows": [w.model_dump(mode="json") for w in windows],
            "set_aside": [{"start": iso_utc(w.start), "minutes": round(w.minutes, 1), "peak_z": round(w.peak_z, 1),
                           "surprise": round(w.surprise, 1), "why": "too short" if w.is_blip else "routine for this range"}
                          for w in found.set_aside[:SET_ASIDE_SHOWN]],
            "set_aside_count": len(found.set_aside),
            "not_judged": found.notes,
        },
    )
    detection = Detection(incident_detected=window is not None, window=window, signals=signals, evidence_id=item.id,
                          windows=windows, investigated_rank=rank)
    return {"detection": detection, "evidence": [item]}


def route_after_detect(state: IncidentState) -> str:
    return "investigate" if state["detection"].incident_detected else "write"
