"""Redaction of what is sent to a model: user ids, emails, IPs, secrets and trace ids.

Emails, IPs, UUIDs and long hex ids (trace and session ids) are masked with the very patterns
`tools.templates` masks log templates with, so the model sees the same `<EMAIL>` / `<IP>` /
`<UUID>` / `<HEX>` tokens in raw example lines as in templates. Secrets and user ids have no
template mask (templates do not need one), so they get their own patterns here. Evidence ids
(`ev-...-1a2b3c4d`) end in hex and must survive: they are what the model cites.
"""

import re

from langchain_core.messages import AIMessage, BaseMessage

from graph.tools import EVIDENCE_ID
from tools.templates import MASKS

_TEMPLATE_MASKS = dict((replacement, pattern) for pattern, replacement in MASKS)


SECRETS: tuple[tuple[str, str], ...] = (
    (r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", "<TOKEN>"),  # JWT
    (r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}", "<TOKEN>"),  # OpenAI / Stripe style keys
    (r"\b(?:ghp|gho|ghs|github_pat|xox[abpr])_[A-Za-z0-9_-]{16,}", "<TOKEN>"),  # GitHub / Slack
    (r"\bAKIA[0-9A-Z]{16}\b", "<TOKEN>"),  # AWS access key id
    (r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}", r"\1 <TOKEN>"),
    # key=value, key: value, "key": "value" (also inside JSON-encoded JSON: no backslash is eaten)
    (r"(?i)\b(api[_-]?key|access[_-]?token|auth[_-]?token|token|secret|password|passwd)(\\*\"?\s*[=:]\s*\\*\"?)[^\s\"'\\,;&]+", r"\1\2<TOKEN>"),
)
# "user=alice", "customer_id: 42": any value after an explicit separator; "user u123",
# "client web-7": a value after a space only when it has a digit, so "client error" stays.
_USER_KEYS = r"(?i)\b(user|user_id|userid|uid|customer|customer_id|account|account_id|client|client_id)"
USER_IDS: tuple[tuple[str, str], ...] = (
    (_USER_KEYS + r"(\s*[=:]\s*)(?!<)[A-Za-z0-9._@+-]+", r"\1\2<USER>"),
    (_USER_KEYS + r"(\s+)(?!<)(?=[A-Za-z._@+-]*\d)[A-Za-z0-9._@+-]+", r"\1\2<USER>"),
)

_ORDERED: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        *SECRETS,
        (_TEMPLATE_MASKS["<EMAIL>"], "<EMAIL>"),
        *USER_IDS,
        (_TEMPLATE_MASKS["<UUID>"], "<UUID>"),
        (_TEMPLATE_MASKS["<IP>"], "<IP>"),
    )
)
_HEX = re.compile(_TEMPLATE_MASKS["<HEX>"], re.ASCII)


_NUMBER = re.compile(r"\d+(?:[eE]\d*)?")


def _mask_hex(match: re.Match[str]) -> str:
    # The template HEX pattern also matches long numbers (counts, epoch ms, the mantissa of
    # 2.0123456789e-279): keep those.
    return match.group(0) if _NUMBER.fullmatch(match.group(0)) else "<HEX>"


def _redact_segment(text: str) -> str:
    for pattern, replacement in _ORDERED:
        text = pattern.sub(replacement, text)
    return _HEX.sub(_mask_hex, text)


def redact_text(text: str) -> str:
    """`text` with identifiers and secrets masked; evidence ids kept verbatim."""
    parts, last = [], 0
    for match in EVIDENCE_ID.finditer(text):
        parts += [_redact_segment(text[last : match.start()]), match.group(0)]
        last = match.end()
    parts.append(_redact_segment(text[last:]))
    return "".join(parts)


def redact_messages(messages: list[BaseMessage]) -> list[BaseMessage]:
    """Copies of `messages` with their text redacted. The model's own replies are left as they
    are: they were written from redacted input (and rewriting them would break tool-call pairs)."""
    out = []
    for message in messages:
        if isinstance(message, AIMessage):
            out.append(message)
        elif isinstance(message.content, str):
            out.append(message.model_copy(update={"content": redact_text(message.content)}))
        else:
            blocks = [
                {**b, "text": redact_text(b["text"])} if isinstance(b, dict) and isinstance(b.get("text"), str) else b
                for b in message.content
            ]
            out.append(message.model_copy(update={"content": blocks}))
    return out
