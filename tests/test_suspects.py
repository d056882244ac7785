"""Suspect features from hand-written tool outputs, mechanism classification and playbooks.
(Scores, confidence and the critic's challenges over these features: tests/test_ranking.py.)"""

import pytest

from tools.mitigations import CATALOGUE, CONTAINMENT, classify_mechanism, playbooks_for
from tools.suspects import Suspect, build_suspects


def template(service, text, excess, mentions=(), lift=50.0, baseline=0.0, kind=None):
    return {
        "service": service,
        "template": text,
        "level": "ERROR",
        "window_count": int(excess),
        "baseline_per_min": baseline,
        "window_per_min": excess / 60,
        "lift": lift,
        "excess": float(excess),
        "p_value": 1e-12,
        "first_seen_in_window": "2024-06-01T03:00:01",
        "example": text.replace("<NUM>", "7"),
        "error_kind": kind,
        "mentions": list(mentions),
    }


def change(service, minutes_before, kind="deploy"):
    return {
        "ts": "2024-06-01T02:50:00",
        "service": service,
        "kind": kind,
        "description": f"{service} {kind}",
        "minutes_before_window": float(minutes_before),
        "inside_window": minutes_before < 0,
    }


SCAN = {
    "templates": [
        template("payments", "connection pool exhausted: <NUM> of <NUM> in use", 300),
        template("checkout", "call to payments failed: upstream timeout after <NUM> ms", 150, ["payments"], kind="UpstreamTimeout"),
        template("checkout", "payments returned <NUM>", 15, ["payments"]),
    ],
    "mentions": [
        {"from": "checkout", "to": "payments", "template": "call to payments failed: upstream timeout after <NUM> ms", "window_count": 150},
        {"from": "checkout", "to": "payments", "template": "payments returned <NUM>", "window_count": 15},
    ],
}
ONSETS = {
    "onsets": [
        {"service": "payments", "onset": "2024-06-01T03:00:01", "onset_minutes_from_window_start": 0.02, "order": 1},
        {"service": "checkout", "onset": "2024-06-01T03:05:02", "onset_minutes_from_window_start": 5.03, "order": 2},
    ],
    "quiet": [{"service": "search", "window_errors": 360}],
}
CHANGES = {
    "changes": [
        change("payments", 10),
        change("payments", 180, kind="config"),
        change("search", 20),  # search is no suspect: nothing to attach it to
    ]
}


@pytest.fixture
def suspects():
    return build_suspects(SCAN, ONSETS, CHANGES)


def test_suspects_are_the_services_with_findings(suspects):
    assert set(suspects) == {"payments", "checkout"}
    assert all(isinstance(s, Suspect) for s in suspects.values())


def test_caller_naming_the_root_blames_it(suspects):
    caller = suspects["checkout"]
    assert caller.own_share == 0.0
    assert caller.blames == ["payments"]
    assert caller.blamed_by == []
    assert caller.excess_errors == 165.0
    # With no template of its own, the signature is its biggest blaming one.
    assert caller.signature == "call to payments failed: upstream timeout after <NUM> ms"
    assert caller.error_kind == "UpstreamTimeout"
    assert caller.onset_minutes == pytest.approx(5.03)


def test_root_is_blamed_by_the_caller(suspects):
    root = suspects["payments"]
    assert root.blamed_by == ["checkout"]  # two mentions, one caller
    assert root.blames == []
    assert root.own_share == 1.0
    assert root.excess_errors == 300.0
    assert root.signature.startswith("connection pool exhausted")
    assert root.signature_lift == 50.0 and root.signature_baseline_per_min == 0.0
    assert root.onset == "2024-06-01T03:00:01"
    assert root.mechanism == "connection_pool"


def test_only_a_change_close_before_the_window_is_attached(suspects):
    assert suspects["payments"].change is not None
    assert suspects["payments"].change["minutes_before_window"] == 10.0
    assert suspects["checkout"].change is None
    assert "search" not in suspects

    far_only = build_suspects(SCAN, ONSETS, {"changes": [change("payments", 180)]})
    assert far_only["payments"].change is None


def test_nearest_change_wins_and_inside_the_window_has_a_grace(suspects):
    both = build_suspects(SCAN, ONSETS, {"changes": [change("payments", 45), change("payments", 10)]})
    assert both["payments"].change["minutes_before_window"] == 10.0

    early_inside = build_suspects(SCAN, ONSETS, {"changes": [change("payments", -3)]})
    assert early_inside["payments"].change["inside_window"] is True
    late_inside = build_suspects(SCAN, ONSETS, {"changes": [change("payments", -30)]})
    assert late_inside["payments"].change is None


