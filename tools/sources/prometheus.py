"""Read named PromQL queries from a Prometheus-compatible server into the metrics table shape.

``fetch_metrics(url, {"p95_ms": "histogram_quantile(...)", ...}, start, end)`` calls
``/api/v1/query_range`` once per query (POST, form-encoded, so long PromQL never hits URL
limits) and returns a frame with ``ts`` (UTC) and one DOUBLE column per series:

* a query answering one series gives a column named after the query (``p95_ms``), so the
  recognised names ``rps``, ``p95_ms``, ``error_rate`` keep their meaning for detection;
* a query answering several series (``sum by (service) (...)``) gives one column per series,
  ``<name>_<values of the labels that differ between its series>`` (``errors_checkout``).

Missing points (gaps longer than the server's lookback, series that start late) and NaN / Inf
samples are NULL. The step is chosen so that no series exceeds Prometheus' limit of 11,000
points per query; an explicit step that would exceed it is refused before anything is sent.
Works with any server speaking the Prometheus HTTP API (VictoriaMetrics, Thanos, Mimir...).
"""
from __future__ import annotations

import base64
import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from tools.contract import InputError

__all__ = [
    "DEFAULT_MIN_STEP_S",
    "MAX_POINTS",
    "PrometheusRange",
    "choose_step",
    "endpoint_and_headers",
    "fetch_metrics",
    "load_queries_file",
    "parse_duration",
    "parse_header_flag",
    "parse_query_flag",
    "parse_time",
    "resolve_range",
    "write_metrics",
]

MAX_POINTS = 11_000  # Prometheus refuses a query_range answer with more points per series
DEFAULT_MIN_STEP_S = 60  # detection works per minute; finer steps only cost points
DEFAULT_LOOKBACK = timedelta(hours=24)  # detection needs hours of baseline around the incident

_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class PrometheusRange:
    start: datetime  # UTC, aware
    end: datetime  # UTC, aware
    step_s: float


# --------------------------------------------------------------------------- flags and files

def parse_duration(text: str) -> float:
    """Prometheus-style duration (``90s``, ``5m``, ``1h30m``, ``2d``) or plain seconds."""
    s = str(text).strip()
    try:
        value = float(s)
    except ValueError:
        pos, total = 0, 0.0
        for m in _DURATION_RE.finditer(s):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
            pos = m.end()
        if pos != len(s) or not s:
            raise ValueError(f"not a duration: {text!r} (expected e.g. 30s, 5m, 1h30m, 2d)") from None
        value = total
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return value


