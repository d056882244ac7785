"""The HTTP face of incident-graph: LangServe routes, the incident API and the approval page.

    incident-graph serve --host 127.0.0.1 --port 8000

Settings come from the environment (`serving.settings.ServerSettings`). Runs started here are checkpointed
per thread in the SQLite file under the state dir, or in PostgreSQL when a DSN is set, so a
waiting incident survives a restart and any worker sharing the store can take its decision.

What a client controls: its inputs (uploads, or paths confined to the data directory), the
analysis windows in `CLIENT_SETTABLE`, and, with a decision, the approval's action, note, label
and edited plan. Everything else (model, endpoint, limits, paths, the human gate) is the
operator's; a decision records the identity of the API key that sent it. `serving.security`
screens every request (keys, cross-site origins, body sizes) and `serving.graph_routes` holds
the LangServe rules.
"""

import asyncio
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from langchain_core.runnables import RunnableConfig
from langgraph.types import Command
from pydantic import ValidationError
from sse_starlette.sse import EventSourceResponse
from starlette.datastructures import UploadFile

from graph.checkpointing import CheckpointUnavailable, DeferredSaver, decision_claim_key, open_postgres_saver, open_sqlite_saver
from graph.configuration import Configuration, InvalidThreadId, readable_errors, runnable_config, thread_path, validate_thread_id
from graph.graph import build_graph
from graph.state import Decision, DecisionRequest
from serving.graph_routes import EchoThreadIds, add_graph_routes
from serving.index import IncidentIndex, open_postgres_index, open_sqlite_index
from serving.security import (
    RequestGuard,
    bearer_guard,
    exposed_without_key,
    is_json,
    require_json,
)
from serving.settings import ServerSettings
from serving.status import FINISHED, describe_incident, pending_interrupt, status_of
from tools.loader import InputError
from tools.sources.datasets import FILE_INPUTS, OutsideInputRoots, confined_inputs, is_dataset
from tools.times import parse_utc

log = logging.getLogger("incident-graph.server")
PAGE_DIR = Path(__file__).resolve().parent / "serving" / "page"
ARTIFACTS = {"postmortem.json": "application/json", "postmortem.md": "text/markdown; charset=utf-8", "timeline.png": "image/png"}
UPLOAD_SUFFIX = re.compile(r"\.(csv|tsv|parquet|ndjson|jsonl|json)(\.gz)?$", re.IGNORECASE)
POLL_SECONDS = 0.1


