"""Message masking (Python and DuckDB must agree) and Drain template mining."""

import duckdb
import pytest

from tools.templates import (
    MAX_CONSTANT_WORDS,
    mask_message,
    mask_skeleton,
    mask_sql,
    mine_service_templates,
    mine_templates,
    refill_sql,
    skeleton,
    skeleton_sql,
    template_regex,
)

TRICKY = [
    "request 3f2a9c1e-1b2c-4d5e-8f90-abcdef012345 failed after 1500 ms",
    "REQUEST 3F2A9C1E-1B2C-4D5E-8F90-ABCDEF012345 FAILED",
    "upstream 10.0.12.7:8080 refused connection",
    "connect to 192.168.1.1 timed out; retrying 10.0.0.2:5432",
    "notify user jane.doe+alerts@example.co.uk failed",
    "trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span=00f067aa0ba902b7",
    "user u_123 cart c_98765 not found",
    "balance went to -42.50 after refund of 12.5",
    "temperature -3 delta -0.25 ratio 0.5",
    "0xdeadbeef segfault at 0x7ffd1234",
    "retry 3/5 in 2.5s",
    "v1.2.3.4 build 20240601",
    "ORDER_42 in region eu-west-1",
    "pool size=10 max=10 waiting=37",
    "it's a 'quoted' value 7",
    "path /api/v2/users/1234/orders?limit=50",
    "tab\tseparated 5\nsecond line 6",
    "no numbers here",
    "jk2_init() found SOCKS5 on node-129 core.1234 slot 7",
    "flags 0x0185 id 12345678901 addr deadbeef42",
    "at Mon Jun 13 10:00:00 2005, then Jun  3 09:01:02 and 2024-06-01T10:00:00.123Z or 10:20:30,123",
    "(1)(2) a=-5,b=7;c:8 [3] 4x 5 1.2.3.4.5",
    "",
]


def sql_masks(messages: list[str]) -> list[str]:
    con = duckdb.connect()
    try:
        con.execute("CREATE TABLE m(i INTEGER, message VARCHAR)")
        con.executemany("INSERT INTO m VALUES (?, ?)", list(enumerate(messages)))
        return [r[0] for r in con.execute(f"SELECT {mask_sql('message')} FROM m ORDER BY i").fetchall()]
    finally:
        con.close()


def test_python_masking_equals_duckdb_masking():
    assert [mask_message(m) for m in TRICKY] == sql_masks(TRICKY)


SKELETON_CASES = TRICKY + [
    "GET /api/v1/items/12 took 5 ms", "resize 2x4 to 1x5", "flags 0x1f and 5x10", "u394029 ipv6 jk2 v12",
    "foo_bar_1 x_12 00000000 0000 12345678", "é1 ü22 v3 ñ0x5 日本5x9", "1e5 3rd 10ms at 12:34",
]


def test_a_skeleton_masks_every_message_it_stands_for():
    """mask_skeleton's pieces and offsets rebuild mask_message of every message of the
    skeleton, in Python and in DuckDB (refill_sql), and DuckDB's skeleton is Python's."""
    con = duckdb.connect()
    try:
        con.execute("CREATE TABLE m(i INTEGER, message VARCHAR)")
        con.executemany("INSERT INTO m VALUES (?, ?)", list(enumerate(SKELETON_CASES)))
        assert [r[0] for r in con.execute(f"SELECT {skeleton_sql('message')} FROM m ORDER BY i").fetchall()] == [
            skeleton(m) for m in SKELETON_CASES]
        traced = [mask_skeleton(skeleton(m)) for m in SKELETON_CASES]
        for message, (pieces, offsets) in zip(SKELETON_CASES, traced):
            assert pieces[0] + "".join(message[o - 1] + p for o, p in zip(offsets, pieces[1:])) == mask_message(message)
        con.execute("CREATE TABLE t AS SELECT unnest($1::VARCHAR[]) AS message, unnest($2::VARCHAR[][]) AS pieces, "
                    "unnest($3::INTEGER[][]) AS offsets",
                    [SKELETON_CASES, [t[0] for t in traced], [t[1] for t in traced]])
        refilled = [r[0] for r in con.execute(f"SELECT {refill_sql('message', 'pieces', 'offsets')} FROM t").fetchall()]
    finally:
        con.close()
    assert refilled == [mask_message(m) for m in SKELETON_CASES]
    # the digits of a version and of a name survive masking; 2x4 is no hex though 0x4 is
    assert mask_skeleton(skeleton("GET /api/v1/items/12"))[1] == [len("GET /api/v1")]  # 1-based
    assert skeleton("resize 2x4") == "resize 1x1" and skeleton("resize 24") == "resize 00"


