"""The `incident-graph` command: demo, investigate, resume, generate, eval, serve.

A contract other tools depend on: flags and exit codes are documented in the README
(0 done, 2 bad input or usage, 3 waiting for approval, 1 anything else). A decision someone
else took first is refused with 2; a run the machine stops (disk full, read-only) exits 1 and
its thread is finished later by `resume`.
"""

import argparse
import errno
import json
import os
import pwd
import shlex
import sqlite3
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Command, StateSnapshot
from pydantic import ValidationError

from graph.checkpointing import CheckpointUnavailable as CheckpointError
from graph.checkpointing import (
    ClaimedDecision,
    claim_in_sqlite,
    claimed_decision_in_sqlite,
    create_claim_tables,
    decision_claim_key,
    serializer,
    verify_sqlite_file,
)
from graph.configuration import (
    Configuration,
    readable_errors,
    runnable_config,
    thread_path,
)
from graph.graph import build_graph
from graph.plans import labelled
from graph.state import Approval, Decision, Mitigation
from serving.status import pending_interrupt
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
from tools.times import iso_utc

PROMETHEUS_TOKEN_ENV = "INCIDENT_GRAPH_PROMETHEUS_TOKEN"
PROMETHEUS_ONLY_FLAGS = ("query", "queries", "since", "until", "step", "prometheus_header")

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_WAITING = 0, 1, 2, 3

# About the largest plan the Mitigation model accepts (30 mitigations of 30 steps of 4000
# characters, in ASCII): a bigger --plan file is refused before it is parsed.
PLAN_FILE_MAX_BYTES = 4 * 2**20


class AlreadyDecided(Exception):
    """The approval request was answered by someone else first (another CLI process, the server)."""