class Investigations:
    """Runs the graph in background tasks of this worker; their state lives in the checkpointer."""

    def __init__(self, settings: ServerSettings, saver: DeferredSaver) -> None:
        self.settings = settings
        self.graph = build_graph(saver)
        self.index: IncidentIndex | None = None
        self.tasks: dict[str, asyncio.Task] = {}

    def config(self, thread_id: str, overrides: Mapping[str, Any] | None = None) -> RunnableConfig:
        """One run's config: a client's checked `overrides`, then the server's own paths; every
        other setting is the operator's, and the recursion limit follows their max_steps."""
        pinned = {
            "state_dir": str(self.settings.state_dir),
            "artifacts_dir": str(self.settings.artifacts_dir),
            "input_roots": os.pathsep.join(str(root) for root in self.settings.input_roots),
        }
        return runnable_config(thread_id, {**(overrides or {}), **pinned})

    def start(self, thread_id: str, payload: Any) -> None:
        self.tasks[thread_id] = asyncio.create_task(self._run(thread_id, payload), name=f"investigate {thread_id}")

    async def _run(self, thread_id: str, payload: Any) -> None:
        try:
            # durability="sync": a worker killed mid-run resumes from the node it was in.
            async for _ in self.graph.astream(payload, self.config(thread_id), stream_mode="updates", durability="sync"):
                pass
        except Exception:  # the error is also recorded in the checkpoint, where status_of reads it
            log.exception("investigation %s failed", thread_id)
        finally:
            self.tasks.pop(thread_id, None)

    async def snapshot(self, thread_id: str):
        return await self.graph.aget_state(self.config(thread_id))

    async def thread_exists(self, thread_id: str) -> bool:
        """An incident started here (checkpointed or not yet), or any checkpoint (CLI, LangServe)."""
        if await self.index.get(thread_id) is not None:
            return True
        return await self.graph.checkpointer.aget_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}) is not None

    async def recover(self) -> list[str]:
        """Resume incidents whose worker died mid-run; one worker wins each via a claim.

        An incident killed before its first checkpoint starts again from its recorded inputs;
        one killed later continues from its last checkpoint (payload None); one whose decision
        was claimed but not applied (the worker died before the approve node's checkpoint)
        resumes with the decision stored with the claim, never another.
        """
        resumed = []
        for record in await self.index.all():
            if record.thread_id in self.tasks:
                continue
            snapshot = await self.snapshot(record.thread_id)
            status, _ = status_of(snapshot)
            waiting = pending_interrupt(snapshot) if status == "waiting_for_approval" else None
            claimed = await self.index.claimed_decision(decision_claim_key(record.thread_id, waiting[0])) if waiting else None
            if status not in {"queued", "running"} and claimed is None:
                continue
            last_progress = parse_utc(snapshot.created_at or record.created_at)
            if claimed is not None:  # a decision taken after a long wait is progress: its worker may be applying it now
                last_progress = max(last_progress, parse_utc(claimed.claimed_at))
            if (datetime.now(UTC) - last_progress).total_seconds() < self.settings.recover_after_s:
                continue
            checkpoint_id = (snapshot.config or {}).get("configurable", {}).get("checkpoint_id", "start")
            if await self.index.claim(f"recover:{record.thread_id}:{checkpoint_id}", self.settings.worker):
                if claimed is not None:
                    self.start(record.thread_id, Command(resume=claimed.decision))
                else:
                    self.start(record.thread_id, {"inputs": record.source["inputs"]} if status == "queued" else None)
                resumed.append(record.thread_id)
        return resumed

    async def sweep(self) -> None:
        """Look for orphaned runs at start-up and then periodically (a worker may die any time)."""
        while True:
            try:
                resumed = await self.recover()
                if resumed:
                    log.warning("resumed %d orphaned investigation(s): %s", len(resumed), ", ".join(resumed))
            except Exception:  # a sweep that fails (store briefly unreachable) must not stop the next
                log.exception("recovery sweep failed")
            await asyncio.sleep(min(10.0, max(self.settings.recover_after_s, 0.5)))


async def save_upload(upload: UploadFile, destination: Path, budget: int) -> int:
    """Stream one uploaded file to disk; 413 as soon as the total passes `budget` bytes."""
    written = 0
    with destination.open("wb") as sink:
        while chunk := await upload.read(1 << 20):
            written += len(chunk)
            if written > budget:
                raise HTTPException(413, f"upload too large: more than {budget // 2**20} MiB in all")
            sink.write(chunk)
    if written == 0:
        raise HTTPException(422, f"uploaded file '{upload.filename}' ({destination.stem}) is empty")
    return written


async def read_uploads(request: Request, settings: ServerSettings, thread_id: str) -> dict[str, str]:
    form = await request.form(max_files=3, max_fields=10)
    unknown = set(form) - {"metrics", "logs", "events"}
    if unknown:
        raise HTTPException(422, f"unknown form field(s) {sorted(unknown)}: expected files 'metrics', 'logs' and optionally 'events'")
    folder = thread_path(settings.uploads_dir, thread_id)
    folder.mkdir(parents=True, exist_ok=True)
    inputs: dict[str, str] = {}
    budget = settings.max_upload_bytes
    try:
        for part in ("metrics", "logs", "events"):
            upload = form.get(part)
            if upload is None:
                if part != "events":
                    raise HTTPException(422, f"missing file field '{part}' (multipart/form-data with 'metrics' and 'logs' files)")
                continue
            if not isinstance(upload, UploadFile):
                raise HTTPException(422, f"field '{part}' must be a file, not text")
            name = Path(upload.filename or "").name
            match = UPLOAD_SUFFIX.search(name)
            if not match:
                raise HTTPException(422, f"'{part}' file '{name}': expected .csv, .tsv, .parquet, .ndjson or .jsonl (optionally .gz)")
            destination = folder / f"{part}{match.group(0).lower()}"
            budget -= await save_upload(upload, destination, budget)
            inputs[part] = str(destination)
    except HTTPException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        await form.close()
    return inputs


