"""The postmortem: assembled from the state, written as JSON, Markdown and a PNG timeline.

Files are written to temporary names and renamed into place only when all three are ready,
so a failure never leaves a partial postmortem behind.
"""

import json
import os
from pathlib import Path

from langchain_core.messages import AIMessage

from graph.evidence import EVIDENCE_ID
from graph.plans import leading_hypothesis
from graph.state import (
    InputsRecord,
    ModelRecord,
    Postmortem,
    PostmortemMetadata,
    RankedHypothesis,
    RootCause,
    Statement,
    TimelineEvent,
)
from tools.detection import metrics_frame
from tools.sql_sandbox import connect_readonly
from tools.times import ISO_SECONDS, iso_utc, naive_utc, utc_now_iso

ARTIFACTS = ("postmortem.json", "postmortem.md", "timeline.png")


def build_postmortem(state: dict, thread_id: str, model: str) -> Postmortem:
    detection = state["detection"]
    hypotheses = state.get("hypotheses", [])
    lead = leading_hypothesis(state)
    transcript = state.get("critic_transcript", [])
    if lead is not None:
        root = RootCause(service=lead.service, kind=lead.kind, signature=lead.signature, confidence=lead.confidence, summary=lead.summary)
    elif hypotheses:
        root = RootCause(service=None, kind=None, signature=None, confidence=0.0,
                         summary="Root cause unconfirmed: every hypothesis cites evidence that does not exist or does not show its service.")
    elif detection.incident_detected:
        root = RootCause(service=None, kind=None, signature=None, confidence=0.0,
                         summary="An incident window was found but no service's errors rose above baseline: root cause unconfirmed.")
    else:
        root = RootCause(service=None, kind=None, signature=None, confidence=0.0, summary="No incident detected in the supplied data.")
    window = detection.window
    title = (
        f"Incident {iso_utc(window.start)} to {iso_utc(window.end)}: {root.service or 'unknown service'} ({root.kind or 'unknown kind'})"
        if window else "No incident detected"
    )
    return Postmortem(
        title=title,
        incident_detected=detection.incident_detected,
        incident_window=window,
        incident_windows=detection.windows,
        investigated_rank=detection.investigated_rank,
        root_cause=root,
        hypotheses=[
            RankedHypothesis(**h.model_dump(), rank=rank, critic_verdicts=[v for v in transcript if v.hypothesis_id == h.id])
            for rank, h in enumerate(hypotheses, start=1)
        ],
        critic_transcript=transcript,
        mitigations=state.get("mitigations", []),
        approval=state.get("approval"),
        timeline=build_timeline(state),
        evidence=state.get("evidence", []),
        investigation_summary=investigation_summary(state),
        metadata=PostmortemMetadata(
            thread_id=thread_id,
            generated_at=utc_now_iso(),
            model=model,
            inputs=InputsRecord(**state.get("inputs", {})),
            data=state.get("load_summary"),
            node_runs=state.get("node_runs", []),
            llm=model_record(state, model),
        ),
    )


def model_record(state: dict, model: str) -> ModelRecord:
    """What the model cost and where it was not trusted: tokens and calls per run, every
    fallback to the offline analyst, every rejected reply (kept verbatim, cut to a few kB)."""
    runs = state.get("node_runs", [])
    return ModelRecord(
        **(state.get("model_settings") or {"model": model}),
        tokens_in=sum(r.tokens_in for r in runs),
        tokens_out=sum(r.tokens_out for r in runs),
        model_calls=sum(r.model_calls for r in runs),
        fallbacks=state.get("model_fallbacks", []),
        rejected_outputs=state.get("model_rejections", []),
    )


def investigation_summary(state: dict) -> list[Statement]:
    """The investigator's final answer line by line; a line is confirmed only when it cites
    evidence and every id it cites exists."""
    final = next(
        (m for m in reversed(state.get("messages", [])) if isinstance(m, AIMessage) and not m.tool_calls and m.text.strip()),
        None,
    )
    if final is None:
        return []
    known = {e.id for e in state.get("evidence", [])}
    statements = []
    for line in (ln.strip() for ln in final.text.splitlines()):
        if not line:
            continue
        cited = list(dict.fromkeys(EVIDENCE_ID.findall(line)))
        statements.append(Statement(text=line, evidence_ids=cited, confirmed=bool(cited) and set(cited) <= known))
    return statements


