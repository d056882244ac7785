"""`pytest evals/`: the product scored on generated incidents, side by side with a naive baseline.

The suite run (every fault x SCORING_SEEDS) is shared by the tests below through the session
fixture `scoring_results` (evals/conftest.py); the thresholds live in evals/suite.py.
"""

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evals import suite
from evals.baseline import baseline_postmortem, detect_window, flagged_groups, zscore_flags
from evals.generator import FAULTS, generate, write_scenario
from evals.scoring import score_case

REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------
# the suite on the scoring seeds
# ------------------------------------------------------------------------------------------


def test_tuning_and_scoring_seeds_are_disjoint():
    assert suite.TUNING_SEEDS and suite.SCORING_SEEDS
    assert not set(suite.TUNING_SEEDS) & set(suite.SCORING_SEEDS)


def test_every_fault_and_scoring_seed_ran(scoring_results):
    assert sorted(r.case for r in scoring_results) == sorted(f"{f}-{s}" for f in FAULTS for s in suite.SCORING_SEEDS)
    failed = {r.case: r.scores["product"].error for r in scoring_results if r.failed}
    assert not failed


@pytest.mark.parametrize("threshold", suite.THRESHOLDS, ids=lambda t: t.metric)
def test_product_meets_threshold(scoring_results, threshold):
    overall = suite.summarize([r.scores["product"] for r in scoring_results])
    measured = overall[threshold.metric]
    assert threshold.met(measured), (
        f"{threshold.metric} = {measured} misses {threshold.op} {threshold.value}; product cases wrong:\n"
        + "\n".join(suite.wrong_cases(scoring_results))
    )


def test_signature_candidates_are_the_roots_own_fault_messages(scoring_results):
    """The honest signature check: every phrasing the root used, none of its callers' lines."""
    checked = 0
    for r in scoring_results:
        t = r.truth
        if t["fault"] == "none" or t.get("has_error_kind"):
            continue
        checked += 1
        messages = t["root_messages"]
        assert t["root_message_example"] in messages, r.case
        others = [s for s in t["services"] if s != t["root_service"]]
        named = [m for m in messages if any(re.search(rf"(?<![\w./-]){re.escape(o)}(?![\w/-])", m) for o in others)]
        assert not named, r.case
    assert checked, "no scoring case without error_kind: the signature path is untested"


def test_report_is_written_with_its_command_and_table(scoring_results, eval_report):
    text = eval_report.read_text()
    assert "Made by: `python -m pytest" in text
    assert suite.table(scoring_results).splitlines()[0] in text
    assert "| **overall**" in text and "## Thresholds" in text


# ------------------------------------------------------------------------------------------
# the harness can fail: a wrong diagnosis scores lower
# ------------------------------------------------------------------------------------------

TRUTH = {
    "fault": "conn_pool_exhaustion", "start": "2026-01-01T10:00:00Z", "end": "2026-01-01T11:00:00Z",
    "root_service": "orders-db", "root_kind": "DBConnPoolExhausted", "has_error_kind": False,
    "root_message_example": "connection pool exhausted: 50/50 in use, waited 1200ms for conn",
    "root_messages": [
        "connection pool exhausted: 50/50 in use, waited 1200ms for conn",
        "pool 'HikariPool-1' saturated: 50 active, 12 threads waiting",
    ],
}


def right_postmortem() -> dict:
    return {
        "incident_detected": True,
        "incident_window": {"start": "2026-01-01T10:00:00Z", "end": "2026-01-01T11:00:00Z"},
        "root_cause": {"service": "orders-db", "kind": "connection_pool", "signature": "pool <*> saturated: <NUM> active, <NUM> threads waiting"},
        "hypotheses": [
            {"service": "orders-db", "status": "upheld", "evidence_ids": ["ev-a", "ev-b"]},
            {"service": "checkout", "status": "overturned", "evidence_ids": ["ev-b"]},
        ],
        "evidence": [{"id": "ev-a"}, {"id": "ev-b"}],
    }


def test_a_right_diagnosis_scores_full_marks():
    s = score_case("right", TRUTH, right_postmortem(), 1.0)
    assert (s.iou, s.start_error_min, s.end_error_min) == (1.0, 0.0, 0.0)
    assert s.root_at_1 and s.root_at_3 and s.kind_or_signature and s.grounded


