"""The graph under /graph through LangServe (invoke, batch, stream, stream_log, stream_events,
the playground and the schemas), with the server's rules on top of LangServe's own:

- Every request starts new threads. The thread comes from the `x-thread-id` header (validated;
  409 when that thread exists in the incident index or the checkpointer, or another request
  took it) or is generated, one per batch input; the ids are sent back in the `x-thread-id`
  response header (comma-separated for a batch). A run paused at the approval is decided only
  through POST /incidents/{id}/decision, which takes the one-time decision claim: LangServe
  can neither resume nor restart it.
- A client may set only `CLIENT_SETTABLE` under `configurable`, within bounds: any other key is
  refused with 403 naming it, also a key LangServe itself would silently drop. The run's
  config is then built by the server (`Investigations.config`): its paths, model, limits and
  the human gate whatever the request said.
- Bodies are JSON (415 otherwise). Config hashes (`/graph/c/{hash}/...`) are not served: a
  config travels in the body only, where it is checked.
"""

import json
import uuid
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from graph.configuration import ClientSettingRefused, InvalidThreadId, client_overrides, validate_thread_id
from serving.security import replay, require_json

if TYPE_CHECKING:
    from server import Investigations

THREAD_HEADER = "x-thread-id"


def checked_overrides(configurable: Any) -> dict[str, Any]:
    """The settings a client asked for, or 403 naming what it may not set."""
    try:
        return client_overrides(configurable if isinstance(configurable, dict) else {})
    except ClientSettingRefused as exc:
        raise HTTPException(403, str(exc)) from None


async def refuse_operator_settings(request: Request) -> None:
    """A dependency of every /graph route: the client's own configs, checked before LangServe
    drops the keys the graph does not declare (state_dir, artifacts_dir ...) without a word."""
    if request.method != "POST":
        return
    require_json(request)
    try:
        body = await request.json()  # cached on the request: LangServe reads the same object
    except ValueError:
        raise HTTPException(422, "request body is not valid JSON") from None
    configs = body.get("config") if isinstance(body, dict) else None
    for config in configs if isinstance(configs, list) else [configs]:
        if isinstance(config, dict):
            checked_overrides(config.get("configurable"))


async def claim_new_thread(runs: "Investigations", requested: str | None) -> str:
    """A thread id for one new run: the client's, if valid and never used anywhere, or a fresh one."""
    thread_id = requested or f"graph-{uuid.uuid4().hex[:12]}"
    try:
        validate_thread_id(thread_id)
    except InvalidThreadId as exc:
        raise HTTPException(422, f"{THREAD_HEADER}: {exc}") from None
    # The claim makes "new" hold across concurrent requests and workers; an id is single-use.
    if await runs.thread_exists(thread_id) or not await runs.index.claim(f"thread:{thread_id}", runs.settings.worker):
        raise HTTPException(409, f"thread {thread_id} already exists: a /graph request always starts a new thread "
                                 f"(decide a paused one with POST /incidents/{thread_id}/decision)")
    return thread_id


def one_config_per_input(body: Any, requested_thread: str | None) -> Any:
    """A batch body whose config LangServe hands to the run-config hook once per input, so
    that each input gets its own thread (one shared config would put them all in one)."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        return body  # LangServe reports the malformed shape
    inputs, config = body["inputs"], body.get("config")
    if requested_thread and len(inputs) > 1:
        raise HTTPException(422, f"{THREAD_HEADER} names one thread and a batch runs one thread per input: leave it out "
                                 f"(the generated ids come back in the {THREAD_HEADER} response header)")
    if config is None or isinstance(config, dict):
        return {**body, "config": [dict(config or {}) for _ in inputs]}
    return body


def add_graph_routes(app: FastAPI, runs: "Investigations", guard: Any) -> None:
    from langserve import APIHandler, add_routes

    async def run_config(config: dict, request: Request) -> dict:
        """LangServe's per-request hook (awaited, once per batch input): the server builds the config."""
        overrides = checked_overrides(config.get("configurable"))
        thread_id = await claim_new_thread(runs, request.headers.get(THREAD_HEADER))
        request.state.thread_ids = [*getattr(request.state, "thread_ids", []), thread_id]
        return {**config, **runs.config(thread_id, overrides)}

    dependencies = [guard, Depends(refuse_operator_settings)]
    add_routes(app, runs.graph, path="/graph", per_req_config_modifier=run_config, dependencies=dependencies,
               disabled_endpoints=["batch", "config_hashes"])
    batch_handler = APIHandler(runs.graph, path="/graph", per_req_config_modifier=run_config)

    @app.post("/graph/batch", dependencies=dependencies, include_in_schema=False)
    async def batch(request: Request) -> Response:
        body = one_config_per_input(await request.json(), request.headers.get(THREAD_HEADER))
        return await batch_handler.batch(Request(request.scope, replay(json.dumps(body).encode(), request.receive)))


class EchoThreadIds:
    """ASGI middleware: the thread ids a /graph request started, in its `x-thread-id` response header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/graph/"):
            await self.app(scope, receive, send)
            return

        async def send_with_ids(message: Message) -> None:
            thread_ids = scope.get("state", {}).get("thread_ids")
            if message["type"] == "http.response.start" and thread_ids:
                message = {**message, "headers": [*message.get("headers", []), (THREAD_HEADER.encode(), ",".join(thread_ids).encode())]}
            await send(message)

        await self.app(scope, receive, send_with_ids)
