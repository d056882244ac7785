"""Redaction of what is sent to a model: user ids, emails, IPs, secrets, personal data, trace ids.

Emails, IPs, UUIDs and long hex ids (trace and session ids) are masked with the very patterns
`tools.templates` masks log templates with (the email one with bounded repeats), so the model
sees the same `<EMAIL>` / `<IP>` / `<UUID>` / `<HEX>` tokens in raw example lines as in templates
(IPv6 addresses become `<IP>` too). Secrets become `<TOKEN>`, user ids `<USER>`, card numbers
`<CARD>` (only numbers that pass the Luhn check and carry a card network's prefix, so counts and
epoch-ms timestamps survive), phone numbers `<PHONE>`, US social security numbers `<SSN>`.
Evidence ids (`ev-...-1a2b3c4d`) end in hex and must survive: they are what the model cites.

Why detect-secrets and not Presidio: detect-secrets (Yelp) maintains vendor token formats, and
those exact enough to mask with (AWS key ids, GitHub, GitLab, SendGrid, Twilio, Discord, PyPI,
Mailchimp, Telegram, Stripe) are imported from its plugins' `denylist`, for 1.1 MB, no new
transitive dependency and ~11 ms of import once langchain is loaded. Presidio's analyzer needs a
spaCy language model it downloads at start (impossible offline) on top of ~390 MB of packages and
~3.3 s of import, for card and phone checks that a Luhn test and a few patterns do here. The other
patterns are ours: detect-secrets' remaining plugins detect rather than delimit (a JWT without its
signature, Slack tokens in lower case only, PEM headers without the key body, URL passwords only
after a non-empty user, keywords tuned for source files).

A prompt's context block or a JSON document (tool results) is redacted value by value after
parsing, then written back as `graph.prompts` writes data (no `<` or `>` outside masks, so no
tag): a pattern never sees JSON escapes (`\\n` glued to the next word), cannot break the JSON, and
the value of a secret-like key (`"password": ...`) is masked whole. All patterns are compiled
regexes that start where the engine can skip ahead (a literal, a digit), or run only where a
keyword or marker occurs in the lower-cased text; no pattern backtracks more than linearly.
"""

import functools
import ipaddress
import json
import re
from collections.abc import Callable
from typing import Any

from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.discord import DiscordBotTokenDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.telegram_token import TelegramBotTokenDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector
from langchain_core.messages import AIMessage, BaseMessage

from graph.evidence import EVIDENCE_ID
from graph.prompts import dump_data, split_context, with_context
from tools.templates import MASKS

_TEMPLATE_MASKS = {replacement: pattern for pattern, replacement in MASKS}
TOKEN = "<TOKEN>"


def _detect_secrets_patterns() -> list[str]:
    """The token formats taken from detect-secrets (AWS: the key id only; its second pattern needs
    quotes around the secret, our key=value rule below finds it without)."""
    patterns = [AWSKeyDetector.denylist[0]]
    for detector in (
        GitHubTokenDetector, GitLabTokenDetector, SendGridDetector, TwilioKeyDetector, DiscordBotTokenDetector,
        PypiTokenDetector, MailchimpDetector, TelegramBotTokenDetector, StripeDetector,
    ):
        patterns += list(detector.denylist)
    return [f"(?i:{p.pattern})" if p.flags & re.IGNORECASE else p.pattern for p in patterns]