@pytest.mark.parametrize(
    ("message", "masked"),
    [
        ("request 3f2a9c1e-1b2c-4d5e-8f90-abcdef012345 failed after 1500 ms", "request <UUID> failed after <NUM> ms"),
        ("upstream 10.0.12.7:8080 refused connection", "upstream <IP> refused connection"),
        ("notify user jane.doe+alerts@example.co.uk failed", "notify user <EMAIL> failed"),
        ("trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span=00f067aa0ba902b7", "trace_id=<HEX> span=<HEX>"),
        ("user u_123 cart c_98765 not found", "user <ID> cart <ID> not found"),
        ("balance went to -42.50 after refund of 12.5", "balance went to <NUM> after refund of <NUM>"),
        ("0xdeadbeef segfault", "<HEX> segfault"),
        ("no numbers here", "no numbers here"),
        # numbers inside words are part of the word; a hyphen there is not a minus sign
        # digits attached to letters are part of a name; after a hyphen or a dot they are a number
        # (and the hyphen is kept, not read as a minus)
        ("jk2_init() found SOCKS5 on node-129", "jk2_init() found SOCKS5 on node-<NUM>"),
        ("generating core.1234 at 0.5", "generating core.<NUM> at <NUM>"),
        ("user u394029 on host0042 via ipv6", "user u<NUM> on host<NUM> via ipv6"),
        # one class per kind: short hex is hex, a long decimal is a number
        ("flags 0x0185 id 12345678901 hash 4bf92f35", "flags <HEX> id <NUM> hash <HEX>"),
        ("at Mon Jun 13 10:00:00 2005 and 2024-06-01T10:00:00.123Z, took 10:20:30", "at <TIME> and <TIME>, took <TIME>"),
        ("f(1)(2) a=-5,b=7", "f(<NUM>)(<NUM>) a=<NUM>,b=<NUM>"),
        # a number with a unit keeps the unit; a hex id starting with digits stays one hex
        ("took 10ms then 2.5s, id 12ab34cd", "took <NUM>ms then <NUM>s, id <HEX>"),
    ],
)
def test_each_kind_of_id_becomes_one_token(message, masked):
    assert mask_message(message) == masked


def test_masking_makes_variants_of_one_message_identical():
    a = mask_message("user u_1 from 10.1.1.1:443 paid 12.50 (trace 4bf92f3577b34da6)")
    b = mask_message("user u_98765 from 192.168.100.200:8080 paid -3 (trace 00f067aa0ba902b7)")
    assert a == b


def test_python_and_duckdb_agree_on_non_ascii_text():
    messages = ["café_12 éu_123 x", "fullwidth １２３ arabic ٣٤"]
    assert [mask_message(m) for m in messages] == sql_masks(messages)


# --- mining -------------------------------------------------------------------------------------

RAW = [
    msg
    for i in range(20)
    for msg in (
        f"payment {i * 37} for user u_{i} declined by gateway 10.0.0.{i}:443",
        f"connection pool exhausted: {i} of 50 in use, waiting {i * 3} ms",
        f"user u_{i} logged in from {i}.{i}.{i}.{i}",
        f"order {i} shipped to alice{i}@example.com",
        f"shard {'abcdefghijklmnopqrst'[i]} rebalanced",
    )
]


def test_templates_match_their_own_messages():
    masked = sorted({mask_message(m) for m in RAW})
    template_of = mine_templates(masked)

    assert set(template_of) == set(masked)
    for message, template in template_of.items():
        assert template_regex(template).match(message), (template, message)


def test_messages_of_different_shapes_stay_apart():
    masked = sorted({mask_message(m) for m in RAW})
    template_of = mine_templates(masked)

    # Five shapes in, five templates out; the shard letters vary, so Drain generalises them.
    assert len(set(template_of.values())) == 5
    assert template_of[mask_message("shard a rebalanced")] == "shard <*> rebalanced"
    pool = template_of[mask_message("connection pool exhausted: 3 of 50 in use, waiting 9 ms")]
    login = template_of[mask_message("user u_3 logged in from 3.3.3.3")]
    assert pool != login
    assert not template_regex(pool).match(mask_message("user u_3 logged in from 3.3.3.3"))
    assert not template_regex(login).match(mask_message("connection pool exhausted: 3 of 50 in use, waiting 9 ms"))