def test_the_signature_check_accepts_any_phrasing_the_root_used_not_only_the_example():
    only_example = {**TRUTH, "root_messages": [TRUTH["root_message_example"]]}
    assert not score_case("x", only_example, right_postmortem(), 1.0).kind_or_signature
    assert score_case("x", TRUTH, right_postmortem(), 1.0).kind_or_signature


def wrong(**changes) -> dict:
    pm = copy.deepcopy(right_postmortem())
    if changes.get("root"):
        pm["hypotheses"][0]["status"] = "overturned"
        pm["hypotheses"][1]["status"] = "upheld"
        pm["root_cause"]["service"] = "checkout"
    if changes.get("shift"):
        pm["incident_window"] = {"start": "2026-01-01T10:30:00Z", "end": "2026-01-01T11:30:00Z"}
    if changes.get("signature"):
        pm["root_cause"]["signature"] = "call to <*> failed: timeout after <NUM>ms"
    if changes.get("ungrounded"):
        pm["hypotheses"][0]["evidence_ids"] = ["ev-a", "ev-made-up"]
        pm["hypotheses"][1]["evidence_ids"] = []
    return pm


def test_a_wrong_root_service_drops_ac1_and_kind():
    s = score_case("x", TRUTH, wrong(root=True), 1.0)
    assert s.root_at_1 is False and s.kind_or_signature is False
    assert s.root_at_3 is True  # still among the hypotheses


def test_a_shifted_window_drops_iou_and_shows_the_error():
    s = score_case("x", TRUTH, wrong(shift=True), 1.0)
    assert s.iou == pytest.approx(30 / 90)
    assert s.start_error_min == 30 and s.end_error_min == 30


def test_a_wrong_signature_fails_the_signature_check():
    s = score_case("x", TRUTH, wrong(signature=True), 1.0)
    assert s.root_at_1 and s.kind_or_signature is False


def test_a_wrong_kind_fails_when_logs_have_error_kind():
    truth = {**TRUTH, "has_error_kind": True}
    pm = right_postmortem()
    pm["root_cause"]["kind"] = "DBConnPoolExhausted"
    assert score_case("x", truth, pm, 1.0).kind_or_signature
    pm["root_cause"]["kind"] = "UpstreamTimeout"
    assert score_case("x", truth, pm, 1.0).kind_or_signature is False


def test_ungrounded_evidence_ids_fail_grounding():
    assert score_case("x", TRUTH, wrong(ungrounded=True), 1.0).grounded is False


def test_everything_wrong_at_once_fails_the_thresholds():
    results = [
        suite.CaseResult(f"c{i}", "conn_pool_exhaustion", TRUTH,
                         {"product": score_case(f"c{i}", TRUTH, wrong(root=True, shift=True, signature=True, ungrounded=True), 1.0),
                          "baseline": score_case(f"c{i}", TRUTH, right_postmortem(), 1.0)})
        for i in range(3)
    ]
    quiet = {"fault": "none", "start": None, "end": None, "root_service": None, "root_kind": None}
    results.append(suite.CaseResult("q", "none", quiet, {s: score_case("q", quiet, right_postmortem(), 1.0) for s in suite.SYSTEMS}))
    verdicts = {t.metric: ok for t, _, ok in suite.check_thresholds(results)}
    assert not any(verdicts[m] for m in ("mean_iou", "root_at_1", "kind_or_signature", "false_alarms", "grounded"))
    assert verdicts["failed"]  # nothing failed to run: the misses are all diagnosis misses


def test_a_report_on_a_no_incident_case_is_a_false_alarm():
    quiet = {"fault": "none", "start": None, "end": None, "root_service": None, "root_kind": None}
    s = score_case("q", quiet, right_postmortem(), 1.0)
    assert s.expected_incident is False and s.detected is True
    assert suite.summarize([s])["false_alarms"] == 1


# ------------------------------------------------------------------------------------------
# the baseline
# ------------------------------------------------------------------------------------------


