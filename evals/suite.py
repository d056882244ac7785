"""The eval suite: labelled cases -> the product and the baseline, scored side by side.

A *case* is a folder with ``metrics.csv``, ``logs.csv``, optional ``events.csv`` and
``truth.json`` = ``{fault, start, end, root_service, root_kind}`` (``fault: "none"`` and a null
window for a no-incident case). For every case the product runs offline and auto-approving
(``evals.scoring.investigate_offline``), the naive baseline (``evals.baseline``) runs on the
same data, and both postmortems are scored by ``evals.scoring.score_case``.

Used by ``pytest evals/`` (generated cases, SCORING_SEEDS, thresholds enforced) and by
``incident-graph eval CASES_DIR [--report FILE]`` (any folder of labelled cases).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from evals.baseline import baseline_postmortem
from evals.scoring import CaseScore, investigate_offline, score_case
from tools.loader import load_sources
from tools.templates import mask_message
from tools.times import naive_utc

# Honesty: two disjoint seed sets. TUNING_SEEDS are the scenarios developers look at (and may
# tune detection / analysis against: `python -m evals.suite --seeds tuning`); SCORING_SEEDS are
# what `pytest evals/` scores and what the thresholds below were measured on. Never tune on the
# scoring seeds; if they ever get looked at while tuning, pick a fresh scoring set.
TUNING_SEEDS: tuple[int, ...] = (1, 2, 3)
SCORING_SEEDS: tuple[int, ...] = (101, 102, 103, 104)

SYSTEMS = ("product", "baseline")
TRUTH_KEYS = ("fault", "start", "end", "root_service", "root_kind")
CASE_FILES = ("metrics.csv", "logs.csv", "truth.json")


@dataclass(frozen=True)
class Threshold:
    metric: str  # a key of `summarize(...)`
    op: str  # ">=" or "<="
    value: float
    what: str

    def met(self, measured: float | None) -> bool:
        if measured is None or (isinstance(measured, float) and math.isnan(measured)):
            return False
        return measured >= self.value if self.op == ">=" else measured <= self.value


# Product, overall, on SCORING_SEEDS (the runs are deterministic: seeded generator, offline
# analyst). Each is set at (or a hair below) what the product measured there (evals/results.md),
# never above it. The targets: IoU >= 0.85, AC@1 >= 0.95, kind/signature >= 0.9, zero
# false alarms; all are met (kind/signature went from 24/28 to 28/28 once a quiet root's own
# templates could no longer be crowded out of the log scan by its louder callers').
THRESHOLDS: tuple[Threshold, ...] = (
    Threshold("mean_iou", ">=", 0.99, "mean window IoU (minute bins) over incident cases"),
    Threshold("root_at_1", ">=", 1.0, "root service ranked first"),
    Threshold("root_at_3", ">=", 1.0, "root service in the top 3 hypotheses"),
    Threshold("kind_or_signature", ">=", 1.0, "root kind (or signature) right, with the root service"),
    Threshold("false_alarms", "<=", 0, "incidents reported on no-incident cases"),
    Threshold("grounded", ">=", 1.0, "cases where every hypothesis cites existing evidence ids"),
    Threshold("failed", "<=", 0, "cases that could not be run"),
)


# ------------------------------------------------------------------------------------------
# one case
# ------------------------------------------------------------------------------------------


@dataclass
class CaseResult:
    case: str
    fault: str
    truth: dict
    scores: dict[str, CaseScore]
    diagnoses: dict[str, dict] = field(default_factory=dict)  # system -> what it reported
    root_messages: int = 0  # candidate root fault messages the signature check used

    @property
    def failed(self) -> bool:
        return self.scores["product"].error is not None


def load_truth(case_dir: Path) -> dict:
    """truth.json of a case, checked: the keys the scoring needs, a sane window."""
    path = case_dir / "truth.json"
    try:
        truth = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: missing") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(truth, dict):
        raise ValueError(f"{path}: expected an object")
    missing = [k for k in TRUTH_KEYS if k not in truth]
    if missing:
        raise ValueError(f"{path}: missing key(s) {', '.join(missing)}")
    if truth["fault"] == "none":
        if truth["start"] is not None or truth["end"] is not None:
            raise ValueError(f"{path}: a 'none' case must have a null window")
        return truth
    try:
        start, end = _naive_utc(truth["start"]), _naive_utc(truth["end"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: bad start/end ({exc})") from None
    if not end > start:
        raise ValueError(f"{path}: end {truth['end']} is not after start {truth['start']}")
    if not isinstance(truth["root_service"], str) or not truth["root_service"]:
        raise ValueError(f"{path}: root_service must be a service name")
    return truth


def _naive_utc(value) -> pd.Timestamp:
    if value is None:
        raise ValueError("missing")
    return naive_utc(value)


def read_tables(case_dir: Path, work: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """metrics and logs of a case through the project's loader (same parsing as the product)."""
    events = case_dir / "events.csv"
    db = work / "eval-input.duckdb"
    load_sources(db, case_dir / "metrics.csv", case_dir / "logs.csv", events if events.exists() else None)
    con = duckdb.connect(str(db), read_only=True)
    try:
        metrics = con.execute("SELECT * FROM metrics ORDER BY ts").df()
        logs = con.execute("SELECT ts, service, level, message, error_kind FROM logs").df()
    finally:
        con.close()
    return metrics, logs


