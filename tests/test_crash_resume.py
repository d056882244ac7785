"""Faults in the CLI: a run killed with SIGKILL mid-graph resumes from its checkpoint and ends
with the same postmortem as an uninterrupted run; a corrupt, foreign or unreachable checkpoint
store is a clear error (exit 2), never a traceback and never a silent fresh start.

Real processes and files throughout: `python cli.py` in its own process, the real SQLite
checkpoint file, SIGKILL from the OS.

Kill points are made deterministic by stepping the child: on the progress line that precedes
the kill point the child is frozen (SIGSTOP), then let run in 5 ms slices until the checkpoint
file holds the chosen node's writes, then killed (SIGKILL) while frozen. The graph itself runs
in about a second, far too fast to hit a point by sleeping.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver

from graph.graph import build_graph
from graph.state import STATE_MODELS
from tests.processes import LLM_ENV, REPO, run_cli

FAULT, SEED = "db_latency_ramp", 12
APPROVER = "alice"


@dataclass(frozen=True)
class KillPoint:
    id: str
    marker: str  # the progress line after which the child is stepped
    namespace: str  # checkpoint_ns pattern of the writes that must be on disk before the kill
    channel: str
    not_rerun: tuple[str, ...]  # progress lines the resumed process must not print again


KILL_POINTS = [
    KillPoint("after-load", "[load]", "", "load_summary", ("[load]",)),
    KillPoint("mid-investigate-tools-running", "[investigate/analyst] calls", "investigate:%", "branch:to:tools",
              ("[load]", "[detect]", "[investigate/brief]")),
    KillPoint("after-hypothesize", "[hypothesize]", "", "branch:to:critic",
              ("[load]", "[detect]", "[investigate", "[hypothesize]")),
    KillPoint("after-critic", "[critic]", "", "branch:to:mitigate",
              ("[load]", "[detect]", "[investigate", "[hypothesize]", "[critic]")),
]

# Parts of postmortem.json that legitimately differ between two runs of the same inputs, and why.
# Everything else (title, window, root cause, hypotheses with their critic verdicts, critic
# transcript, mitigations, the decision, the evidence-backed timeline, every evidence item with
# its id, method and numbers, the inputs and load summary, the sequence of nodes run) must match.
EXCLUDED = {
    "metadata.thread_id": "a different thread id by construction",
    "metadata.generated_at": "wall-clock time the file was written",
    "metadata.data.db_path": "the per-thread work database is named after the thread",
    "metadata.node_runs[*].id, .seconds": "random ids and timings of each node run",
    "approval.at": "wall-clock time of the decision",
    "timeline entry of the decision": "its ts is approval.at",
}


def stable_view(pm: dict) -> dict:
    pm = json.loads(json.dumps(pm))  # a deep copy
    meta = pm["metadata"]
    for key in ("thread_id", "generated_at"):
        meta.pop(key)
    meta["data"].pop("db_path")
    meta["node_runs"] = [run["node"] for run in meta["node_runs"]]
    decided_at = pm["approval"].pop("at")
    pm["timeline"] = [e for e in pm["timeline"] if not (e["evidence_id"] is None and e["ts"] == decided_at)]
    return pm


def differences(got, want, path: str = "") -> list[str]:
    """Where two JSON values differ, as readable paths (for the assertion message)."""
    if isinstance(got, dict) and isinstance(want, dict):
        return [d for k in sorted(set(got) | set(want)) for d in differences(got.get(k), want.get(k), f"{path}.{k}")]
    if isinstance(got, list) and isinstance(want, list) and len(got) == len(want):
        return [d for i, (g, w) in enumerate(zip(got, want)) for d in differences(g, w, f"{path}[{i}]")]
    return [] if got == want else [f"{path}: {json.dumps(got)[:200]} != {json.dumps(want)[:200]}"]


def cli_process(*args: str, home: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in LLM_ENV}  # as run_cli: offline analyst, own state dir
    env["INCIDENT_GRAPH_HOME"] = str(home)
    return subprocess.Popen([sys.executable, str(REPO / "cli.py"), *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def writes_on_disk(home: Path, thread: str, point: KillPoint) -> bool:
    path = home / "checkpoints.sqlite"
    if not path.exists():
        return False
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)  # read-only: the test never writes it
    try:
        return conn.execute(
            "SELECT count(*) FROM writes WHERE thread_id = ? AND checkpoint_ns LIKE ? AND channel = ?",
            (thread, point.namespace, point.channel)).fetchone()[0] > 0
    except sqlite3.OperationalError:  # tables not created yet
        return False
    finally:
        conn.close()


def kill_at(proc: subprocess.Popen, point: KillPoint, home: Path, thread: str) -> list[str]:
    """SIGKILL the child once `point` is on disk; returns the progress lines it printed."""
    printed = []
    for line in proc.stdout:
        printed.append(line)
        if line.startswith(point.marker):
            break
    else:
        pytest.fail(f"the run ended before {point.marker!r}: rc={proc.wait()} {proc.stderr.read()[-2000:]}")
    proc.send_signal(signal.SIGSTOP)
    deadline = time.monotonic() + 60
    while not writes_on_disk(home, thread, point):
        assert time.monotonic() < deadline, f"{point.channel} never reached the checkpoint file"
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.005)
        proc.send_signal(signal.SIGSTOP)
        assert proc.poll() is None, f"the run finished before {point.id} could be hit: {proc.returncode}"
    proc.kill()
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    return printed


def thread_snapshot(home: Path, thread: str):
    conn = sqlite3.connect(home / "checkpoints.sqlite")
    try:
        saver = SqliteSaver(conn, serde=JsonPlusSerializer(allowed_msgpack_modules=STATE_MODELS))
        return build_graph(saver).get_state({"configurable": {"thread_id": thread}})
    finally:
        conn.close()


def inputs(case: Path) -> list[str]:
    return ["--metrics", str(case / "metrics.csv"), "--logs", str(case / "logs.csv"), "--events", str(case / "events.csv")]


@pytest.fixture(scope="module")
def case(scenario_dir) -> Path:
    return scenario_dir(FAULT, SEED)


@pytest.fixture(scope="module")
def baseline(case, tmp_path_factory) -> tuple[Path, dict]:
    """The uninterrupted run: investigate, pause for approval, approve (the normal human flow)."""
    root = tmp_path_factory.mktemp("baseline")
    home, out = root / "home", root / "out"
    started = run_cli("investigate", *inputs(case), "--out", str(out), "--thread-id", "baseline", env_home=home)
    assert started.returncode == 3, started.stderr
    approved = run_cli("resume", "--thread-id", "baseline", "--approve", "--by", APPROVER, "--out", str(out), env_home=home)
    assert approved.returncode == 0, approved.stderr
    return home, json.loads((out / "postmortem.json").read_text())


@pytest.mark.parametrize("point", KILL_POINTS, ids=[p.id for p in KILL_POINTS])
def test_sigkill_mid_graph_then_resume_gives_the_same_postmortem(point, case, baseline, tmp_path):
    home, out, thread = tmp_path / "home", tmp_path / "out", f"crash-{point.id}"
    proc = cli_process("investigate", *inputs(case), "--out", str(out), "--thread-id", thread, home=home)
    try:
        kill_at(proc, point, home, thread)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    killed = thread_snapshot(home, thread)
    assert killed.tasks, "the killed thread must have work left"
    assert not any(task.interrupts for task in killed.tasks), "killed mid-graph, not at the approval"
    assert not (out / "postmortem.json").exists()

    resumed = run_cli("resume", "--thread-id", thread, "--out", str(out), env_home=home)
    assert resumed.returncode == 3, resumed.stderr  # carried on to the approval and paused there
    assert "Waiting for approval" in resumed.stdout and "Traceback" not in resumed.stderr
    for prefix in point.not_rerun:  # work saved before the kill is replayed from the file, not done again
        again = [line for line in resumed.stdout.splitlines() if line.startswith(prefix)]
        assert all("(restored from checkpoint)" in line for line in again), f"{prefix} ran again:\n{resumed.stdout}"

    approved = run_cli("resume", "--thread-id", thread, "--approve", "--by", APPROVER, "--out", str(out), env_home=home)
    assert approved.returncode == 0, approved.stderr
    pm = json.loads((out / "postmortem.json").read_text())
    assert pm["metadata"]["thread_id"] == thread
    _, expected = baseline
    assert stable_view(pm) == stable_view(expected), "\n".join(differences(stable_view(pm), stable_view(expected)))
    assert pm["incident_detected"] and pm["root_cause"]["service"] and pm["evidence"]  # a real result, not two empty ones


def test_resume_after_a_crash_with_an_early_decision_shows_the_plan_first(case, tmp_path):
    """--approve on a thread that crashed before asking: the plan was never shown, so the run
    carries on to the approval and waits instead of applying a decision nobody could make."""
    home, out, thread = tmp_path / "home", tmp_path / "out", "crash-early-decision"
    proc = cli_process("investigate", *inputs(case), "--out", str(out), "--thread-id", thread, home=home)
    try:
        kill_at(proc, KILL_POINTS[-1], home, thread)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    early = run_cli("resume", "--thread-id", thread, "--approve", "--out", str(out), env_home=home)
    assert early.returncode == 3, early.stderr
    assert "stopped before asking for approval" in early.stderr and "Waiting for approval" in early.stdout
    assert not (out / "postmortem.json").exists()
    assert thread_snapshot(home, thread).values.get("approval") is None


def _random_bytes(good: bytes) -> bytes:
    return random.Random(7).randbytes(64 * 1024)


def _truncated(good: bytes) -> bytes:
    return good[: len(good) // 2]


def _damaged_after_header(good: bytes) -> bytes:
    return good[:100] + random.Random(7).randbytes(len(good) - 100)  # a valid SQLite header, garbage pages


def _foreign_database(good: bytes, scratch: Path) -> bytes:
    conn = sqlite3.connect(scratch)
    conn.execute("CREATE TABLE checkpoints(note TEXT)")
    conn.execute("INSERT INTO checkpoints VALUES ('not ours')")
    conn.commit()
    conn.close()
    return scratch.read_bytes()


CORRUPTIONS = {"random-bytes": _random_bytes, "truncated-to-half": _truncated,
               "damaged-after-header": _damaged_after_header, "foreign-sqlite-database": _foreign_database}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corrupt_checkpoint_file_is_a_clear_error_and_left_untouched(kind, case, baseline, tmp_path):
    good = (baseline[0] / "checkpoints.sqlite").read_bytes()
    make = CORRUPTIONS[kind]
    bad = make(good, tmp_path / "scratch.sqlite") if kind == "foreign-sqlite-database" else make(good)
    home, out = tmp_path / "home", tmp_path / "out"
    home.mkdir()
    store = home / "checkpoints.sqlite"
    store.write_bytes(bad)
    digest = hashlib.sha256(bad).hexdigest()

    attempts = [
        ("resume", "--thread-id", "baseline", "--approve", "--out", str(out)),
        ("investigate", *inputs(case), "--out", str(out), "--thread-id", "fresh", "--auto-approve"),
    ]
    for args in attempts:
        result = run_cli(*args, env_home=home)
        assert result.returncode == 2, (args[0], result.stdout, result.stderr)
        assert f"error: checkpoint database {store} is" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert hashlib.sha256(store.read_bytes()).hexdigest() == digest  # left for inspection
        assert not (home / "work").exists()  # nothing was loaded: no fresh start
        assert not out.exists()


def test_checkpoint_path_that_is_a_directory_is_a_clear_error(case, tmp_path):
    home, out = tmp_path / "home", tmp_path / "out"
    (home / "checkpoints.sqlite").mkdir(parents=True)
    for args in (("resume", "--thread-id", "t", "--approve", "--out", str(out)),
                 ("investigate", *inputs(case), "--out", str(out), "--auto-approve")):
        result = run_cli(*args, env_home=home)
        assert result.returncode == 2, result.stderr
        assert f"checkpoint database {home / 'checkpoints.sqlite'} is not a file" in result.stderr
        assert "Traceback" not in result.stderr
        assert not (home / "work").exists() and not out.exists()


@pytest.mark.parametrize("where", ["state-dir-is-a-file", "state-dir-inside-a-file"])
def test_state_dir_that_cannot_be_created_is_a_clear_error(where, case, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the state directory should be\n")
    home = blocker if where == "state-dir-is-a-file" else blocker / "state"
    out = tmp_path / "out"
    result = run_cli("investigate", *inputs(case), "--out", str(out), "--auto-approve", env_home=home)
    assert result.returncode == 2, result.stderr
    assert f"error: state directory {home} cannot be created" in result.stderr
    assert "Traceback" not in result.stderr
    assert blocker.read_text() == "a file where the state directory should be\n" and not out.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_read_only_state_dir_is_a_clear_error(case, tmp_path):
    home, out = tmp_path / "home", tmp_path / "out"
    home.mkdir()
    home.chmod(0o500)
    try:
        result = run_cli("investigate", *inputs(case), "--out", str(out), "--auto-approve", env_home=home)
    finally:
        home.chmod(0o700)
    assert result.returncode == 2, result.stderr
    assert f"checkpoint database {home / 'checkpoints.sqlite'} cannot be opened" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()
