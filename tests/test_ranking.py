"""tools.ranking on hand-written tool outputs: scores, the one confidence, hypotheses, the critic's
challenges, merging a model's hypotheses, applying verdicts, grounding and the plan."""

import math

import numpy as np
import pytest
from test_suspects import CHANGES, ONSETS, SCAN, change, template

from tools.mitigations import CATALOGUE, CONTAINMENT
from tools.ranking import (
    GROUNDING_CHALLENGE,
    MAX_HYPOTHESES,
    Findings,
    apply_verdicts,
    challenge_verdicts,
    first_look_scores,
    grounding_verdicts,
    merge_with_statistics,
    mitigation_plan,
    propose_hypotheses,
    rank,
    softmax,
)

IDS = {
    "log_pattern_scan": "ev-log-pattern-scan-00000001",
    "service_error_onsets": "ev-service-error-onsets-00000002",
    "change_events": "ev-change-events-00000003",
}
SQL_ID = "ev-sql-investigate-00000004"


@pytest.fixture
def findings() -> Findings:
    """payments is the root (first, loudest, a deploy 10 min before, named by checkout);
    checkout is its caller, whose errors all name payments."""
    return Findings(scan=SCAN, onsets=ONSETS, changes=CHANGES, ids=IDS)


def by_service(items):
    return {h["service"]: h for h in items}


def model_hypothesis(service, confidence, **extra):
    return {"id": f"X-{service}", "service": service, "kind": "Errors", "mechanism": "connection_pool", "signature": "s",
            "confidence": confidence, "summary": f"{service} did it.", "evidence_ids": [IDS["log_pattern_scan"]], **extra}


# ---------------------------------------------------------------- scores and confidence


def test_first_look_scores_follow_their_definition():
    onsets = [0.0, 5.0, np.nan, -2.0]
    excess = [300.0, 165.0, 0.0, 10.0]
    scores = first_look_scores(onsets, excess, [True, False, False, False], [1, 0, 3, 0])
    earliest, top = -2.0, math.log1p(300.0)
    expected = [
        2 * math.exp(-2.0 / 5) + math.log1p(300) / top + 1.0 + 0.5,
        2 * math.exp(-7.0 / 5) + math.log1p(165) / top,
        0.0 + 0.0 + 0.0 + 1.0,  # no onset, no excess; three callers count as two
        2 * math.exp(-(-2.0 - earliest) / 5) + math.log1p(10) / top,
    ]
    assert scores == pytest.approx(expected)


def test_first_look_scores_without_onsets_or_excess_and_of_nobody():
    assert first_look_scores([np.nan, np.nan], [0.0, 0.0], [False, True], [0, 0]).tolist() == [0.0, 1.0]
    assert first_look_scores([np.nan], [-5.0], [False], [0]).tolist() == [0.0]  # negative excess is no excess
    assert first_look_scores([], [], [], []).shape == (0,)


def test_first_look_scores_are_relative_to_the_suspects_scored():
    base = first_look_scores([1.0, 4.0], [50.0, 5.0], [False, False], [0, 0])
    shifted = first_look_scores([11.0, 14.0], [500.0, 50.0], [False, False], [0, 0])
    assert base[0] == pytest.approx(2.0 + 1.0) and shifted[0] == pytest.approx(2.0 + 1.0)  # the first and loudest
    assert base[1] == pytest.approx(2 * math.exp(-3 / 5) + math.log1p(5) / math.log1p(50))


def test_softmax():
    p = softmax([4.5, 1.2, 0.0])
    assert p.sum() == pytest.approx(1.0)
    assert p[0] > p[1] > p[2] > 0
    assert softmax([]).tolist() == []
    assert softmax([3.0, 3.0]) == pytest.approx([0.5, 0.5])
    assert softmax([1000.0, 0.0]) == pytest.approx([1.0, 0.0])  # no overflow
    sharp, flat = softmax([2.0, 1.0], temperature=0.1), softmax([2.0, 1.0], temperature=10.0)
    assert sharp[0] > 0.99 and flat[0] < 0.6
    assert np.isfinite(softmax([-1e6, 1e6])).all()