def logs_have_error_kind(logs: pd.DataFrame) -> bool:
    kinds = logs.loc[logs["level"].isin(["WARN", "ERROR"]), "error_kind"]
    return bool(kinds.fillna("").astype(str).str.len().gt(0).any())


def root_fault_messages(logs: pd.DataFrame, truth: dict) -> list[str]:
    """The root service's own fault messages, read from the case's logs.

    The generator phrases one fault several ways inside one scenario and truth.json keeps one
    example only, so the signature check takes as candidates: the root's WARN/ERROR messages
    inside the true window that name no other service (callers' upstream errors name the root;
    the root's own do not name its callers), minus any message whose masked form the root also
    logs outside the window (its chronic background noise is not the fault). One message per
    masked form.
    """
    root, start, end = truth.get("root_service"), truth.get("start"), truth.get("end")
    if not root or start is None or end is None:
        return []
    start, end = _naive_utc(start), _naive_utc(end)
    ts = pd.to_datetime(logs["ts"])
    own = (logs["service"] == root) & logs["level"].isin(["WARN", "ERROR"])
    inside = (ts >= start) & (ts < end)
    candidates = logs.loc[own & inside, "message"].dropna().astype(str)
    others = sorted({str(s) for s in logs["service"].dropna().unique()} - {root}, key=len, reverse=True)
    if others:
        # a name as a word of its own, not a piece of a host, a path or a longer name
        names = re.compile(r"(?<![\w./-])(?:" + "|".join(map(re.escape, others)) + r")(?![\w/-])")
        candidates = candidates[~candidates.str.contains(names)]
    background = set(logs.loc[own & ~inside, "message"].dropna().astype(str).map(mask_message))
    picked: dict[str, str] = {}
    for message in candidates.drop_duplicates():
        masked = mask_message(message)
        if masked not in background and masked not in picked:
            picked[masked] = message
    return list(picked.values())


def _failed_score(case: str, fault: str, truth: dict | None, error: str, seconds: float = 0.0) -> CaseScore:
    expected = bool(truth) and truth.get("fault", "none") != "none"
    return CaseScore(case, fault, False, expected, None, None, None, None, None, None, False, seconds, error=error)