def build_timeline(state: dict) -> list[TimelineEvent]:
    events: list[dict] = []
    for item in state.get("evidence", []):
        if item.tool == "change_events":
            events += [
                {"ts": c["ts"], "event": f"{c['kind']} on {c['service']}: {c['description']}", "evidence_id": item.id}
                for c in item.data.get("changes", [])
            ]
        elif item.tool == "service_error_onsets":
            events += [
                {"ts": o["onset"], "event": f"{o['service']} error rate rises above its baseline", "evidence_id": item.id}
                for o in item.data.get("onsets", [])
            ]
    detection = state["detection"]
    if detection.window:
        events.append({"ts": detection.window.start, "event": "incident window starts (metrics)", "evidence_id": detection.evidence_id})
        events.append({"ts": detection.window.end, "event": "metrics back to baseline", "evidence_id": detection.evidence_id})
    approval = state.get("approval")
    if approval:
        events.append({"ts": approval.at, "event": f"mitigation plan {approval.action} by {approval.by}", "evidence_id": None})
    return sorted((TimelineEvent(**{**e, "ts": iso_utc(e["ts"])}) for e in events), key=lambda e: e.ts)


def render_markdown(pm: Postmortem) -> str:
    lines = [f"# {pm.title}", ""]
    if pm.incident_window:
        lines += [f"- **Window (UTC):** {iso_utc(pm.incident_window.start)} to {iso_utc(pm.incident_window.end)} ({pm.incident_window.minutes:.0f} min)"]
    others = [w for w in pm.incident_windows if w.rank != pm.investigated_rank]
    if others:
        which = f"#{pm.investigated_rank} of {len(pm.incident_windows)} by impact" if pm.investigated_rank else "the range asked for"
        listed = "; ".join(f"#{w.rank} {iso_utc(w.start)} to {iso_utc(w.end)} ({w.minutes:.0f} min, {', '.join(w.signals[:3])})" for w in others[:5])
        more = f"; and {len(others) - 5} more in postmortem.json" if len(others) > 5 else ""
        lines += [f"- **Other incident windows** (this one is {which}; investigate another with `--window N`): {listed}{more}"]
    offsets = pm.metadata.data.time_offsets if pm.metadata.data else {}
    if offsets:  # the reader compares with local times they have seen in the logs
        written = "; ".join(f"{name} in {', '.join(values)}" for name, values in offsets.items())
        lines += [f"- **Time zone:** all times are UTC; the sources were written with other offsets ({written})"]
    lines += [
        f"- **Incident detected:** {'yes' if pm.incident_detected else 'no'}",
        f"- **Root cause:** {pm.root_cause.service or 'n/a'} / {pm.root_cause.kind or 'n/a'} (confidence {pm.root_cause.confidence:.2f})",
        f"- **Signature:** `{pm.root_cause.signature or 'n/a'}`",
        f"- **Thread:** {pm.metadata.thread_id} · model: {pm.metadata.model} · schema {pm.schema_version}",
        "",
        "## Summary",
        "",
        pm.root_cause.summary,
        "",
        "![timeline](timeline.png)",
        "",
    ]
    if pm.hypotheses:
        lines += ["## Hypotheses (after the critic's debate)", "", "| rank | service | kind | confidence | status | evidence |", "|---|---|---|---|---|---|"]
        lines += [
            f"| {h.rank} | {h.service} | {h.kind} | {h.confidence:.2f} | {h.status}{' **(unconfirmed)**' if h.unconfirmed else ''} | {', '.join(h.evidence_ids)} |"
            for h in pm.hypotheses
        ]
        lines += [""]
    if pm.investigation_summary:
        lines += ["## Investigator's conclusion", ""]
        lines += [f"- {'' if s.confirmed else '**[unconfirmed]** '}{s.text}" for s in pm.investigation_summary]
        lines += [""]
    if pm.critic_transcript:
        lines += ["## Critic transcript", ""]
        lines += [
            f"- round {v.round}, {v.hypothesis_id}: *{v.challenge}* {v.finding} → **{v.verdict}** ({v.confidence_delta:+.2f}; {', '.join(v.evidence_ids) or 'no evidence'})"
            for v in pm.critic_transcript
        ]
        lines += [""]
    if pm.mitigations:
        lines += ["## Mitigations", ""]
        for m in pm.mitigations:
            prod = "touches production" if m.touches_prod else "no production change"
            lines += [f"### {m.id}. {m.title} — {m.status}", "", f"Owner: {m.owner} · ETA {m.eta_minutes} min · {prod}", ""]
            lines += [f"{i}. {step}" for i, step in enumerate(m.steps, start=1)]
            lines += ["", f"Rollback: {m.rollback}", ""]
    if pm.approval:
        a = pm.approval
        lines += ["## Approval", "", f"{a.action} by {a.by} at {iso_utc(a.at)}" + (f": {a.note}" if a.note else ""), ""]
    if pm.timeline:
        lines += ["## Timeline (UTC)", "", "| time | event | evidence |", "|---|---|---|"]
        lines += [f"| {e.ts.strftime(ISO_SECONDS)} | {e.event} | {e.evidence_id or ''} |" for e in pm.timeline]
        lines += [""]
    llm = pm.metadata.llm
    if llm.model_calls or llm.fallbacks:
        lines += [
            "## Model",
            "",
            f"{llm.model} at {llm.base_url}: {llm.model_calls} call(s), {llm.tokens_in} tokens in, "
            f"{llm.tokens_out} out (budget {llm.token_budget}); redaction {'on' if llm.redact else 'off'}; "
            f"{len(llm.rejected_outputs)} rejected repl(ies).",
            "",
        ]
        lines += [f"- fallback to the offline analyst in **{f.node}** after {f.attempts} attempt(s): {f.reason}" for f in llm.fallbacks]
        lines += [""]
    lines += ["## Evidence", ""]
    for e in pm.evidence:
        lines += [f"- **{e.id}** ({e.tool}): {e.summary}"]
    return "\n".join(lines) + "\n"