def test_rank_scores_the_root_above_its_caller(findings):
    ranked = rank(findings)
    assert [r.suspect.service for r in ranked] == ["payments", "checkout"]
    # root: earliest (2.0) + largest excess (1.0) + change (1.0) + named by one caller (0.5)
    assert ranked[0].score == pytest.approx(4.5, abs=1e-3)
    assert ranked[1].score < ranked[0].score - 2
    assert [r.confidence for r in ranked] == pytest.approx(softmax([r.score for r in ranked]).tolist())


def five_suspects() -> Findings:
    """Five services with errors of their own; a0..a4 from loudest to quietest, none with an onset."""
    scan = {"templates": [template(f"a{i}", f"failure <NUM> in a{i}", 300 - 60 * i) for i in range(5)], "mentions": []}
    return Findings(scan=scan)


def test_confidence_is_the_softmax_over_the_top_three_and_nothing_below_them():
    ranked = rank(five_suspects())
    assert [r.suspect.service for r in ranked] == ["a0", "a1", "a2", "a3", "a4"]
    top = softmax([r.score for r in ranked[:MAX_HYPOTHESES]])
    assert [r.confidence for r in ranked[:MAX_HYPOTHESES]] == pytest.approx(top.tolist())
    assert sum(r.confidence for r in ranked) == pytest.approx(1.0)
    assert [r.confidence for r in ranked[MAX_HYPOTHESES:]] == [0.0, 0.0]
    # Ranking and confidence are on one scale: confidence never rises down the ranking.
    assert all(a.confidence >= b.confidence for a, b in zip(ranked, ranked[1:]))


def test_ties_rank_by_service_name():
    scan = {"templates": [template(name, f"failure in {name}", 100) for name in ("zeta", "alpha", "mid")], "mentions": []}
    ranked = rank(Findings(scan=scan))
    assert [r.suspect.service for r in ranked] == ["alpha", "mid", "zeta"]
    assert [r.confidence for r in ranked] == pytest.approx([1 / 3] * 3)


def test_nothing_found_ranks_nobody():
    assert rank(Findings()) == [] and propose_hypotheses(Findings()) == []


def test_findings_take_the_latest_item_per_tool_and_its_id():
    items = [
        {"tool": "log_pattern_scan", "id": "ev-old", "data": {"templates": []}},
        {"tool": "service_error_onsets", "id": "ev-onsets", "data": ONSETS},
        {"tool": "log_pattern_scan", "id": "ev-new", "data": SCAN},
        {"tool": "change_events", "id": "ev-changes", "data_omitted": "over 200 chars"},  # cut from the prompt
    ]
    f = Findings.from_evidence(items)
    assert f.scan is SCAN and f.onsets is ONSETS and f.changes == {}
    assert f.ids == {"log_pattern_scan": "ev-new", "service_error_onsets": "ev-onsets", "change_events": "ev-changes"}
    assert set(f.suspects()) == {"payments", "checkout"}


# ---------------------------------------------------------------- hypotheses


def test_hypotheses_cite_what_shows_them(findings):
    root, caller = propose_hypotheses(findings)
    assert (root["id"], root["service"], caller["id"], caller["service"]) == ("H1", "payments", "H2", "checkout")
    assert root["evidence_ids"] == [IDS["log_pattern_scan"], IDS["service_error_onsets"], IDS["change_events"]]
    assert caller["evidence_ids"] == [IDS["log_pattern_scan"], IDS["service_error_onsets"]]  # no change on it
    assert [root["confidence"], caller["confidence"]] == [round(r.confidence, 3) for r in rank(findings)]
    assert root["mechanism"] == "connection_pool" and root["kind"] == "connection_pool"  # no error_kind: the mechanism
    assert caller["kind"] == "UpstreamTimeout"
    assert root["summary"].startswith("payments is the origin; its error rate rose first at 2024-06-01T03:00:01")
    assert "named by checkout" in root["summary"] and "deploy on it 10 min before the window" in root["summary"]
    assert root["support"]["blamed_by"] == ["checkout"]

    with_sql = Findings(scan=SCAN, onsets=ONSETS, changes=CHANGES, ids={**IDS, "sql_investigate": SQL_ID})
    assert all(h["evidence_ids"][-1] == SQL_ID for h in propose_hypotheses(with_sql))


def test_at_most_three_hypotheses_and_a_service_named_only_by_others():
    assert [h["service"] for h in propose_hypotheses(five_suspects())] == ["a0", "a1", "a2"]
    scan = {"templates": [template("web", "call to db failed", 90, ["db"])],
            "mentions": [{"from": "web", "to": "db", "template": "call to db failed", "window_count": 90}]}
    db = by_service(propose_hypotheses(Findings(scan=scan)))["db"]
    assert db["signature"] == "(no log lines of its own; named by its callers)"