def _describe_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _diagnosis(pm: dict) -> dict:
    window = pm.get("incident_window") or {}
    hypotheses = [h.get("service") for h in pm.get("hypotheses", [])]
    rc = pm.get("root_cause") or {}
    return {
        "detected": bool(pm.get("incident_detected")),
        "window": f"{window.get('start')}..{window.get('end')}" if window else None,
        "service": rc.get("service"), "kind": rc.get("kind"), "signature": rc.get("signature"),
        "ranked": hypotheses[:3],
    }


def run_case(case_dir: str | Path, work_dir: str | Path) -> CaseResult:
    """Run the product and the baseline on one case folder and score both. Never raises."""
    case_dir, work = Path(case_dir), Path(work_dir)
    name = case_dir.name
    work.mkdir(parents=True, exist_ok=True)
    truth: dict | None = None
    try:
        truth = load_truth(case_dir)
        for f in CASE_FILES:
            if not (case_dir / f).is_file():
                raise ValueError(f"{case_dir / f}: missing")
        metrics, logs = read_tables(case_dir, work)
    except Exception as exc:  # bad input: the case is failed, the suite goes on
        error = _describe_error(exc)
        fault = str((truth or {}).get("fault", "?"))
        return CaseResult(name, fault, truth or {}, {s: _failed_score(name, fault, truth, error) for s in SYSTEMS})

    fault = str(truth["fault"])
    truth = dict(truth)
    truth.setdefault("has_error_kind", logs_have_error_kind(logs))
    truth["root_messages"] = root_fault_messages(logs, truth)
    if not truth["root_messages"] and truth.get("root_message_example"):
        truth["root_messages"] = [truth["root_message_example"]]
    result = CaseResult(name, fault, truth, {}, root_messages=len(truth["root_messages"]))

    events = case_dir / "events.csv"
    started = time.perf_counter()
    try:
        pm, seconds = investigate_offline(case_dir / "metrics.csv", case_dir / "logs.csv", events if events.exists() else None,
                                          work / "out", work / "state")
        result.scores["product"] = score_case(name, truth, pm, seconds)
        result.diagnoses["product"] = _diagnosis(pm)
    except Exception as exc:
        result.scores["product"] = _failed_score(name, fault, truth, _describe_error(exc), time.perf_counter() - started)

    started = time.perf_counter()
    try:
        pm = baseline_postmortem(metrics, logs, bool(truth["has_error_kind"]))
        result.scores["baseline"] = score_case(name, truth, pm, time.perf_counter() - started)
        result.diagnoses["baseline"] = _diagnosis(pm)
    except Exception as exc:
        result.scores["baseline"] = _failed_score(name, fault, truth, _describe_error(exc), time.perf_counter() - started)
    return result


# ------------------------------------------------------------------------------------------
# many cases
# ------------------------------------------------------------------------------------------


def case_folders(cases_dir: str | Path) -> list[Path]:
    root = Path(cases_dir)
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValueError(f"{root}: no case folders (each case is a sub-folder with metrics.csv, logs.csv, truth.json)")
    return folders


