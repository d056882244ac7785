"""Load test: N concurrent investigations against one server on loopback.

    python -m benchmarks.load --concurrency 8 [--out benchmarks/results]

Each incident is a different generated scenario (fault x seed), uploaded at the same moment; all
are approved together once they wait. Every postmortem must name its own scenario's root service
and thread (no state mixing). Latencies are measured from each upload's start; the single-
incident run measured first in the same process is the baseline the ratios are taken against.
"""

import argparse
import asyncio
import json
import math
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil

from evals.generator import FAULTS, generate, write_scenario
from tests.processes import ServerProcess

RESULTS = Path(__file__).resolve().parent / "results"
LOAD_AT_START = psutil.getloadavg()


@dataclass
class IncidentTiming:
    fault: str
    seed: int
    accepted_s: float = float("nan")  # POST /incidents answered 202
    first_event_s: float = float("nan")  # first server-sent event on /events
    first_node_s: float = float("nan")  # first finished node (load) seen on /events
    waiting_s: float = float("nan")  # waiting for approval
    done_s: float = float("nan")  # decision to postmortem written
    correct: bool = False
    error: str = ""


@dataclass
class LoadResult:
    concurrency: int
    wall_s: float
    server_peak_rss_mb: float
    incidents: list[IncidentTiming] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(1 for i in self.incidents if i.error)

    @property
    def correct(self) -> int:
        return sum(1 for i in self.incidents if i.correct)


async def first_events(client: httpx.AsyncClient, thread_id: str, started: float, timing: IncidentTiming) -> None:
    async with client.stream("GET", f"/incidents/{thread_id}/events") as stream:
        async for line in stream.aiter_lines():
            if line.startswith("event:") and math.isnan(timing.first_event_s):
                timing.first_event_s = time.monotonic() - started
            if line.startswith("event: node"):
                timing.first_node_s = time.monotonic() - started
                return


