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
from tools.templates import (
    mask_skeleton,
    mask_sql,
    mine_service_templates,
    refill_sql,
    skeleton_sql,
)

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


# The loader's index of a `logs` table (``index_patterns``); without it (logs that are a view over
# a Parquet dataset, a database from an older loader) the scan masks the text itself.
PATTERNS_TABLE = "log_patterns"


def index_patterns(con: duckdb.DuckDBPyConnection) -> None:
    """Give every line of the `logs` table at ``PROBLEM_LEVELS`` its ``pattern_id`` UINTEGER
    (NULL on other lines): its (service, masked message, level, error_kind), a row of table
    ``log_patterns`` with what a scan needs that does not depend on its window: the lines, the
    first of them and its text (ties to the smaller text), the template mined over all the
    masked messages of the service and the services the masked message names.

    A scan then reads only the lines inside its window (ts is sorted, so DuckDB skips the
    other row groups). Masking runs once per distinct skeleton (``tools.templates.skeleton``),
    and a message whose skeleton keeps digits only has those digits copied in: the cost
    follows distinct messages and skeletons, not lines.
    """
    level_list = ", ".join(f"'{lvl}'" for lvl in PROBLEM_LEVELS)
    # All lines of a message_key share their four texts (tools.loader.MESSAGE_KEY_SQL).
    con.execute(f"""
        CREATE TEMP TABLE _messages AS
        SELECT *, {skeleton_sql('message')} AS skeleton
        FROM (SELECT message_key, any_value(service) AS service, any_value(message) AS message,
                     any_value(level) AS level, any_value(error_kind) AS error_kind,
                     count(*) AS lines, min(ts) AS first_seen
              FROM logs WHERE level IN ({level_list}) GROUP BY message_key)""")
    con.execute(f"""
        CREATE TEMP TABLE _skeletons AS
        SELECT skeleton, {mask_sql('skeleton')} AS masked
        FROM (SELECT DISTINCT skeleton FROM _messages WHERE skeleton IS NOT NULL)""")
    # Masking leaves digits of few skeletons: which, is traced in Python (tools.templates).
    keeping = [str(row[0]) for row in con.execute(
        "SELECT skeleton FROM _skeletons WHERE regexp_matches(masked, '[0-9]')").fetchall()]
    traced = [mask_skeleton(text) for text in keeping]
    con.execute("CREATE TEMP TABLE _kept AS SELECT unnest($1::VARCHAR[]) AS skeleton, "
                "unnest($2::VARCHAR[][]) AS pieces, unnest($3::INTEGER[][]) AS offsets",
                [keeping, [t[0] for t in traced], [t[1] for t in traced]])
    con.execute(f"""
        CREATE TEMP TABLE _masked AS
        SELECT m.message_key, m.service, m.message, m.level, m.error_kind, m.lines, m.first_seen,
               CASE WHEN k.pieces IS NULL THEN s.masked
                    ELSE {refill_sql('m.message', 'k.pieces', 'k.offsets')} END AS masked
        FROM _messages m LEFT JOIN _skeletons s USING (skeleton) LEFT JOIN _kept k USING (skeleton)""")
    con.execute("""
        CREATE TEMP TABLE _patterns AS
        SELECT (row_number() OVER (ORDER BY service, masked, level, error_kind))::UINTEGER AS pattern_id, *
        FROM (SELECT DISTINCT service, masked, level, error_kind FROM _masked)""")
    same = " AND ".join(f"m.{c} IS NOT DISTINCT FROM p.{c}" for c in ("service", "masked", "level", "error_kind"))
    con.execute(f"CREATE TEMP TABLE _keyed AS SELECT m.*, p.pattern_id FROM _masked m JOIN _patterns p ON {same}")
    con.execute("ALTER TABLE logs ADD COLUMN pattern_id UINTEGER")
    con.execute("UPDATE logs SET pattern_id = k.pattern_id FROM _keyed k WHERE logs.message_key = k.message_key")

    named = con.execute("SELECT DISTINCT service, masked FROM _patterns WHERE masked IS NOT NULL").fetchall()
    services = sorted(str(row[0]) for row in con.execute(
        "SELECT DISTINCT service FROM logs WHERE service IS NOT NULL").fetchall())
    owners, texts = [row[0] for row in named], [row[1] for row in named]
    con.execute(f"""
        CREATE TABLE {PATTERNS_TABLE} AS
        SELECT p.*, lines.lines, lines.first_seen, lines.example, t.template, t.mentions
        FROM _patterns p
        JOIN (SELECT pattern_id, sum(lines)::BIGINT AS lines, min(first_seen) AS first_seen,
                     arg_min(message, (first_seen, message)) AS example
              FROM _keyed GROUP BY pattern_id) lines USING (pattern_id)
        LEFT JOIN (SELECT unnest($1::VARCHAR[]) AS service, unnest($2::VARCHAR[]) AS masked,
                          unnest($3::VARCHAR[]) AS template, unnest($4::VARCHAR[][]) AS mentions) t
               ON p.service IS NOT DISTINCT FROM t.service AND p.masked = t.masked
        ORDER BY p.pattern_id""",
                [owners, texts, mine_service_templates(owners, texts), mentions_of(owners, texts, services)])
    for temp in ("_keyed", "_patterns", "_masked", "_kept", "_skeletons", "_messages"):
        con.execute(f"DROP TABLE {temp}")