def run_cases(folders: Sequence[Path], work_root: str | Path, progress: Callable[[str], None] | None = print) -> list[CaseResult]:
    """Run every case (one progress line each); each case's work files are removed after it."""
    results = []
    for i, folder in enumerate(folders, start=1):
        work = Path(work_root) / f"{i:03d}-{folder.name}"
        try:
            result = run_case(folder, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        results.append(result)
        if progress:
            progress(f"[{i:>{len(str(len(folders)))}}/{len(folders)}] {progress_line(result)}")
    return results


def generate_cases(out_dir: str | Path, seeds: Iterable[int], faults: Iterable[str] | None = None) -> list[Path]:
    """Write one case folder per (fault, seed) with evals.generator; returns the folders."""
    from evals.generator import FAULTS, generate, write_scenario

    folders = []
    for fault in faults or FAULTS:
        for seed in seeds:
            folder = Path(out_dir) / f"{fault}-{seed}"
            write_scenario(generate(fault, seed), folder)
            folders.append(folder)
    return folders


def progress_line(r: CaseResult) -> str:
    def one(system: str) -> str:
        s = r.scores[system]
        if s.error:
            return f"{system}: FAILED {s.error}"
        if not s.expected_incident:
            return f"{system}: {'FALSE ALARM' if s.detected else 'quiet ok'} {s.seconds:.1f}s"
        return (f"{system}: IoU {s.iou:.2f} root {_ok(s.root_at_1)} kind/sig {_ok(s.kind_or_signature)}"
                f" grounded {_ok(s.grounded)} {s.seconds:.1f}s")

    return f"{r.case}: " + " | ".join(one(s) for s in SYSTEMS)


def _ok(flag: bool | None) -> str:
    return "-" if flag is None else ("ok" if flag else "MISS")


# ------------------------------------------------------------------------------------------
# summaries, thresholds, tables, the report
# ------------------------------------------------------------------------------------------


def _mean(values: Iterable) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def summarize(scores: Sequence[CaseScore]) -> dict:
    ran = [s for s in scores if s.error is None]
    incidents = [s for s in ran if s.expected_incident]
    quiet = [s for s in ran if not s.expected_incident]
    return {
        "cases": len(scores),
        "failed": len(scores) - len(ran),
        "incidents": len(incidents),
        "quiet": len(quiet),
        "mean_iou": _mean(s.iou for s in incidents),
        "start_error_min": _mean(s.start_error_min for s in incidents),
        "end_error_min": _mean(s.end_error_min for s in incidents),
        "root_at_1": _mean(s.root_at_1 for s in incidents),
        "root_at_3": _mean(s.root_at_3 for s in incidents),
        "kind_or_signature": _mean(s.kind_or_signature for s in incidents),
        "missed": sum(not s.detected for s in incidents),
        "false_alarms": sum(s.detected for s in quiet),
        "grounded": _mean(s.grounded for s in ran),
        "mean_seconds": _mean(s.seconds for s in ran),
        "max_seconds": max((s.seconds for s in ran), default=None),
    }


def group_order(results: Sequence[CaseResult]) -> list[str]:
    from evals.generator import FAULTS

    present = {r.fault for r in results}
    return [f for f in FAULTS if f in present] + sorted(present - set(FAULTS))


def summaries(results: Sequence[CaseResult]) -> dict[str, dict[str, dict]]:
    """{group (fault or 'overall'): {system: summary}}."""
    out: dict[str, dict[str, dict]] = {}
    for group in group_order(results) + ["overall"]:
        rows = [r for r in results if group == "overall" or r.fault == group]
        out[group] = {system: summarize([r.scores[system] for r in rows]) for system in SYSTEMS}
    return out


def check_thresholds(results: Sequence[CaseResult], thresholds: Sequence[Threshold] = THRESHOLDS) -> list[tuple[Threshold, float | None, bool]]:
    overall = summarize([r.scores["product"] for r in results])
    return [(t, overall[t.metric], t.met(overall[t.metric])) for t in thresholds]


COLUMNS = (  # (header, summary key, format)
    ("IoU", "mean_iou", "{:.2f}"),
    ("start err (min)", "start_error_min", "{:.1f}"),
    ("end err (min)", "end_error_min", "{:.1f}"),
    ("AC@1", "root_at_1", "{:.2f}"),
    ("AC@3", "root_at_3", "{:.2f}"),
    ("kind/sig", "kind_or_signature", "{:.2f}"),
    ("missed", "missed", "{:d}"),
    ("false alarms", "false_alarms", "{:d}"),
    ("grounded", "grounded", "{:.2f}"),
    ("s/case", "mean_seconds", "{:.2f}"),
)


def _fmt(fmt: str, value) -> str:
    if value is None:
        return "–"
    return fmt.format(int(value) if fmt == "{:d}" else value)


def table(results: Sequence[CaseResult]) -> str:
    """Markdown table: one row per fault and overall; each cell 'product / baseline'."""
    header = ["fault", "cases", "failed"] + [c[0] for c in COLUMNS]
    rows = []
    for group, by_system in summaries(results).items():
        p, b = by_system["product"], by_system["baseline"]
        name = f"**{group}**" if group == "overall" else group
        cells = [name, str(p["cases"]), f"{p['failed']} / {b['failed']}"]
        for _, key, fmt in COLUMNS:
            if (key == "missed" and not p["incidents"]) or (key == "false_alarms" and not p["quiet"]):
                cells.append("–")
            else:
                cells.append(f"{_fmt(fmt, p[key])} / {_fmt(fmt, b[key])}")
        rows.append(cells)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join(lines)


LEGEND = (
    "Each cell is **product / baseline**. IoU: window intersection over union in minute bins "
    "(0 when no window was reported); start/end err: |reported - true| in minutes, over cases "
    "with a reported window; AC@1 / AC@3: true root service first / in the top 3 of the ranked "
    "hypotheses (overturned ones last); kind/sig: root right *and* its error_kind right (logs "
    "with error_kind) or its reported signature template matching one of the root's own fault "
    "messages after masking (logs without); missed: incident cases reported as no incident; "
    "false alarms: incidents reported on no-incident cases; grounded: share of cases where "
    "every hypothesis cites >= 1 evidence id and all cited ids exist; s/case: wall time of the "
    "run (product: the whole graph; baseline: its detector + log counts). Failed cases are "
    "excluded from the averages."
)


def threshold_lines(results: Sequence[CaseResult], enforced: bool) -> list[str]:
    lines = ["| metric | threshold | measured | result |", "|---|---|---|---|"]
    for t, measured, ok in check_thresholds(results):
        value = "–" if measured is None else (f"{measured:.3f}" if isinstance(measured, float) else str(measured))
        verdict = ("pass" if ok else "**FAIL**") if enforced else ("met" if ok else "not met")
        lines.append(f"| {t.metric} ({t.what}) | {t.op} {t.value:g} | {value} | {verdict} |")
    return lines


def wrong_cases(results: Sequence[CaseResult], system: str = "product") -> list[str]:
    """One line per case the system got wrong (or could not run), with what it reported."""
    lines = []
    for r in results:
        s = r.scores[system]
        d = r.diagnoses.get(system, {})
        t = r.truth
        problems = []
        if s.error:
            problems.append(f"failed: {s.error}")
        elif not s.expected_incident:
            if s.detected:
                problems.append(f"false alarm: reported {d.get('window')} root {d.get('service')}")
        else:
            if not s.detected:
                problems.append("missed the incident")
            elif s.iou is not None and s.iou < 0.9:
                problems.append(f"window {d.get('window')} vs true {t.get('start')}..{t.get('end')} (IoU {s.iou:.2f})")
            if s.detected and not s.root_at_1:
                problems.append(f"root {d.get('service')} (ranked {d.get('ranked')}) vs true {t.get('root_service')}")
            elif s.detected and not s.kind_or_signature:
                if t.get("has_error_kind"):
                    problems.append(f"kind {d.get('kind')} vs true {t.get('root_kind')}")
                else:
                    problems.append(f"signature `{d.get('signature')}` matches none of the root's {r.root_messages} fault messages")
            if not s.grounded:
                problems.append("a hypothesis cites no or unknown evidence ids")
        if problems:
            lines.append(f"- {r.case}: " + "; ".join(problems))
    return lines


def render_report(results: Sequence[CaseResult], command: str, *, title: str = "Eval results", notes: Sequence[str] = (),
                  enforced: bool = False) -> str:
    ran = sum(not r.failed for r in results)
    lines = [
        f"# {title}", "",
        f"Made by: `{command}`  ", f"Generated: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}  ",
        f"Cases: {len(results)} ({ran} ran, {len(results) - ran} failed)", "",
    ]
    lines += list(notes) + ([""] if notes else [])
    lines += ["## Product vs baseline", "", table(results), "", LEGEND, ""]
    lines += [f"## Thresholds (product, overall){'' if enforced else ' - informational here'}", ""]
    lines += threshold_lines(results, enforced) + [""]
    for system in SYSTEMS:
        wrong = wrong_cases(results, system)
        lines += [f"## Cases the {system} got wrong", ""] + (wrong or ["none"]) + [""]
    lines += ["## All cases", "", "| case | fault | product | baseline |", "|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.case} | {r.fault} | " + " | ".join(_case_cell(r.scores[s]) for s in SYSTEMS) + " |")
    return "\n".join(lines) + "\n"


def _case_cell(s: CaseScore) -> str:
    if s.error:
        return f"FAILED: {s.error.replace('|', '/')}"
    if not s.expected_incident:
        return ("FALSE ALARM" if s.detected else "quiet") + f" ({s.seconds:.2f}s)"
    return (f"IoU {s.iou:.2f}, root {_ok(s.root_at_1)}, top3 {_ok(s.root_at_3)}, kind/sig {_ok(s.kind_or_signature)}, "
            f"grounded {_ok(s.grounded)} ({s.seconds:.2f}s)")


# ------------------------------------------------------------------------------------------
# entry points
# ------------------------------------------------------------------------------------------


def eval_folder(cases_dir: str | Path, report: str | Path | None = None, *, work_root: str | Path | None = None,
                command: str | None = None, progress: Callable[[str], None] | None = print) -> int:
    """`incident-graph eval`: score every case folder, print the table, optionally write the report.

    Returns 0 when every case ran, 1 when any could not be run (bad input or an error in the
    product; those are listed with their error). Thresholds are shown, not enforced: they were
    measured on the generated scoring seeds, not on arbitrary cases.
    """
    folders = case_folders(cases_dir)
    Path(work_root or tempfile.gettempdir()).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="eval-", dir=work_root) as work:
        results = run_cases(folders, work, progress)
    print()
    print(table(results))
    failed = [r for r in results if r.failed]
    for r in failed:
        print(f"FAILED {r.case}: {r.scores['product'].error}")
    if report:
        command = command or "incident-graph " + " ".join(sys.argv[1:])
        path = Path(report)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_report(results, command, notes=[f"Cases folder: `{cases_dir}`"]), encoding="utf-8")
        print(f"wrote {path}")
    print(f"{len(results) - len(failed)} of {len(results)} case(s) ran, {len(failed)} failed")
    return 1 if failed else 0