def inputs_from_paths(body: Any, settings: ServerSettings) -> dict[str, str]:
    """Paths under the data directory. It reads the disk (symlinks, a glob's files): run it off
    the event loop. `confined_inputs` refuses outside paths before reading anything and bounds
    a glob's listing in files and time."""
    if settings.data_dir is None:
        raise HTTPException(422, "this server has no data directory (INCIDENT_GRAPH_DATA_DIR): upload the files as multipart/form-data")
    if not isinstance(body, dict) or not isinstance(body.get("metrics"), str) or not isinstance(body.get("logs"), str):
        raise HTTPException(
            422,
            'expected JSON {"metrics": "path", "logs": "path or Parquet dir/glob", "events": "path (optional)", '
            '"log_format": "auto|csv|ndjson|loki|otlp|parquet (optional)", "log_fields": {"target": "source.path"} (optional)} '
            "with paths under the data directory",
        )
    files = {k: body[k] for k in ("metrics", "logs", "events") if body.get(k)}
    if isinstance(body.get("log_format"), str):
        files["log_format"] = body["log_format"]
    if isinstance(body.get("log_fields"), dict):
        files["log_fields"] = {str(k): str(v) for k, v in body["log_fields"].items()}
    try:
        confined = confined_inputs([settings.data_dir], files)
    except InputError as exc:
        raise HTTPException(403 if isinstance(exc, OutsideInputRoots) else 422, settings.public(exc)) from None
    for key in FILE_INPUTS:
        if key in confined and not (Path(confined[key]).is_file() or is_dataset(confined[key])):
            raise HTTPException(422, f"'{key}': no file {files[key]} under the data directory")
    return confined


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings.from_environment()
    Configuration.from_runnable_config({})  # a bad INCIDENT_GRAPH_<FIELD> is a startup error, not one per request
    saver = DeferredSaver()
    runs = Investigations(settings, saver)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if settings.postgres_dsn:
                saver.bind(await stack.enter_async_context(open_postgres_saver(settings.postgres_dsn)))
                runs.index = await stack.enter_async_context(open_postgres_index(settings.postgres_dsn))
            else:
                saver.bind(await stack.enter_async_context(open_sqlite_saver(settings.checkpoint_file)))
                runs.index = await stack.enter_async_context(open_sqlite_index(settings.checkpoint_file))
            sweeper = asyncio.create_task(runs.sweep(), name="recover orphaned investigations")
            try:
                yield
            finally:
                sweeper.cancel()
                for task in list(runs.tasks.values()):
                    task.cancel()
                await asyncio.gather(*runs.tasks.values(), return_exceptions=True)
                saver.bind(None)

    # The API docs are served by the guarded routes below, not FastAPI's open defaults.
    app = FastAPI(title="incident-graph", version="0.1", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.runs = runs
    app.add_middleware(EchoThreadIds)
    app.add_middleware(RequestGuard, allowed_origins=settings.allowed_origins, max_body_bytes=settings.max_json_bytes)
    guard = Depends(bearer_guard(settings.api_keys))

    @app.exception_handler(CheckpointUnavailable)
    async def checkpoint_unavailable(request: Request, exc: CheckpointUnavailable) -> JSONResponse:
        return JSONResponse({"detail": settings.public(exc)}, status_code=503)

    @app.exception_handler(InputError)
    async def input_error(request: Request, exc: InputError) -> JSONResponse:
        # Raised inside a LangServe run (an /incidents run records it in its checkpoint instead).
        return JSONResponse({"detail": settings.public(exc)}, status_code=403 if isinstance(exc, OutsideInputRoots) else 422)

    async def known_snapshot(thread_id: str):
        try:
            validate_thread_id(thread_id)
        except InvalidThreadId as exc:
            raise HTTPException(422, str(exc)) from None
        snapshot = await runs.snapshot(thread_id)
        if not snapshot.values and not snapshot.next and await runs.index.get(thread_id) is None:
            raise HTTPException(404, f"no incident {thread_id}")
        return snapshot

    @app.post("/incidents", status_code=202, dependencies=[guard])
    async def start_incident(request: Request) -> dict:
        declared = int(request.headers.get("content-length") or 0)
        if declared > settings.max_upload_bytes:
            raise HTTPException(413, f"upload too large: {declared} bytes, the limit is {settings.max_upload_bytes // 2**20} MiB")
        thread_id = f"incident-{uuid.uuid4().hex[:12]}"
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            inputs = await read_uploads(request, settings, thread_id)
            source = {"kind": "upload", "files": {k: Path(v).name for k, v in inputs.items()}, "inputs": inputs}
        elif is_json(content_type):
            try:
                body = await request.json()
            except ValueError as exc:  # bad JSON, or bytes that are not UTF-8
                raise HTTPException(422, f"request body is not valid JSON: {exc}") from None
            inputs = await asyncio.to_thread(inputs_from_paths, body, settings)
            shown = {k: os.path.relpath(inputs[k], settings.data_dir.resolve()) for k in FILE_INPUTS if k in inputs}
            source = {"kind": "paths", "files": shown, "inputs": inputs}
        else:
            raise HTTPException(415, "send multipart/form-data files (metrics, logs, events) or JSON paths under the data directory")
        await runs.index.add(thread_id, source)
        runs.start(thread_id, {"inputs": inputs})
        return {"thread_id": thread_id, "status": "running", "links": incident_links(thread_id)}

    @app.get("/incidents", dependencies=[guard])
    async def list_incidents() -> list[dict]:
        views = []
        for record in await runs.index.all():
            view = describe_incident(record.thread_id, await runs.snapshot(record.thread_id), detail=False, public=settings.public)
            views.append({**view, "created_at": record.created_at, "source": public_source(record.source)})
        return views

    @app.get("/incidents/{thread_id}", dependencies=[guard])
    async def get_incident(thread_id: str) -> dict:
        view = describe_incident(thread_id, await known_snapshot(thread_id), detail=True, public=settings.public)
        return {**view, "links": incident_links(thread_id)}

    # The key is checked first (an anonymous caller learns nothing, not even a 415); its owner is `identity`.
    @app.post("/incidents/{thread_id}/decision", status_code=202, dependencies=[guard, Depends(require_json)])
    async def decide(thread_id: str, request: Request, identity: str = guard) -> dict:
        """The only way a paused run goes on, from any entry point: one claim per approval request."""
        snapshot = await known_snapshot(thread_id)
        try:
            asked = DecisionRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise HTTPException(422, f"invalid decision ({readable_errors(exc)}); expected {{'action': 'approve'|'reject'|'edit', ...}}") from None
        waiting = pending_interrupt(snapshot)
        if waiting is None:
            status, _ = status_of(snapshot)
            raise HTTPException(409, f"incident {thread_id} is not waiting for a decision (status: {status})")
        # `by` is the label the decider typed; `authenticated_as` is who the key says they are.
        decision = Decision(**dict(asked), authenticated_as=identity)
        answer = decision.resume_value()
        # Stored with the claim: if this worker dies before applying it, the recovery sweep does.
        if not await runs.index.claim(decision_claim_key(thread_id, waiting[0]), settings.worker, answer):
            raise HTTPException(409, f"incident {thread_id} has already been decided")
        runs.start(thread_id, Command(resume=answer))
        return {"thread_id": thread_id, "status": "running", "decision": decision.action, "authenticated_as": identity}

    @app.get("/incidents/{thread_id}/events", dependencies=[guard])
    async def incident_events(thread_id: str, request: Request) -> EventSourceResponse:
        await known_snapshot(thread_id)

        async def progress() -> AsyncIterator[dict]:
            seen_runs, last_status = 0, None
            while not await request.is_disconnected():
                snapshot = await runs.snapshot(thread_id)
                node_runs = snapshot.values.get("node_runs", [])
                for run in node_runs[seen_runs:]:
                    yield {"event": "node", "data": run.model_dump_json()}
                seen_runs = len(node_runs)
                status, error = status_of(snapshot)
                if status != last_status:
                    current = snapshot.next[0] if snapshot.next else None
                    shown_error = settings.public(error) if error else None
                    yield {"event": "status", "data": json.dumps({"status": status, "current_node": current, "error": shown_error})}
                    last_status = status
                if status in FINISHED and thread_id not in runs.tasks:
                    return
                await asyncio.sleep(POLL_SECONDS)

        return EventSourceResponse(progress())

    @app.get("/incidents/{thread_id}/{artifact}", dependencies=[guard])
    async def get_artifact(thread_id: str, artifact: str) -> FileResponse:
        if artifact not in ARTIFACTS:
            raise HTTPException(404, f"unknown artifact {artifact}: one of {', '.join(ARTIFACTS)}")
        snapshot = await known_snapshot(thread_id)
        written = snapshot.values.get("artifacts", {})
        if artifact not in written:
            status, _ = status_of(snapshot)
            raise HTTPException(404, f"{artifact} is not written yet (status: {status})")
        return FileResponse(written[artifact], media_type=ARTIFACTS[artifact], filename=artifact)

    @app.get("/healthz")
    async def healthz() -> dict:
        """Open, for load balancers: says nothing about incidents."""
        return {"ok": True}

    @app.get("/status", dependencies=[guard])
    async def worker_status() -> dict:
        return {"worker": settings.worker, "running": sorted(runs.tasks)}

    @app.get("/openapi.json", include_in_schema=False, dependencies=[guard])
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=[guard])
    async def swagger_docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="incident-graph API")

    @app.get("/redoc", include_in_schema=False, dependencies=[guard])
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title="incident-graph API")

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse((PAGE_DIR / "index.html").read_text(encoding="utf-8"))

    add_graph_routes(app, runs, guard)
    return app