# Panels of the timeline at most: a per-pod export has hundreds of metrics, and one panel each
# made a chart hundreds of inches tall that took minutes to draw and could not be read.
MAX_PANELS = 12


def timeline_columns(columns: list[str], pm: Postmortem) -> list[str]:
    """The metrics the chart shows: all of them when few, else those that left their baseline
    in the investigated window (strongest first), topped up in table order."""
    if len(columns) <= MAX_PANELS:
        return columns
    investigated = [w for w in pm.incident_windows if w.rank == pm.investigated_rank] or pm.incident_windows[:1]
    signals = [s for w in investigated for s in w.signals if s in columns]
    return list(dict.fromkeys(signals + columns))[:MAX_PANELS]


def render_timeline(db_path: str, pm: Postmortem, path: Path) -> None:
    # Imported here, not at module level: matplotlib is about 0.4 s of every CLI start-up and
    # only this function needs it. A bare Figure renders with the Agg canvas (headless) and
    # skips pyplot, its backend selection and its global figure registry.
    from matplotlib.figure import Figure

    with connect_readonly(db_path) as con:
        metrics = metrics_frame(con)
        changes = con.execute("SELECT ts, service, kind FROM events ORDER BY ts").df()
    every = [c for c in metrics.columns if c != "ts"]
    columns = timeline_columns(every, pm)
    fig = Figure(figsize=(12, 1.9 * len(columns) + 0.8))
    axes = fig.subplots(len(columns), 1, sharex=True, squeeze=False)
    window = pm.incident_window
    for ax, col in zip(axes[:, 0], columns):
        ax.plot(metrics["ts"], metrics[col], lw=0.8, color="#1f4e79")
        ax.set_ylabel(col, fontsize=9)
        ax.grid(alpha=0.3)
        for other in pm.incident_windows:  # the windows not investigated, lighter
            if not window or (other.start, other.end) != (window.start, window.end):
                ax.axvspan(naive_utc(other.start), naive_utc(other.end), color="#ff7f0e", alpha=0.12)
        if window:
            ax.axvspan(naive_utc(window.start), naive_utc(window.end), color="#d62728", alpha=0.18)
        for ts in changes["ts"]:
            ax.axvline(ts, color="#2ca02c", lw=0.9, ls="--", alpha=0.8)
    top = axes[0, 0]
    for row in changes.itertuples(index=False):
        top.annotate(f"{row.kind}: {row.service}", (row.ts, 1.0), xycoords=("data", "axes fraction"), rotation=30, fontsize=7, color="#2ca02c", va="bottom")
    label = f"investigated window in red · root cause: {pm.root_cause.service or 'none'}" if window else "no incident detected"
    if len(pm.incident_windows) > 1:
        label += " · other incident windows in orange"
    if len(columns) < len(every):
        label += f" · {len(columns)} of {len(every)} metrics shown (those that left their baseline first)"
    fig.suptitle(f"{pm.title}\n{label}; dashed lines = change events", fontsize=10)
    fig.tight_layout()
    # zlib level 1, not the default 6: the same pixels, saved in 0.31 instead of 0.42 CPU-s on
    # the benchmark machine, in a file about a fifth larger.
    fig.savefig(path, dpi=110, format="png", pil_kwargs={"compress_level": 1})


def write_postmortem(pm: Postmortem, db_path: str, out_dir: str | Path) -> dict[str, str]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staged = {name: out / f".{name}.tmp" for name in ARTIFACTS}
    try:
        staged["postmortem.json"].write_text(pm.model_dump_json(indent=2) + "\n", encoding="utf-8")
        staged["postmortem.md"].write_text(render_markdown(pm), encoding="utf-8")
        render_timeline(db_path, pm, staged["timeline.png"])
        final = {}
        for name, tmp in staged.items():
            os.replace(tmp, out / name)
            final[name] = str(out / name)
        return final
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)


def postmortem_json_schema() -> str:
    return json.dumps(Postmortem.model_json_schema(), indent=2, sort_keys=True) + "\n"
