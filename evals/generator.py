"""Synthetic incident scenario generator.

``generate(fault, seed)`` builds one day (1440 minutes) of telemetry for a small,
randomised microservice system:

* ``metrics``: per-minute ``rps``, ``p95_ms``, ``error_rate`` (plus 0-2 generic extra
  signals) with diurnal seasonality and Gaussian noise;
* ``logs``: 25k-80k structured log lines from every service (INFO traffic, background
  WARN/ERROR noise, one or two chronically noisy services, and - for a real fault - the
  root service's fault messages plus its callers' louder upstream-failure messages);
* ``events``: deploys / config changes / feature flags / scaling, most of them harmless,
  plus the causal change for faults that have one;
* ``truth``: the ground truth used by the eval harness (window, root service, kind, ...).

Everything is driven by ``numpy.random.default_rng`` seeded from a stable SHA-256 hash of
``(fault, seed)``, so the same arguments always give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import string
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["FAULTS", "Scenario", "generate", "write_scenario"]

MINUTES = 1440  # one day of per-minute points
_EPOCH_2025 = int(pd.Timestamp("2025-01-01T00:00:00Z").timestamp())
_PERIOD_CHOICES = 729 * MINUTES  # any minute-aligned start such that the day ends in 2026

# ----------------------------------------------------------------------------------------
# fault catalogue
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _FaultSpec:
    kinds: tuple[str, ...]  # candidate root error kinds (one picked per seed)
    shape: str
    caller_kinds: tuple[str, ...]  # candidate kinds for the callers' upstream errors
    root_pref: dict[str, float]  # role -> weight when picking the root service
    trigger: tuple[str, ...]  # event kinds of the causal change ("" = none)
    root_templates: tuple[tuple[str, str], ...]  # (level, format)
    restart_templates: tuple[tuple[str, str], ...] = ()  # sawtooth only


_SPECS: dict[str, _FaultSpec] = {
    "db_latency_ramp": _FaultSpec(
        kinds=("SlowQuery",),
        shape="ramp",
        caller_kinds=("UpstreamTimeout",),
        root_pref={"db": 8.0, "mid": 2.0, "cache": 1.0, "worker": 0.5, "proxy": 0.5, "entry": 0.2},
        trigger=(),
        root_templates=(
            ("WARN", "slow query on table {table}: {lat}ms (rows examined={rows})"),
            ("WARN", "query on table {table} took {lat}ms, threshold is {thr}ms"),
            ("ERROR", "statement timeout: SELECT ... FROM {table} WHERE id={id} cancelled after {lat}ms"),
            ("WARN", "lock wait on {table} for {lat}ms (txn {hex8})"),
            ("ERROR", "query plan regression on {table}: seq scan over {rows} rows took {lat}ms"),
        ),
    ),
    "conn_pool_exhaustion": _FaultSpec(
        kinds=("DBConnPoolExhausted",),
        shape="step",
        caller_kinds=("Upstream5xx", "UpstreamTimeout"),
        root_pref={"db": 4.0, "mid": 4.0, "proxy": 1.0, "worker": 1.0, "cache": 0.5, "entry": 0.3},
        trigger=(),
        root_templates=(
            ("ERROR", "connection pool exhausted: {pool}/{pool} in use, waited {lat}ms for conn"),
            ("ERROR", "timeout acquiring connection from pool '{poolname}' after {lat}ms "
                      "(active={pool}, idle=0, pending={n})"),
            ("ERROR", "{poolname} - Connection is not available, request timed out after {lat}ms"),
            ("WARN", "pool '{poolname}' saturated: {pool} active, {n} threads waiting"),
        ),
    ),
    "bad_deploy": _FaultSpec(
        kinds=("NullPointerException", "UnhandledException", "SerializationError"),
        shape="step",
        caller_kinds=("Upstream5xx",),
        root_pref={"mid": 6.0, "worker": 2.0, "entry": 1.0, "proxy": 1.0, "db": 0.3, "cache": 0.3},
        trigger=("deploy",),
        root_templates=(
            ("ERROR", "unhandled {kind} in {handler}: {detail} (request {hex8})"),
            ("ERROR", "500 Internal Server Error on {ep}: {kind}: {detail}"),
            ("ERROR", "{kind} at {cls}.{meth}({file}:{lineno}) while handling {ep} [build {build}]"),
            ("ERROR", "request {hex8} failed after {lat}ms: {kind} raised in {handler}"),
            ("WARN", "recovered from {kind} in {handler}, returning 500 to client {client}"),
        ),
    ),
    "memory_leak": _FaultSpec(
        kinds=("OOMKilled",),
        shape="sawtooth",
        caller_kinds=("Upstream5xx", "UpstreamUnavailable"),
        root_pref={"mid": 4.0, "worker": 3.0, "cache": 2.0, "entry": 0.8, "proxy": 1.0, "db": 1.0},
        trigger=(),
        root_templates=(
            ("WARN", "heap usage at {pct}% of {mem}Mi, GC overhead {gcpct}%"),
            ("WARN", "GC pause {ms}ms (heap {pct}% full after collection)"),
            ("WARN", "memory pressure: rss {rss}Mi of {mem}Mi limit"),
            ("WARN", "allocation stall: young gen exhausted, full GC took {ms}ms"),
        ),
        restart_templates=(
            ("ERROR", "container {root} OOMKilled (limit {mem}Mi), restarting (restart #{restart})"),
            ("ERROR", "java.lang.OutOfMemoryError: Java heap space in thread \"worker-{n}\""),
            ("ERROR", "process {pid} killed by OOM killer: rss={mem}Mi, restarting"),
            ("ERROR", "fatal: out of memory allocating {bytes} bytes, pod {root}-{hex8} restarting"),
        ),
    ),
    "dependency_outage": _FaultSpec(
        kinds=("ConnectionRefused",),
        shape="cliff",
        caller_kinds=("UpstreamUnavailable", "Upstream5xx"),
        root_pref={"proxy": 5.0, "mid": 3.0, "db": 2.0, "worker": 1.5, "cache": 1.0, "entry": 0.4},
        trigger=(),
        root_templates=(
            ("ERROR", "connect to {dep}:{port} failed: connection refused"),
            ("ERROR", "dial tcp {ip}:{port}: connect: connection refused"),
            ("ERROR", "health check against {dep} failed: ECONNREFUSED {ip}:{port} (attempt {attempt})"),
            ("WARN", "marking backend {dep} ({ip}:{port}) down after {n} refused connections"),
        ),
    ),
    "tls_cert_expiry": _FaultSpec(
        kinds=("TLSHandshakeFailure",),
        shape="step",
        caller_kinds=("Upstream5xx", "UpstreamUnavailable"),
        root_pref={"proxy": 4.0, "mid": 3.0, "entry": 1.0, "worker": 1.0, "db": 1.0, "cache": 0.5},
        trigger=(),
        root_templates=(
            ("ERROR", "TLS handshake with {dep}:{port} failed: x509: certificate has expired or is "
                      "not yet valid (notAfter={notafter})"),
            ("ERROR", "SSL routines::certificate verify failed: certificate expired (serial {hex8}, CN={cn})"),
            ("ERROR", "handshake error from {ip}:{port}: remote error: tls: bad certificate"),
            ("WARN", "mTLS client certificate for {cn} expired at {notafter}, rejecting connection"),
        ),
    ),
    "config_rate_limit": _FaultSpec(
        kinds=("RateLimitExceeded",),
        shape="step",
        caller_kinds=("UpstreamThrottled",),
        root_pref={"mid": 4.0, "entry": 1.5, "proxy": 2.0, "worker": 1.0, "db": 0.5, "cache": 0.5},
        trigger=("config", "feature_flag"),
        root_templates=(
            ("WARN", "rate limit exceeded for client {client}: {rps} req/s > limit {lim}"),
            ("ERROR", "429 Too Many Requests: quota {lim}/s exhausted for tenant {id}"),
            ("WARN", "throttling request {hex8} on {ep}: token bucket empty (limit={lim}/s)"),
            ("ERROR", "rejected {n} requests in last 10s: RateLimitExceeded (policy '{policy}', limit {lim}/s)"),
        ),
    ),
}

FAULTS: tuple[str, ...] = tuple(_SPECS) + ("none",)

# the callers' upstream-failure phrasing, by caller kind; {root} is always named
_CALLER_TEMPLATES: dict[str, tuple[tuple[str, str], ...]] = {
    "UpstreamTimeout": (
        ("ERROR", "call to {root} failed: timeout after {to}ms"),
        ("ERROR", "request {hex8} to {root} timed out after {to}ms (attempt {attempt}/3)"),
        ("WARN", "context deadline exceeded calling {root} ({to}ms), retrying"),
        ("ERROR", "{ep} failed: read timeout from {root} after {to}ms"),
    ),
    "Upstream5xx": (
        ("ERROR", "upstream {root} returned 503"),
        ("ERROR", "{root} responded 500 Internal Server Error for request {hex8} ({lat}ms)"),
        ("WARN", "circuit breaker for {root} OPEN after {n} consecutive failures"),
        ("ERROR", "call to {root} failed: HTTP {code5} after {lat}ms"),
        ("ERROR", "{ep} -> {root}: upstream error 502 Bad Gateway"),
    ),
    "UpstreamUnavailable": (
        ("ERROR", "upstream {root} unavailable: connection reset by peer"),
        ("ERROR", "no healthy upstream for {root} (0/{hosts} hosts available)"),
        ("WARN", "retrying call to {root} in {ms}ms: 503 Service Unavailable"),
        ("ERROR", "call to {root} failed: upstream connect error or disconnect/reset before headers"),
    ),
    "UpstreamThrottled": (
        ("WARN", "upstream {root} returned 429 Too Many Requests, backing off {ms}ms"),
        ("ERROR", "call to {root} failed: 429 rate limited (attempt {attempt}/3)"),
        ("ERROR", "{root} throttled request {hex8} on {ep}"),
        ("WARN", "{root} quota exhausted, shedding {n} requests"),
    ),
}
# callers that reach the root only through another service
_INDIRECT_KIND = "Upstream5xx"
_INDIRECT_TEMPLATES: tuple[tuple[str, str], ...] = (
    ("ERROR", "request to {via} failed: 502 Bad Gateway (upstream {root} failing)"),
    ("ERROR", "{via} returned 503 for {ep}: dependency {root} degraded"),
    ("WARN", "serving fallback for {ep}: {via} error caused by {root}"),
    ("ERROR", "call chain {via} -> {root} failed after {lat}ms"),
)

# chronic, harmless WARN/ERROR streams of the "noisy" services: (level, format, kind)
_NOISY_TEMPLATES: tuple[tuple[str, str, str], ...] = (
    ("WARN", "DEPRECATED: {ep} called with legacy parameter 'page_size' by client {client}; "
             "removal planned for v5", "DeprecationWarning"),
    ("WARN", "retrying publish to {topic} (attempt {attempt}/5): NOT_LEADER_FOR_PARTITION", "RetryableError"),
    ("ERROR", "retryable error writing s3://{bucket}/{id}.json: SlowDown, retry in {ms}ms", "RetryableError"),
    ("WARN", "feature flag refresh failed, serving cached flags (age {n}s)", "FlagRefreshFailed"),
    ("ERROR", "ValidationError: invalid payload on {ep}: field 'email' malformed (user u{id})", "ValidationError"),
    ("WARN", "consumer lag on {topic} is {lag} messages", "ConsumerLag"),
    ("ERROR", "push delivery {hex8} failed: BadDeviceToken (user u{id})", "PushDeliveryFailed"),
    ("WARN", "JWT for client {client} expires in {n}s, refresh recommended", "TokenExpiringSoon"),
    ("ERROR", "webhook delivery to partner-{n2}.example.com failed: 410 Gone (will not retry)", "WebhookFailed"),
)

# rare one-off errors anywhere
_RARE_TEMPLATES: tuple[tuple[str, str, str], ...] = (
    ("ERROR", "client closed connection before response was sent ({ep})", "ClientDisconnect"),
    ("ERROR", "unexpected EOF while reading request body ({bytes} bytes read)", "ClientDisconnect"),
    ("ERROR", "request {hex8} failed: invalid JSON at position {n}", "BadRequest"),
    ("WARN", "transient error on op {hex8}, retry {attempt}/3 succeeded", "TransientError"),
    ("ERROR", "panic recovered in handler {ep}: index out of range [{n}] with length {n2}", "PanicRecovered"),
    ("WARN", "clock skew of {ms}ms detected against ntp pool", "ClockSkew"),
)

_SLOW_TEMPLATES: tuple[str, ...] = (
    "slow request {ep_f} took {lat}ms",
    "request {hex8} exceeded SLO: {lat}ms > {slo}ms",
)

_BLIP_TEMPLATES: tuple[tuple[str, str, str], ...] = (
    ("WARN", "GC pause {ms}ms", "GCPause"),
    ("WARN", "slow request {ep_f} took {lat}ms", "SlowRequest"),
    ("WARN", "retrying idempotent request {hex8} after connection reset", "TransientError"),
)

_INFO_TEMPLATES: dict[str, tuple[str, ...]] = {
    "entry": (
        "{method} {ep_f} {status} in {lat}ms",
        "proxied {method} {ep_f} -> {peer} {status} ({lat}ms)",
        "request completed status={status} path={ep_f} duration_ms={lat} bytes={bytes}",
        "session {hex8} authenticated user u{id} in {lat}ms",
        "access {ip} \"{method} {ep_f}\" {status} {bytes}b {lat}ms",
    ),
    "mid": (
        "{method} {ep_f} {status} in {lat}ms",
        "fetched {items} rows from {peer} in {lat}ms",
        "processed {word} {id} in {lat}ms",
        "cache hit ratio {ratio} for {word} lookups",
        "published event {word}.updated id={id} partition={n2}",
        "validated {word} request {hex8}: ok",
    ),
    "db": (
        "query ok: {sqlop} {table} rows={items} in {lat}ms",
        "checkpoint complete: wrote {n} buffers ({pct}%), took {ms}ms",
        "autovacuum on table {table}: removed {rows} dead tuples",
        "connection authorized: user=app database={word} from {ip}",
        "replication lag {ms}us to replica-{n2}",
    ),
    "cache": (
        "GET {word}:{id} hit in {lat}ms",
        "SET {word}:{id} ttl={ttl}s",
        "evicted {n} keys (policy allkeys-lru)",
        "keyspace stats: hit ratio {ratio}, {items}k keys",
    ),
    "worker": (
        "processed batch {id} of {items} items in {lat}ms",
        "consumed {n} messages from {topic} (lag {lag})",
        "job {word}-sync {hex8} finished in {lat}ms",
        "committed offset {id} on {topic}",
    ),
    "proxy": (
        "forwarded {method} {ep_f} to {dep} in {lat}ms",
        "upstream pool stats for {dep}: {n} active, {n2} idle",
        "{method} {ep_f} {status} upstream_time={lat}ms",
        "resolved {dep} to {ip} (ttl {ttl}s)",
    ),
}

_WORDS = (
    "ledger", "orders", "cart", "auth", "billing", "catalog", "search", "notify", "inventory",
    "quote", "profile", "payout", "session", "shipping", "pricing", "checkout", "wallet", "review",
    "media", "identity", "fraud", "tax", "promo", "loyalty", "booking", "fulfil", "account",
    "invoice", "rating", "geo", "refund", "stock", "report", "tenant", "routing", "coupon",
)
_ENTRY_FIXED = ("api-gateway", "edge-gw", "web-bff", "frontend", "public-api", "storefront",
                "mobile-bff", "edge-proxy", "ingress-gw")
_ENTRY_SUFFIX = ("-gw", "-gateway", "-bff", "-edge", "-web")
_MID_SUFFIX = ("", "-svc", "-api", "-service", "-core")
_LEAF_SUFFIX = {
    "db": ("-db", "-pg", "-store", "-mysql"),
    "cache": ("-cache", "-redis"),
    "worker": ("-worker", "-consumer"),
    "proxy": ("-proxy", "-adapter"),
}
_LEAF_TYPES = ("db", "cache", "worker", "proxy")
_LEAF_TYPE_P = np.array([0.45, 0.2, 0.2, 0.15])
_REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-1", "ap-northeast-1")
_EXTERNAL_DEPS = ("pg-primary.internal", "payments-provider.example.com", "kafka-2.internal",
                  "vault.internal", "smtp-relay.internal", "s3.amazonaws.com", "geo-api.example.net",
                  "search-cluster.internal")
_WHO = ("ci-bot", "argo-cd", "alice", "bob", "deploy-bot", "mchen", "priya", "spinnaker", "jlopez")

_EXTRAS = ("cpu_pct", "queue_depth", "mem_pct", "conn_in_use", "gc_pause_ms", "disk_util_pct")
# coupling of the extra signals to the fault profile, in noise-sigma units
_EXTRA_COUPLING: dict[str, dict[str, float]] = {
    "db_latency_ramp": {"cpu_pct": 2, "queue_depth": 25, "conn_in_use": 15, "disk_util_pct": 12},
    "conn_pool_exhaustion": {"queue_depth": 30, "conn_in_use": 20, "cpu_pct": 1},
    "bad_deploy": {"cpu_pct": 4, "gc_pause_ms": 3},
    "memory_leak": {"mem_pct": 25, "gc_pause_ms": 30, "cpu_pct": 6},
    "dependency_outage": {"cpu_pct": -6, "queue_depth": 6, "conn_in_use": -4},
    "tls_cert_expiry": {"cpu_pct": 5},
    "config_rate_limit": {"cpu_pct": -2, "queue_depth": 3},
}


@dataclass(frozen=True)
class Scenario:
    """One generated day of telemetry plus its ground truth."""

    metrics: pd.DataFrame
    logs: pd.DataFrame
    events: pd.DataFrame
    truth: dict


# ----------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------


def _rng_for(fault: str, seed: int) -> np.random.Generator:
    digest = hashlib.sha256(f"incident-graph/generator/v1|{fault}|{seed}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "big"))


def _iso(epoch_s: int | None) -> str | None:
    if epoch_s is None:
        return None
    return str(np.datetime64(int(epoch_s), "s")) + "Z"


_FORMATTER = string.Formatter()
_COMPILED: dict[str, tuple[str, list[str]]] = {}


def _compile(fmt: str) -> tuple[str, list[str]]:
    hit = _COMPILED.get(fmt)
    if hit is None:
        names: list[str] = []
        out: list[str] = []
        for literal, field, _spec, _conv in _FORMATTER.parse(fmt):
            out.append(literal.replace("{", "{{").replace("}", "}}"))
            if field is not None:
                if field not in names:
                    names.append(field)
                out.append(f"{{{names.index(field)}}}")
        hit = ("".join(out), names)
        _COMPILED[fmt] = hit
    return hit


def _hex(rng: np.random.Generator, n: int, width: int) -> list[str]:
    h = rng.bytes(n * width // 2).hex()
    return [h[i:i + width] for i in range(0, n * width, width)]


def _ints(rng, lo, hi, n):
    return rng.integers(lo, hi, n).tolist()


_RANDOM_FIELDS = {
    "id": lambda r, n: _ints(r, 1000, 999_999, n),
    "n": lambda r, n: _ints(r, 2, 64, n),
    "n2": lambda r, n: _ints(r, 1, 24, n),
    "items": lambda r, n: _ints(r, 5, 500, n),
    "rows": lambda r, n: _ints(r, 1_000, 4_000_000, n),
    "ratio": lambda r, n: [f"{x:.2f}" for x in r.uniform(0.78, 0.995, n)],
    "pct": lambda r, n: _ints(r, 70, 99, n),
    "gcpct": lambda r, n: _ints(r, 18, 65, n),
    "ms": lambda r, n: _ints(r, 20, 900, n),
    "hex8": lambda r, n: _hex(r, n, 8),
    "bytes": lambda r, n: _ints(r, 180, 250_000, n),
    "status": lambda r, n: np.array([200, 200, 200, 200, 200, 201, 204, 304])[r.integers(0, 8, n)].tolist(),
    "method": lambda r, n: np.array(["GET", "GET", "GET", "POST", "PUT", "DELETE"], dtype=object)[
        r.integers(0, 6, n)].tolist(),
    "attempt": lambda r, n: _ints(r, 1, 4, n),
    "lag": lambda r, n: _ints(r, 0, 6000, n),
    "ttl": lambda r, n: np.array([60, 300, 900, 3600])[r.integers(0, 4, n)].tolist(),
    "ip": lambda r, n: [f"10.{a}.{b}.{c}" for a, b, c in r.integers(0, 255, (n, 3)).tolist()],
    "pid": lambda r, n: _ints(r, 100, 65_000, n),
    "client": lambda r, n: [f"client-{x:04d}" for x in r.integers(0, 4000, n).tolist()],
    "code5": lambda r, n: np.array([500, 502, 503, 504])[r.integers(0, 4, n)].tolist(),
    "hosts": lambda r, n: _ints(r, 2, 9, n),
    "rss": lambda r, n: _ints(r, 400, 4000, n),
    "bucket": lambda r, n: np.array(["media-uploads", "exports-prod", "audit-archive"], dtype=object)[
        r.integers(0, 3, n)].tolist(),
    "slo": lambda r, n: np.array([250, 500, 1000])[r.integers(0, 3, n)].tolist(),
    "sqlop": lambda r, n: np.array(["SELECT", "SELECT", "SELECT", "INSERT", "UPDATE"], dtype=object)[
        r.integers(0, 5, n)].tolist(),
}


def _render(fmt: str, n: int, rng: np.random.Generator, ctx: dict[str, Any]) -> list[str]:
    """Format ``fmt`` ``n`` times. ctx values: scalar (same for all rows), tuple (random
    choice per row), list/ndarray (one value per row); unknown fields are random."""
    pos, names = _compile(fmt)
    if n == 0:
        return []
    if not names:
        return [pos.format()] * n
    cols = []
    for name in names:
        if name in ctx:
            v = ctx[name]
            if isinstance(v, tuple):
                v = [v[i] for i in rng.integers(0, len(v), n).tolist()]
            elif isinstance(v, np.ndarray):
                v = v.tolist()
            elif not isinstance(v, list):
                v = [v] * n
        else:
            v = _RANDOM_FIELDS[name](rng, n)
        cols.append(v)
    return [pos.format(*row) for row in zip(*cols)]


def _lat_str(lat: np.ndarray) -> list[str]:
    return [f"{x:.0f}" if x >= 10 else f"{x:.1f}" for x in lat.tolist()]


def _fill_ids(eps: list[str], rng: np.random.Generator) -> list[str]:
    ids = rng.integers(1000, 999_999, len(eps)).tolist()
    return [e.replace(":id", str(i)) if ":id" in e else e for e, i in zip(eps, ids)]


# ----------------------------------------------------------------------------------------
# topology
# ----------------------------------------------------------------------------------------


@dataclass
class _Service:
    name: str
    role: str  # entry | mid | db | cache | worker | proxy
    word: str
    endpoints: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    peers: tuple[str, ...] = ()
    deps: tuple[str, ...] = ()  # external dependencies (hostnames)
    lat_med: float = 10.0
    lat_sigma: float = 0.5


def _build_topology(rng: np.random.Generator):
    n_total = int(rng.integers(4, 9))
    n_mid = 2 if n_total <= 5 else int(rng.integers(2, 4))
    n_leaf = n_total - 1 - n_mid
    words = [str(w) for w in rng.permutation(np.array(_WORDS, dtype=object))]
    wi = 0
    if rng.random() < 0.5:
        entry_name = str(_ENTRY_FIXED[rng.integers(len(_ENTRY_FIXED))])
        entry_word = entry_name.split("-")[0]
    else:
        entry_word = words[wi]
        wi += 1
        entry_name = entry_word + _ENTRY_SUFFIX[rng.integers(len(_ENTRY_SUFFIX))]
    services = [_Service(entry_name, "entry", entry_word)]
    for _ in range(n_mid):
        w = words[wi]
        wi += 1
        services.append(_Service(w + _MID_SUFFIX[rng.integers(len(_MID_SUFFIX))], "mid", w))
    for _ in range(n_leaf):
        w = words[wi]
        wi += 1
        role = _LEAF_TYPES[rng.choice(4, p=_LEAF_TYPE_P)]
        sfx = _LEAF_SUFFIX[role]
        services.append(_Service(w + sfx[rng.integers(len(sfx))], role, w))

    entry = services[0]
    mids = services[1:1 + n_mid]
    leaves = services[1 + n_mid:]
    edges: set[tuple[str, str]] = {(entry.name, m.name) for m in mids}
    for leaf in leaves:
        k = 1 if rng.random() < 0.6 else 2
        for j in rng.choice(n_mid, size=k, replace=False).tolist():
            edges.add((mids[j].name, leaf.name))
    if rng.random() < 0.4:
        i, j = sorted(rng.choice(n_mid, size=2, replace=False).tolist())
        edges.add((mids[i].name, mids[j].name))
    if rng.random() < 0.3:
        edges.add((entry.name, leaves[rng.integers(len(leaves))].name))
    edge_list = sorted(edges)
    down = {s.name: tuple(sorted(b for a, b in edge_list if a == s.name)) for s in services}

    for s in services:
        w = s.word
        if s.role == "entry":
            eps = []
            for d in down[s.name]:
                dw = next(x.word for x in services if x.name == d)
                eps += [f"/api/v1/{dw}/:id", f"/api/v1/{dw}"]
            s.endpoints = tuple(eps) + ("/healthz",)
            s.lat_med = rng.uniform(25, 90)
        elif s.role == "mid":
            pool = [f"/v1/{w}/:id", f"/v1/{w}", f"/v1/{w}/search", f"/internal/{w}/sync"]
            s.endpoints = tuple(pool[: int(rng.integers(2, 5))])
            s.lat_med = rng.uniform(8, 60)
        elif s.role == "db":
            s.lat_med = rng.uniform(0.8, 12)
        elif s.role == "cache":
            s.endpoints = ("cmd:GET", "cmd:SET", "cmd:MGET", "cmd:DEL")
            s.lat_med = rng.uniform(0.2, 2.0)
        elif s.role == "worker":
            s.endpoints = (f"job:{w}-sync", f"topic:{w}.events", f"job:{w}-reconcile")
            s.lat_med = rng.uniform(40, 400)
        else:  # proxy
            s.endpoints = (f"/{w}/v2/:id", f"/{w}/v2/batch", f"/{w}/v2/status")
            s.lat_med = rng.uniform(20, 150)
        tpool = [w, f"{w}_items", f"{w}_events", "audit_log", "outbox", f"{w}_history"]
        s.tables = tuple(tpool[: int(rng.integers(2, 4))])
        if s.role == "db":
            s.endpoints = tuple(f"sql:{t}" for t in s.tables)
        s.lat_sigma = rng.uniform(0.35, 0.75)
        s.peers = down[s.name] or ("postgres", "redis")
        k = int(rng.integers(1, 3))
        s.deps = tuple(str(x) for x in rng.choice(np.array(_EXTERNAL_DEPS, dtype=object), size=k, replace=False))
    return services, edge_list, down


def _callers_of(root: str, edges: list[tuple[str, str]], rng: np.random.Generator, start: int, end: int):
    """Transitive upstream callers of ``root``: name -> (onset_minute, via).

    via == root for direct callers, else the next hop on a shortest path."""
    up: dict[str, list[str]] = {}
    for a, b in edges:
        up.setdefault(b, []).append(a)
    dist = {root: 0}
    frontier = [root]
    while frontier:
        nxt = []
        for s in frontier:
            for u in sorted(up.get(s, [])):
                if u not in dist:
                    dist[u] = dist[s] + 1
                    nxt.append(u)
        frontier = sorted(nxt)
    onset = {root: start}
    out: dict[str, tuple[int, str]] = {}
    for s in sorted(dist, key=lambda x: (dist[x], x)):
        if s == root:
            continue
        vias = sorted(b for a, b in edges if a == s and dist.get(b) == dist[s] - 1)
        via = vias[0]
        onset[s] = min(onset[via] + int(rng.integers(2, 7)), end - 2)  # depth <= 3 keeps this inside
        out[s] = (onset[s], via)
    return out


# ----------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------


def _fault_effects(fault: str, rng: np.random.Generator, L: int) -> dict[str, np.ndarray]:
    """Per-minute effects over the window, in noise-sigma units (rps_mult is a factor)."""
    t = np.arange(L, dtype=float)
    ones = np.ones(L)

    def jit() -> np.ndarray:
        return rng.uniform(0.85, 1.15, L)

    eff = {
        "rps_mult": ones.copy(), "rps_sig": np.zeros(L), "p95_sig": np.zeros(L),
        "err_sig": np.zeros(L), "log_prof": ones.copy(), "restart": np.zeros(L, bool),
        "prof": ones.copy(),
    }
    if fault == "db_latency_ramp":
        r = ((t + 1) / L) ** rng.uniform(0.7, 1.5)
        peak = rng.uniform(25, 60)
        eff["p95_sig"] = np.maximum(7.0 + (peak - 7.0) * r * jit(), 7.0)
        eff["err_sig"] = rng.uniform(3, 10) * r * jit()
        eff["rps_sig"] = -rng.uniform(0, 2) * r
        eff["log_prof"] = 0.35 + 0.65 * r
        eff["prof"] = r
    elif fault == "conn_pool_exhaustion":
        eff["err_sig"] = rng.uniform(15, 60) * jit()
        eff["p95_sig"] = rng.uniform(8, 30) * jit()
        eff["rps_sig"] = -rng.uniform(0, 1.5) * ones
    elif fault == "bad_deploy":
        eff["err_sig"] = rng.uniform(20, 80) * jit()
        eff["p95_sig"] = rng.uniform(0, 4) * jit()
    elif fault == "memory_leak":
        period = int(rng.integers(8, min(25, L // 2) + 1))
        offset = int(rng.integers(0, period // 2 + 1))
        pos = (t.astype(int) + offset) % period
        c = pos / (period - 1)
        restart = pos == period - 1
        after = np.roll(restart, 1)
        after[0] = False
        eff["p95_sig"] = 7.0 + rng.uniform(12, 30) * c * jit()
        eff["err_sig"] = (rng.uniform(1, 3) + restart * rng.uniform(20, 50) + after * rng.uniform(6, 15)) * jit()
        eff["log_prof"] = 0.3 + 0.7 * c
        eff["restart"] = restart
        eff["prof"] = c
    elif fault == "dependency_outage":
        drop = rng.uniform(0.4, 0.9)
        eff["rps_mult"] = np.clip(1.0 - drop * rng.uniform(0.95, 1.05, L), 0.05, 1.0)
        eff["err_sig"] = rng.uniform(15, 60) * jit()
        eff["p95_sig"] = rng.uniform(2, 10) * jit()
    elif fault == "tls_cert_expiry":
        eff["err_sig"] = rng.uniform(25, 100) * jit()
        eff["rps_sig"] = -rng.uniform(1, 4) * ones
        eff["p95_sig"] = rng.uniform(-1, 2) * ones
    elif fault == "config_rate_limit":
        eff["err_sig"] = rng.uniform(15, 60) * jit()
        eff["p95_sig"] = -rng.uniform(0, 1.5) * ones
    else:  # pragma: no cover - guarded by generate()
        raise AssertionError(fault)
    return eff


_PRIMARY_METRIC = {
    "db_latency_ramp": "p95_ms", "conn_pool_exhaustion": "error_rate", "bad_deploy": "error_rate",
    "memory_leak": "p95_ms", "dependency_outage": "rps", "tls_cert_expiry": "error_rate",
    "config_rate_limit": "error_rate",
}


def _make_metrics(rng, period_start_s, fault, window, blips):
    n = MINUTES
    tod = ((period_start_s // 60 + np.arange(n)) % MINUTES) / MINUTES
    phase, phase2 = rng.uniform(0, 2 * np.pi, 2)
    diurnal = np.sin(2 * np.pi * tod + phase) + rng.uniform(0, 0.3) * np.sin(4 * np.pi * tod + phase2)
    load = 1.0 + rng.uniform(0.15, 0.4) * diurnal  # relative traffic

    b_rps, b_p95, b_err = rng.uniform(100, 2000), rng.uniform(80, 400), rng.uniform(0.002, 0.01)
    rps_base = b_rps * load
    p95_base = b_p95 * (1.0 + rng.uniform(0.05, 0.2) * diurnal)
    err_base = b_err * (1.0 + rng.uniform(0.0, 0.2) * diurnal)
    s_rps = b_rps * rng.uniform(0.025, 0.05)
    s_p95 = b_p95 * rng.uniform(0.03, 0.06)
    s_err = b_err * rng.uniform(0.12, 0.22)

    rps_mult, rps_sig, p95_sig, err_sig = np.ones(n), np.zeros(n), np.zeros(n), np.zeros(n)
    prof_full = np.zeros(n)
    eff = None
    if window is not None:
        start, end = window
        eff = _fault_effects(fault, rng, end - start)
        rps_mult[start:end] = eff["rps_mult"]
        rps_sig[start:end] = eff["rps_sig"]
        p95_sig[start:end] = eff["p95_sig"]
        err_sig[start:end] = eff["err_sig"]
        prof_full[start:end] = eff["prof"]
    for b0, b1, which, mag in blips:
        (p95_sig if which == "p95" else err_sig)[b0:b1] += mag

    rps = rps_base * rps_mult + rps_sig * s_rps + rng.normal(0, s_rps, n)
    p95 = p95_base + p95_sig * s_p95 + rng.normal(0, s_p95, n)
    err = err_base + err_sig * s_err + rng.normal(0, s_err, n)
    if window is not None:
        # keep the fault's primary signal >= 6 noise-sigmas off baseline for every window
        # minute, so the window edges are well defined whatever the noise draw
        w = slice(*window)
        primary = _PRIMARY_METRIC[fault]
        if primary == "rps":
            rps[w] = np.minimum(rps[w], rps_base[w] - 6 * s_rps)
        elif primary == "p95_ms":
            p95[w] = np.maximum(p95[w], p95_base[w] + 6 * s_p95)
        else:
            err[w] = np.maximum(err[w], err_base[w] + 6 * s_err)
    cols = {
        "rps": np.round(np.clip(rps, 1.0, None), 2),
        "p95_ms": np.round(np.clip(p95, 1.0, None), 1),
        "error_rate": np.round(np.clip(err, 0.0, 1.0), 5),
    }

    n_extra = int(rng.choice(3, p=[0.3, 0.4, 0.3]))
    extras = [str(x) for x in rng.choice(np.array(_EXTRAS, dtype=object), size=n_extra, replace=False)]
    for name in extras:
        if name == "cpu_pct":
            base, sig, amp, lo, hi, dec = rng.uniform(20, 55), rng.uniform(1.0, 2.5), 0.25, 0, 100, 1
        elif name == "queue_depth":
            base = rng.uniform(5, 60)
            sig, amp, lo, hi, dec = 0.15 * base, 0.3, 0, None, 1
        elif name == "mem_pct":
            base, sig, amp, lo, hi, dec = rng.uniform(40, 70), rng.uniform(0.4, 1.2), 0.02, 0, 100, 1
        elif name == "conn_in_use":
            base = rng.uniform(8, 30)
            sig, amp, lo, hi, dec = 0.1 * base, 0.3, 0, None, 1
        elif name == "gc_pause_ms":
            base = rng.uniform(4, 25)
            sig, amp, lo, hi, dec = 0.15 * base, 0.1, 0.1, None, 2
        else:  # disk_util_pct
            base, sig, amp, lo, hi, dec = rng.uniform(10, 40), rng.uniform(1, 3), 0.1, 0, 100, 1
        coup = _EXTRA_COUPLING.get(fault, {}).get(name, 0.0) * rng.uniform(0.6, 1.4)
        shift = np.zeros(n)
        if window is not None and coup:
            shift[window[0]:window[1]] = coup * np.maximum(prof_full[window[0]:window[1]], 0.15)
        v = base * (1 + amp * (load - 1) / 0.3) + shift * sig + rng.normal(0, sig, n)
        cols[name] = np.round(np.clip(v, lo, hi), dec)

    ts = pd.to_datetime(period_start_s + 60 * np.arange(n), unit="s", utc=True)
    metrics = pd.DataFrame({"ts": ts, **cols})
    return metrics, load, eff, (p95_base + p95_sig * s_p95) / p95_base


# ----------------------------------------------------------------------------------------
# logs
# ----------------------------------------------------------------------------------------


class _LogBuilder:
    def __init__(self, rng: np.random.Generator, services: list[_Service], region_p: np.ndarray):
        self.rng = rng
        self.services = services
        self.index = {s.name: i for i, s in enumerate(services)}
        self.region_p = region_p
        self.parts: list[dict[str, Any]] = []

    def add(self, svc: str, sec: np.ndarray, level, msgs: list[str], eps: list[str], lat: np.ndarray,
            kind, tag: str = "") -> None:
        n = len(sec)
        if n == 0:
            return
        self.parts.append({
            "svc": np.full(n, self.index[svc]),
            "sec": np.asarray(sec, dtype=np.int64),
            "level": np.asarray(level if not isinstance(level, str) else [level] * n, dtype=object),
            "msg": np.asarray(msgs, dtype=object),
            "ep": np.asarray(eps, dtype=object),
            "lat": np.round(np.asarray(lat, dtype=float), 1),
            "region": self.rng.choice(len(self.region_p), size=n, p=self.region_p),
            "kind": np.asarray(kind if not isinstance(kind, str) else [kind] * n, dtype=object),
            "tag": np.full(n, tag, dtype=object),
        })


def _minute_secs(rng: np.random.Generator, counts: np.ndarray, minute0: int = 0) -> np.ndarray:
    minutes = np.repeat(np.arange(len(counts)) + minute0, counts)
    return minutes * 60 + rng.integers(0, 60, len(minutes))


def _emit_templated(lb: _LogBuilder, svc: _Service, sec: np.ndarray, templates, weights, ctx_base,
                    lat: np.ndarray, tag: str, kind_default: str = "") -> None:
    """Emit lines for ``sec`` choosing per-line among templates=(level, fmt[, kind]).

    List values in ``ctx_base`` are per-row (aligned with ``sec``)."""
    rng = lb.rng
    n = len(sec)
    if n == 0:
        return
    choice = rng.choice(len(templates), size=n, p=weights)
    eps = [svc.endpoints[i] for i in rng.integers(0, len(svc.endpoints), n).tolist()]
    msgs = np.empty(n, dtype=object)
    levels = np.empty(n, dtype=object)
    kinds = np.empty(n, dtype=object)
    lat_s = _lat_str(np.round(lat, 1))
    for k, tpl in enumerate(templates):
        idx = np.flatnonzero(choice == k)
        if len(idx) == 0:
            continue
        level, fmt = tpl[0], tpl[1]
        rows = idx.tolist()
        ctx = {k: ([v[i] for i in rows] if isinstance(v, list) else v) for k, v in ctx_base.items()}
        ctx["ep"] = [eps[i] for i in rows]
        if "{ep_f}" in fmt:
            ctx["ep_f"] = _fill_ids(ctx["ep"], rng)
        ctx["lat"] = [lat_s[i] for i in rows]
        msgs[idx] = _render(fmt, len(idx), rng, ctx)
        levels[idx] = level
        kinds[idx] = tpl[2] if len(tpl) > 2 else kind_default
    lb.add(svc.name, sec, levels, msgs.tolist(), eps, lat, kinds, tag)


def _pick_templates(rng, pool, k_lo, k_hi):
    k = min(len(pool), int(rng.integers(k_lo, k_hi + 1)))
    idx = sorted(rng.choice(len(pool), size=k, replace=False).tolist())
    return tuple(pool[i] for i in idx), rng.dirichlet(np.full(k, 2.0))


def _service_ctx(s: _Service) -> dict[str, Any]:
    return {"peer": s.peers, "word": s.word, "table": s.tables, "topic": f"{s.word}.events",
            "dep": s.deps if s.role == "proxy" else s.peers}


# ----------------------------------------------------------------------------------------
# events
# ----------------------------------------------------------------------------------------

_HARMLESS_CONFIG = (
    ("http.client.timeout_ms", "2000", "3000"), ("log.level", "INFO", "DEBUG"), ("cache.ttl_s", "300", "600"),
    ("worker.concurrency", "8", "16"), ("retry.max_attempts", "3", "5"),
    ("ratelimit.requests_per_sec", "500", "800"), ("db.pool.max_size", "20", "40"),
    ("feature.batch_size", "100", "200"), ("gc.max_pause_ms", "200", "150"),
)
_HARMLESS_FLAGS = ("new-checkout-flow", "search-v2-ranking", "async-invoices", "recs-carousel",
                   "dark-launch-profile", "batch-notifications")
_CAUSAL_FLAGS = ("strict-tenant-quotas", "new-rate-limiter", "per-client-throttling")


def _dep_port(host: str) -> int:
    for prefix, port in (("pg-", 5432), ("kafka", 9092), ("vault", 8200), ("smtp", 587), ("search", 9200)):
        if host.startswith(prefix):
            return port
    return 443


def _version(rng) -> str:
    return f"v{rng.integers(1, 6)}.{rng.integers(0, 40)}.{rng.integers(0, 20)}"


def _deploy_desc(rng, svc: str) -> str:
    sha, who, ver = _hex(rng, 1, 8)[0][:7], _WHO[rng.integers(len(_WHO))], _version(rng)
    n = int(rng.integers(3, 13))
    forms = (f"deployed {svc} {ver} (commit {sha}) by {who}",
             f"rollout of {svc} {ver} completed ({n}/{n} pods ready, commit {sha})",
             f"{who} deployed {svc}:{ver} via argo-cd (sync {sha})")
    return forms[rng.integers(len(forms))]


def _config_desc(rng, svc: str, key: str, old: str, new: str) -> str:
    who = _WHO[rng.integers(len(_WHO))]
    forms = (f"updated {svc} config: {key} {old} -> {new}",
             f"config change on {svc}: set {key}={new} (was {old}) by {who}")
    return forms[rng.integers(len(forms))]


def _flag_desc(rng, svc: str, flag: str, pct: int) -> str:
    who = _WHO[rng.integers(len(_WHO))]
    forms = (f"feature flag '{flag}' set to {pct}% on {svc}",
             f"flag {flag} rolled out to {pct}% of traffic on {svc} by {who}")
    return forms[rng.integers(len(forms))]


def _harmless_event(rng, svc: str) -> tuple[str, str]:
    kind = ("deploy", "config", "feature_flag", "scale")[rng.choice(4, p=[0.45, 0.25, 0.2, 0.1])]
    if kind == "deploy":
        return kind, _deploy_desc(rng, svc)
    if kind == "config":
        key, old, new = _HARMLESS_CONFIG[rng.integers(len(_HARMLESS_CONFIG))]
        return kind, _config_desc(rng, svc, key, old, new)
    if kind == "feature_flag":
        flag = _HARMLESS_FLAGS[rng.integers(len(_HARMLESS_FLAGS))]
        return kind, _flag_desc(rng, svc, flag, int(rng.choice([5, 10, 25, 50, 100])))
    a = int(rng.integers(2, 12))
    b = a + int(rng.choice([-1, 1, 2, 3]))
    return kind, f"scaled {svc} replicas {a} -> {max(b, 1)} ({'hpa' if rng.random() < 0.6 else 'manual'})"


# ----------------------------------------------------------------------------------------
# main entry points
# ----------------------------------------------------------------------------------------


def generate(fault: str, seed: int) -> Scenario:
    """Generate one deterministic scenario for ``fault`` (one of FAULTS) and ``seed``."""
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; valid faults: {', '.join(FAULTS)}")
    seed = int(seed)
    rng = _rng_for(fault, seed)
    spec = _SPECS.get(fault)

    period_start = _EPOCH_2025 + 60 * int(rng.integers(0, _PERIOD_CHOICES + 1))
    services, edges, _down = _build_topology(rng)
    by_name = {s.name: s for s in services}
    names = [s.name for s in services]
    has_error_kind = bool(rng.random() < 0.5)

    # --- window, root, callers ------------------------------------------------------------
    window = None
    root = None
    callers: dict[str, tuple[int, str]] = {}
    if spec is not None:
        L = int(rng.integers(20, 181))
        start = int(rng.integers(int(np.ceil(0.15 * MINUTES)), int(0.80 * MINUTES) + 1))
        window = (start, start + L)
        w = np.array([spec.root_pref.get(s.role, 1.0) for s in services])
        root = services[int(rng.choice(len(services), p=w / w.sum()))]
        callers = _callers_of(root.name, edges, rng, start, start + L)

    # --- blips (benign, short) --------------------------------------------------------------
    blips = []
    n_blips = int(rng.integers(2, 5)) if spec is None else int(rng.integers(0, 3))
    taken: list[tuple[int, int]] = [] if window is None else [(window[0] - 90, window[1] + 90)]
    for _ in range(40):
        if len(blips) >= n_blips:
            break
        b0 = int(rng.integers(45, MINUTES - 10))
        b1 = b0 + int(rng.integers(1, 5))
        if any(b0 < hi + 30 and b1 > lo - 30 for lo, hi in taken):
            continue
        taken.append((b0, b1))
        blips.append((b0, b1, "p95" if rng.random() < 0.5 else "err", float(rng.uniform(6, 15))))
    blips.sort()

    metrics, load, eff, p95_ratio = _make_metrics(rng, period_start, fault, window, blips)
    load_norm = load / load.mean()
    traffic = np.ones(MINUTES)
    if eff is not None:
        traffic[window[0]:window[1]] = eff["rps_mult"]

    # --- logs -------------------------------------------------------------------------------
    regions = [str(r) for r in rng.choice(np.array(_REGIONS, dtype=object), size=3, replace=False)]
    region_p = rng.dirichlet(np.full(3, 4.0))
    lb = _LogBuilder(rng, services, region_p)

    shares = rng.dirichlet(np.full(len(services), 3.0))
    shares[0] += rng.uniform(0.15, 0.35)  # the entry service is the chattiest
    shares /= shares.sum()
    v_info = rng.uniform(26_000, 48_000)  # INFO lines per day (total over services)
    r0 = rng.uniform(1.5, 4.5)  # root fault lines per minute at full intensity

    lat_mult = {s.name: np.ones(MINUTES) for s in services}
    if window is not None and fault in ("db_latency_ramp", "conn_pool_exhaustion", "memory_leak"):
        lat_mult[root.name][window[0]:window[1]] = p95_ratio[window[0]:window[1]]
        for c, (on, _via) in callers.items():
            lat_mult[c][on:window[1]] = p95_ratio[on:window[1]]

    info_profile = load_norm * traffic
    info_profile = info_profile / info_profile.mean()
    for si, s in enumerate(services):
        lam = v_info * shares[si] * info_profile / MINUTES
        counts = rng.poisson(lam)
        sec = _minute_secs(rng, counts)
        minute = sec // 60
        lat = s.lat_med * rng.lognormal(0.0, s.lat_sigma, len(sec)) * lat_mult[s.name][minute]
        tpls, wts = _pick_templates(rng, _INFO_TEMPLATES[s.role], 3, 5)
        _emit_templated(lb, s, sec, tuple(("INFO", f) for f in tpls), wts, _service_ctx(s), lat, "info")
        # background slow-request warnings
        slow_counts = rng.poisson(lam * rng.uniform(0.001, 0.004))
        sec = _minute_secs(rng, slow_counts)
        lat = s.lat_med * rng.uniform(6, 25, len(sec))
        _emit_templated(lb, s, sec, tuple(("WARN", f, "SlowRequest") for f in _SLOW_TEMPLATES),
                        np.array([0.6, 0.4]), _service_ctx(s), lat, "slow")
        # rare random errors
        rare_counts = rng.poisson(np.full(MINUTES, rng.uniform(3, 15) / MINUTES))
        sec = _minute_secs(rng, rare_counts)
        lat = s.lat_med * rng.lognormal(0.5, 0.6, len(sec))
        _emit_templated(lb, s, sec, _RARE_TEMPLATES, np.full(len(_RARE_TEMPLATES), 1 / len(_RARE_TEMPLATES)),
                        _service_ctx(s), lat, "rare")

    # chronically noisy services
    candidates = [s for s in services if root is None or s.name != root.name]
    n_noisy = 1 if rng.random() < 0.5 else 2
    noisy = [candidates[i] for i in sorted(rng.choice(len(candidates), size=n_noisy, replace=False).tolist())]
    for s in noisy:
        rate = r0 * rng.uniform(0.7, 1.6)
        counts = rng.poisson(rate * (0.7 + 0.3 * load_norm))
        sec = _minute_secs(rng, counts)
        lat = s.lat_med * rng.lognormal(0.3, 0.5, len(sec))
        tpls, wts = _pick_templates(rng, _NOISY_TEMPLATES, 2, 3)
        _emit_templated(lb, s, sec, tpls, wts, _service_ctx(s), lat, "noisy")

    # blip log bursts
    for b0, b1, _which, _mag in blips:
        if rng.random() < 0.6:
            s = services[int(rng.integers(len(services)))]
            counts = np.zeros(b1 - b0, dtype=int) + rng.poisson(3, b1 - b0)
            sec = _minute_secs(rng, counts, b0)
            lat = s.lat_med * rng.uniform(5, 20, len(sec))
            tpl = _BLIP_TEMPLATES[int(rng.integers(len(_BLIP_TEMPLATES)))]
            _emit_templated(lb, s, sec, (tpl,), np.array([1.0]), _service_ctx(s), lat, "blip")

    # --- the fault --------------------------------------------------------------------------
    truth_kind = None
    caller_kind = None
    trigger_event = None
    if spec is not None:
        start, end = window
        L = end - start
        truth_kind = str(spec.kinds[rng.integers(len(spec.kinds))])
        caller_kind = str(spec.caller_kinds[rng.integers(len(spec.caller_kinds))])
        root_ctx = _service_ctx(root)
        poolname = str(rng.choice(["HikariPool-1", "primary", "pgbouncer", "db-main"]))
        cls_name = root.word.capitalize() + str(rng.choice(["Mapper", "Service", "EntryCodec", "Assembler",
                                                            "Router", "Resolver", "Controller"]))
        details = {
            "NullPointerException": (f'Cannot invoke "{cls_name}.getCurrency()" because "order.pricing" is null',
                                     'Cannot read field "amount" because "line" is null'),
            "UnhandledException": ("KeyError: 'currency_code'",
                                   "AttributeError: 'NoneType' object has no attribute 'amount'",
                                   "TypeError: unsupported operand type(s) for +: 'NoneType' and 'int'"),
            "SerializationError": ("cannot deserialize field 'amount' of type Decimal from STRING",
                                   "unknown enum value 'PENDING_REVIEW' for field 'status'"),
        }
        lim = int(rng.choice([20, 25, 50, 100]))
        mem = int(rng.choice([512, 1024, 2048, 4096]))
        not_after = str(np.datetime64((period_start + start * 60) // 86400 * 86400 - 86400 * int(rng.integers(0, 3)),
                                      "s").astype("datetime64[D]"))
        root_ctx.update({
            "kind": truth_kind, "pool": int(rng.choice([20, 32, 50, 64, 100])), "poolname": poolname,
            "thr": int(rng.choice([500, 1000, 2000])),
            "handler": tuple(f"{root.word.capitalize()}{x}Handler" for x in ("Create", "Get", "Update")),
            "detail": tuple(details.get(truth_kind, ("",))[: int(rng.integers(1, 3))]),
            "cls": f"com.acme.{root.word}.{cls_name}", "meth": str(rng.choice(["apply", "resolve", "toDto"])),
            "file": f"{cls_name}.java", "lineno": int(rng.integers(40, 900)), "build": _version(rng),
            "mem": mem, "root": root.name, "dep": root.deps[0],
            "port": _dep_port(root.deps[0]), "notafter": not_after,
            "cn": f"{root.name}.svc.cluster.local", "lim": lim, "policy": f"{root.word}-default",
            "rps": tuple(str(x) for x in range(lim + 1, lim * 5)),
        })
        tpls, wts = _pick_templates(rng, spec.root_templates, 3, 3)
        prof = eff["log_prof"]
        counts = rng.poisson(r0 * prof)
        counts[0] = max(counts[0], 1)
        sec = _minute_secs(rng, counts, start)
        sec = np.sort(sec)
        if fault == "db_latency_ramp":
            lat = rng.uniform(900, 2500, len(sec)) + prof[sec // 60 - start] * rng.uniform(1500, 9000, len(sec))
        elif fault == "conn_pool_exhaustion":
            lat = rng.uniform(1000, 5000, len(sec))
        elif fault in ("dependency_outage", "config_rate_limit"):
            lat = rng.uniform(0.3, 6, len(sec))
        else:
            lat = root.lat_med * rng.lognormal(0.5, 0.5, len(sec))
        _emit_templated(lb, root, sec, tpls, wts, root_ctx, lat, "root", truth_kind)
        if spec.restart_templates:
            rs_tpls, rs_wts = _pick_templates(rng, spec.restart_templates, 3, 3)
            rmin = np.flatnonzero(eff["restart"])
            counts = np.zeros(L, dtype=int)
            counts[rmin] = rng.integers(1, 4, len(rmin))
            sec = _minute_secs(rng, counts, start)
            restart_no = np.searchsorted(rmin + start, sec // 60) + 1
            rs_ctx = dict(root_ctx, restart=restart_no.tolist())
            lat = root.lat_med * rng.lognormal(1.0, 0.5, len(sec))
            _emit_templated(lb, root, sec, rs_tpls, rs_wts, rs_ctx, lat, "root", truth_kind)

        # callers: louder, later, naming the root
        timeouts = (1000, 2000, 3000, 5000)
        for c, (onset, via) in sorted(callers.items(), key=lambda kv: (kv[1][0], kv[0])):
            cs = by_name[c]
            loud = rng.uniform(1.0, 2.6) if cs.role == "entry" else rng.uniform(0.4, 2.0)
            rel = np.arange(onset, end) - start
            counts = rng.poisson(r0 * loud * np.maximum(prof[rel], 0.4))
            counts[0] = max(counts[0], 1)
            sec = _minute_secs(rng, counts, onset)
            to = int(rng.choice(timeouts))
            if via == root.name:
                pool, kind = _CALLER_TEMPLATES[caller_kind], caller_kind
            else:
                pool, kind = _INDIRECT_TEMPLATES, _INDIRECT_KIND
            tpls, wts = _pick_templates(rng, pool, 3, 3)
            ctx = dict(_service_ctx(cs), root=root.name, via=via, to=to)
            if kind == "UpstreamTimeout":
                lat = to + rng.uniform(0, 40, len(sec))
            else:
                lat = cs.lat_med * rng.uniform(1.0, 6.0, len(sec))
            _emit_templated(lb, cs, sec, tpls, wts, ctx, lat, "caller", kind)

    logs = _finalize_logs(lb, rng, period_start, regions, has_error_kind)

    # --- events -----------------------------------------------------------------------------
    ev_rows: list[tuple[int, str, str, str]] = []
    n_ev = int(rng.integers(2, 7))
    others = [s for s in names if root is None or s != root.name]
    n_near = 0 if window is None else int(rng.integers(1, min(2, n_ev) + 1))
    for i in range(n_ev):
        svc = others[int(rng.integers(len(others)))]
        if window is not None and i < n_near:
            if rng.random() < 0.7 or window[1] + 10 >= MINUTES - 5:
                m = int(rng.integers(max(0, window[0] - 120), window[0] - 20))
            else:
                m = int(rng.integers(window[1] + 10, min(MINUTES, window[1] + 120)))
        else:
            while True:
                m = int(rng.integers(0, MINUTES))
                if window is None or not (window[0] - 20 <= m < window[1] + 10):
                    break
        kind, desc = _harmless_event(rng, svc)
        ev_rows.append((period_start + 60 * m + int(rng.integers(0, 60)), svc, kind, desc))
    if window is not None and callers and rng.random() < 0.3:  # autoscaler reacting to the incident
        c = sorted(callers)[int(rng.integers(len(callers)))]
        m = int(rng.integers(window[0] + 5, window[1]))
        a = int(rng.integers(3, 10))
        ev_rows.append((period_start + 60 * m + int(rng.integers(0, 60)), c, "scale",
                        f"scaled {c} replicas {a} -> {a + int(rng.integers(2, 5))} (hpa)"))
    if spec is not None and spec.trigger:
        kind = spec.trigger[int(rng.integers(len(spec.trigger)))]
        m = window[0] - int(rng.integers(1, 11))
        if kind == "deploy":
            desc = _deploy_desc(rng, root.name)
        elif kind == "config":
            old = int(rng.choice([400, 600, 800, 1000, 1200]))
            desc = _config_desc(rng, root.name, "ratelimit.requests_per_sec", str(old), str(root_ctx["lim"]))
        else:
            desc = _flag_desc(rng, root.name, _CAUSAL_FLAGS[rng.integers(len(_CAUSAL_FLAGS))], 100)
        ts_s = period_start + 60 * m + int(rng.integers(0, 60))
        ev_rows.append((ts_s, root.name, kind, desc))
        trigger_event = {"ts": _iso(ts_s), "service": root.name, "kind": kind, "description": desc}
    ev_rows.sort(key=lambda r: r[0])
    events = pd.DataFrame({
        "ts": pd.to_datetime(np.array([r[0] for r in ev_rows], dtype=np.int64), unit="s", utc=True),
        "service": [r[1] for r in ev_rows],
        "kind": [r[2] for r in ev_rows],
        "description": [r[3] for r in ev_rows],
    })

    # --- truth ------------------------------------------------------------------------------
    root_example = None
    if root is not None:
        mask = (logs["service"] == root.name) & (logs["_tag"] == "root")
        root_example = str(logs.loc[mask, "message"].iloc[0])
    logs = logs.drop(columns="_tag")
    truth = {
        "fault": fault,
        "seed": seed,
        "start": _iso(period_start + 60 * window[0]) if window else None,
        "end": _iso(period_start + 60 * window[1]) if window else None,
        "root_service": root.name if root else None,
        "root_kind": truth_kind,
        "root_message_example": root_example,
        "has_error_kind": has_error_kind,
        "services": names,
        "callers": [c for c, _ in sorted(callers.items(), key=lambda kv: (kv[1][0], kv[0]))],
        "shape": spec.shape if spec else None,
        # extra context for the eval harness / debugging (not needed by consumers)
        "caller_kind": caller_kind if callers else None,
        "edges": [list(e) for e in edges],
        "noisy_services": [s.name for s in noisy],
        "trigger_event": trigger_event,
        "period_start": _iso(period_start),
        "period_end": _iso(period_start + 60 * MINUTES),
    }
    return Scenario(metrics=metrics, logs=logs, events=events, truth=truth)


def _finalize_logs(lb: _LogBuilder, rng, period_start: int, regions: list[str], has_error_kind: bool):
    parts = lb.parts
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    n = len(cat["sec"])
    traces = np.array(_hex(rng, n, 32), dtype=object)
    # some caller failures share a trace with an earlier root fault line
    root_rows = np.flatnonzero(cat["tag"] == "root")
    caller_rows = np.flatnonzero(cat["tag"] == "caller")
    if len(root_rows) and len(caller_rows):
        root_rows = root_rows[np.argsort(cat["sec"][root_rows], kind="stable")]
        avail = np.searchsorted(cat["sec"][root_rows], cat["sec"][caller_rows], side="right")
        share = (rng.random(len(caller_rows)) < 0.35) & (avail > 0)
        pick = (rng.random(len(caller_rows)) * avail).astype(int)
        traces[caller_rows[share]] = traces[root_rows[pick[share]]]
    order = np.argsort(cat["sec"], kind="stable")
    names = np.array([s.name for s in lb.services], dtype=object)
    data = {
        "ts": pd.to_datetime(period_start + cat["sec"][order], unit="s", utc=True),
        "service": names[cat["svc"][order]],
        "level": cat["level"][order],
        "message": cat["msg"][order],
        "endpoint": cat["ep"][order],
        "latency_ms": cat["lat"][order],
        "region": np.array(regions, dtype=object)[cat["region"][order]],
        "trace_id": traces[order],
    }
    if has_error_kind:
        kinds = cat["kind"][order]
        kinds[cat["level"][order] == "INFO"] = ""
        data["error_kind"] = kinds
    data["_tag"] = cat["tag"][order]
    df = pd.DataFrame(data)
    return df


def _ts_strings(ts: pd.Series) -> list[str]:
    secs = ts.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[s]")
    return [s + "Z" for s in np.datetime_as_string(secs, unit="s").tolist()]


def write_scenario(scenario: Scenario, out_dir) -> dict[str, pathlib.Path]:
    """Write metrics.csv, logs.csv, events.csv and truth.json into ``out_dir`` (created if
    needed). Returns {"metrics": path, "logs": path, "events": path, "truth": path}."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, pathlib.Path] = {}
    for name in ("metrics", "logs", "events"):
        df = getattr(scenario, name).copy()
        df["ts"] = _ts_strings(df["ts"])
        path = out / f"{name}.csv"
        df.to_csv(path, index=False, lineterminator="\n")
        paths[name] = path
    path = out / "truth.json"
    path.write_text(json.dumps(scenario.truth, indent=2) + "\n", encoding="utf-8")
    paths["truth"] = path
    return paths