def run_generated(seeds: Sequence[int], out_dir: str | Path, progress: Callable[[str], None] | None = print) -> list[CaseResult]:
    """Generate every fault (and 'none') for `seeds` into out_dir and run them all."""
    folders = generate_cases(Path(out_dir) / "cases", seeds)
    return run_cases(folders, Path(out_dir) / "work", progress)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m evals.suite [--seeds tuning|scoring|1,2,3] [--report FILE]`: for developers."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m evals.suite", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="tuning", help="'tuning' (default), 'scoring' or a comma list")
    p.add_argument("--report", default=None)
    args = p.parse_args(argv)
    seeds = {"tuning": TUNING_SEEDS, "scoring": SCORING_SEEDS}.get(args.seeds) or tuple(int(s) for s in args.seeds.split(","))
    with tempfile.TemporaryDirectory(prefix="incident-graph-evals-") as tmp:
        results = run_generated(seeds, tmp)
    print()
    print(table(results))
    print()
    print("\n".join(threshold_lines(results, enforced=False)))
    print("\n".join(wrong_cases(results)) or "product: no wrong case")
    if args.report:
        command = "python -m evals.suite " + " ".join(argv if argv is not None else sys.argv[1:])
        Path(args.report).write_text(render_report(results, command, notes=[f"Seeds: {', '.join(map(str, seeds))}"]), encoding="utf-8")
    return 1 if any(r.failed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