def parse_time(text: str, now: datetime) -> datetime:
    """ISO 8601 (``Z`` or an offset; naive = UTC), epoch seconds, ``now``, or a duration meaning
    that long before ``now`` (``6h``). Returns an aware UTC datetime."""
    s = str(text).strip()
    if s.lower() == "now":
        return now
    try:
        return datetime.fromtimestamp(float(s), tz=UTC)
    except ValueError:
        pass
    try:
        return now - timedelta(seconds=parse_duration(s))
    except ValueError:
        pass
    try:
        value = datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time: {text!r} (expected ISO 8601 like 2024-06-01T10:00:00Z "
                         f"or +02:00, epoch seconds, 'now', or a duration before now like 6h)"
                         ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def resolve_range(since: str | None, until: str | None, step: str | None,
                  now: datetime | None = None) -> PrometheusRange:
    """--since/--until/--step -> a checked range. A relative --since counts back from --until."""
    now = now or datetime.now(UTC)
    end = parse_time(until, now) if until else now
    start = parse_time(since, end) if since else end - DEFAULT_LOOKBACK
    if start >= end:
        raise ValueError(f"--since ({start.isoformat()}) must be before --until "
                         f"({end.isoformat()})")
    return PrometheusRange(start, end, choose_step(start, end, parse_duration(step) if step else None))


def choose_step(start: datetime, end: datetime, step_s: float | None = None) -> float:
    """The query step: the one asked for (checked against MAX_POINTS), else the smallest whole
    minute >= DEFAULT_MIN_STEP_S that keeps every series within MAX_POINTS."""
    span = (end - start).total_seconds()
    if step_s is not None:
        points = math.floor(span / step_s) + 1
        if points > MAX_POINTS:
            least = math.ceil(span / (MAX_POINTS - 1))
            raise ValueError(
                f"--step {step_s:g}s over {span / 3600:g} h gives {points:,} points per series; "
                f"Prometheus returns at most {MAX_POINTS:,}: use --step {least}s or more, or a "
                f"shorter --since/--until")
        return step_s
    needed = span / (MAX_POINTS - 1)
    return float(max(DEFAULT_MIN_STEP_S, math.ceil(needed / 60) * 60))


def parse_query_flag(text: str) -> tuple[str, str]:
    """``NAME=PROMQL`` -> (name, promql). The name becomes a metrics column."""
    name, sep, promql = str(text).partition("=")
    name = name.strip()
    if not sep or not promql.strip() or not _NAME_RE.fullmatch(name):
        raise ValueError(f"--query {text!r}: expected NAME=PROMQL with NAME like p95_ms "
                         f"(letters, digits, _), e.g. --query 'rps=sum(rate(http_requests_total[1m]))'")
    return name, promql.strip()


def load_queries_file(path: str | Path) -> tuple[dict[str, str], str | None]:
    """A YAML file ``queries: {name: promql, ...}`` with an optional ``step: 60s``.
    Returns (queries, step or None)."""
    label = str(path)
    try:
        doc = yaml.safe_load(Path(path).expanduser().read_text())
    except FileNotFoundError:
        raise InputError(label, "file not found") from None
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(label, f"cannot read as YAML: {exc}") from None
    queries = doc.get("queries") if isinstance(doc, dict) else None
    if not isinstance(queries, dict) or not queries:
        raise InputError(label, "expected a mapping 'queries:' of NAME: PROMQL, e.g.\n"
                         "queries:\n  rps: sum(rate(http_requests_total[1m]))")
    out = {}
    for name, promql in queries.items():
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise InputError(label, f"query name {name!r} must be letters, digits and _")
        if not isinstance(promql, str) or not promql.strip():
            raise InputError(label, f"query {name!r} has no PromQL text")
        out[name] = promql.strip()
    step = doc.get("step")
    return out, None if step is None else str(step)


def parse_header_flag(text: str) -> tuple[str, str]:
    """``'Name: value'`` (or ``Name=value``) -> (name, value)."""
    for sep in (":", "="):
        name, found, value = str(text).partition(sep)
        if found and re.fullmatch(r"[A-Za-z0-9-]+", name.strip()) and value.strip():
            return name.strip(), value.strip()
    raise ValueError(f"--prometheus-header {text!r}: expected 'Name: value', e.g. "
                     f"'X-Scope-OrgID: tenant-1'")


def endpoint_and_headers(url: str, headers: dict[str, str] | None = None,
                         bearer_token: str | None = None) -> tuple[str, str, dict[str, str]]:
    """(query_range endpoint, URL safe to print, headers). Credentials in the URL
    (``https://user:pass@host``) become a Basic Authorization header; a bearer token
    becomes ``Authorization: Bearer``; an explicit Authorization header wins over both."""
    parts = urllib.parse.urlsplit(str(url).strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--prometheus {_redact(url)!r}: expected an http(s) URL such as "
                         f"http://prometheus:9090")
    out: dict[str, str] = {}
    if bearer_token:
        out["Authorization"] = f"Bearer {bearer_token}"
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        out["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    for name, value in (headers or {}).items():
        out = {k: v for k, v in out.items() if k.lower() != name.lower()}
        out[name] = value
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    path = parts.path.rstrip("/")
    for suffix in ("/api/v1/query_range", "/api/v1"):
        path = path.removesuffix(suffix)
    base = urllib.parse.urlunsplit((parts.scheme, netloc, path, "", ""))
    return base + "/api/v1/query_range", base, out


def _redact(url: str) -> str:
    return re.sub(r"//[^/@]*@", "//***@", str(url))


# --------------------------------------------------------------------------- HTTP

def _query_range(endpoint: str, shown: str, name: str, promql: str, rng: PrometheusRange,
                 headers: dict[str, str], timeout_s: float) -> list[dict]:
    """The ``result`` list of one query_range call, or InputError naming the query."""
    form = urllib.parse.urlencode({
        "query": promql,
        "start": f"{rng.start.timestamp():.3f}",
        "end": f"{rng.end.timestamp():.3f}",
        "step": f"{rng.step_s:g}",
    }).encode()
    request = urllib.request.Request(endpoint, data=form, method="POST", headers={
        **headers, "Content-Type": "application/x-www-form-urlencoded",
        "Accept": "application/json"})
    label = f"prometheus {shown} query {name!r}"
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
        api_error = _api_error(body)
        if exc.code in (401, 403):
            raise InputError(label, f"HTTP {exc.code} {exc.reason}: the server refused the "
                             f"credentials (set INCIDENT_GRAPH_PROMETHEUS_TOKEN, "
                             f"--prometheus-header 'Authorization: ...', or user:password@ in "
                             f"the URL)") from None
        if api_error:
            raise InputError(label, f"Prometheus rejected {promql!r}: {api_error}") from None
        excerpt = body[:200].decode("utf-8", "replace").strip()
        raise InputError(label, f"HTTP {exc.code} {exc.reason} from {endpoint}"
                         + (f": {excerpt}" if excerpt else "")) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InputError(f"prometheus {shown}", f"cannot reach the server ({reason}); check "
                         f"--prometheus and that the server is up") from None
    try:
        doc = json.loads(body)
    except ValueError:
        raise InputError(label, f"the answer from {endpoint} is not JSON: is {shown} the "
                         f"Prometheus base URL (e.g. http://host:9090)?") from None
    if not isinstance(doc, dict) or doc.get("status") != "success":
        raise InputError(label, f"Prometheus answered an error for {promql!r}: "
                         f"{_api_error(body) or str(doc)[:200]}")
    data = doc.get("data") or {}
    if data.get("resultType") != "matrix":
        raise InputError(label, f"expected a range vector (resultType matrix), got "
                         f"{data.get('resultType')!r}")
    return data.get("result") or []


def _api_error(body: bytes) -> str | None:
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if isinstance(doc, dict) and doc.get("status") == "error":
        return f"{doc.get('errorType', 'error')}: {doc.get('error', '')}".strip()
    return None


# --------------------------------------------------------------------------- frames

def _series_names(name: str, result: list[dict]) -> list[str]:
    if len(result) == 1:
        return [name]
    labelsets = [r.get("metric") or {} for r in result]
    keys = sorted({k for ls in labelsets for k in ls})
    varying = [k for k in keys if len({ls.get(k) for ls in labelsets}) > 1]
    return [name + "_" + "_".join(str(ls.get(k, "none")) for k in varying) for ls in labelsets]


def _series_frame(name: str, result: list[dict]) -> pd.DataFrame:
    columns = {}
    for column, series in zip(_series_names(name, result), result):
        values = series.get("values") or []
        pairs = np.asarray(values, dtype=object).reshape(-1, 2)
        ts = pd.to_datetime(pairs[:, 0].astype(float), unit="s", utc=True)
        # Prometheus sends samples as strings; "NaN", "+Inf", "-Inf" are valid samples.
        numbers = pairs[:, 1].astype(float)
        numbers[~np.isfinite(numbers)] = np.nan
        columns[column] = pd.Series(numbers, index=ts)
    return pd.DataFrame(columns)


def fetch_metrics(url: str, queries: dict[str, str], rng: PrometheusRange, *,
                  headers: dict[str, str] | None = None, bearer_token: str | None = None,
                  timeout_s: float = 60.0) -> pd.DataFrame:
    """Run every named query over rng; one frame ``ts`` + a column per series, sorted by ts."""
    if not queries:
        raise ValueError("no Prometheus query given: pass --query NAME=PROMQL or --queries FILE")
    endpoint, shown, all_headers = endpoint_and_headers(url, headers, bearer_token)
    frames = []
    for name, promql in queries.items():
        result = _query_range(endpoint, shown, name, promql, rng, all_headers, timeout_s)
        if not result:
            raise InputError(f"prometheus {shown} query {name!r}",
                             f"{promql!r} returned no series between {rng.start.isoformat()} "
                             f"and {rng.end.isoformat()} (check the metric name and labels, "
                             f"and --since/--until)")
        frames.append(_series_frame(name, result))
    merged = pd.concat(frames, axis=1, join="outer").sort_index()
    duplicated = merged.columns[merged.columns.duplicated()].tolist()
    if duplicated:
        raise ValueError(f"two queries produce the column(s) {duplicated}: rename one query")
    merged.index.name = "ts"
    return merged.reset_index()


def write_metrics(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write the frame as Parquet (``ts`` TIMESTAMPTZ, DOUBLE columns) for ``load_sources``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path