# Token formats of our own (prefix + body).
_OWN_TOKENS = (
    r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",  # JWT, signature included
    r"(?:sk|pk|rk)-(?=[A-Za-z_-]{0,64}\d)[A-Za-z0-9_-]{16,}",  # OpenAI, Anthropic (sk-ant-...), Stripe-style
    r"(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{10,}",  # Stripe (any length)
    r"whsec_[A-Za-z0-9]{16,}",  # Stripe webhook secret
    r"github_pat_[A-Za-z0-9_]{16,}", r"gh[pousr]_[A-Za-z0-9_]{16,}",  # GitHub (fine-grained, any length)
    r"xox[abeoprs]-[A-Za-z0-9-]{10,}", r"xapp-[A-Za-z0-9-]{10,}", r"xox[abpr]_[A-Za-z0-9_-]{16,}",  # Slack
    r"AIza[0-9A-Za-z_-]{35}", r"ya29\.[0-9A-Za-z_-]{20,}", r"GOCSPX-[A-Za-z0-9_-]{20,}",  # Google
    r"npm_[A-Za-z0-9]{36}",  # npm
    r"hf_[A-Za-z0-9]{30,}", r"api_org_[A-Za-z0-9]{30,}",  # Hugging Face
    r"do[opr]_v1_[a-f0-9]{64}",  # DigitalOcean
    r"HRKU-[A-Za-z0-9_-]{20,}",  # Heroku
    r"key-[0-9a-zA-Z]{32}",  # Mailgun
    r"SG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}",  # SendGrid (any length)
    r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}",  # Shopify
    r"dapi[a-f0-9]{32}",  # Databricks
    r"hv[sb]\.[A-Za-z0-9_-]{24,}",  # HashiCorp Vault
    r"gl(?:sa|c)_[A-Za-z0-9_+/]{32,}={0,2}",  # Grafana
    r"PMAK-[A-Za-z0-9-]{20,}",  # Postman
    r"ATATT3[A-Za-z0-9_=-]{20,}",  # Atlassian
    r"sq0(?:csp|atp)-[0-9A-Za-z_-]{22,}",  # Square
    r"AGE-SECRET-KEY-1[0-9A-Z]{20,}",  # age
)
# Not glued to a longer word on the left; the rest of the token goes with it on the right.
_TOKENS = r"(?<![A-Za-z0-9_])(?:" + "|".join((*_OWN_TOKENS, *_detect_secrets_patterns())) + r")[A-Za-z0-9_-]*"

# A key whose value is a secret: a keyword as one part of the name (aws_secret_access_key,
# clientSecret, X-Api-Key, SESSIONID), optionally followed by a part that keeps it a secret
# (_key, _id, _token, ...), and nothing else: token_count, prompt_tokens and session_ms are no keys.
_STRONG_KEYWORDS = (
    r"password", r"passwd", r"passphrase", r"pwd", r"secret", r"token", r"api[_-]?key", r"credentials?",
    r"private[_-]?key", r"access[_-]?key", r"account[_-]?key", r"shared[_-]?access[_-]?key", r"signing[_-]?key",
    r"encryption[_-]?key", r"master[_-]?key", r"client[_-]?key", r"app[_-]?key",
)
# ("signature" is no key: hypotheses name their log template so.)
_WEAK_KEYWORDS = (
    r"pass", r"session", r"sess", r"sid", r"csrf", r"xsrf", r"auth", r"sig", r"jwt", r"sas", r"cookie", r"otp",
)
_KEY_SUFFIX = r"(?:[_.-]?(?i:access[_.-]?key|key|id|token|value|b64|base64|hash|string|str|secret|base)){0,2}"


def _keyword(alternatives: tuple[str, ...]) -> str:
    # After a non-letter in any case, or capitalised after a lower-case letter or digit
    # (camelCase: clientSecret, xApiKey).
    words = "|".join(alternatives)
    capitalised = "|".join(f"{w[0].upper()}(?i:{w[1:]})" for w in alternatives)
    return rf"(?:(?<![A-Za-z])(?i:{words})|(?<=[a-z0-9])(?:{capitalised}))"


_KEY = rf"(?:(?P<strong>{_keyword(_STRONG_KEYWORDS)})|{_keyword(_WEAK_KEYWORDS)}){_KEY_SUFFIX}(?![A-Za-z0-9])"
_KEY_VALUE = re.compile(
    _KEY
    + r"(?P<sep>\\*[\"']?\s*[=:]\s*)"
    + r"(?:\"(?P<dq>(?:[^\"\\\r\n]|\\.)*)\"|'(?P<sq>[^'\r\n]*)'|(?P<esc>\\+[\"'])?(?P<bare>[^\s\"'\\,;&{}\[\]<>]+))"
)
_KEY_NAME = re.compile(r"[\w.-]*?" + _KEY + r"\Z")
# What a weak key's value must look like to be masked: one token of 8+ characters with a digit
# and a letter, or of 20+ token characters ("session": "started 3 min ago" stays).
_SECRET_LOOKING = re.compile(r"(?=\D*\d)(?=[^A-Za-z]*[A-Za-z])\S{8,}|[A-Za-z0-9+/=_%-]{20,}")


def _looks_secret(value: str) -> bool:
    return bool(_SECRET_LOOKING.fullmatch(value)) and not value.startswith("<")


