"""Nezha harness: the whole product on real fault injections (TrainTicket, OnlineBoutique).

`python -m evals.nezha [ROOT] [--days D,...] [--mode told|detect] [--limit N] [--timeout S]`

ROOT (default `<repo>/../shared/datasets/nezha`) is a folder in the Nezha layout:
`rca_data/<day>/<day>-fault_list.json` (per hour, the faults: inject_time, inject_pod,
inject_type), `metric/<pod>_metric.csv.gz` (one file per pod, one row a minute), `log/HH_MM_log.csv.gz`
(container lines around each fault) and `trace/` (not used yet). Every name and format of the
dataset stays in this module: the product sees only what a user would pass it.

For each fault this adapter writes, over the hour before the injection to 15 minutes after it:
* `metrics/<pod>.csv`: each pod's own export as it is, its epoch `TimeStamp` renamed `ts` and the
  Go-formatted `Time` text left out (the loader reads the folder as per-pod metrics, `PodName`
  giving the pod and so the service);
* `logs.csv`: `ts, service, message, trace_id`, the message being the container line still in
  Docker's JSON wrapper (the loader unwraps it and reads the level from it). Times are the
  `Timestamp` column (UTC); the in-line times of TrainTicket's Java services are UTC+8 and are
  not used. `inject_time` is UTC (`inject_timestamp` is not: on some rows it is inject_time read
  as UTC+8). The service is the pod's workload as `tools.sources.pods` maps it, as a log
  shipper's `app` label would give it. With no line in the window the file has only its header.

then runs `incident-graph investigate` on them in its own process (offline analyst, auto-approve,
no hint), and scores it: AC@k = the injected pod's service (mapped as the product maps pods)
among the first k hypotheses (overturned ones last, as `evals.scoring` ranks them); window_hit =
the investigated window shares a minute with the 3 minutes of the fault. Failed cases count as
misses. Beside it, the reference baseline of issue 17 on the same files: each service ranked by
the largest robust z (median / MAD of the hour before) of its own pod metrics in the minutes of
the fault; it is told the fault minute, the product is not.

Mode `told` (investigate around the fault minute, as Nezha is told) needs `investigate --around`,
which the product does not have yet: the mode is accepted and reported as not available.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from evals.scoring import minute_iou
from graph.configuration import OFFLINE_MODEL
from tools.sources.pods import service_of

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared" / "datasets" / "nezha"
BEFORE = pd.Timedelta(minutes=60)  # the adapter's window around each fault
AFTER = pd.Timedelta(minutes=15)
FAULT_LENGTH = pd.Timedelta(minutes=3)  # every injection lasts 3 minutes (Nezha's paper)
# The baseline's "after the fault minute": the fault's minutes plus one sample for its end.
BASELINE_AFTER = pd.Timedelta(minutes=4)
SCALE_FLOOR = 0.01
# Per-node figures repeated in each pod's rows: not the pod's own, so not the baseline's.
NODE_PREFIX = "Node"
DEFAULT_TIMEOUT = 300.0
# The product must run on its embedded analyst here, whatever the caller's environment says.
LLM_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "INCIDENT_GRAPH_MODEL", "INCIDENT_GRAPH_STRUCTURED_OUTPUT",
           "INCIDENT_GRAPH_MAX_OUTPUT_TOKENS")


@dataclass(frozen=True)
class Fault:
    day: str
    index: int  # 1-based, in time order within the day
    at: pd.Timestamp  # inject_time, naive UTC
    pod: str
    kind: str

    @property
    def id(self) -> str:
        return f"{self.day}#{self.index:02d}"

    @property
    def root(self) -> str:
        return service_of(self.pod)

    @property
    def system(self) -> str:
        return "TrainTicket" if self.pod.startswith("ts-") else "OnlineBoutique"


@dataclass
class CaseResult:
    fault: Fault
    ranked: list[str] = field(default_factory=list)  # the product's hypothesis services
    window: tuple[str, str] | None = None
    window_hit: bool = False
    seconds: float = 0.0
    error: str | None = None
    baseline: list[str] = field(default_factory=list)
    log_lines: int = 0

    def at(self, k: int, ranked: list[str] | None = None) -> bool:
        return self.fault.root in (self.ranked if ranked is None else ranked)[:k]


# ------------------------------------------------------------------------------------------
# the dataset
# ------------------------------------------------------------------------------------------


def days_of(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "rca_data").iterdir() if (p / f"{p.name}-fault_list.json").is_file())


def faults_of(root: Path, day: str) -> list[Fault]:
    listed = json.loads((root / "rca_data" / day / f"{day}-fault_list.json").read_text(encoding="utf-8"))
    rows = sorted((pd.Timestamp(f["inject_time"]), f["inject_pod"], f["inject_type"]) for hour in listed.values() for f in hour)
    return [Fault(day, i, at, pod, kind) for i, (at, pod, kind) in enumerate(rows, start=1)]


def pod_metrics(root: Path, day: str) -> dict[str, pd.DataFrame]:
    """Each pod's metric export, read once per day: `ts` (naive UTC) first, `Time` left out."""
    out = {}
    for path in sorted((root / "rca_data" / day / "metric").glob("*_metric.csv.gz")):
        frame = pd.read_csv(path).drop(columns=["Time"])
        frame.insert(0, "ts", pd.to_datetime(frame.pop("TimeStamp"), unit="s"))
        out[path.name.removesuffix("_metric.csv.gz")] = frame
    return out


