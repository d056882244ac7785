"""Log message masking and template mining.

Numbers, ids, addresses and hashes are masked first (in DuckDB for the bulk of the lines and
in Python with the very same patterns for single messages); only the distinct masked messages
are then clustered into templates with Drain (drain3), so mining cost follows the number of
distinct messages, not the number of lines.
"""

import logging
import re

from drain3 import TemplateMiner
from drain3.template_miner_config import TemplateMinerConfig

# (RE2-compatible pattern, replacement), applied in order, identically in Python and DuckDB.
# Ids before numbers so that an id containing digits becomes one token, not a soup of <NUM>s.
MASKS: tuple[tuple[str, str], ...] = (
    (r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", "<UUID>"),
    # Repeats bounded by the RFC's lengths: log text is untrusted, and the unbounded form took
    # minutes in Python's backtracking engine on a run of letters around an '@' (200k characters).
    (r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}", "<EMAIL>"),
    (r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b", "<IP>"),
    (r"\b(?:0x)?[0-9a-fA-F]{8,}\b", "<HEX>"),
    (r"\b[A-Za-z]+_\d+\b", "<ID>"),
    (r"-?\d+(?:\.\d+)?", "<NUM>"),
)
# re.ASCII: RE2 (DuckDB) treats \d and \b as ASCII only.
_COMPILED = tuple((re.compile(p, re.ASCII), r) for p, r in MASKS)

logging.getLogger("drain3").setLevel(logging.WARNING)


def mask_message(message: str) -> str:
    """Mask one message exactly as `mask_sql` masks a column."""
    for pattern, replacement in _COMPILED:
        message = pattern.sub(replacement, message)
    return message


def mask_sql(column: str) -> str:
    """A DuckDB expression that masks `column` with the same patterns as `mask_message`."""
    expr = column
    for pattern, replacement in MASKS:
        expr = f"regexp_replace({expr}, '{_sql_literal(pattern)}', '{replacement}', 'g')"
    return expr


def _sql_literal(text: str) -> str:
    return text.replace("'", "''")


def mine_templates(messages: list[str], similarity: float = 0.5) -> dict[str, str]:
    """Cluster masked messages with Drain; returns message -> template."""
    config = TemplateMinerConfig()
    config.drain_sim_th = similarity
    config.drain_depth = 4
    config.profiling_enabled = False
    config.parametrize_numeric_tokens = False
    miner = TemplateMiner(config=config)
    cluster_of = {m: miner.add_log_message(m)["cluster_id"] for m in messages}
    templates = {c.cluster_id: c.get_template() for c in miner.drain.clusters}
    return {m: templates[cid] for m, cid in cluster_of.items()}


def template_regex(template: str) -> re.Pattern[str]:
    """A regex matching the masked messages a template stands for.

    Drain re-joins tokens with single spaces, so any run of whitespace matches a space, and
    `<*>` matches one or more tokens.
    """
    tokens = [r"\S+(?:\s+\S+)*?" if token == "<*>" else re.escape(token) for token in template.split()]
    return re.compile(r"^\s*" + r"\s+".join(tokens) + r"\s*$")
