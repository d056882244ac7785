"""The `incident-graph` command: demo, investigate, resume, generate, eval, serve.

A contract other tools depend on: flags and exit codes are documented in the README
(0 done, 2 bad input or usage, 3 waiting for approval, 1 anything else).
"""

import argparse
import json
import os
import sqlite3
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Command

from graph.checkpointing import CheckpointUnavailable as CheckpointError
from graph.checkpointing import serializer, verify_sqlite_file
from graph.configuration import Configuration
from graph.graph import build_graph
from tools.loader import InputError
from tools.sources.datasets import has_glob, is_dataset
from tools.sources.logformats import LOG_FORMATS
from tools.sources.prometheus import (
    endpoint_and_headers,
    fetch_metrics,
    load_queries_file,
    parse_header_flag,
    parse_query_flag,
    resolve_range,
    write_metrics,
)

PROMETHEUS_TOKEN_ENV = "INCIDENT_GRAPH_PROMETHEUS_TOKEN"
PROMETHEUS_ONLY_FLAGS = ("query", "queries", "since", "until", "step", "prometheus_header")

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_WAITING = 0, 1, 2, 3


@contextmanager
def open_checkpointer(path: Path) -> Iterator[SqliteSaver]:
    """The SQLite checkpointer at `path`; a corrupt, foreign or unreachable file is an error, never a fresh start."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"state directory {path.parent} cannot be created: {exc.strerror}") from exc
    verify_sqlite_file(path)
    try:
        conn = sqlite3.connect(str(path), check_same_thread=False)
    except sqlite3.Error as exc:
        raise CheckpointError(f"checkpoint database {path} cannot be opened: {exc}") from exc
    try:
        try:
            saver = SqliteSaver(conn, serde=serializer())
            saver.setup()
        except sqlite3.DatabaseError as exc:
            raise CheckpointError(f"checkpoint database {path} is unreadable: {exc}") from exc
        yield saver
    finally:
        conn.close()


def checkpoint_path(settings: Configuration) -> Path:
    return Path(settings.state_dir) / "checkpoints.sqlite"


MODEL_FLAGS = ("model", "base_url", "temperature", "max_steps", "token_budget")


def run_config(args: argparse.Namespace, thread_id: str, auto_approve: bool) -> dict:
    configurable = {"thread_id": thread_id, "auto_approve": auto_approve}
    if args.state_dir:
        configurable["state_dir"] = args.state_dir
    for name in MODEL_FLAGS:
        if getattr(args, name, None) is not None:
            configurable[name] = getattr(args, name)
    if getattr(args, "no_redact", False):
        configurable["redact"] = False
    return {"configurable": configurable, "recursion_limit": 60}


def stream(app, payload, config: dict, quiet: bool) -> dict:
    """Run the graph, printing one line per finished node; returns the final state values."""
    # durability="sync": a step's checkpoint is on disk before the next step starts, so a crash
    # (SIGKILL, power loss) costs at most the step that was running.
    for update in app.stream(payload, config, stream_mode="updates", subgraphs=True, durability="sync"):
        namespace, chunk = update
        # On resume, writes a node saved before a crash are replayed, not recomputed.
        restored = "(restored from checkpoint) " if (chunk.get("__metadata__") or {}).get("cached") else ""
        for node, value in chunk.items():
            if node in ("__interrupt__", "__metadata__") or quiet:
                continue
            where = "investigate/" if namespace else ""
            print(f"[{where}{node}] {restored}{describe(node, value)}", flush=True)
    return app.get_state(config)


def describe(node: str, update: dict | None) -> str:
    if not update:
        return "done"
    if node == "load" and "load_summary" in update:
        s = update["load_summary"]
        return f"{s['metrics_rows']} metric rows ({', '.join(s['metric_columns'])}), {s['log_rows']} log lines, {s['event_rows']} events"
    if node == "detect":
        d = update["detection"]
        return f"incident {d.window.start} to {d.window.end}" if d.window else "no incident"
    if node == "tools":
        # ToolNode reports one update per tool call when the tools return Commands.
        parts = update if isinstance(update, list) else [update]
        messages = [m for part in parts for m in (part.get("messages", []) if isinstance(part, dict) else part.update.get("messages", []))]
        return ", ".join(f"{m.name} -> {m.artifact or m.text[:80]}" for m in messages)
    if node == "analyst":
        msg = update["messages"][-1]
        calls = ", ".join(c["name"] for c in getattr(msg, "tool_calls", []))
        return f"calls {calls}" if calls else msg.text[:160]
    if node in {"hypothesize", "critic"}:
        return "; ".join(f"{h.id} {h.service} ({h.kind}) {h.confidence:.2f} {h.status}" for h in update.get("hypotheses", []))
    if node == "mitigate":
        return f"{len(update['mitigations'])} mitigation(s)"
    if node == "approve":
        return f"{update['approval'].action} by {update['approval'].by}"
    if node == "write":
        return ", ".join(update["artifacts"].values())
    return "done"


def finish(app, state, config: dict, args: argparse.Namespace, thread_id: str) -> int:
    if state.next:
        request = state.tasks[0].interrupts[0].value if state.tasks and state.tasks[0].interrupts else {}
        print("\nWaiting for approval. Proposed plan:")
        for m in request.get("mitigations", []):
            prod = "touches prod" if m["touches_prod"] else "no prod change"
            print(f"  {m['id']}. {m['title']} ({prod}; owner {m['owner']}; ETA {m['eta_minutes']} min)")
        lead = request.get("leading_hypothesis") or {}
        print(f"Leading hypothesis: {lead.get('service')} / {lead.get('kind')} (confidence {lead.get('confidence')})")
        state_flag = f" --state-dir {args.state_dir}" if args.state_dir else ""
        print(f"\nResume with:\n  incident-graph resume --thread-id {thread_id} --approve --out {args.out}{state_flag}")
        print(f"  incident-graph resume --thread-id {thread_id} --reject 'why' --out {args.out}{state_flag}")
        return EXIT_WAITING
    values = state.values
    artifacts = values.get("artifacts", {})
    pm = json.loads(Path(artifacts["postmortem.json"]).read_text())
    root = pm["root_cause"]
    print(f"\nthread {thread_id}: incident_detected={pm['incident_detected']} root_cause={root['service']} / {root['kind']}")
    for path in artifacts.values():
        print(f"  wrote {path}")
    return EXIT_OK


def metrics_input(args: argparse.Namespace, settings: Configuration, thread_id: str) -> dict:
    """The metrics inputs: --metrics as given, or the --prometheus queries fetched now into the
    thread's work folder plus where they came from (server without credentials, queries, range)
    for the postmortem. Credentials stay in this process, never in a checkpoint."""
    if not getattr(args, "prometheus", None):
        given = ["--" + name.replace("_", "-") for name in PROMETHEUS_ONLY_FLAGS if getattr(args, name, None)]
        if given:
            raise ValueError(f"{', '.join(given)} need --prometheus URL (the metrics come from --metrics {args.metrics})")
        return {"metrics": str(Path(args.metrics).resolve())}
    queries: dict[str, str] = {}
    step = args.step
    if args.queries:
        queries, file_step = load_queries_file(args.queries)
        step = step or file_step
    for flag in args.query or []:
        name, promql = parse_query_flag(flag)
        queries[name] = promql
    headers = dict(parse_header_flag(h) for h in args.prometheus_header or [])
    window = resolve_range(args.since, args.until, step)
    frame = fetch_metrics(args.prometheus, queries, window, headers=headers,
                          bearer_token=os.environ.get(PROMETHEUS_TOKEN_ENV) or None)
    path = Path(settings.state_dir) / "work" / f"{thread_id}.prometheus.parquet"
    if not args.quiet:
        print(f"prometheus: {len(queries)} quer{'y' if len(queries) == 1 else 'ies'}, {len(frame)} points "
              f"from {window.start.isoformat()} to {window.end.isoformat()} every {window.step_s:g}s", flush=True)
    _, server, _ = endpoint_and_headers(args.prometheus)
    source = {"server": server, "queries": queries, "start": window.start.isoformat(), "end": window.end.isoformat(), "step_seconds": window.step_s}
    return {"metrics": str(write_metrics(frame, path)), "metrics_source": source}


def logs_input(logs: str) -> str:
    """A file or Parquet directory as an absolute path; a glob pattern stays a pattern."""
    return os.path.abspath(os.path.expanduser(logs)) if is_dataset(logs) and has_glob(logs) else str(Path(logs).resolve())


def parse_log_fields(flags: list[str]) -> dict[str, str]:
    fields = {}
    for flag in flags:
        target, sep, source = flag.partition("=")
        if not sep or not target.strip() or not source.strip():
            raise ValueError(f"--log-field {flag!r}: expected TARGET=SOURCE.PATH, e.g. --log-field service=kubernetes.labels.app")
        fields[target.strip()] = source.strip()
    return fields


def cmd_investigate(args: argparse.Namespace, auto_approve: bool | None = None) -> int:
    thread_id = args.thread_id or f"incident-{uuid.uuid4().hex[:12]}"
    approve = args.auto_approve if auto_approve is None else auto_approve
    config = run_config(args, thread_id, approve)
    settings = Configuration.from_runnable_config(config)
    with open_checkpointer(checkpoint_path(settings)) as saver:
        app = build_graph(saver)
        if app.get_state(config).values:
            raise CheckpointError(f"thread {thread_id} already exists; use `incident-graph resume` or a new --thread-id")
        inputs = {**metrics_input(args, settings, thread_id), "logs": logs_input(args.logs)}
        if args.events:
            inputs["events"] = str(Path(args.events).resolve())
        log_format = getattr(args, "log_format", "auto")
        if log_format != "auto":
            inputs["log_format"] = log_format
        if getattr(args, "log_field", None):
            inputs["log_fields"] = parse_log_fields(args.log_field)
        print(f"thread {thread_id} (model: {settings.model})", flush=True)
        state = stream(app, {"inputs": inputs, "out_dir": str(Path(args.out).resolve())}, config, args.quiet)
        return finish(app, state, config, args, thread_id)


def cmd_resume(args: argparse.Namespace) -> int:
    config = run_config(args, args.thread_id, False)
    settings = Configuration.from_runnable_config(config)
    with open_checkpointer(checkpoint_path(settings)) as saver:
        app = build_graph(saver)
        snapshot = app.get_state(config)
        if not snapshot.values:
            raise CheckpointError(f"no thread {args.thread_id} in {checkpoint_path(settings)}")
        # `next` is also empty when a crash hit after a node's writes were saved but before the
        # following checkpoint: only a thread with no task left has finished.
        if not snapshot.next and not snapshot.tasks:
            print(f"thread {args.thread_id} is already finished: {snapshot.values.get('artifacts')}")
            return EXIT_OK
        decided = bool(args.approve or args.reject or args.plan)
        if not any(task.interrupts for task in snapshot.tasks):
            if decided:  # the plan was never shown: the decision waits until it has been
                print(f"thread {args.thread_id} stopped before asking for approval; continuing it first", file=sys.stderr)
            payload = None  # interrupted mid-run (crash): carry on from the last checkpoint
        else:
            if not decided:
                raise CheckpointError(f"thread {args.thread_id} waits for approval: pass --approve, --reject NOTE or --plan FILE")
            decision = {"action": "approve", "by": args.by} if args.approve else {"action": "reject", "note": args.reject, "by": args.by}
            if args.plan:
                decision = {"action": "edit", "by": args.by, "mitigations": json.loads(Path(args.plan).read_text())}
            payload = Command(resume=decision)
        state = stream(app, payload, config, args.quiet)
        return finish(app, state, config, args, args.thread_id)


def cmd_generate(args: argparse.Namespace) -> int:
    from evals.generator import generate, write_scenario

    scenario = generate(args.fault, args.seed)
    paths = write_scenario(scenario, args.out)
    for name, path in paths.items():
        print(f"wrote {path}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from evals.generator import generate, write_scenario

    scenario = generate(args.fault, args.seed)
    data_dir = Path(args.out) / "scenario"
    paths = write_scenario(scenario, data_dir)
    truth = scenario.truth
    print(f"scenario: fault={truth['fault']} seed={args.seed} window={truth['start']}..{truth['end']} root={truth['root_service']}")
    args.metrics, args.logs, args.events = paths["metrics"], paths["logs"], paths["events"]
    return cmd_investigate(args, auto_approve=True)


def cmd_eval(args: argparse.Namespace) -> int:
    from evals.suite import eval_folder

    settings = Configuration.from_runnable_config({})
    return eval_folder(args.cases_dir, args.report, work_root=Path(settings.state_dir) / "eval")


def cmd_serve(args: argparse.Namespace) -> int:
    import server

    server.serve(host=args.host, port=args.port, workers=args.workers)
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="incident-graph", description="Offline-first AI incident responder.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--out", required=True, help="directory for postmortem.json, postmortem.md, timeline.png")
        sp.add_argument("--state-dir", default=None, help="checkpoints and work databases (default $INCIDENT_GRAPH_HOME or ~/.incident-graph)")
        sp.add_argument("--quiet", action="store_true", help="no per-node progress lines")
        llm = sp.add_argument_group("model (default: the offline analyst; OPENAI_API_KEY / OPENAI_BASE_URL select an LLM)")
        llm.add_argument("--model", default=None, help="chat model name, or 'offline-analyst'")
        llm.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint (vLLM, Ollama, llama.cpp server)")
        llm.add_argument("--temperature", type=float, default=None)
        llm.add_argument("--max-steps", type=int, default=None, help="ReAct steps before the investigation must conclude")
        llm.add_argument("--token-budget", type=int, default=None, help="tokens in + out one run may spend on the model")
        llm.add_argument("--no-redact", action="store_true", help="send identifiers to the model unmasked")

    demo = sub.add_parser("demo", help="generate a scenario and investigate it (auto-approve)")
    demo.add_argument("--fault", default="conn_pool_exhaustion")
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--thread-id", default=None)
    common(demo)
    demo.set_defaults(func=cmd_demo)

    inv = sub.add_parser("investigate", help="investigate metrics + logs (+ events)")
    metrics = inv.add_argument_group("metrics (one of --metrics FILE or --prometheus URL)")
    source = metrics.add_mutually_exclusive_group(required=True)
    source.add_argument("--metrics", help="CSV/TSV/Parquet/NDJSON file: ts + numeric columns")
    source.add_argument("--prometheus", metavar="URL", help="Prometheus-compatible server (http://host:9090); read with /api/v1/query_range")
    metrics.add_argument("--query", action="append", metavar="NAME=PROMQL", help="a named PromQL query; the name becomes the metrics column (repeatable)")
    metrics.add_argument("--queries", metavar="FILE.yaml", help="named queries: 'queries: {NAME: PROMQL}' (optional 'step: 60s')")
    metrics.add_argument("--since", help="start: ISO 8601 (Z or offset), epoch seconds, or a duration before --until like 24h (default 24h)")
    metrics.add_argument("--until", help="end: ISO 8601, epoch seconds, or now (default now)")
    metrics.add_argument("--step", help="query resolution like 60s (default: 1 min, coarser when needed to stay within 11,000 points)")
    metrics.add_argument("--prometheus-header", action="append", metavar="'NAME: VALUE'",
                         help=f"extra HTTP header (repeatable), e.g. 'X-Scope-OrgID: tenant'; a bearer token is read from ${PROMETHEUS_TOKEN_ENV}")
    inv.add_argument("--logs", required=True, help="log file, or a directory / glob of Parquet files (read in place)")
    inv.add_argument("--log-format", choices=LOG_FORMATS, default="auto", help="default: from the file name and content")
    inv.add_argument("--log-field", action="append", metavar="TARGET=SOURCE.PATH",
                     help="take a log column from a nested field, e.g. service=kubernetes.labels.app (repeatable; NDJSON/Parquet)")
    inv.add_argument("--events", default=None)
    inv.add_argument("--auto-approve", action="store_true", help="approve the mitigation plan without asking")
    inv.add_argument("--thread-id", default=None)
    common(inv)
    inv.set_defaults(func=cmd_investigate)

    res = sub.add_parser("resume", help="answer the approval of a paused thread (or continue a crashed one)")
    res.add_argument("--thread-id", required=True)
    decision = res.add_mutually_exclusive_group()
    decision.add_argument("--approve", action="store_true")
    decision.add_argument("--reject", metavar="NOTE")
    decision.add_argument("--plan", metavar="FILE", help="JSON list of mitigations: approve this edited plan instead")
    res.add_argument("--by", default="on-call")
    common(res)
    res.set_defaults(func=cmd_resume)

    gen = sub.add_parser("generate", help="write a synthetic scenario: metrics.csv, logs.csv, events.csv, truth.json")
    gen.add_argument("--fault", required=True)
    gen.add_argument("--seed", type=int, required=True)
    gen.add_argument("--out", required=True)
    gen.set_defaults(func=cmd_generate)

    ev = sub.add_parser("eval", help="score the offline product (and a naive baseline) on a folder of labelled cases")
    ev.add_argument("cases_dir", metavar="CASES_DIR", help="one sub-folder per case: metrics.csv, logs.csv, [events.csv], truth.json")
    ev.add_argument("--report", metavar="FILE", default=None, help="also write the results as Markdown to FILE")
    ev.set_defaults(func=cmd_eval)

    srv = sub.add_parser("serve", help="the HTTP API, LangServe routes and the approval page")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (share PostgreSQL via INCIDENT_GRAPH_POSTGRES_DSN)")
    srv.set_defaults(func=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