def is_indexed(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the loader indexed the lines' patterns (``index_patterns``)."""
    return bool(one_row(con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = ?",
        [PATTERNS_TABLE]))[0])


def scan_sql(levels: tuple[str, ...] = PROBLEM_LEVELS, indexed: bool = False) -> str:
    """Counts per (service, masked message) inside and outside [$ws, $we).

    With ``indexed`` (see ``index_patterns``; ``levels`` among ``PROBLEM_LEVELS``) only the
    lines in the window are read, grouped by their integer ``pattern_id``, and joined with the
    index's totals per (service, masked, level, error_kind). Else the lines are grouped by their
    raw (service, message, level, error_kind), a plain hash aggregate, and masking runs on those
    groups: once per distinct skeleton (``tools.templates.skeleton``) when masking leaves no
    digit of it, so that every message of the skeleton masks to the same text, else one by one.
    Each group merges exactly into its masked group (sums, minimums, the earliest example);
    mode() becomes the value with the most lines, ties to the one seen first, as DuckDB's
    mode() breaks them.
    """
    level_list = ", ".join(f"'{lvl}'" for lvl in levels)
    in_window = "ts >= $ws AND ts < $we"
    outside = "ts < $ws OR ts >= $we"
    if indexed:
        # Only the window's lines are read; the rest of each count is the pattern's total.
        levels_of = "" if set(levels) == set(PROBLEM_LEVELS) else f" WHERE p.level IN ({level_list})"
        masked_messages = f"""
        window_lines AS (
            SELECT pattern_id, count(*) AS window_count, min(ts) AS first_in_window,
                   arg_min(message, (ts, message)) AS example_in_window
            FROM logs WHERE pattern_id IS NOT NULL AND {in_window}
            GROUP BY pattern_id
        ),
        masked_messages AS (
            SELECT p.service, p.masked, p.level, p.error_kind, p.template, p.mentions,
                   coalesce(w.window_count, 0) AS window_count,
                   p.lines - coalesce(w.window_count, 0) AS outside_count,
                   w.first_in_window, p.first_seen, w.example_in_window, p.example
            FROM {PATTERNS_TABLE} p LEFT JOIN window_lines w USING (pattern_id){levels_of}
        )"""
        # A pattern's template and mentions are its (service, masked)'s: the same on every level.
        indexed_columns = ", any_value(template) AS template, any_value(mentions) AS mentions"
        selected = ", templates.template, templates.mentions"
    else:
        masked_text = mask_sql("skeleton")
        masked_messages = f"""
        messages AS (
            SELECT service, message, level, error_kind, {skeleton_sql('message')} AS skeleton,
                   count(*) FILTER (WHERE {in_window}) AS window_count,
                   count(*) FILTER (WHERE {outside}) AS outside_count,
                   min(ts) FILTER (WHERE {in_window}) AS first_in_window,
                   min(ts) AS first_seen
            FROM logs WHERE level IN ({level_list})
            GROUP BY service, message, level, error_kind
        ),
        masks AS (
            SELECT skeleton, {masked_text} AS masked FROM (SELECT DISTINCT skeleton FROM messages)
        ),
        masked_messages AS (
            SELECT messages.* EXCLUDE (skeleton, message), message AS example_in_window, message AS example,
                   CASE WHEN regexp_matches(masks.masked, '[0-9]') THEN {mask_sql('messages.message')}
                        ELSE masks.masked END AS masked
            FROM messages JOIN masks ON messages.skeleton IS NOT DISTINCT FROM masks.skeleton
        )"""
        indexed_columns = selected = ""
    return f"""
        WITH {masked_messages},
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
                   arg_min(example_in_window, (first_in_window, example_in_window))
                       FILTER (WHERE window_count > 0) AS example_in_window,
                   arg_min(example, (first_seen, example)) AS example{indexed_columns}
            FROM masked_messages
            GROUP BY service, masked
        )
        SELECT templates.service, templates.masked, window_count, outside_count, first_in_window,
               levels.level, example_in_window, example, error_kinds.error_kind{selected}
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
    indexed = set(levels) <= set(PROBLEM_LEVELS) and is_indexed(con)
    sql = scan_sql(levels, indexed=indexed)
    cursor = con.execute(sql, {"ws": start, "we": end})
    columns = [d[0] for d in cursor.description]
    # A line without a message has no template to be counted in.
    groups = [g for g in (dict(zip(columns, row)) for row in cursor.fetchall()) if g["masked"] is not None]
    minutes = window_bounds(con, start, end)
    if not groups:
        return {"templates": [], "background": [], "services": [], "mentions": [], **minutes, "sql": sql}

    owners, texts = [g["service"] for g in groups], [g["masked"] for g in groups]
    if not indexed or set(levels) != set(PROBLEM_LEVELS):
        # The index's templates are mined over the masked messages of all PROBLEM_LEVELS; a
        # scan of fewer levels mines its own, as the templates depend on the set mined.
        for g, template in zip(groups, mine_service_templates(owners, texts)):
            g["template"] = template
    if not indexed:
        services = sorted(str(row[0]) for row in con.execute(
            "SELECT DISTINCT service FROM logs WHERE service IS NOT NULL").fetchall())
        for g, names in zip(groups, mentions_of(owners, texts, services)):
            g["mentions"] = names
    per_template = _per_template(groups)
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


def mentions_of(owners: list[str], texts: list[str], services: list[str]) -> list[list[str]]:
    """The other services each (owner, masked message) names. Who-blames-whom is read from the
    masked messages before mining, because the miner may merge "call to A failed" with "call to
    B failed" once enough services are named there."""
    name_pattern = mention_pattern(services)
    if name_pattern is None:
        return [[] for _ in texts]
    return [sorted({n for n in name_pattern.findall(text) if n != own}) for text, own in zip(texts, owners)]


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