# ---------------------------------------------------------------- the critic's challenges


def verdicts_by_challenge(verdicts, hid):
    return {v["challenge"]: v for v in verdicts if v["hypothesis_id"] == hid}


def test_round_one_upholds_the_root_and_overturns_the_caller(findings):
    hypotheses = propose_hypotheses(findings)
    verdicts = challenge_verdicts(findings, hypotheses, 1)
    assert all(v["round"] == 1 for v in verdicts)
    root = verdicts_by_challenge(verdicts, "H1")
    assert {c: (v["verdict"], v["confidence_delta"]) for c, v in root.items()} == {
        "Did payments fail before its callers?": ("upheld", 0.1),
        "Is the signal also present before the window?": ("upheld", 0.05),
        "Did a change precede it?": ("upheld", 0.1),
    }
    assert root["Did payments fail before its callers?"]["evidence_ids"] == [IDS["service_error_onsets"]]
    assert root["Did a change precede it?"]["evidence_ids"] == [IDS["change_events"]]
    caller = verdicts_by_challenge(verdicts, "H2")
    blame = caller["Do checkout's own messages blame another service?"]
    assert (blame["verdict"], blame["confidence_delta"], blame["evidence_ids"]) == ("overturned", -0.4, [IDS["log_pattern_scan"]])
    assert "0% of its excess errors are its own" in blame["finding"]
    assert caller["Did a change precede it?"]["verdict"] == "weakened"
    assert "changes on payments preceded the window" in caller["Did a change precede it?"]["finding"]


def test_a_signature_as_loud_before_the_window_is_overturned():
    scan = {"templates": [template("batch", "job <NUM> slow", 40, lift=1.5, baseline=0.6)], "mentions": []}
    f = Findings(scan=scan, ids=IDS)
    (v,) = [v for v in challenge_verdicts(f, propose_hypotheses(f), 1) if v["challenge"].startswith("Is the signal")]
    assert (v["verdict"], v["confidence_delta"]) == ("overturned", -0.5)
    assert "lift 1.5x" in v["finding"]


def test_onsets_decide_who_failed_first():
    scan = {"templates": [template("db", "disk full", 100), template("web", "call to db failed", 90, ["db"])],
            "mentions": [{"from": "web", "to": "db", "template": "call to db failed", "window_count": 90}]}
    onsets = {"onsets": [{"service": "web", "onset": "T0", "onset_minutes_from_window_start": 0.0},
                         {"service": "db", "onset": "T5", "onset_minutes_from_window_start": 5.0}]}
    f = Findings(scan=scan, onsets=onsets, ids=IDS)
    v = verdicts_by_challenge(challenge_verdicts(f, [{"id": "H1", "service": "db"}], 1), "H1")["Did db fail before its callers?"]
    assert (v["verdict"], v["confidence_delta"]) == ("weakened", -0.15)
    assert v["finding"] == "No: web failed earlier than db (T5)."

    without_onset = Findings(scan=scan, ids=IDS)
    v = verdicts_by_challenge(challenge_verdicts(without_onset, [{"id": "H1", "service": "db"}], 1), "H1")
    assert v["Did db fail before its callers?"]["verdict"] == "upheld"  # named by web, no onset of its own
    ghost = verdicts_by_challenge(challenge_verdicts(without_onset, [{"id": "H9", "service": "ghost"}], 1), "H9")
    assert (ghost["Did ghost fail before its callers?"]["verdict"], ghost["Did ghost fail before its callers?"]["confidence_delta"]) == (
        "weakened", -0.15)


def test_later_rounds_set_the_leader_against_the_runner_up(findings):
    root, caller = propose_hypotheses(findings)
    (victim_leads,) = challenge_verdicts(findings, [{**caller, "id": "H1"}, {**root, "id": "H2"}], 2)
    assert (victim_leads["hypothesis_id"], victim_leads["verdict"], victim_leads["confidence_delta"]) == ("H1", "overturned", -0.5)
    assert victim_leads["challenge"] == "Is checkout the root, or a victim of payments?"
    assert victim_leads["evidence_ids"] == [IDS["service_error_onsets"], IDS["log_pattern_scan"]]
    (root_leads,) = challenge_verdicts(findings, [root, caller], 2)
    assert (root_leads["verdict"], root_leads["confidence_delta"]) == ("upheld", 0.0)
    assert challenge_verdicts(findings, [root], 2) == []