def _key_value(match: re.Match[str]) -> str:
    value = next(v for v in (match.group("dq"), match.group("sq"), match.group("bare")) if v is not None)
    if not value or value.startswith("<") or (match.group("strong") is None and not _looks_secret(value)):
        return match.group(0)
    start, end = match.span(next(g for g in ("dq", "sq", "bare") if match.group(g) is not None))
    whole = match.group(0)
    return whole[: start - match.start()] + TOKEN + whole[end - match.start() :]


# Authorization header values (Basic, Bearer, Digest, ...), and bearer tokens anywhere.
_AUTH_SCHEMES = r"(?:basic|bearer|digest|negotiate|ntlm|token|apikey|hmac|aws4-hmac-sha256)"
_AUTHORIZATION = re.compile(
    r"(?i)\b((?:proxy-)?authorization\\*[\"']?\s*[=:]\s*\\*[\"']?)"
    rf"({_AUTH_SCHEMES}\s+)?(?!<)(?!{_AUTH_SCHEMES}\s)[^\s\"'\\,;]+"
)
_BEARER = re.compile(r"(?i)\b(bearer)\s+(?!<)[A-Za-z0-9._~+/=-]{8,}")

# Cookie and Set-Cookie headers: every cookie's value, not the attributes (Path, Expires, ...).
_COOKIE = re.compile(r"(?i)\b((?:set-)?cookie2?\\*[\"']?\s*:\s*)([^\r\n\"'\\]+)")
_COOKIE_PAIR = re.compile(r"(^|;\s*)([^=;\s]+)=([^;\s]*)")
_COOKIE_ATTRIBUTES = {"path", "domain", "expires", "max-age", "samesite", "priority", "version", "comment", "partitioned"}


def _cookie(match: re.Match[str]) -> str:
    def pair(p: re.Match[str]) -> str:
        if p.group(2).lower() in _COOKIE_ATTRIBUTES or not p.group(3) or p.group(3).startswith("<"):
            return p.group(0)
        return f"{p.group(1)}{p.group(2)}={TOKEN}"

    return match.group(1) + _COOKIE_PAIR.sub(pair, match.group(2))


# The password of a URL's user info (redis://:pw@host, postgres://app:pw@db:5432/x).
_URL_PASSWORD = re.compile(r"://(?<=[A-Za-z0-9+.-]://)([^\s:/@\"'\\]*):(?!<)[^\s/@\"'\\]+@")
# Webhook URLs whose path is the secret.
_WEBHOOK = re.compile(r"(hooks\.slack\.com/(?:services|workflows|triggers)/|discord(?:app)?\.com/api/webhooks/)[A-Za-z0-9_/+-]+")
# PEM private keys (also with JSON's \n escapes in the text): the body between the markers, or
# the base64 after a BEGIN marker whose END was cut off.
_PEM_LABEL = r"-----(?:BEGIN|END)[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
# (The body never runs past a "-----", so a text of many BEGIN lines costs linear time.)
_PEM = re.compile(rf"({_PEM_LABEL.replace('(?:BEGIN|END)', 'BEGIN')})(?:[^-]|-(?!----)){{0,20000}}({_PEM_LABEL.replace('(?:BEGIN|END)', 'END')})")
_PEM_CUT = re.compile(rf"({_PEM_LABEL.replace('(?:BEGIN|END)', 'BEGIN')})(?:(?:\\[nr]|\s)*[A-Za-z0-9+/=]{{16,}})+")


# Card numbers: 13-19 digits, in groups split by one kind of separator, checked below.
# (The first digit comes before the look-behind so that the regex engine can skip to digits.)
_CARD = re.compile(r"\d(?<![\w.-]\d)\d{3}(?:[ -]?\d){9,15}(?![\w-]|\.\d)")
_CARD_PREFIX = re.compile(r"4|5[1-5]|2[2-7]|3[47]|3(?:0[0-5]|[68])|6(?:011|5|4[4-9]|2)|35(?:2[89]|[3-8])")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    text = match.group(0)
    separators = {c for c in text if not c.isdigit()}
    digits = text.replace(" ", "").replace("-", "")
    if len(separators) > 1 or not 13 <= len(digits) <= 19 or not _CARD_PREFIX.match(digits) or not _luhn(digits):
        return text
    return "<CARD>"


