"""Log message masking and template mining.

Numbers, ids, addresses, times and hashes are masked first (in DuckDB for the bulk of the lines
and in Python with the very same patterns for single messages); only the distinct masked
messages of each service are then clustered into templates, so mining cost follows the number
of distinct messages, not the number of lines.

The miner follows Brain (Yu et al., "Brain: Log Parsing with Bidirectional Parallel Tree", 2023)
rather than Drain: on the Loghub-2k samples (``python -m benchmarks.templates``) Drain's
similarity threshold either merged events that differ in one word ("VM Paused" / "VM Resumed")
or split one event on its variables, whatever the threshold; see ``mine_templates``.
"""

import re
from collections import Counter, defaultdict

# A number or a clock time is masked only where a token or a part of one starts: preceded by the
# start or by a character that is not a letter, digit or underscore (`node-129` -> `node-<NUM>`,
# `core.12` -> `core.<NUM>`: the hyphen is kept, not read as a minus; per-host and per-client
# names would otherwise make every line its own message), and followed by a word boundary or a
# short unit (so `jk2_init()` and `SOCKS5` keep theirs, and a hex id starting with digits is not
# cut into a number).
# RE2 (DuckDB) has no lookbehind, so the preceding character is captured and put back (\1).
_START = r"(^|[^A-Za-z0-9_])"
_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
# (RE2-compatible pattern, replacement), applied in order, identically in Python and DuckDB.
# Ids before numbers so that an id containing digits becomes one token, not a soup of <NUM>s.
# Log text is untrusted: every pattern runs in linear time in Python's backtracking engine too
# (an unbounded email pattern took minutes on a run of letters around an '@', 200k characters;
# its repeats are now bounded by the RFC's lengths). No pattern tells one digit from another but
# the 0 of a 0x prefix, and no replacement writes a digit (``skeleton`` relies on both).
# graph/redaction.py reuses the UUID, EMAIL, IP and HEX patterns with their plain replacements,
# so those four capture nothing.
MASKS: tuple[tuple[str, str], ...] = (
    (r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", "<UUID>"),
    (r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}", "<EMAIL>"),
    # A time is one field, not three numbers and a weekday: ISO 8601, ctime/syslog, a bare clock.
    (r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d{1,9})?(?:Z|[+-]\d{2}:?\d{2})?\b", "<TIME>"),
    (rf"\b(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) {{1,2}})?{_MONTH} {{1,2}}\d{{1,2}} \d{{2}}:\d{{2}}:\d{{2}}(?: \d{{4}})?\b", "<TIME>"),
    (_START + r"\d{1,2}:\d{2}:\d{2}(?:[.,]\d{1,9})?\b", r"\1<TIME>"),
    (r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b", "<IP>"),
    (_START + r"[A-Za-z]+_\d+\b", r"\1<ID>"),
    # A name ending in three or more digits is a name plus a number (`u394029`, `host0042`); one
    # or two digits are part of the name (`SOCKS5`, `ipv6`, `jk2`).
    (_START + r"([A-Za-z]+)\d{3,}\b", r"\1\2<NUM>"),
    # Any decimal, however long, is a number, and so is one with a unit (`10ms`, `2.5s`: the
    # unit is kept); hex is 0x-prefixed, or 8+ hex digits with a letter (an all-decimal run became
    # a number just before): one class per kind of field.
    (_START + r"-?\d+(?:\.\d+)*([A-Za-z]{0,3})\b", r"\1<NUM>\2"),
    (r"\b(?:0[xX][0-9a-fA-F]+|[0-9a-fA-F]{8,})\b", "<HEX>"),
)
# re.ASCII: RE2 (DuckDB) treats \d and \b as ASCII only.
_COMPILED = tuple((re.compile(p, re.ASCII), r) for p, r in MASKS)
# A token that is a mask, or masks joined by punctuation (`<IP>,<IP>`, `[<NUM>,<NUM>]`).
_PLACEHOLDER = re.compile(r"\W{0,4}<[A-Z]{2,5}>(?:\W{1,4}<[A-Z]{2,5}>){0,64}\W{0,4}", re.ASCII)
_DIGIT = re.compile(r"\d")
WILDCARD = "<*>"
# A column of a group whose values differ, none with a digit or a mask, is split on when it has
# at most this many distinct words (few distinct words are constants of different events: "VM
# Paused", "VM Resumed"), and is a variable above it. The Loghub-2k average is flat from 6 to 8.
MAX_CONSTANT_WORDS = 6


def mask_message(message: str) -> str:
    """Mask one message exactly as `mask_sql` masks a column."""
    for pattern, replacement in _COMPILED:
        message = pattern.sub(replacement, message)
    return message


# A message's skeleton: its digits made 0 (no regex). No mask pattern tells one
# digit from another but the 0 of a 0x prefix, so where no digit is followed by an x, every
# pattern matches the messages of one skeleton at the same places; where one is, the skeleton
# keeps 0 apart from the other digits (made 1) and that holds again. Such messages mask to the
# same text but for the digits no pattern covers (the 1 of `/api/v1`, the 5 of `SOCKS5`), which
# stay the message's own: ``mask_skeleton`` says which.
_ZEROS = str.maketrans("123456789", "000000000")
_ONES = str.maketrans("23456789", "11111111")
_ASCII_DIGITS = frozenset("0123456789")  # \d of the patterns (re.ASCII, RE2)


def skeleton(message: str) -> str:
    zeros = message.translate(_ZEROS)
    return message.translate(_ONES) if "0x" in zeros or "0X" in zeros else zeros


def skeleton_sql(column: str) -> str:
    """`skeleton` as a DuckDB expression (nested ``replace``: half the CPU of ``translate``)."""
    def digits_to(to: str, digits: str) -> str:
        expr = column
        for d in digits:
            expr = f"replace({expr}, '{d}', '{to}')"
        return expr
    zeros = digits_to("0", "123456789")
    return (f"CASE WHEN contains({zeros}, '0x') OR contains({zeros}, '0X') "
            f"THEN {digits_to('1', '23456789')} ELSE {zeros} END")


def mask_skeleton(skeleton_text: str) -> tuple[list[str], list[int]]:
    """How every message of a skeleton masks: the masked text split at the digits that masking
    leaves (``pieces``, one more than the digits) and where in the message those digits are
    (1-based character ``offsets``: a skeleton is aligned with its messages), so that
    ``mask_message(m)`` is ``pieces[0] + m[o0] + pieces[1] + ...`` for every message ``m`` of
    the skeleton.

    Replacements write no digit (their groups capture letters and separators), so each digit
    of the masked text is copied from the input: its origin is tracked through every pass."""
    text, origin = skeleton_text, list(range(1, len(skeleton_text) + 1))
    for pattern, replacement in _COMPILED:
        pieces: list[str] = []
        moved: list[int] = []
        last = 0
        for match in pattern.finditer(text):
            written = match.expand(replacement)
            pieces += [text[last:match.start()], written]
            moved += origin[last:match.start()] + [0] * len(written)
            last = match.end()
        text, origin = "".join(pieces) + text[last:], moved + origin[last:]
    parts, offsets, start = [], [], 0
    for i, ch in enumerate(text):
        if ch in _ASCII_DIGITS:
            parts += [text[start:i]]
            offsets.append(origin[i])
            start = i + 1
    parts.append(text[start:])
    return parts, offsets


def refill_sql(message: str, pieces: str, offsets: str) -> str:
    """``mask_message(message)`` as a DuckDB expression from its skeleton's ``mask_skeleton``
    (``pieces`` VARCHAR[], ``offsets`` INTEGER[]): no pattern is matched."""
    return (f"{pieces}[1] || array_to_string(list_transform(range(1, len({pieces})), "
            f"lambda i: substr({message}, {offsets}[i], 1) || {pieces}[i + 1]), '')")


def mask_sql(column: str) -> str:
    """A DuckDB expression that masks `column` with the same patterns as `mask_message`."""
    expr = column
    for pattern, replacement in MASKS:
        expr = f"regexp_replace({expr}, '{_sql_literal(pattern)}', '{replacement}', 'g')"
    return expr


def _sql_literal(text: str) -> str:
    return text.replace("'", "''")


def mine_templates(messages: list[str]) -> dict[str, str]:
    """Cluster masked messages of one source into templates; returns message -> template.

    Messages are split on whitespace and compared only with messages of as many tokens. In each
    such set a token's frequency is the number of messages with that word at that position; a
    message's constant part is its largest set of non-mask tokens of one equal frequency (the
    words one logging statement always writes recur together), and messages with the same
    constant part form a group (Brain's "longest common pattern"). Each group is then refined
    column by column (``_refine``). The result depends only on the set of messages, not on
    their order.
    """
    out: dict[str, str] = {}
    by_length: dict[int, list[tuple[str, list[str]]]] = defaultdict(list)
    for message in sorted(set(messages)):
        tokens = message.split()
        by_length[len(tokens)].append((message, tokens))
    # Whether a token is a mask, once per distinct token: the same words recur in most messages.
    is_mask: dict[str, bool] = {}
    for length, members in by_length.items():
        frequency = Counter((i, t) for _, tokens in members for i, t in enumerate(tokens))
        groups: dict[tuple, list[tuple[str, list[str]]]] = defaultdict(list)
        for message, tokens in members:
            words = []
            for w in enumerate(tokens):
                mask = is_mask.get(w[1])
                if mask is None:
                    mask = is_mask[w[1]] = _PLACEHOLDER.fullmatch(w[1]) is not None
                if not mask:
                    words.append((w, frequency[w]))
            counts: dict[int, int] = {}
            for _, f in words:
                counts[f] = counts.get(f, 0) + 1
            # ties to the more frequent words: a group as large as the evidence allows
            common = max(counts, key=lambda f: (counts[f], f), default=None)
            groups[tuple(w for w, f in words if f == common)].append((message, tokens))
        for group in groups.values():
            out.update(_refine(group, length))
    return out


def _refine(group: list[tuple[str, list[str]]], length: int) -> dict[str, str]:
    """Templates of one group. A column with one value is constant; one whose values differ and
    hold a mask or a digit, or more than ``MAX_CONSTANT_WORDS`` words, is a variable; the group
    is split on the column with the fewest other distinct words, and each part refined again."""
    out: dict[str, str] = {}
    pending = [group]
    while pending:
        members = pending.pop()
        variable: set[int] = set()
        split: tuple[int, int] | None = None
        for i in range(length):
            values = {tokens[i] for _, tokens in members}
            if len(values) == 1:
                continue
            if len(values) > MAX_CONSTANT_WORDS or any(_PLACEHOLDER.fullmatch(v) or _DIGIT.search(v) for v in values):
                variable.add(i)
            elif split is None or len(values) < split[1]:
                split = (i, len(values))
        if split is not None:
            parts: dict[str, list[tuple[str, list[str]]]] = defaultdict(list)
            for member in members:
                parts[member[1][split[0]]].append(member)
            pending.extend(parts.values())
            continue
        template = " ".join(WILDCARD if i in variable else t for i, t in enumerate(members[0][1]))
        out.update((message, template) for message, _ in members)
    return out


def mine_service_templates(services: list[str], masked: list[str]) -> list[str]:
    """The template of each (service, masked message) pair, mined per service so that templates
    never mix services (and one service's words never change another's frequencies)."""
    by_service: dict[str, set[str]] = defaultdict(set)
    for service, message in zip(services, masked):
        by_service[service].add(message)
    template_of = {service: mine_templates(list(messages)) for service, messages in by_service.items()}
    return [template_of[service][message] for service, message in zip(services, masked)]


def template_regex(template: str) -> re.Pattern[str]:
    """A regex matching the masked messages a template stands for.

    Drain re-joins tokens with single spaces, so any run of whitespace matches a space, and
    `<*>` matches one or more tokens.
    """
    tokens = [r"\S+(?:\s+\S+)*?" if token == "<*>" else re.escape(token) for token in template.split()]
    return re.compile(r"^\s*" + r"\s+".join(tokens) + r"\s*$")