def _per_template(groups: list[dict]) -> list[dict]:
    """Masked-message groups (in (service, masked) order) merged per (service, template), in
    that order: counts summed, the earliest first line in the window, and the level, example
    and error kind of the group with the most lines in the window (ties to the first; a
    missing value is taken from the next). A group without a service has no row."""
    merged: dict[tuple[str, str], dict] = {}
    for g in sorted(groups, key=lambda g: -g["window_count"]):
        if g["service"] is None:
            continue
        m = merged.setdefault((g["service"], g["template"]), {
            "service": g["service"], "template": g["template"], "window_count": 0, "outside_count": 0,
            "first_in_window": None, "level": None, "example": None, "error_kind": None, "mentions": set()})
        m["window_count"] += g["window_count"]
        m["outside_count"] += g["outside_count"]
        first = g["first_in_window"]
        if first is not None and (m["first_in_window"] is None or first < m["first_in_window"]):
            m["first_in_window"] = first
        example = g["example_in_window"] if g["example_in_window"] is not None else g["example"]
        for name, value in (("level", g["level"]), ("example", example), ("error_kind", g["error_kind"])):
            if m[name] is None:
                m[name] = value
        m["mentions"].update(g["mentions"])
    return [{**merged[key], "mentions": sorted(merged[key]["mentions"])} for key in sorted(merged)]


def _score(per_template: list[dict], window_minutes: float, baseline_minutes: float) -> list[TemplateFinding]:
    window = np.array([t["window_count"] for t in per_template], dtype=float)
    outside = np.array([t["outside_count"] for t in per_template], dtype=float)
    baseline_rate = outside / baseline_minutes
    expected = baseline_rate * window_minutes
    # Half a count of prior keeps never-seen-before templates finite but ranked by volume.
    lift = (window + 0.5) / (expected + 0.5)
    p_value = poisson_sf(window - 1, np.maximum(expected, 0.5 / baseline_minutes * window_minutes))
    excess = window - expected
    findings = []
    for i, row in enumerate(per_template):
        first = row["first_in_window"]
        findings.append(
            TemplateFinding(
                service=row["service"],
                template=row["template"],
                level=row["level"],
                window_count=int(row["window_count"]),
                baseline_per_min=round(float(baseline_rate[i]), 4),
                window_per_min=round(float(window[i] / window_minutes), 4),
                lift=round(float(lift[i]), 2),
                excess=round(float(excess[i]), 1),
                p_value=float(p_value[i]),
                first_seen_in_window=None if first is None else pd.Timestamp(first).isoformat(),
                example=str(row["example"]),
                error_kind=None if row["error_kind"] is None else str(row["error_kind"]),
                mentions=row["mentions"],
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