# ---------------------------------------------------------------- merging a model's hypotheses


def test_the_model_weighs_forty_percent_against_the_statistics(findings):
    share = {r.suspect.service: r.confidence for r in rank(findings)}
    merged = merge_with_statistics([model_hypothesis("checkout", 0.95), model_hypothesis("payments", 0.05)], findings)
    got = by_service(merged)
    assert got["checkout"]["confidence"] == round(0.4 * 0.95 + 0.6 * share["checkout"], 3)
    assert got["payments"]["confidence"] == round(0.4 * 0.05 + 0.6 * share["payments"], 3)
    # The loud caller the model is sure of does not outvote who failed first.
    assert [h["service"] for h in merged] == ["payments", "checkout"] and [h["id"] for h in merged] == ["H1", "H2"]
    assert got["payments"]["source"] == "model+statistics"
    assert got["payments"]["support"]["model_confidence"] == 0.05
    assert got["payments"]["support"]["statistical_share"] == round(share["payments"], 3)
    assert got["payments"]["support"]["blamed_by"] == ["checkout"]  # the suspect's features travel along
    assert got["payments"]["summary"] == "payments did it." and got["payments"]["status"] == "proposed"


def test_a_root_the_model_did_not_name_keeps_its_statistical_share(findings):
    share = {r.suspect.service: r.confidence for r in rank(findings)}
    merged = merge_with_statistics([model_hypothesis("checkout", 0.95)], findings)
    assert [h["service"] for h in merged] == ["payments", "checkout"]
    root = merged[0]
    assert root["source"] == "statistics" and root["confidence"] == round(0.6 * share["payments"], 3)
    assert root["support"]["model_confidence"] == 0.0
    assert root["evidence_ids"] == propose_hypotheses(findings)[0]["evidence_ids"]  # the statistics' citations


def test_a_service_the_statistics_do_not_know_is_the_models_alone(findings):
    merged = merge_with_statistics([model_hypothesis("ghost", 0.9, mechanism="not-in-the-catalogue", signature="x509 expired")],
                                   findings)
    ghost = by_service(merged)["ghost"]
    assert ghost["source"] == "model" and ghost["confidence"] == round(0.4 * 0.9, 3)
    assert ghost["support"] == {"model_confidence": 0.9, "statistical_share": 0.0}
    assert ghost["mechanism"] == "tls_certificate"  # read from its signature and kind
    payments = merge_with_statistics([model_hypothesis("payments", 0.9, mechanism="made-up")], findings)[0]
    assert payments["mechanism"] == "connection_pool"  # the suspect's, when the model's is not in the catalogue
    assert set(CATALOGUE) >= {payments["mechanism"], ghost["mechanism"]}


def test_a_model_naming_a_suspect_below_the_top_three_adds_no_statistical_share():
    f = five_suspects()
    merged = by_service(merge_with_statistics([model_hypothesis("a4", 0.5)], f))
    assert merged["a4"]["source"] == "model+statistics" and merged["a4"]["support"]["statistical_share"] == 0.0
    assert merged["a4"]["confidence"] == 0.2


def test_merging_keeps_the_first_of_a_service_and_at_most_five():
    f = five_suspects()
    proposed = [model_hypothesis("a0", 0.9, summary="first"), model_hypothesis("a0", 0.1, summary="again")]
    proposed += [model_hypothesis(f"m{i}", 0.5) for i in range(6)]
    merged = merge_with_statistics(proposed, f)
    assert len(merged) == 5 and [h["id"] for h in merged] == ["H1", "H2", "H3", "H4", "H5"]
    assert [h["summary"] for h in merged if h["service"] == "a0"] == ["first"]
    assert [h["confidence"] for h in merged] == sorted((h["confidence"] for h in merged), reverse=True)


# ---------------------------------------------------------------- applying verdicts


def hypothesis(hid, confidence, status="proposed"):
    return {"id": hid, "service": f"svc-{hid}", "confidence": confidence, "status": status}


def verdict(hid, kind, delta):
    return {"hypothesis_id": hid, "verdict": kind, "confidence_delta": delta}