async def wait_for(client: httpx.AsyncClient, thread_id: str, wanted: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = (await client.get(f"/incidents/{thread_id}")).raise_for_status().json()
        if view["status"] == wanted:
            return view
        if view["status"] == "failed":
            raise RuntimeError(view["error"])
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{thread_id} not {wanted} after {timeout} s")


async def one_incident(client: httpx.AsyncClient, case: Path, timing: IncidentTiming, approvals: asyncio.Event) -> None:
    truth = json.loads((case / "truth.json").read_text())
    files = {name: (f"{name}.csv", (case / f"{name}.csv").read_bytes(), "text/csv") for name in ("metrics", "logs", "events")}
    started = time.monotonic()
    try:
        response = (await client.post("/incidents", files=files)).raise_for_status()
        timing.accepted_s = time.monotonic() - started
        thread_id = response.json()["thread_id"]
        await first_events(client, thread_id, started, timing)
        expects_plan = truth["fault"] != "none"
        if expects_plan:
            await wait_for(client, thread_id, "waiting_for_approval")
            timing.waiting_s = time.monotonic() - started
            await approvals.wait()
            decided = time.monotonic()
            (await client.post(f"/incidents/{thread_id}/decision", json={"action": "approve", "by": "load"})).raise_for_status()
            await wait_for(client, thread_id, "done")
            timing.done_s = time.monotonic() - decided
        else:
            await wait_for(client, thread_id, "done")
            timing.waiting_s = time.monotonic() - started
        pm = (await client.get(f"/incidents/{thread_id}/postmortem.json")).raise_for_status().json()
        timing.correct = pm["metadata"]["thread_id"] == thread_id and pm["root_cause"]["service"] == truth.get("root_service")
    except Exception as exc:  # counted, not raised: a load test reports every failure
        timing.error = f"{type(exc).__name__}: {exc}"[:300]


def scenarios(count: int, folder: Path) -> list[tuple[str, int, Path]]:
    faults = [f for f in FAULTS if f != "none"]
    made = []
    for i in range(count):
        fault, seed = faults[i % len(faults)], 500 + i
        case = folder / f"{fault}-{seed}"
        if not (case / "truth.json").exists():
            write_scenario(generate(fault, seed), case)
        made.append((fault, seed, case))
    return made


async def run_load(server: ServerProcess, cases: list[tuple[str, int, Path]]) -> LoadResult:
    proc = psutil.Process(server.process.pid)
    peak = proc.memory_info().rss
    timings = [IncidentTiming(fault, seed) for fault, seed, _ in cases]
    approvals = asyncio.Event()
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        started = time.monotonic()
        tasks = [asyncio.create_task(one_incident(client, case, t, approvals)) for (_, _, case), t in zip(cases, timings)]

        async def approve_when_all_wait() -> None:
            while not all(not math.isnan(t.waiting_s) or t.error for t in timings):
                await asyncio.sleep(0.1)
            approvals.set()

        watcher = asyncio.create_task(approve_when_all_wait())
        while not all(task.done() for task in tasks):
            peak = max(peak, proc.memory_info().rss)
            await asyncio.sleep(0.1)
        watcher.cancel()
        wall = time.monotonic() - started
    return LoadResult(len(cases), wall, peak / 2**20, timings)


def percentiles(values: list[float]) -> dict[str, float]:
    finite = np.array([v for v in values if not math.isnan(v)])
    if not finite.size:
        return {"p50": float("nan"), "p95": float("nan"), "max": float("nan")}
    return {"p50": float(np.percentile(finite, 50)), "p95": float(np.percentile(finite, 95)), "max": float(finite.max())}


METRICS = ("accepted_s", "first_event_s", "first_node_s", "waiting_s", "done_s")


def render(baseline: LoadResult, loaded: LoadResult) -> str:
    lines = [
        f"# Server load test: {loaded.concurrency} concurrent investigations",
        "",
        f"Machine: {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}. One server process (uvicorn, SQLite checkpointer) on loopback; "
        "the client (httpx, asyncio) runs in another process. Reproduce: `.venv/bin/python -m benchmarks.load "
        f"--concurrency {loaded.concurrency}`. Load average when it started: {LOAD_AT_START[0]:.1f} "
        "(above 0 means other work shared the 2 cores: compare the ratios, not the seconds).",
        "",
        f"- held: **{loaded.correct}/{loaded.concurrency}** postmortems name their own scenario's root service and thread; "
        f"errors: **{loaded.errors}**",
        f"- wall time {loaded.wall_s:.1f} s for {loaded.concurrency} incidents vs {baseline.wall_s:.1f} s for one "
        f"(throughput x{loaded.concurrency * baseline.wall_s / loaded.wall_s:.2f} of running them one after another)",
        f"- server peak RSS {loaded.server_peak_rss_mb:.0f} MiB (one incident: {baseline.server_peak_rss_mb:.0f} MiB)",
        "",
        "| seconds from upload | 1 incident | p50 | p95 | max | p50 / 1 incident |",
        "|---|---|---|---|---|---|",
    ]
    for metric in METRICS:
        base = percentiles([getattr(t, metric) for t in baseline.incidents])["p50"]
        stats = percentiles([getattr(t, metric) for t in loaded.incidents])
        label = metric.removesuffix("_s").replace("_", " ") + (" (from the decision)" if metric == "done_s" else "")
        ratio = stats["p50"] / base if base else float("nan")
        lines.append(f"| {label} | {base:.2f} | {stats['p50']:.2f} | {stats['p95']:.2f} | {stats['max']:.2f} | x{ratio:.1f} |")
    failures = [t for t in loaded.incidents if t.error or not t.correct]
    if failures:
        lines += ["", "Failures:", ""] + [f"- {t.fault} seed {t.seed}: {t.error or 'wrong root cause'}" for t in failures]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="incident-graph-load-") as tmp:
        root = Path(tmp)
        print(f"generating {args.concurrency} scenarios ...", flush=True)
        cases = scenarios(args.concurrency, root / "cases")
        results = []
        for label, batch in (("baseline: 1 incident", cases[:1]), (f"load: {len(cases)} concurrent", cases)):
            server = ServerProcess(root / f"home-{len(batch)}", {}).start()
            try:
                print(f"{label} ...", flush=True)
                results.append(asyncio.run(run_load(server, batch)))
            finally:
                server.stop()
    baseline, loaded = results
    args.out.mkdir(parents=True, exist_ok=True)
    report = render(baseline, loaded)
    (args.out / "load.md").write_text(report)
    payload = {"baseline": asdict(baseline), "load": asdict(loaded), "errors": loaded.errors, "correct": loaded.correct}
    (args.out / "load.json").write_text(json.dumps(payload, indent=2, default=str))
    print(report)
    return 0 if loaded.errors == 0 and loaded.correct == loaded.concurrency else 1


if __name__ == "__main__":
    raise SystemExit(main())