class RunStopped(Exception):
    """The machine stopped the run (disk full, read-only, no permission); its checkpoints are kept."""


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
            create_claim_tables(conn)  # here, where a disk that cannot take them is a clear error
        except sqlite3.OperationalError as exc:  # the file passed verify_sqlite_file: the disk fails (full, read-only)
            raise CheckpointError(f"checkpoint database {path} cannot be written: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise CheckpointError(f"checkpoint database {path} is unreadable: {exc}") from exc
        yield saver
    finally:
        conn.close()


def checkpoint_path(settings: Configuration) -> Path:
    return Path(settings.state_dir) / "checkpoints.sqlite"


CONFIG_FLAGS = ("model", "base_url", "temperature", "max_steps", "token_budget", "window")


def run_config(args: argparse.Namespace, thread_id: str, auto_approve: bool) -> RunnableConfig:
    """The run's config from the flags. The thread id and every setting are checked here, before
    anything touches the disk; the recursion limit follows --max-steps."""
    configurable = {"auto_approve": auto_approve}
    if args.state_dir is not None:  # an empty --state-dir is refused by the model, not replaced by the default
        configurable["state_dir"] = args.state_dir
    for name in CONFIG_FLAGS:
        if getattr(args, name, None) is not None:
            configurable[name] = getattr(args, name)
    if getattr(args, "no_redact", False):
        configurable["redact"] = False
    return runnable_config(thread_id, configurable)


def new_thread_id(args: argparse.Namespace) -> str:
    return args.thread_id if args.thread_id is not None else f"incident-{uuid.uuid4().hex[:12]}"


def checked_out_dir(out: str) -> str:
    """--out as an absolute path; an existing non-directory is refused before the run, not at its end."""
    path = Path(out).resolve()
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {out} is not a directory")
    return str(path)


def stream(app, payload, config: RunnableConfig, quiet: bool) -> StateSnapshot:
    """Run the graph, printing one line per finished node; returns the thread's state at the end."""
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


def failure_reason(exc: OSError | sqlite3.OperationalError, store: Path) -> str:
    """'no space left on device (ENOSPC): /out/x' or 'checkpoint database /s/c.sqlite: database or disk is full'."""
    if isinstance(exc, sqlite3.OperationalError):
        return f"checkpoint database {store}: {exc}"
    code = errno.errorcode.get(exc.errno or 0)
    reason = (exc.strerror or str(exc)).lower() + (f" ({code})" if code else "")
    return f"{reason}: {exc.filename}" if exc.filename else reason


@contextmanager
def resumable_on_failure(args: argparse.Namespace, thread_id: str, store: Path) -> Iterator[None]:
    """Disk full, read-only or forbidden paths while the graph runs: a clear error (exit 1: the
    input was fine, the machine failed) instead of a traceback. Each step's checkpoint is atomic,
    so the thread stays at its last finished step and `resume` completes it once fixed."""
    try:
        yield
    except (OSError, sqlite3.OperationalError) as exc:
        raise RunStopped(f"thread {thread_id} stopped: {failure_reason(exc, store)}. Its checkpoints are kept; "
                         f"once that is fixed (or with another --out), finish it with: {resume_command(args, thread_id)}") from exc


SHOWN_COLUMNS = 12


def describe(node: str, update: dict | None) -> str:
    if not update:
        return "done"
    if node == "load" and "load_summary" in update:
        s = update["load_summary"]
        # A per-pod export has hundreds of columns: the first few name the shape well enough.
        cols = s["metric_columns"]
        shown = ", ".join(cols[:SHOWN_COLUMNS]) + (f" and {len(cols) - SHOWN_COLUMNS} more" if len(cols) > SHOWN_COLUMNS else "")
        services = f" for {len(s['metric_services'])} services" if s.get("metric_services") else ""
        return f"{s['metrics_rows']} metric rows ({shown}){services}, {s['log_rows']} log lines, {s['event_rows']} events"
    if node == "detect":
        d = update["detection"]
        if not d.window:
            return "no incident"
        which = f"window #{d.investigated_rank} of {len(d.windows)}" if d.investigated_rank else "the window asked for"
        others = [w for w in d.windows if w.rank != d.investigated_rank]
        listed = "".join(f"; #{w.rank} {iso_utc(w.start)} to {iso_utc(w.end)} ({w.minutes:.0f} min)" for w in others[:5])
        more = f" and {len(others) - 5} more" if len(others) > 5 else ""
        hint = f" (another one: --window N or --window START..END{listed}{more})" if others else ""
        return f"incident {which}: {iso_utc(d.window.start)} to {iso_utc(d.window.end)}{hint}"
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


def plan_line(m: Mitigation) -> str:
    """One mitigation as the approver reads it. A step that changes production shows as such,
    with what the proposer had claimed, so a 'no prod change' label cannot hide a restart."""
    if m.prod_change:
        prod = f"touches prod (proposed as no prod change: {m.prod_change})"
    else:
        prod = "touches prod" if m.touches_prod else "no prod change"
    status = "" if m.status == "proposed" else f"{m.status}; "
    return f"  {m.id}. {m.title} ({status}{prod}; owner {m.owner}; ETA {m.eta_minutes} min)"


def resume_command(args: argparse.Namespace, thread_id: str, *decision: str) -> str:
    """The `resume` command that continues this thread, quoted for a shell."""
    state_dir = ["--state-dir", args.state_dir] if args.state_dir is not None else []
    return shlex.join(["incident-graph", "resume", "--thread-id", thread_id, *decision, "--out", args.out, *state_dir])


def finish(state: StateSnapshot, args: argparse.Namespace, thread_id: str) -> int:
    pending = pending_interrupt(state)
    if pending is not None:
        request = pending[1]
        print("\nWaiting for approval. Proposed plan:")
        # Labelled again here: a thread checkpointed before the graph derived the label shows it too.
        for m in labelled([Mitigation.model_validate(m) for m in request.get("mitigations", [])]):
            print(plan_line(m))
        lead = request.get("leading_hypothesis") or {}
        print(f"Leading hypothesis: {lead.get('service')} / {lead.get('kind')} (confidence {lead.get('confidence')})")
        print(f"\nResume with:\n  {resume_command(args, thread_id, '--approve')}")
        print(f"  {resume_command(args, thread_id, '--reject', 'the reason')}")
        return EXIT_WAITING
    values = state.values
    artifacts = values.get("artifacts", {})
    pm = json.loads(Path(artifacts["postmortem.json"]).read_text())
    root = pm["root_cause"]
    print(f"\nthread {thread_id}: incident_detected={pm['incident_detected']} root_cause={root['service']} / {root['kind']}")
    if values.get("approval"):
        print(f"decision: {decision_summary(values['approval'])}")
        for m in values.get("mitigations", []):
            print(plan_line(m))
    for path in artifacts.values():
        print(f"  wrote {path}")
    return EXIT_OK


def decision_summary(approval: Approval) -> str:
    """'approve by alice (local user root) at 2024-06-01T10:00:00Z'"""
    who = f" ({approval.authenticated_as})" if approval.authenticated_as else ""
    return f"{approval.action} by {approval.by}{who} at {iso_utc(approval.at)}"


def metrics_input(args: argparse.Namespace, settings: Configuration, thread_id: str) -> dict:
    """The metrics inputs: --metrics as given, or the --prometheus queries fetched now into the
    thread's work folder plus where they came from (server without credentials, queries, range)
    for the postmortem. Credentials stay in this process, never in a checkpoint."""
    if not getattr(args, "prometheus", None):
        given = ["--" + name.replace("_", "-") for name in PROMETHEUS_ONLY_FLAGS if getattr(args, name, None)]
        if given:
            raise ValueError(f"{', '.join(given)} need --prometheus URL (the metrics come from --metrics {args.metrics})")
        return {"metrics": path_input(args.metrics)}
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
    path = thread_path(Path(settings.state_dir) / "work", thread_id, ".prometheus.parquet")
    if not args.quiet:
        print(f"prometheus: {len(queries)} quer{'y' if len(queries) == 1 else 'ies'}, {len(frame)} points "
              f"from {window.start.isoformat()} to {window.end.isoformat()} every {window.step_s:g}s", flush=True)
    _, server, _ = endpoint_and_headers(args.prometheus)
    source = {"server": server, "queries": queries, "start": window.start.isoformat(), "end": window.end.isoformat(), "step_seconds": window.step_s}
    return {"metrics": str(write_metrics(frame, path)), "metrics_source": source}


def path_input(path: str) -> str:
    """A file or directory as an absolute path; a glob pattern stays a pattern."""
    return os.path.abspath(os.path.expanduser(path)) if is_dataset(path) and has_glob(path) else str(Path(path).resolve())


def parse_log_fields(flags: list[str]) -> dict[str, str]:
    fields = {}
    for flag in flags:
        target, sep, source = flag.partition("=")
        if not sep or not target.strip() or not source.strip():
            raise ValueError(f"--log-field {flag!r}: expected TARGET=SOURCE.PATH, e.g. --log-field service=kubernetes.labels.app")
        fields[target.strip()] = source.strip()
    return fields


def cmd_investigate(args: argparse.Namespace) -> int:
    return investigate(args, run_config(args, new_thread_id(args), args.auto_approve), checked_out_dir(args.out))


def investigate(args: argparse.Namespace, config: RunnableConfig, out_dir: str) -> int:
    thread_id = config["configurable"]["thread_id"]
    settings = Configuration.from_runnable_config(config)
    store = checkpoint_path(settings)
    with open_checkpointer(store) as saver:
        app = build_graph(saver)
        if app.get_state(config).values:
            raise CheckpointError(f"thread {thread_id} already exists; use `incident-graph resume` or a new --thread-id")
        inputs = {**metrics_input(args, settings, thread_id), "logs": path_input(args.logs)}
        if args.events:
            inputs["events"] = str(Path(args.events).resolve())
        if getattr(args, "service_map", None):
            inputs["service_map"] = str(Path(args.service_map).resolve())
        log_format = getattr(args, "log_format", "auto")
        if log_format != "auto":
            inputs["log_format"] = log_format
        if getattr(args, "log_field", None):
            inputs["log_fields"] = parse_log_fields(args.log_field)
        print(f"thread {thread_id} (model: {settings.model})", flush=True)
        with resumable_on_failure(args, thread_id, store):
            state = stream(app, {"inputs": inputs, "out_dir": out_dir}, config, args.quiet)
        return finish(state, args, thread_id)


def local_user() -> str:
    """The account this process runs as, from the OS (not $USER, which any caller can set)."""
    uid = os.geteuid()
    try:
        return f"local user {pwd.getpwuid(uid).pw_name}"
    except KeyError:  # a uid without a passwd entry (containers)
        return f"local uid {uid}"


def read_plan(path: str) -> object:
    """The JSON of --plan FILE, read no further than PLAN_FILE_MAX_BYTES."""
    try:
        with open(path, "rb") as f:
            data = f.read(PLAN_FILE_MAX_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"--plan {path} cannot be read: {exc.strerror}") from None
    if len(data) > PLAN_FILE_MAX_BYTES:
        raise ValueError(f"--plan {path} is larger than {PLAN_FILE_MAX_BYTES // 2**20} MiB: a plan holds at most 30 mitigations")
    try:
        return json.loads(data)  # its shape is the Decision model's to check
    except RecursionError:
        raise ValueError(f"--plan {path} is not a plan: its JSON is nested too deeply") from None
    except ValueError as exc:  # also bytes that are not UTF-8
        raise ValueError(f"--plan {path} is not valid JSON: {exc}") from None


def decision_from(args: argparse.Namespace) -> Decision | None:
    """The decision the flags give, validated by the model (length of --by and the note, the
    edited plan), or None when no decision was given."""
    if args.approve:
        answer: dict = {"action": "approve"}
    elif args.reject is not None:
        answer = {"action": "reject", "note": args.reject}
    elif args.plan is not None:
        answer = {"action": "edit", "mitigations": read_plan(args.plan)}
    else:
        return None
    try:
        return Decision(**answer, by=args.by, authenticated_as=local_user())
    except ValidationError as exc:
        source = f"--plan {args.plan}" if args.plan is not None else "decision"
        raise ValueError(f"{source}: {readable_errors(exc)}") from None


def claim_decision(store: Path, thread_id: str, interrupt_id: str, decision: Decision) -> None:
    """Exactly one decision per approval request, whichever process sends it: the claim lives in
    the checkpoint file, where the server's workers claim too. The decision is stored with it, so
    a plain `resume` can finish it if this process dies before the approve node is checkpointed."""
    owner = f"{decision.authenticated_as} (cli pid {os.getpid()})"
    if not claim_in_sqlite(store, decision_claim_key(thread_id, interrupt_id), owner, decision.resume_value()):
        raise AlreadyDecided(f"thread {thread_id} is already decided: another process (CLI or server) answered "
                             f"approval request {interrupt_id} first; nothing was written")


def claimed_summary(claimed: ClaimedDecision) -> str:
    """'approve by alice claimed at 2024-06-01T10:00:00.123456Z by local user root (cli pid 42)'"""
    return f"{claimed.decision['action']} by {claimed.decision['by']} claimed at {claimed.claimed_at} by {claimed.owner}"


def unapplied_decision(args: argparse.Namespace, thread_id: str, claimed: ClaimedDecision) -> AlreadyDecided:
    """A decision sent while a claimed one waits to be applied: the claimed one stands."""
    return AlreadyDecided(f"thread {thread_id} is already decided: {claimed_summary(claimed)}, not applied yet (that process "
                          f"stopped, or is still running); a plain resume finishes it: {resume_command(args, thread_id)}")


def second_decision(thread_id: str, approval: Approval, finished: bool) -> AlreadyDecided:
    """A decision sent to a thread that holds one: the first stands, whoever sends the next."""
    then = "it has finished" if finished else "resume it without --approve, --reject or --plan to finish it"
    return AlreadyDecided(f"thread {thread_id} is already decided: {decision_summary(approval)}; {then}")


def resume_payload(decision: Decision | None, out_dir: str, recorded_out_dir: str | None) -> Command | None:
    """What the run resumes with: the decision, and --out as a state update when it differs from
    the thread's (the write node reads `out_dir` from the state)."""
    update = {"out_dir": out_dir} if out_dir != recorded_out_dir else None
    if decision is None and update is None:
        return None  # a crashed run carries on from its last checkpoint, unchanged
    return Command(resume=decision.resume_value() if decision else None, update=update)


def cmd_resume(args: argparse.Namespace) -> int:
    config = run_config(args, args.thread_id, False)
    decision = decision_from(args)
    settings = Configuration.from_runnable_config(config)
    out_dir = checked_out_dir(args.out)
    store = checkpoint_path(settings)
    with open_checkpointer(store) as saver:
        app = build_graph(saver)
        snapshot = app.get_state(config)
        if not snapshot.values:
            raise CheckpointError(f"no thread {args.thread_id} in {store}")
        # `next` is also empty when a crash hit after a node's writes were saved but before the
        # following checkpoint: only a thread with no task left has finished.
        finished = not snapshot.next and not snapshot.tasks
        if decision and snapshot.values.get("approval"):
            raise second_decision(args.thread_id, snapshot.values["approval"], finished)
        if finished:
            print(f"thread {args.thread_id} is already finished: {snapshot.values.get('artifacts')}")
            return EXIT_OK
        pending = pending_interrupt(snapshot)
        claimed = claimed_decision_in_sqlite(store, decision_claim_key(args.thread_id, pending[0])) if pending else None
        if pending is None:
            if decision:  # the plan was never shown: the decision waits until it has been
                print(f"thread {args.thread_id} stopped before asking for approval; continuing it first", file=sys.stderr)
            decision = None  # interrupted mid-run (crash): carry on from the last checkpoint
        elif claimed is not None:
            if decision:
                raise unapplied_decision(args, args.thread_id, claimed)
            # The process that won the claim died before the approve node was checkpointed.
            print(f"finishing the decision {claimed_summary(claimed)}", flush=True)
            decision = Decision.model_validate(claimed.decision)
        elif decision is None:
            raise CheckpointError(f"thread {args.thread_id} waits for approval: pass --approve, --reject NOTE or --plan FILE")
        with resumable_on_failure(args, args.thread_id, store):
            if decision and pending and claimed is None:
                claim_decision(store, args.thread_id, pending[0], decision)
            payload = resume_payload(decision, out_dir, snapshot.values.get("out_dir"))
            state = stream(app, payload, config, args.quiet)
        return finish(state, args, args.thread_id)


def cmd_generate(args: argparse.Namespace) -> int:
    from evals.generator import generate, write_scenario

    scenario = generate(args.fault, args.seed)
    paths = write_scenario(scenario, args.out)
    for path in paths.values():
        print(f"wrote {path}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from evals.generator import generate, write_scenario

    # A bad thread id, setting or --out is refused before the scenario is written.
    config, out_dir = run_config(args, new_thread_id(args), auto_approve=True), checked_out_dir(args.out)
    scenario = generate(args.fault, args.seed)
    paths = write_scenario(scenario, Path(out_dir) / "scenario")
    truth = scenario.truth
    print(f"scenario: fault={truth['fault']} seed={args.seed} window={truth['start']}..{truth['end']} root={truth['root_service']}")
    args.metrics, args.logs, args.events = paths["metrics"], paths["logs"], paths["events"]
    return investigate(args, config, out_dir)


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

    def window_flag(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--window", default=None, metavar="N|START..END",
                        help="investigate incident window N (1 = highest impact, the default) or the range START..END (ISO 8601)")

    demo = sub.add_parser("demo", help="generate a scenario and investigate it (auto-approve)")
    demo.add_argument("--fault", default="conn_pool_exhaustion")
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--thread-id", default=None)
    window_flag(demo)
    common(demo)
    demo.set_defaults(func=cmd_demo)

    inv = sub.add_parser("investigate", help="investigate metrics + logs (+ events)")
    metrics = inv.add_argument_group("metrics (one of --metrics FILE or --prometheus URL)")
    source = metrics.add_mutually_exclusive_group(required=True)
    source.add_argument("--metrics", help="CSV/TSV/Parquet/NDJSON file, or a folder / glob of per-pod files: ts + numeric "
                        "columns, optionally per service or pod (see the README's metric layouts)")
    metrics.add_argument("--service-map", metavar="FILE", help="CSV pod,service or JSON {pod or glob: service}: which service "
                         "a pod belongs to (default: its name without Kubernetes' hash or ordinal suffix)")
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
    window_flag(inv)
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
    except (InputError, CheckpointError, AlreadyDecided, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RunStopped as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
