"""Log pattern scan: which message templates are new or much louder in the incident window.

Counting in the window alone rewards the noisiest service; every template is compared with its
own rate outside the window, so a steady background of warnings scores near zero however loud
it is. Works from the message text alone: `error_kind` is reported when present, never needed.
"""

import re
from dataclasses import asdict, dataclass

import duckdb
import numpy as np
import pandas as pd
from scipy import special

from tools.contract import one_row
from tools.templates import mask_sql, mine_service_templates

PROBLEM_LEVELS = ("WARN", "ERROR")


@dataclass(frozen=True)
class TemplateFinding:
    service: str
    template: str
    level: str
    window_count: int
    baseline_per_min: float
    window_per_min: float
    lift: float
    excess: float
    p_value: float
    first_seen_in_window: str | None
    example: str
    error_kind: str | None
    mentions: list[str]


def poisson_sf(k, mu):
    """P(X > k) for X ~ Poisson(mu), elementwise; 1 where k < 0. Equal to
    ``scipy.stats.poisson.sf`` bit for bit, without importing scipy.stats (about a second of a
    2-core machine's start-up, paid by every CLI run)."""
    k = np.asarray(k, dtype=float)
    return np.where(k < 0, 1.0, special.pdtrc(np.maximum(k, 0.0), mu))


def window_bounds(con: duckdb.DuckDBPyConnection, start: pd.Timestamp, end: pd.Timestamp) -> dict:
    """Minutes inside and outside the window over the span the logs cover."""
    first, last = one_row(con.execute("SELECT min(ts), max(ts) FROM logs"))
    if first is None:
        return {"window_minutes": 0.0, "baseline_minutes": 0.0}
    span = (pd.Timestamp(last) - pd.Timestamp(first)).total_seconds() / 60.0 + 1.0
    inside = (min(end, pd.Timestamp(last)) - max(start, pd.Timestamp(first))).total_seconds() / 60.0
    inside = max(inside, 1.0)
    return {"window_minutes": inside, "baseline_minutes": max(span - inside, 1.0)}


