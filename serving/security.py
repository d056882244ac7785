"""Who may call the server, and what a request may carry, checked before any handler runs.

- API keys: `INCIDENT_GRAPH_API_KEY` (one shared key, identity "api-key") and/or
  `INCIDENT_GRAPH_API_KEYS="alice:KEY1,bob:KEY2"` (one key per person, so a decision records
  who took it). Without any key every route is open, and `serve` says so loudly when the
  server listens beyond loopback.
- Cross-site requests: a page on another site can make a browser POST to any server the
  browser reaches, key or not (CSRF). A state-changing request whose Origin (or, without one,
  Referer) is neither the server's own nor listed in `INCIDENT_GRAPH_ALLOWED_ORIGINS` is
  refused. Clients that send neither header (curl, httpx, RemoteRunnable) are not browsers.
- Bodies: every body but a multipart upload is read up to `INCIDENT_GRAPH_MAX_JSON_KB` and
  refused beyond, also when it is chunked (no Content-Length); uploads are bounded by their
  route as they stream to disk.
- Messages: `PublicPaths` replaces the server's own directories in what a client is shown.
"""

import hmac
import ipaddress
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import HTTPException, Request
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SHARED_KEY_IDENTITY = "api-key"
UNAUTHENTICATED = "unauthenticated (no API key configured)"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_api_keys(shared: str | None, named: str | None) -> dict[str, str]:
    """{key: identity} from INCIDENT_GRAPH_API_KEY and INCIDENT_GRAPH_API_KEYS ('name:key,...')."""
    keys: dict[str, str] = {shared: SHARED_KEY_IDENTITY} if shared else {}
    for entry in filter(None, (part.strip() for part in (named or "").split(","))):
        name, _, key = entry.partition(":")
        name, key = name.strip(), key.strip()
        if not name or not key or len(name) > 100:
            raise ValueError("INCIDENT_GRAPH_API_KEYS: expected 'name:key' entries separated by commas (names up to 100 characters)")
        if key in keys:
            raise ValueError(f"INCIDENT_GRAPH_API_KEYS: the key of {name!r} is also given to {keys[key]!r}: give each person their own")
        keys[key] = name
    return keys


def bearer_guard(keys: Mapping[str, str]) -> Callable[[Request], Awaitable[str]]:
    """A dependency that demands `Authorization: Bearer <key>` when the server has keys, and
    returns who the key belongs to (also left in `request.state.identity`)."""

    async def identify(request: Request) -> str:
        if not keys:
            identity = UNAUTHENTICATED
        else:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            given = token.strip().encode()
            # Every key is compared, so the time taken does not tell which one came close.
            matches = [name for key, name in keys.items() if hmac.compare_digest(given, key.encode())]
            if scheme.lower() != "bearer" or not matches:
                raise HTTPException(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", {"WWW-Authenticate": "Bearer"})
            identity = matches[0]
        request.state.identity = identity
        return identity

    return identify


def require_json(request: Request) -> None:
    """A dependency for routes that take JSON: anything else is 415 (a form or text/plain body
    is what a cross-site HTML form sends)."""
    if request.method not in SAFE_METHODS and not is_json(request.headers.get("content-type", "")):
        raise HTTPException(415, "send the body as JSON with 'Content-Type: application/json'")


def is_json(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == "application/json"


def origin_of(url: str) -> str | None:
    """'scheme://host:port' of a URL (default ports spelled out), or None when it has none."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname or port is None:
        return None
    return f"{parts.scheme.lower()}://{parts.hostname.lower()}:{port}"


def parse_origins(text: str | None) -> frozenset[str]:
    """INCIDENT_GRAPH_ALLOWED_ORIGINS: comma-separated origins such as https://ops.example.com."""
    origins = set()
    for entry in filter(None, (part.strip() for part in (text or "").split(","))):
        origin = origin_of(entry)
        if origin is None:
            raise ValueError(f"INCIDENT_GRAPH_ALLOWED_ORIGINS: {entry!r} is not an origin like https://ops.example.com")
        origins.add(origin)
    return frozenset(origins)


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive channel that hands out `body` first, then whatever the client sends next
    (the disconnect a streaming response waits for)."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


class RequestGuard:
    """ASGI middleware: cross-site state changes and oversized bodies never reach a route."""

    def __init__(self, app: ASGIApp, allowed_origins: frozenset[str], max_body_bytes: int) -> None:
        self.app, self.allowed_origins, self.max_body_bytes = app, allowed_origins, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self.cross_site_refusal(scope, headers)
        if refusal:
            await JSONResponse({"detail": refusal}, 403)(scope, receive, send)
            return
        if headers.get("content-type", "").lower().startswith("multipart/form-data"):
            await self.app(scope, receive, send)  # POST /incidents bounds each file as it streams to disk
            return
        body = await self.read_bounded(headers, receive)
        if body is None:
            limit = f"{self.max_body_bytes // 1024} KiB (INCIDENT_GRAPH_MAX_JSON_KB)"
            await JSONResponse({"detail": f"request body too large: more than {limit}; send files as a multipart upload"},
                               413)(scope, receive, send)
            return
        await self.app(scope, replay(body, receive), send)

    def cross_site_refusal(self, scope: Scope, headers: Headers) -> str | None:
        sent = headers.get("origin") or headers.get("referer")
        if sent is None:
            return None
        origin = origin_of(sent)
        own = origin_of(f"{scope.get('scheme', 'http')}://{headers.get('host', '')}")
        if origin is not None and (origin == own or origin in self.allowed_origins):
            return None
        return (f"cross-site request refused: {sent[:200]!r} is not this server's origin; "
                f"list a trusted web origin in INCIDENT_GRAPH_ALLOWED_ORIGINS")

    async def read_bounded(self, headers: Headers, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it is known to pass the limit."""
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away mid-body
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)


class PublicPaths:
    """Rewrites a message for clients: the server's own directories become placeholders
    (`<data>/checkout/logs.csv`), in every spelling the server may have used."""

    def __init__(self, places: Mapping[str, Path | None]) -> None:
        prefixes = {}
        for placeholder, directory in places.items():
            if directory is not None:
                for spelling in (str(directory), os.path.abspath(directory), str(Path(directory).resolve())):
                    prefixes[spelling.rstrip(os.sep)] = placeholder
        # Longest first: the uploads folder lies inside the state dir.
        self.prefixes = sorted(prefixes.items(), key=lambda item: -len(item[0]))

    def __call__(self, text: Any) -> str:
        text = str(text)
        for prefix, placeholder in self.prefixes:
            text = text.replace(prefix, placeholder)
        return text


def exposed_without_key(host: str, has_key: bool) -> bool:
    """True when the server would answer anyone on the network with no key asked."""
    if has_key:
        return False
    try:
        return not ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host != "localhost"