def public_source(source: dict[str, Any]) -> dict[str, Any]:
    """What an incident was started from, without the server's own paths."""
    return {k: v for k, v in source.items() if k != "inputs"}


def incident_links(thread_id: str) -> dict[str, str]:
    base = f"/incidents/{thread_id}"
    return {
        "self": base,
        "events": f"{base}/events",
        "decision": f"{base}/decision",
        **{name: f"{base}/{name}" for name in ARTIFACTS},
    }


WORKER_HEALTHCHECK_S = 30


def serve(host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Several workers need a store they can share: PostgreSQL, or the SQLite file on one host."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = ServerSettings.from_environment()
    if exposed_without_key(host, bool(settings.api_keys)):
        log.warning("NO API KEY: listening on %s:%d with neither INCIDENT_GRAPH_API_KEY nor INCIDENT_GRAPH_API_KEYS set; anyone "
                    "who reaches this address can read every incident and approve its mitigations", host, port)
    if workers > 1:
        # uvicorn kills a worker that does not answer its supervisor's ping within 5 s by default,
        # dropping the connections it holds; a worker busy with two investigations on a loaded
        # host can miss that, and a late answer is no reason to kill one.
        uvicorn.run("server:create_app", factory=True, host=host, port=port, workers=workers,
                    timeout_worker_healthcheck=WORKER_HEALTHCHECK_S)
    else:
        uvicorn.run(create_app(settings), host=host, port=port)
