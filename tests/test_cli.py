"""The `incident-graph` command as a user runs it: real processes, real checkpoint files."""

import json
import shutil
import sqlite3

from graph.state import Postmortem
from tests.processes import run_cli

REQUIRED = {"schema_version", "incident_detected", "incident_window", "root_cause", "hypotheses", "mitigations", "approval", "timeline", "evidence"}


def read_postmortem(out):
    pm = json.loads((out / "postmortem.json").read_text())
    Postmortem.model_validate(pm)  # the written file honours the documented schema
    return pm


def test_demo_writes_three_files_with_the_contract_fields(tmp_path):
    out = tmp_path / "out"
    result = run_cli("demo", "--fault", "bad_deploy", "--seed", "2", "--out", str(out), env_home=tmp_path / "home")
    assert result.returncode == 0, result.stderr
    for node in ("[load]", "[detect]", "[investigate/analyst]", "[hypothesize]", "[critic]", "[mitigate]", "[approve]", "[write]"):
        assert node in result.stdout
    pm = read_postmortem(out)
    assert REQUIRED <= set(pm)
    truth = json.loads((out / "scenario" / "truth.json").read_text())
    assert pm["incident_detected"] is True
    assert pm["root_cause"]["service"] == truth["root_service"]
    assert pm["approval"]["action"] == "auto-approve"
    assert (out / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## Critic transcript" in (out / "postmortem.md").read_text()


def test_generate_writes_scenario_files(tmp_path):
    result = run_cli("generate", "--fault", "none", "--seed", "4", "--out", str(tmp_path / "case"), env_home=tmp_path / "home")
    assert result.returncode == 0, result.stderr
    assert {p.name for p in (tmp_path / "case").iterdir()} == {"metrics.csv", "logs.csv", "events.csv", "truth.json"}


def test_pause_for_approval_then_resume_in_another_process(tmp_path, scenario_dir):
    case, out, home = scenario_dir("tls_cert_expiry", 5), tmp_path / "out", tmp_path / "home"
    started = run_cli(
        "investigate", "--metrics", str(case / "metrics.csv"), "--logs", str(case / "logs.csv"),
        "--events", str(case / "events.csv"), "--out", str(out), "--thread-id", "t-approve", env_home=home,
    )
    assert started.returncode == 3, started.stderr
    assert "incident-graph resume --thread-id t-approve --approve" in started.stdout
    assert not (out / "postmortem.json").exists()  # nothing is written before the decision
    assert (home / "checkpoints.sqlite").exists()

    resumed = run_cli("resume", "--thread-id", "t-approve", "--approve", "--by", "alice", "--out", str(out), env_home=home)
    assert resumed.returncode == 0, resumed.stderr
    assert "[hypothesize]" not in resumed.stdout  # it resumed at the interrupt, not from scratch
    pm = read_postmortem(out)
    assert pm["approval"]["action"] == "approve" and pm["approval"]["by"] == "alice"
    assert {m["status"] for m in pm["mitigations"]} == {"approved"}

    again = run_cli("resume", "--thread-id", "t-approve", "--out", str(out), env_home=home)
    assert again.returncode == 0 and "already finished" in again.stdout
    # A second decision is refused, not reported as done: the first one stands.
    second = run_cli("resume", "--thread-id", "t-approve", "--reject", "no", "--out", str(out), env_home=home)
    assert second.returncode == 2 and "already decided: approve by alice" in second.stderr, second.stderr


def test_rejected_plan_is_recorded_and_nothing_is_approved(tmp_path, scenario_dir):
    case, out, home = scenario_dir("conn_pool_exhaustion", 6), tmp_path / "out", tmp_path / "home"
    args = ["--metrics", str(case / "metrics.csv"), "--logs", str(case / "logs.csv"), "--out", str(out), "--thread-id", "t-reject"]
    assert run_cli("investigate", *args, env_home=home).returncode == 3
    resumed = run_cli("resume", "--thread-id", "t-reject", "--reject", "pool already resized by DBA", "--out", str(out), env_home=home)
    assert resumed.returncode == 0, resumed.stderr
    pm = read_postmortem(out)
    assert pm["approval"]["action"] == "reject"
    assert pm["approval"]["note"] == "pool already resized by DBA"
    assert pm["approval"]["approved"] == []
    assert {m["status"] for m in pm["mitigations"]} == {"rejected"}


def test_edited_plan_replaces_the_proposal(tmp_path, scenario_dir):
    case, out, home = scenario_dir("memory_leak", 7), tmp_path / "out", tmp_path / "home"
    args = ["--metrics", str(case / "metrics.csv"), "--logs", str(case / "logs.csv"), "--out", str(out), "--thread-id", "t-edit"]
    assert run_cli("investigate", *args, env_home=home).returncode == 3
    plan = [{
        "id": "M9", "hypothesis_id": "H1", "mechanism": "memory", "title": "Restart one canary only",
        "steps": ["restart one instance"], "rollback": "none needed", "owner": "bob", "eta_minutes": 5, "touches_prod": True,
    }]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    resumed = run_cli("resume", "--thread-id", "t-edit", "--plan", str(tmp_path / "plan.json"), "--out", str(out), env_home=home)
    assert resumed.returncode == 0, resumed.stderr
    pm = read_postmortem(out)
    assert [m["id"] for m in pm["mitigations"]] == ["M9"]
    assert pm["approval"]["action"] == "edit"
    assert pm["approval"]["approved"] == ["M9"]


def test_missing_column_is_a_clear_error_and_writes_nothing(tmp_path, scenario_dir):
    case = scenario_dir("bad_deploy", 8)
    broken = tmp_path / "logs.csv"
    text = (case / "logs.csv").read_text().splitlines()
    text[0] = text[0].replace("service", "svc_name", 1)
    broken.write_text("\n".join(text) + "\n")
    out = tmp_path / "out"
    result = run_cli("investigate", "--metrics", str(case / "metrics.csv"), "--logs", str(broken), "--out", str(out), "--auto-approve", env_home=tmp_path / "home")
    assert result.returncode == 2
    assert "logs.csv" in result.stderr and "service" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() or not any(out.iterdir())


def test_missing_file_is_a_clear_error(tmp_path, scenario_dir):
    case = scenario_dir("bad_deploy", 8)
    result = run_cli("investigate", "--metrics", str(tmp_path / "nope.csv"), "--logs", str(case / "logs.csv"), "--out", str(tmp_path / "o"), env_home=tmp_path / "home")
    assert result.returncode == 2
    assert "nope.csv" in result.stderr and "Traceback" not in result.stderr


def test_unknown_thread_and_corrupt_checkpoint_are_errors_not_fresh_starts(tmp_path, scenario_dir):
    home = tmp_path / "home"
    result = run_cli("resume", "--thread-id", "ghost", "--approve", "--out", str(tmp_path / "o"), env_home=home)
    assert result.returncode == 2 and "no thread ghost" in result.stderr

    home.mkdir(exist_ok=True)
    (home / "checkpoints.sqlite").write_bytes(b"this is not a sqlite database at all" * 100)
    case = scenario_dir("bad_deploy", 8)
    result = run_cli("investigate", "--metrics", str(case / "metrics.csv"), "--logs", str(case / "logs.csv"), "--out", str(tmp_path / "o"), env_home=home)
    assert result.returncode == 2 and "unreadable" in result.stderr
    assert (home / "checkpoints.sqlite").read_bytes().startswith(b"this is not")  # left for inspection


def test_no_incident_scenario_writes_a_no_incident_postmortem(tmp_path, scenario_dir):
    case, out = scenario_dir("none", 9), tmp_path / "out"
    result = run_cli("investigate", "--metrics", str(case / "metrics.csv"), "--logs", str(case / "logs.csv"), "--events", str(case / "events.csv"), "--out", str(out), env_home=tmp_path / "home")
    # No incident: nothing to approve, so it finishes without waiting.
    assert result.returncode == 0, result.stderr
    pm = read_postmortem(out)
    assert pm["incident_detected"] is False and pm["incident_window"] is None
    assert pm["root_cause"]["service"] is None and pm["hypotheses"] == []
    shutil.rmtree(out)


def test_checkpoint_file_holds_the_thread(tmp_path, scenario_dir):
    case, home = scenario_dir("dependency_outage", 3), tmp_path / "home"
    args = ["--metrics", str(case / "metrics.csv"), "--logs", str(case / "logs.csv"), "--out", str(tmp_path / "o"), "--thread-id", "t-db"]
    assert run_cli("investigate", *args, env_home=home).returncode == 3
    with sqlite3.connect(home / "checkpoints.sqlite") as conn:
        threads = {row[0] for row in conn.execute("SELECT DISTINCT thread_id FROM checkpoints")}
    assert "t-db" in threads
    again = run_cli("investigate", *args, env_home=home)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_every_incident_window_is_listed_and_window_picks_another(tmp_path, scenario_dir):
    """Two incidents in one range: the bigger one is investigated, the other listed, and
    `--window 2` / `--window START..END` investigate another; a rank that does not exist or a
    malformed value is a clear error before anything is written."""
    case = scenario_dir("conn_pool_exhaustion", 1)
    metrics = tmp_path / "metrics.csv"
    lines = (case / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    p95 = header.index("p95_ms")
    for i in range(120, 150):  # a second, smaller degradation hours before the injected fault
        cells = lines[1 + i].split(",")
        cells[p95] = str(float(cells[p95]) + 400)
        lines[1 + i] = ",".join(cells)
    metrics.write_text("\n".join(lines) + "\n")
    second_start = lines[1 + 120].split(",")[0]
    truth = json.loads((case / "truth.json").read_text())
    base = ["investigate", "--metrics", str(metrics), "--logs", str(case / "logs.csv"), "--events", str(case / "events.csv"), "--auto-approve"]
    home = tmp_path / "home"

    first = run_cli(*base, "--out", str(tmp_path / "first"), env_home=home)
    assert first.returncode == 0, first.stderr
    pm = read_postmortem(tmp_path / "first")
    assert pm["investigated_rank"] == 1 and len(pm["incident_windows"]) == 2
    assert pm["incident_window"]["start"] == truth["start"]
    assert pm["incident_windows"][1]["start"] == second_start and pm["incident_windows"][1]["signals"] == ["p95_ms"]
    assert "Other incident windows" in (tmp_path / "first" / "postmortem.md").read_text()
    assert "--window N" in first.stdout

    other = run_cli(*base, "--window", "2", "--out", str(tmp_path / "second"), env_home=home)
    assert other.returncode == 0, other.stderr
    pm = read_postmortem(tmp_path / "second")
    assert pm["investigated_rank"] == 2 and pm["incident_window"]["start"] == second_start

    asked = run_cli(*base, "--window", f"{truth['start']}..{truth['end']}", "--out", str(tmp_path / "asked"), env_home=home)
    assert asked.returncode == 0, asked.stderr
    pm = read_postmortem(tmp_path / "asked")
    assert pm["investigated_rank"] is None
    assert (pm["incident_window"]["start"], pm["incident_window"]["end"]) == (truth["start"], truth["end"])

    for bad, message in (("3", "only 2 incident window(s) were found"), ("yesterday", "expected a rank")):
        refused = run_cli(*base, "--window", bad, "--out", str(tmp_path / f"bad-{bad}"), env_home=home)
        assert refused.returncode == 2 and message in refused.stderr and "Traceback" not in refused.stderr
        assert not (tmp_path / f"bad-{bad}" / "postmortem.json").exists()