# Phone numbers: international (+44 20 7946 0958, +14155550132) and US ((415) 555-0132, 415-555-0132).
_PHONE_INTL = re.compile(r"(?<![\w+])\+\d[\d ()-]{6,18}\d(?![\w.]|-\d)")
_PHONE_US_PARENS = re.compile(r"\((?<![\w(]\()[2-9]\d{2}\)[ .-]?[2-9]\d{2}[ .-]\d{4}(?![\w-])")
_PHONE_US = re.compile(r"[2-9](?<![\w.+][2-9])\d{2}([.-])[2-9]\d{2}\1\d{4}(?![\w-]|\.\d)")


def _phone_intl(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = sum(c.isdigit() for c in text)
    plain = text[1:].isdigit()
    if "  " in text or "--" in text or not (10 if plain else 8) <= digits <= 15:
        return text
    return "<PHONE>"


_SSN = re.compile(r"\d(?<![\w-]\d)\d{2}-\d{2}-\d{4}(?![\w-])")


def _ssn(match: re.Match[str]) -> str:
    area, group, serial = match.group(0).split("-")
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return match.group(0)
    return "<SSN>"

# IPv6, full and compressed; candidates are checked with `ipaddress` (12:30:45 is not one).
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?(?![\w:]|\.\d)")


def _ipv6(match: re.Match[str]) -> str:
    text = match.group(0)
    if ("::" not in text and text.count(":") != 7) or not any(c.isdigit() for c in text):
        return text
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return text
    return "<IP>"


# "user=alice", "customer_id: 42": any value after an explicit separator; "user u123",
# "client web-7": a value after a space only when it has a digit, so "client error" stays.
_USER_KEYS = r"(?i)\b(user|user_id|userid|uid|customer|customer_id|account|account_id|client|client_id)"
USER_IDS: tuple[tuple[str, str], ...] = (
    (_USER_KEYS + r"(\s*[=:]\s*)(?!<)[A-Za-z0-9._@+-]+", r"\1\2<USER>"),
    (_USER_KEYS + r"(\s+)(?!<)(?=[A-Za-z._@+-]*\d)[A-Za-z0-9._@+-]+", r"\1\2<USER>"),
)


def _ascii_lower(text: str) -> str:
    """`text` lower-cased without changing its length (so positions carry over)."""
    if text.isascii():
        return text.lower()
    lowered = text.lower()  # lower() only ever lengthens a character (İ -> i̇), never shortens one
    return lowered if len(lowered) == len(text) else text.translate(_ASCII_LOWER)


_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


def _hinted(hint: str, pattern: str, replacement: Any) -> Callable[[str], str]:
    """`pattern.sub(replacement, text)` for a case-insensitive pattern, tried only where the
    lower-cased text has one of its keywords (`hint`, a case-sensitive alternation the regex
    engine scans for quickly); the pattern must start at the keyword."""
    hints, compiled = re.compile(hint), re.compile(pattern)

    def sub(text: str) -> str:
        lowered = _ascii_lower(text)
        parts, last, pos = [], 0, 0
        while (hit := hints.search(lowered, pos)) is not None:
            match = compiled.match(text, hit.start())
            if match is None or match.end() == match.start():
                pos = hit.start() + 1
                continue
            parts += [text[last : match.start()], match.expand(replacement) if isinstance(replacement, str) else replacement(match)]
            last = pos = match.end()
        return "".join(parts) + text[last:] if parts else text

    return sub


def _regex(pattern: str | re.Pattern[str], replacement: Any) -> Callable[[str], str]:
    compiled = re.compile(pattern)
    return lambda text: compiled.sub(replacement, text)


_KEY_HINT = r"pass|pwd|secret|token|api|cred|private|access|account|shared|signing|encryption|master|client|app|sess|sid|csrf|xsrf|auth|sig|jwt|sas|cookie|otp"
_USER_HINT = r"user|uid|customer|account|client"

# (markers of which one must be in the lower-cased text for the rule to run, or (); the rule), in order.
_RULES: tuple[tuple[tuple[str, ...], Callable[[str], str]], ...] = (
    (("private key",), _regex(_PEM, rf"\1{TOKEN}\2")),
    (("private key",), _regex(_PEM_CUT, rf"\1{TOKEN}")),
    (("://",), _regex(_URL_PASSWORD, rf"://\1:{TOKEN}@")),
    (("hooks.slack.com", "discord"), _regex(_WEBHOOK, rf"\1{TOKEN}")),
    ((), _regex(_TOKENS, TOKEN)),
    (("authorization",), _regex(_AUTHORIZATION, rf"\1\2{TOKEN}")),
    (("bearer",), _regex(_BEARER, rf"\1 {TOKEN}")),
    (("cookie",), _regex(_COOKIE, _cookie)),
    ((), _hinted(_KEY_HINT, _KEY_VALUE.pattern, _key_value)),
    (("@",), _regex(_TEMPLATE_MASKS["<EMAIL>"], "<EMAIL>")),
    *(((), _hinted(_USER_HINT, pattern, replacement)) for pattern, replacement in USER_IDS),
    (("-",), _regex(_TEMPLATE_MASKS["<UUID>"], "<UUID>")),
    (("-",), _regex(_SSN, _ssn)),
    ((), _regex(_CARD, _card)),
    (("+",), _regex(_PHONE_INTL, _phone_intl)),
    (("(",), _regex(_PHONE_US_PARENS, "<PHONE>")),
    ((), _regex(_PHONE_US, "<PHONE>")),
    ((":",), _regex(_IPV6, _ipv6)),
    ((".",), _regex(_TEMPLATE_MASKS["<IP>"], "<IP>")),
)
_HEX = re.compile(_TEMPLATE_MASKS["<HEX>"], re.ASCII)


_NUMBER = re.compile(r"\d+(?:[eE]\d*)?")


def _mask_hex(match: re.Match[str]) -> str:
    # The template HEX pattern also matches long numbers (counts, epoch ms, the mantissa of
    # 2.0123456789e-279): keep those.
    return match.group(0) if _NUMBER.fullmatch(match.group(0)) else "<HEX>"


def _redact_segment(text: str) -> str:
    lowered = _ascii_lower(text)  # masking only removes markers, so one look at them suffices
    for markers, rule in _RULES:
        if not markers or any(m in lowered for m in markers):
            text = rule(text)
    return _HEX.sub(_mask_hex, text)


def _redact_plain(text: str) -> str:
    parts, last = [], 0
    for match in EVIDENCE_ID.finditer(text):
        parts += [_redact_segment(text[last : match.start()]), match.group(0)]
        last = match.end()
    parts.append(_redact_segment(text[last:]))
    return "".join(parts)


# Values in JSON repeat (service names, levels, endpoints, templates): short ones are redacted once.
_redact_short = functools.lru_cache(maxsize=8192)(_redact_plain)


def _redact_string(text: str) -> str:
    return _redact_short(text) if len(text) <= 256 else _redact_plain(text)


def redact_value(value: Any) -> Any:
    """A parsed JSON value with every string redacted, and the whole value of a secret-like key
    (`password`, `client_secret`, `private_key`, a high-entropy `session`, ...) masked."""
    if isinstance(value, str):
        return _redact_string(value)
    if isinstance(value, list):
        return [redact_value(v) for v in value]
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            name = _KEY_NAME.match(key) if isinstance(key, str) else None
            if name and _masks_whole(name, item):
                out[_redact_string(key)] = TOKEN
            else:
                out[_redact_string(key) if isinstance(key, str) else key] = redact_value(item)
        return out
    return value


def _masks_whole(name: re.Match[str], item: Any) -> bool:
    if isinstance(item, bool) or item is None or not isinstance(item, (str, int, float)):
        return False
    text = str(item)
    if not text or text.startswith("<"):
        return False
    return name.group("strong") is not None or (isinstance(item, str) and _looks_secret(text))


def redact_text(text: str) -> str:
    """`text` with identifiers and secrets masked; evidence ids kept verbatim. A prompt's context
    block and a JSON document are redacted value by value and stay valid JSON."""
    found = split_context(text)
    if found is not None:
        task, context = found
        return with_context(_redact_plain(task), redact_value(context))
    if text.lstrip()[:1] in ("{", "["):
        try:
            return dump_data(redact_value(json.loads(text)))
        except (ValueError, RecursionError):  # not JSON, or nested too deep to walk: redact it as text
            pass
    return _redact_plain(text)


def redact_messages(messages: list[BaseMessage]) -> list[BaseMessage]:
    """Copies of `messages` with their text redacted. The model's own replies are left as they
    are: they were written from redacted input (and rewriting them would break tool-call pairs)."""
    out: list[BaseMessage] = []
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