def log_lines(root: Path, day: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """The container lines in [start, end) from the per-minute files, as the loader takes them."""
    frames = []
    for path in sorted((root / "rca_data" / day / "log").glob("*_log.csv.gz")):
        hour, minute = path.name.split("_")[:2]
        # The files are named by minute and hold the lines logged around it: read those near the window.
        named = pd.Timestamp(f"{day} {hour}:{minute}")
        if start - pd.Timedelta(minutes=2) <= named <= end + pd.Timedelta(minutes=2):
            frames.append(pd.read_csv(path, usecols=["Timestamp", "PodName", "TraceID", "Log"]))
    if not frames:
        return pd.DataFrame(columns=["ts", "service", "message", "trace_id"])
    raw = pd.concat(frames, ignore_index=True)
    ts = pd.to_datetime(raw["Timestamp"], utc=True, format="ISO8601").dt.tz_localize(None)
    keep = (ts >= start) & (ts < end)
    lines = pd.DataFrame({"ts": ts[keep].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "service": raw.loc[keep, "PodName"].map(service_of),
                          "message": raw.loc[keep, "Log"], "trace_id": raw.loc[keep, "TraceID"]})
    return lines.assign(_ts=ts[keep]).sort_values("_ts", kind="stable").drop(columns="_ts")


def write_case(root: Path, fault: Fault, pods: dict[str, pd.DataFrame], folder: Path) -> tuple[Path, Path, int]:
    """The product's inputs for one fault: a folder of per-pod metric files and a logs CSV."""
    start, end = fault.at - BEFORE, fault.at + AFTER
    metrics = folder / "metrics"
    metrics.mkdir(parents=True)
    for pod, frame in pods.items():
        inside = frame[(frame["ts"] >= start) & (frame["ts"] < end)]
        if len(inside):
            inside.assign(ts=inside["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(metrics / f"{pod}.csv", index=False)
    logs = log_lines(root, fault.day, start, end)
    logs_path = folder / "logs.csv"
    logs.to_csv(logs_path, index=False)
    return metrics, logs_path, len(logs)


# ------------------------------------------------------------------------------------------
# the product and the baseline
# ------------------------------------------------------------------------------------------


def run_product(metrics: Path, logs: Path, work: Path, timeout: float) -> tuple[dict, float]:
    """`incident-graph investigate` in its own process; the postmortem and the wall time.
    Raises RuntimeError with the product's own error line when it fails."""
    env = {k: v for k, v in os.environ.items() if k not in LLM_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out = work / "out"
    command = [sys.executable, str(REPO / "cli.py"), "investigate", "--metrics", str(metrics), "--logs", str(logs),
               "--out", str(out), "--state-dir", str(work / "state"), "--auto-approve", "--quiet", "--model", OFFLINE_MODEL]
    started = time.perf_counter()
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"timed out after {timeout:.0f} s") from None
    seconds = time.perf_counter() - started
    if run.returncode != 0:
        lines = (run.stderr or run.stdout).strip().splitlines()
        raise RuntimeError(f"exit {run.returncode}: {(lines[-1] if lines else '')[:240]}")
    return json.loads((out / "postmortem.json").read_text(encoding="utf-8")), seconds


def ranked_services(postmortem: dict) -> list[str]:
    """Hypothesis services in the order evals.scoring ranks them (overturned ones last), once each."""
    hypotheses = postmortem.get("hypotheses", [])
    ordered = [h["service"] for h in hypotheses if h.get("status") != "overturned"]
    ordered += [h["service"] for h in hypotheses if h.get("status") == "overturned"]
    return list(dict.fromkeys(ordered))


def window_hit(window: dict | None, fault: Fault) -> bool:
    if not window:
        return False
    # The postmortem's times end in Z: the fault's must too, or no minute of the two is equal.
    start, end = (f"{t.isoformat()}Z" for t in (fault.at, fault.at + FAULT_LENGTH))
    return minute_iou(start, end, window["start"], window["end"]) > 0


def baseline_ranking(pods: dict[str, pd.DataFrame], at: pd.Timestamp) -> list[str]:
    """Services by the largest |robust z| of their own pod metrics in the minutes of the fault
    (from the fault minute on), against the median and MAD of the hour before it."""
    minute = at.floor("min")
    best: dict[str, float] = {}
    for pod, frame in pods.items():
        before = frame[(frame["ts"] >= at - BEFORE) & (frame["ts"] < minute)]
        after = frame[(frame["ts"] >= minute) & (frame["ts"] < minute + BASELINE_AFTER)]
        if before.empty or after.empty:
            continue
        columns = [c for c in frame.columns if c != "ts" and not c.startswith(NODE_PREFIX)
                   and pd.api.types.is_numeric_dtype(frame[c])]
        median = before[columns].median()
        # MAD floored at 1% of the level: near-constant latencies have a MAD of 1e-18 (float
        # noise), which would make any wobble a z of 1e15.
        scale = np.maximum(1.4826 * (before[columns] - median).abs().median(), SCALE_FLOOR * median.abs())
        usable = scale > 0  # a flat zero series has no scale to judge a change by
        if not usable.any():
            continue
        z = ((after[columns].loc[:, usable] - median[usable]) / scale[usable]).abs().to_numpy()
        top = float(np.nanmax(z)) if np.isfinite(z).any() else 0.0
        service = service_of(pod)
        best[service] = max(best.get(service, 0.0), top)
    return sorted(best, key=lambda s: -best[s])


def run_case(root: Path, fault: Fault, pods: dict[str, pd.DataFrame], work: Path, timeout: float) -> CaseResult:
    """One fault end to end. Never raises: a failure is recorded with its error."""
    result = CaseResult(fault)
    result.baseline = baseline_ranking(pods, fault.at)
    try:
        metrics, logs, result.log_lines = write_case(root, fault, pods, work)
        postmortem, result.seconds = run_product(metrics, logs, work, timeout)
    except (RuntimeError, OSError, ValueError) as exc:
        result.error = str(exc)
        return result
    result.ranked = ranked_services(postmortem)
    window = postmortem.get("incident_window")
    result.window = (window["start"], window["end"]) if window else None
    result.window_hit = window_hit(window, fault)
    return result


# ------------------------------------------------------------------------------------------
# the report
# ------------------------------------------------------------------------------------------


def _rate(flags: Sequence[bool]) -> str:
    return f"{sum(flags) / len(flags):.2f}" if flags else "-"


def case_row(r: CaseResult) -> str:
    product = f"FAILED {r.error}" if r.error else ", ".join(r.ranked[:3]) or "(no hypothesis)"
    window = "-" if not r.window else f"{r.window[0][11:16]}..{r.window[1][11:16]}{' hit' if r.window_hit else ' miss'}"
    return (f"| {r.fault.id} | {r.fault.at:%H:%M:%S} | {r.fault.system} | {r.fault.kind} | {r.fault.root} | {product} | "
            f"{', '.join(r.baseline[:3])} | {window} | {r.log_lines} | {r.seconds:.1f} |")


def summary_rows(results: Sequence[CaseResult], key: Callable[[CaseResult], str]) -> list[str]:
    groups: dict[str, list[CaseResult]] = {}
    for r in results:
        groups.setdefault(key(r), []).append(r)
    lines = []
    for name, rows in sorted(groups.items()):
        lines.append(f"| {name} | {len(rows)} | {sum(r.error is not None for r in rows)} | "
                     f"{_rate([r.at(1) for r in rows])} / {_rate([r.at(1, r.baseline) for r in rows])} | "
                     f"{_rate([r.at(3) for r in rows])} / {_rate([r.at(3, r.baseline) for r in rows])} | "
                     f"{_rate([r.window_hit for r in rows])} |")
    return lines


def report(results: Sequence[CaseResult], mode: str) -> str:
    lines = [f"# Nezha, mode {mode}", "",
             "| fault | injected (UTC) | system | type | true root | product top 3 | baseline top 3 | window | log lines | s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [case_row(r) for r in results]
    header = ["", "AC@1 and AC@3 as **product / baseline** (failed cases count as misses; the baseline is told the fault minute, "
              "the product is not); window_hit: the product's window shares a minute with the fault's 3.", ""]
    for title, key in (("system", lambda r: r.fault.system), ("fault type", lambda r: r.fault.kind)):
        lines += header + [f"| {title} | cases | failed | AC@1 | AC@3 | window_hit |", "|---|---|---|---|---|---|"]
        lines += summary_rows(results, key)
        header = [""]
    lines += ["", "| all | cases | failed | AC@1 | AC@3 | window_hit |", "|---|---|---|---|---|---|"]
    lines += summary_rows(results, lambda r: "all")
    return "\n".join(lines)


def final_line(results: Sequence[CaseResult]) -> str:
    n = len(results)
    rate = (lambda flags: f"{sum(flags) / n:.3f}") if n else (lambda flags: "nan")
    return (f"cases={n} ac1={rate([r.at(1) for r in results])} ac3={rate([r.at(3) for r in results])} "
            f"window_hit={rate([r.window_hit for r in results])} failed={sum(r.error is not None for r in results)}")


# ------------------------------------------------------------------------------------------
# entry point
# ------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evals.nezha", description=__doc__.splitlines()[0])
    p.add_argument("root", nargs="?", type=Path, default=DEFAULT_ROOT, help=f"Nezha-layout folder (default {DEFAULT_ROOT})")
    p.add_argument("--days", default=None, help="comma list of days under rca_data (default: all)")
    p.add_argument("--mode", choices=("told", "detect"), default="detect",
                   help="detect: no hint (default); told: around the fault minute (not available yet)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="at most N faults per day (the first N in time)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S", help="seconds one investigation may take")
    args = p.parse_args(argv)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if not (args.root / "rca_data").is_dir():
        print(f"skipped: no Nezha data at {args.root} (expected {args.root / 'rca_data'}/<day>/<day>-fault_list.json)")
        return 0
    if args.mode == "told":
        print("mode told is not available yet: the product has no `investigate --around TIME` to be told the fault "
              "minute with (issue 17); run --mode detect")
        return 2
    days = days_of(args.root)
    if args.days:
        wanted = args.days.split(",")
        unknown = sorted(set(wanted) - set(days))
        if unknown:
            p.error(f"--days: no fault list for {', '.join(unknown)} (found {', '.join(days)})")
        days = [d for d in days if d in wanted]
    results: list[CaseResult] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nezha-") as tmp:
        for day in days:
            pods = pod_metrics(args.root, day)
            faults = faults_of(args.root, day)[: args.limit]
            for fault in faults:
                work = Path(tmp) / fault.id.replace("#", "-")
                try:
                    result = run_case(args.root, fault, pods, work, args.timeout)
                finally:
                    shutil.rmtree(work, ignore_errors=True)
                results.append(result)
                verdict = f"FAILED {result.error}" if result.error else (
                    f"{'ok' if result.at(1) else 'top3' if result.at(3) else 'MISS'} {result.ranked[:3]}")
                progress(f"[{len(results)}] {fault.id} {fault.system} {fault.kind} {fault.root}: {verdict} "
                         f"(baseline {result.baseline[:1]}) window {'hit' if result.window_hit else 'miss'} {result.seconds:.1f} s")
    print(report(results, args.mode))
    print(f"\n{len(results)} cases in {time.perf_counter() - started:.0f} s")
    print(final_line(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
