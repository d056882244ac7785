"""The `incident-graph` command: demo, investigate, resume, generate, eval, serve.

A contract other tools depend on: flags and exit codes are documented in the README
(0 done, 2 bad input or usage, 3 waiting for approval, 1 anything else).
"""

import argparse
import json
import sqlite3
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Command

from graph.configuration import Configuration
from graph.graph import NODE_ORDER, build_graph
from graph.state import STATE_MODELS
from tools.loader import InputError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_WAITING = 0, 1, 2, 3


class CheckpointError(RuntimeError):
    pass


@contextmanager
def open_checkpointer(path: Path) -> Iterator[SqliteSaver]:
    """The SQLite checkpointer at `path`; a corrupt or unreadable file is an error, never a fresh start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False)
    try:
        try:
            conn.execute("PRAGMA schema_version").fetchone()
        except sqlite3.DatabaseError as exc:
            raise CheckpointError(f"checkpoint database {path} is unreadable: {exc}") from exc
        yield SqliteSaver(conn, serde=JsonPlusSerializer(allowed_msgpack_modules=STATE_MODELS))
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
    for update in app.stream(payload, config, stream_mode="updates", subgraphs=True):
        namespace, chunk = update
        for node, value in chunk.items():
            if node == "__interrupt__" or quiet:
                continue
            where = "investigate/" if namespace else ""
            print(f"[{where}{node}] {describe(node, value)}", flush=True)
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


def cmd_investigate(args: argparse.Namespace, auto_approve: bool | None = None) -> int:
    thread_id = args.thread_id or f"incident-{uuid.uuid4().hex[:12]}"
    approve = args.auto_approve if auto_approve is None else auto_approve
    config = run_config(args, thread_id, approve)
    settings = Configuration.from_runnable_config(config)
    inputs = {"metrics": str(Path(args.metrics).resolve()), "logs": str(Path(args.logs).resolve())}
    if args.events:
        inputs["events"] = str(Path(args.events).resolve())
    with open_checkpointer(checkpoint_path(settings)) as saver:
        app = build_graph(saver)
        if app.get_state(config).values:
            raise CheckpointError(f"thread {thread_id} already exists; use `incident-graph resume` or a new --thread-id")
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
        if not snapshot.next:
            print(f"thread {args.thread_id} is already finished: {snapshot.values.get('artifacts')}")
            return EXIT_OK
        if snapshot.values.get("approval") is None and "approve" in snapshot.next:
            if not (args.approve or args.reject or args.plan):
                raise CheckpointError(f"thread {args.thread_id} waits for approval: pass --approve, --reject NOTE or --plan FILE")
            decision = {"action": "approve", "by": args.by} if args.approve else {"action": "reject", "note": args.reject, "by": args.by}
            if args.plan:
                decision = {"action": "edit", "by": args.by, "mitigations": json.loads(Path(args.plan).read_text())}
            payload = Command(resume=decision)
        else:
            payload = None  # interrupted mid-run (crash): carry on from the last checkpoint
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

    server.serve(host=args.host, port=args.port)
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
    inv.add_argument("--metrics", required=True)
    inv.add_argument("--logs", required=True)
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