def test_services_are_mined_apart():
    # The same text from two services stays two templates, and one service's messages do not
    # change the other's: alone, checkout's two messages are one template with a variable word.
    words = [f"worker w{chr(97 + i)} idle" for i in range(MAX_CONSTANT_WORDS + 1)]
    services = ["checkout"] * len(words) + ["payments", "payments"]
    masked = [*words, "worker wa idle", "upstream timeout"]
    templates = mine_service_templates(services, masked)
    assert templates[: len(words)] == ["worker <*> idle"] * len(words)
    assert templates[len(words):] == ["worker wa idle", "upstream timeout"]


def test_few_distinct_words_are_constants_of_different_events():
    # "VM paused" and "VM resumed" are two events; more distinct words than MAX_CONSTANT_WORDS in
    # one place are a variable (a user name), and so is a column with a mask or a digit.
    states = ["paused", "resumed", "started", "stopped"]
    users = [f"user{chr(97 + i)}x" for i in range(MAX_CONSTANT_WORDS + 1)]
    masked = ([f"[vm <UUID>] VM {s} (lifecycle event)" for s in states]
              + [f"session closed for {u}" for u in users]
              + ["link up on eth0", "link up on eth1", "link up on <IP>"])
    template_of = mine_templates(masked)
    assert {template_of[f"[vm <UUID>] VM {s} (lifecycle event)"] for s in states} == {
        f"[vm <UUID>] VM {s} (lifecycle event)" for s in states}
    assert {template_of[f"session closed for {u}"] for u in users} == {"session closed for <*>"}
    assert {template_of[m] for m in ("link up on eth0", "link up on eth1", "link up on <IP>")} == {"link up on <*>"}


def test_masks_do_not_count_as_matches():
    # Two messages sharing every mask but differing in their only other word are two events.
    masked = ["session <NUM>_<NUM> initialized by client updater.", "session <NUM>_<NUM> initialized by client scheduler."]
    assert set(mine_templates(masked).values()) == set(masked)


def test_mining_depends_on_the_set_of_messages_not_their_order():
    masked = sorted({mask_message(m) for m in RAW})
    assert mine_templates(masked) == mine_templates(masked[::-1])


def test_mining_stays_fast_on_many_long_distinct_messages():
    """Cost follows distinct messages x tokens: 3,000 messages of 120 tokens, each column with
    few distinct words (the case that splits most), mine in well under the bound."""
    import random
    import time

    rng = random.Random(7)
    masked = sorted({" ".join(rng.choice("abcd") for _ in range(120)) for _ in range(3000)})
    started = time.thread_time()
    template_of = mine_templates(masked)
    assert time.thread_time() - started < 20.0
    assert set(template_of) == set(masked)


def test_template_regex_wildcards_and_literals():
    rx = template_regex("call to <*> failed: timeout (after <NUM> ms)")
    assert rx.match("call to payments failed: timeout (after <NUM> ms)")
    assert rx.match("call to payments eu-west failed: timeout (after <NUM> ms)")  # <*> spans tokens
    assert not rx.match("call to  failed: timeout (after <NUM> ms)")  # but not zero tokens
    assert not rx.match("call to payments failed: timeout (after <NUM> ms) again")  # anchored
    assert not rx.match("call to payments failed: timeout after <NUM> ms")  # parentheses are literal
    assert template_regex("a.b").match("a.b") and not template_regex("a.b").match("axb")


def test_template_regex_matches_messages_with_irregular_whitespace():
    messages = ["worker  <NUM> stalled", "job\t<NUM> done", "lease lost "]
    template_of = mine_templates(messages)
    for message, template in template_of.items():
        assert template_regex(template).match(message), (template, message)


def test_masking_hostile_log_text_stays_linear():
    """Log text is untrusted: a run of address characters around an '@' took minutes with an
    unbounded email pattern (catastrophic backtracking). The bound is two orders of magnitude
    above what the bounded patterns take, so only a return to backtracking can fail it."""
    import time

    hostile = "a" * 100_000 + "@" + "b" * 100_000
    started = time.thread_time()
    masked = mask_message(hostile)
    assert time.thread_time() - started < 3.0
    assert masked.count("@") == 1