def test_verdicts_move_confidence_within_bounds_and_the_worst_stands():
    hypotheses = [hypothesis("H1", 0.95), hypothesis("H2", 0.05), hypothesis("H3", 0.5)]
    out = by_service(apply_verdicts(hypotheses, [
        verdict("H1", "upheld", 0.1), verdict("H1", "weakened", -0.1), verdict("H1", "upheld", 0.05),
        verdict("H2", "overturned", -0.5), verdict("H2", "upheld", 0.2),
        verdict("H3", "upheld", 0.0),
    ]))
    assert out["svc-H1"]["confidence"] == pytest.approx(0.99 - 0.1 + 0.05) and out["svc-H1"]["status"] == "weakened"
    assert out["svc-H2"]["confidence"] == pytest.approx(0.01 + 0.2) and out["svc-H2"]["status"] == "overturned"
    assert out["svc-H3"]["confidence"] == 0.5 and out["svc-H3"]["status"] == "upheld"
    assert hypotheses[0] == hypothesis("H1", 0.95), "the inputs are not changed"


def test_verdicts_rank_overturned_last_then_by_confidence_then_id():
    hypotheses = [hypothesis("H1", 0.9), hypothesis("H2", 0.3), hypothesis("H3", 0.3), hypothesis("H4", 0.2)]
    out = apply_verdicts(hypotheses, [verdict("H1", "overturned", -0.5), verdict("H4", "upheld", 0.3)])
    assert [h["id"] for h in out] == ["H4", "H2", "H3", "H1"]
    assert apply_verdicts([], []) == []
    with pytest.raises(KeyError):
        apply_verdicts(hypotheses, [verdict("H9", "upheld", 0.0)])


# ---------------------------------------------------------------- grounding


EVIDENCE = [
    {"id": "ev-a", "summary": "payments failed first", "data": {}},
    {"id": "ev-b", "summary": "error onsets", "data": {"onsets": [{"service": "checkout"}]}},
    {"id": "ev-c", "summary": "recent changes", "data": {"changes": []}},
]


def test_grounding_overturns_citations_that_do_not_exist_or_show_another_service():
    hypotheses = [
        {"id": "H1", "service": "payments", "evidence_ids": ["ev-a", "ev-c"]},  # the summary shows it
        {"id": "H2", "service": "checkout", "evidence_ids": ["ev-b"]},  # the data shows it
        {"id": "H3", "service": "search", "evidence_ids": ["ev-a", "ev-nope"]},
        {"id": "H4", "service": "search", "evidence_ids": ["ev-b", "ev-c"]},
    ]
    missing, unrelated = grounding_verdicts(hypotheses, EVIDENCE)
    assert missing == {
        "hypothesis_id": "H3", "round": 1, "challenge": GROUNDING_CHALLENGE,
        "finding": "Unconfirmed: it cites evidence that does not exist (ev-nope).",
        "verdict": "overturned", "confidence_delta": -0.5, "evidence_ids": ["ev-a"], "source": "grounding",
    }
    assert unrelated["hypothesis_id"] == "H4" and unrelated["evidence_ids"] == ["ev-b", "ev-c"]
    assert unrelated["finding"] == "Unconfirmed: none of the cited evidence (ev-b, ev-c) shows search."
    assert grounding_verdicts(hypotheses[:2], EVIDENCE) == []


# ---------------------------------------------------------------- the plan


def test_the_plan_starts_safe_and_undoes_a_preceding_change_first():
    lead = {"id": "H1", "service": "payments", "mechanism": "connection_pool", "support": {"change": change("payments", 10)}}
    plan = mitigation_plan(lead)
    assert [m["id"] for m in plan] == [f"M{i}" for i in range(1, len(plan) + 1)]
    assert plan[0]["title"] == CONTAINMENT.title.format(service="payments") and plan[0]["touches_prod"] is False
    assert plan[1]["title"] == "Roll back payments to the previous release"
    assert plan[2]["title"] == "Raise payments's connection-pool limit by a bounded step"
    assert all(m["hypothesis_id"] == "H1" and m["mechanism"] == "connection_pool" and m["reversible"] for m in plan)
    assert all("{service}" not in " ".join([m["title"], m["rollback"], m["owner"], *m["steps"]]) for m in plan)
    assert [m["title"] for m in mitigation_plan({**lead, "support": {}})][1] == plan[2]["title"]