def has_message_key(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether `logs` is a table with the loader's per-line ``message_key``: a view over a
    Parquet dataset has no rowid, and a database from an older loader has no key."""
    return bool(one_row(con.execute(
        "SELECT count(*) FROM information_schema.columns JOIN information_schema.tables "
        "USING (table_catalog, table_schema, table_name) WHERE table_name = 'logs' "
        "AND table_type = 'BASE TABLE' AND column_name = 'message_key'"))[0])


def scan_sql(levels: tuple[str, ...] = PROBLEM_LEVELS, keyed: bool = False) -> str:
    """Counts per (service, masked message) inside and outside [$ws, $we).

    The lines are read once, grouped by their raw (service, message, level, error_kind): a
    plain hash aggregate, and every other step runs on its few thousand groups, not on the
    lines. With ``keyed`` (see ``has_message_key``) they are grouped by the loader's integer
    ``message_key`` instead, without reading any text, and each group's texts are read from
    one of its lines by rowid: all lines of a key have the same four texts. Masking is nine
    regex passes per message, so it runs once per distinct *skeleton*
    (the message with every digit turned into 0 by ``translate``, no regex): no mask pattern
    tells one digit from another, so when every digit of the skeleton ends up inside a masked
    token, the message masks to the same text. A skeleton that keeps a digit (`node-0` for
    `node-129`: numbers inside words are not masked) has its messages masked one by one.
    Each per-message aggregate merges exactly into its
    masked group (sums, minimums, the earliest example); mode() becomes the value with the
    most lines, ties to the one seen first, as DuckDB's mode() breaks them.
    """
    level_list = ", ".join(f"'{lvl}'" for lvl in levels)
    counts = """count(*) FILTER (WHERE ts >= $ws AND ts < $we) AS window_count,
                   count(*) FILTER (WHERE ts < $ws OR ts >= $we) AS outside_count,
                   min(ts) FILTER (WHERE ts >= $ws AND ts < $we) AS first_in_window,
                   min(ts) AS first_seen"""
    skeleton = "translate(message, '123456789', '000000000') AS skeleton"
    if keyed:
        messages = f"""
        keys AS (
            SELECT message_key, {counts}, min(rowid) AS line
            FROM logs WHERE level IN ({level_list})
            GROUP BY message_key
        ),
        messages AS (
            SELECT service, message, level, error_kind, {skeleton},
                   window_count, outside_count, first_in_window, first_seen
            FROM keys JOIN (SELECT rowid AS line, service, message, level, error_kind FROM logs
                            WHERE rowid IN (SELECT line FROM keys)) USING (line)
        )"""
    else:
        messages = f"""
        messages AS (
            SELECT service, message, level, error_kind, {skeleton}, {counts}
            FROM logs WHERE level IN ({level_list})
            GROUP BY service, message, level, error_kind
        )"""
    return f"""
        WITH {messages},
        masks AS (
            SELECT skeleton, {mask_sql('skeleton')} AS masked FROM (SELECT DISTINCT skeleton FROM messages)
        ),
        masked_messages AS (
            SELECT messages.*,
                   CASE WHEN contains(masks.masked, '0') THEN {mask_sql('messages.message')} ELSE masks.masked END AS masked
            FROM messages JOIN masks ON messages.skeleton IS NOT DISTINCT FROM masks.skeleton
        ),
        levels AS (
            SELECT service, masked, arg_min(level, (-lines, first_seen)) AS level
            FROM (SELECT service, masked, level, sum(window_count + outside_count) AS lines,
                         min(first_seen) AS first_seen
                  FROM masked_messages GROUP BY service, masked, level)
            GROUP BY service, masked
        ),
        error_kinds AS (
            SELECT service, masked, arg_min(error_kind, (-lines, first_seen)) AS error_kind
            FROM (SELECT service, masked, error_kind, sum(window_count) AS lines,
                         min(first_in_window) AS first_seen
                  FROM masked_messages WHERE window_count > 0 AND error_kind IS NOT NULL
                  GROUP BY service, masked, error_kind)
            GROUP BY service, masked
        ),
        templates AS (
            SELECT service,
                   masked,
                   sum(window_count)::BIGINT AS window_count,
                   sum(outside_count)::BIGINT AS outside_count,
                   min(first_in_window) AS first_in_window,
                   -- the earliest line (ties by text), not any_value: the postmortem must be reproducible
                   arg_min(message, (first_in_window, message)) FILTER (WHERE window_count > 0) AS example_in_window,
                   arg_min(message, (first_seen, message)) AS example
            FROM masked_messages
            GROUP BY service, masked
        )
        SELECT templates.service, templates.masked, window_count, outside_count, first_in_window,
               levels.level, example_in_window, example, error_kinds.error_kind
        FROM templates
        JOIN levels ON templates.service IS NOT DISTINCT FROM levels.service
                   AND templates.masked IS NOT DISTINCT FROM levels.masked
        LEFT JOIN error_kinds ON templates.service IS NOT DISTINCT FROM error_kinds.service
                             AND templates.masked IS NOT DISTINCT FROM error_kinds.masked
        ORDER BY templates.service, templates.masked
    """


def log_pattern_scan(
    con: duckdb.DuckDBPyConnection,
    start: pd.Timestamp,
    end: pd.Timestamp,
    *,
    top_k: int = 10,
    min_lift: float = 3.0,
    levels: tuple[str, ...] = PROBLEM_LEVELS,
) -> dict:
    """Rank WARN/ERROR templates by how much louder they are in [start, end) than outside it."""
    sql = scan_sql(levels, keyed=has_message_key(con))
    groups = con.execute(sql, {"ws": start, "we": end}).df()
    minutes = window_bounds(con, start, end)
    if groups.empty:
        return {"templates": [], "background": [], "services": [], "mentions": [], **minutes, "sql": sql}

    services = sorted(con.execute("SELECT DISTINCT service FROM logs").df()["service"].dropna().tolist())
    # Who-blames-whom is read from every masked message before mining, because the miner may
    # merge "call to A failed" with "call to B failed" once enough services are named there.
    groups["template"] = mine_service_templates(groups["service"].tolist(), groups["masked"].tolist())
    groups["example"] = groups["example_in_window"].fillna(groups["example"])
    name_pattern = mention_pattern(services)
    groups["mentions"] = [
        sorted({n for n in name_pattern.findall(text) if n != own}) if name_pattern else []
        for text, own in zip(groups["masked"], groups["service"])
    ]

    per_template = (
        groups.sort_values("window_count", ascending=False, kind="stable")
        .groupby(["service", "template"], as_index=False)
        .agg(
            window_count=("window_count", "sum"),
            outside_count=("outside_count", "sum"),
            first_in_window=("first_in_window", "min"),
            level=("level", "first"),
            example=("example", "first"),
            error_kind=("error_kind", "first"),
            mentions=("mentions", lambda lists: sorted({n for names in lists for n in names})),
        )
    )
    findings = _score(per_template, minutes["window_minutes"], minutes["baseline_minutes"])
    significant = [f for f in findings if f.lift >= min_lift and f.p_value < 1e-3 and f.excess >= 3]
    background = sorted(
        (f for f in findings if f not in significant and f.window_count > 0), key=lambda f: -f.window_count
    )
    by_service = _service_totals(findings)
    mentions = [
        {"from": f.service, "to": target, "template": f.template, "window_count": f.window_count}
        for f in significant
        for target in f.mentions
    ]
    return {
        "templates": [asdict(f) for f in top_per_service(significant, top_k)],
        "background": [asdict(f) for f in background[:5]],
        "services": by_service,
        "mentions": mentions,
        **minutes,
        "sql": sql,
    }


def top_per_service(findings: list[TemplateFinding], top_k: int) -> list[TemplateFinding]:
    """Each service's loudest finding first (by excess), then the next loudest up to `top_k`.

    A quiet root cause must not be crowded out by its louder callers' templates, neither here
    nor when a long list is shortened from its tail to fit a model's context.
    """
    best_of_service: dict[str, TemplateFinding] = {}
    for f in findings:
        best_of_service.setdefault(f.service, f)
    leaders = list(best_of_service.values())
    rest = [f for f in findings if f not in leaders][: max(top_k - len(leaders), 0)]
    return leaders + rest


def mention_pattern(services: list[str]) -> re.Pattern[str] | None:
    """Matches whole service names in a message ('cart' is not found inside 'cart-api')."""
    if not services:
        return None
    names = "|".join(re.escape(s) for s in sorted(services, key=len, reverse=True))
    return re.compile(rf"(?<![\w.-])({names})(?![\w-])")


def _score(per_template: pd.DataFrame, window_minutes: float, baseline_minutes: float) -> list[TemplateFinding]:
    window = per_template["window_count"].to_numpy(dtype=float)
    outside = per_template["outside_count"].to_numpy(dtype=float)
    baseline_rate = outside / baseline_minutes
    expected = baseline_rate * window_minutes
    # Half a count of prior keeps never-seen-before templates finite but ranked by volume.
    lift = (window + 0.5) / (expected + 0.5)
    p_value = poisson_sf(window - 1, np.maximum(expected, 0.5 / baseline_minutes * window_minutes))
    excess = window - expected
    findings = []
    for i, row in enumerate(per_template.itertuples(index=False)):
        first = row.first_in_window
        findings.append(
            TemplateFinding(
                service=row.service,
                template=row.template,
                level=row.level,
                window_count=int(row.window_count),
                baseline_per_min=round(float(baseline_rate[i]), 4),
                window_per_min=round(float(window[i] / window_minutes), 4),
                lift=round(float(lift[i]), 2),
                excess=round(float(excess[i]), 1),
                p_value=float(p_value[i]),
                first_seen_in_window=None if pd.isna(first) else pd.Timestamp(first).isoformat(),
                example=str(row.example),
                error_kind=None if pd.isna(row.error_kind) else str(row.error_kind),
                mentions=list(row.mentions),
            )
        )
    findings.sort(key=lambda f: -f.excess)
    return findings


def _service_totals(findings: list[TemplateFinding]) -> list[dict]:
    totals: dict[str, dict] = {}
    for f in findings:
        entry = totals.setdefault(f.service, {"service": f.service, "window_count": 0, "excess": 0.0})
        entry["window_count"] += f.window_count
        entry["excess"] += max(f.excess, 0.0)
    return sorted(
        ({**v, "excess": round(v["excess"], 1)} for v in totals.values()), key=lambda v: -v["excess"]
    )