def test_own_share_is_partial_when_some_templates_name_others():
    scan = {
        "templates": [
            template("checkout", "cart <NUM> is empty", 30),
            template("checkout", "call to payments failed", 90, ["payments"]),
        ],
        "mentions": [{"from": "checkout", "to": "payments", "template": "call to payments failed", "window_count": 90}],
    }
    s = build_suspects(scan, {}, {})
    assert s["checkout"].own_share == pytest.approx(0.25)
    assert s["checkout"].signature == "cart <NUM> is empty"  # own templates preferred
    assert s["payments"].blamed_by == ["checkout"]
    assert s["payments"].excess_errors == 0.0


def test_as_dict_round_trips_the_fields(suspects):
    d = suspects["payments"].as_dict()
    assert d["service"] == "payments"
    assert d["blamed_by"] == ["checkout"]
    assert d["change"]["minutes_before_window"] == 10.0


# --- mitigations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mechanism"),
    [
        ("connection pool exhausted", "connection_pool"),
        ("PoolExhausted", "connection_pool"),
        ("x509: certificate has expired", "tls_certificate"),
        ("OOMKilled", "memory"),
        ("java.lang.OutOfMemoryError: Java heap space", "memory"),
        ("429 Too Many Requests", "rate_limit"),
        ("Deadlock found when trying to get lock", "deadlock"),
        ("write failed: no space left on device", "disk"),
        ("dial tcp 10.0.0.1:5432: connection refused", "dependency_down"),
        ("call to payments failed: upstream timeout after <NUM> ms", "slow_dependency"),
        ("NullPointerException", "crash_on_release"),
        ("something unusual", "unknown"),
        ("", "unknown"),
    ],
)
def test_classify_mechanism_without_a_change(text, mechanism):
    assert classify_mechanism(text) == mechanism


def test_a_crash_after_a_deploy_or_a_config_change():
    assert classify_mechanism("NullPointerException", change("payments", 10, kind="deploy")) == "crash_on_release"
    assert classify_mechanism("NullPointerException", change("payments", 10, kind="config")) == "bad_config"
    assert classify_mechanism("NullPointerException", change("payments", 10, kind="feature_flag")) == "bad_config"
    # A specific mechanism is kept whatever preceded it.
    assert classify_mechanism("connection pool exhausted", change("payments", 10, kind="config")) == "connection_pool"
    # Nothing recognisable: the change decides.
    assert classify_mechanism("something unusual", change("payments", 10, kind="deploy")) == "crash_on_release"
    assert classify_mechanism("something unusual", change("payments", 10, kind="config")) == "bad_config"


def test_words_containing_a_keyword_do_not_classify():
    assert classify_mechanism("vanilla latte sold out") == "unknown"
    assert classify_mechanism("print spool directory is full") != "connection_pool"


@pytest.mark.parametrize("mechanism", sorted(CATALOGUE) + ["not_a_mechanism"])
@pytest.mark.parametrize("preceding", [None, "deploy", "config"])
def test_playbooks_start_safe_and_can_all_be_undone(mechanism, preceding):
    books = playbooks_for(mechanism, None if preceding is None else change("svc", 10, kind=preceding))
    assert books[0].touches_prod is False
    assert books[0] == CONTAINMENT
    assert len(books) >= 2
    assert all(b.rollback.strip() for b in books)
    assert all(b.steps and b.eta_minutes > 0 for b in books)
    assert all(b.touches_prod for b in books[1:])


def test_a_preceding_change_puts_its_undo_right_after_containment():
    books = playbooks_for("connection_pool", change("payments", 10, kind="deploy"))
    assert books[1] == CATALOGUE["crash_on_release"][0]
    assert books[2:] == list(CATALOGUE["connection_pool"])

    books = playbooks_for("memory", change("payments", 10, kind="feature_flag"))
    assert books[1] == CATALOGUE["bad_config"][0]

    # No duplicate when the mechanism already is the undo.
    books = playbooks_for("bad_config", change("payments", 10, kind="config"))
    assert books == [CONTAINMENT, *CATALOGUE["bad_config"]]

    assert playbooks_for("connection_pool", None) == [CONTAINMENT, *CATALOGUE["connection_pool"]]
    assert playbooks_for("not_a_mechanism", None) == [CONTAINMENT, *CATALOGUE["unknown"]]