def zscore_flags_loop(x, window=75, z=3.2):
    """The baseline's definition, written out as a plain loop, to check the vectorised one."""
    out = np.zeros(len(x), dtype=bool)
    for i in range(len(x)):
        hist = x[max(0, i - window):i]
        if len(hist) < max(10, window // 4):
            continue
        out[i] = abs((x[i] - hist.mean()) / (hist.std() + 1e-9)) >= z
    return out


def test_baseline_zscore_matches_its_definition():
    rng = np.random.default_rng(7)
    x = rng.normal(100, 5, 600)
    x[300:340] += 40
    x[450] += 60
    assert np.array_equal(zscore_flags(x), zscore_flags_loop(x))


def test_baseline_finds_a_step_and_blames_the_loudest_service():
    ts = pd.date_range("2026-01-01", periods=400, freq="min")
    p95 = np.random.default_rng(3).normal(200, 5, 400)
    p95[200:230] += 100
    metrics = pd.DataFrame({"ts": ts, "p95_ms": p95})
    start, end = detect_window(metrics)
    groups = flagged_groups(zscore_flags(p95))
    # the step soon enters the 75-minute history and stops standing out, so no run spans 10
    # minutes here: the longest run wins, reported as [first, last + one step)
    a, b = max(groups, key=lambda g: g[1] - g[0])
    assert a == 200 and b < 230 and all(g[1] - g[0] < 10 for g in groups)
    assert (start, end) == (ts[a], ts[b] + pd.Timedelta(minutes=1))
    logs = pd.DataFrame({
        "ts": [ts[201], ts[202], ts[203], ts[10]] * 2,
        "service": ["a", "a", "b", "b"] * 2,
        "level": ["ERROR", "WARN", "ERROR", "ERROR"] * 2,
        "message": ["pool exhausted after 10ms", "pool exhausted after 20ms", "call to a failed", "x"] * 2,
        "error_kind": [None] * 8,
    })
    pm = baseline_postmortem(metrics, logs, has_error_kind=False)
    assert pm["root_cause"] == {"service": "a", "kind": None, "signature": "pool exhausted after <NUM>ms"}
    assert [h["service"] for h in pm["hypotheses"]] == ["a", "b"]


# ------------------------------------------------------------------------------------------
# `incident-graph eval CASES_DIR --report FILE`, as a real process
# ------------------------------------------------------------------------------------------


def test_cli_eval_scores_the_good_cases_and_reports_the_broken_one(tmp_path):
    cases = tmp_path / "cases"
    write_scenario(generate("bad_deploy", 11), cases / "bad_deploy-11")
    write_scenario(generate("none", 11), cases / "none-11")
    broken = cases / "broken-logs"
    write_scenario(generate("tls_cert_expiry", 11), broken)
    logs = pd.read_csv(broken / "logs.csv")
    logs.drop(columns="level").to_csv(broken / "logs.csv", index=False)
    (cases / "broken-truth").mkdir()
    (cases / "broken-truth" / "truth.json").write_text(json.dumps({"fault": "bad_deploy"}))
    report = tmp_path / "report.md"

    env = {k: v for k, v in os.environ.items() if k not in {"OPENAI_API_KEY", "OPENAI_BASE_URL", "INCIDENT_GRAPH_MODEL"}}
    env["INCIDENT_GRAPH_HOME"] = str(tmp_path / "home")
    run = subprocess.run([sys.executable, "cli.py", "eval", str(cases), "--report", str(report)],
                         capture_output=True, text=True, timeout=150, env=env, cwd=REPO)
    out = run.stdout
    assert run.returncode == 1, run.stderr + out
    progress = {line.split("] ", 1)[1].split(":", 1)[0]: line for line in out.splitlines() if line.startswith("[")}
    assert set(progress) == {"bad_deploy-11", "none-11", "broken-logs", "broken-truth"}
    assert "product: IoU" in progress["bad_deploy-11"] and "FAILED" not in progress["bad_deploy-11"]
    assert "product: quiet ok" in progress["none-11"]
    assert "FAILED" in progress["broken-logs"] and "level" in progress["broken-logs"]
    assert "FAILED" in progress["broken-truth"] and "missing key" in progress["broken-truth"]
    assert "| **overall**" in out and "2 of 4 case(s) ran, 2 failed" in out

    text = report.read_text()
    assert "Made by: `incident-graph eval" in text and "| bad_deploy " in text
    assert "broken-logs: failed: InputError" in text
    assert not (tmp_path / "home" / "eval").exists() or not any((tmp_path / "home" / "eval").iterdir())


def test_eval_folder_exits_0_when_every_case_ran(tmp_path, capsys):
    cases = tmp_path / "cases"
    write_scenario(generate("none", 12), cases / "none-12")
    assert suite.eval_folder(cases, tmp_path / "r.md", work_root=tmp_path / "work", command="test") == 0
    assert "1 of 1 case(s) ran, 0 failed" in capsys.readouterr().out


def test_eval_folder_rejects_a_folder_without_cases(tmp_path):
    with pytest.raises(ValueError, match="no case folders"):
        suite.eval_folder(tmp_path, work_root=tmp_path / "work")
