"""The `incident-graph` command against what an outside probe tried: thread ids that name paths,
settings out of bounds, two people deciding at once, an --out that was ignored, restarts labelled
'no prod change', hostile --plan files and full or read-only disks.

Real processes (`python cli.py`, real checkpoint files, a real tmpfs filled to the last byte),
except for the refused decision flags at the end, which stop before any file is opened and so
run `main` in this process; a model, where one is needed, is a scripted OpenAI-compatible
server over HTTP.
"""

import errno
import json
import os
import pwd
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fake_openai_server import FakeOpenAIServer, Reply

from cli import plan_line
from graph.checkpointing import claim_in_sqlite, decision_claim_key
from graph.plans import labelled
from graph.state import Mitigation
from tests.processes import LLM_ENV, REPO, run_cli, waiting_request_id

FAULT, SEED = "tls_cert_expiry", 5
REAL_USER = pwd.getpwuid(os.geteuid()).pw_name


@pytest.fixture
def case(scenario_dir) -> Path:
    return scenario_dir(FAULT, SEED)


def inputs(case: Path) -> list[str]:
    return ["--metrics", str(case / "metrics.csv"), "--logs", str(case / "logs.csv"), "--events", str(case / "events.csv")]


@pytest.fixture(scope="module")
def waiting_home(scenario_dir, tmp_path_factory) -> Path:
    """A state dir whose thread `waiting` is paused at the approval (its --out: `first-out` next
    to it). Tests decide on copies of it: one investigation serves them all."""
    root = tmp_path_factory.mktemp("waiting")
    started = run_cli("investigate", *inputs(scenario_dir(FAULT, SEED)), "--out", str(root / "first-out"),
                      "--thread-id", "waiting", "--quiet", env_home=root / "home")
    assert started.returncode == 3, started.stderr
    return root / "home"


def copy_of(waiting_home: Path, home: Path) -> Path:
    """A fresh copy of the waiting thread's state dir, as a backup restored elsewhere would be."""
    return Path(shutil.copytree(waiting_home, home))


def cli_process(*args: str, home: Path, **env: str) -> subprocess.Popen:
    """As run_cli, but started without waiting, with extra environment variables."""
    full_env = {k: v for k, v in os.environ.items() if k not in LLM_ENV}
    full_env.update(INCIDENT_GRAPH_HOME=str(home), **env)
    return subprocess.Popen([sys.executable, str(REPO / "cli.py"), *args], cwd=REPO, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def postmortem(out: Path) -> dict:
    return json.loads((out / "postmortem.json").read_text())


def everything_under(root: Path) -> list[Path]:
    return sorted(root.rglob("*"))


# ------------------------------------------------------------------ 4. thread ids that name paths

HOSTILE_IDS = {"traversal": "../../../../elsewhere/x", "absolute": "{root}/elsewhere/x", "hidden": ".x", "empty": ""}


@pytest.mark.parametrize("command, kind", [*(("investigate", kind) for kind in HOSTILE_IDS), ("demo", "traversal"), ("resume", "absolute")])
def test_thread_id_naming_a_path_is_refused_before_anything_is_written(command, kind, case, tmp_path):
    home, out = tmp_path / "a" / "b" / "home", tmp_path / "out"  # ../../../../ from home/work is tmp_path
    thread = HOSTILE_IDS[kind].format(root=tmp_path)
    args = {
        "investigate": ["investigate", *inputs(case), "--auto-approve"],
        "demo": ["demo"],
        "resume": ["resume", "--approve"],
    }[command]
    result = run_cli(*args, "--thread-id", thread, "--out", str(out), env_home=home)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "error: thread id " in result.stderr and "is not valid: use 1-128 letters" in result.stderr
    assert "Traceback" not in result.stderr
    assert everything_under(tmp_path) == []  # no state dir, no out, no x.duckdb or postmortem elsewhere


# ------------------------------------------------------------------ 15. --max-steps and the recursion limit


def tool_calling_forever(body: dict) -> Reply:
    """A model that never concludes: every investigation turn calls another tool; the other
    phases fail, so the offline analyst answers them."""
    tools = {t["function"]["name"] for t in body.get("tools") or []}
    if "change_events" in tools:
        return Reply(content="Checking changes again.", tool_calls=[("change_events", {})])
    return Reply(status=400, error_message="this scripted model only investigates")


def model_flags(server: FakeOpenAIServer) -> list[str]:
    return ["--model", "fake-model", "--base-url", server.base_url, "--token-budget", "20000000"]


def test_max_steps_past_the_old_recursion_limit_completes(case, tmp_path, monkeypatch):
    monkeypatch.setenv("INCIDENT_GRAPH_LLM_RETRIES", "0")
    out = tmp_path / "out"
    with FakeOpenAIServer(tool_calling_forever) as server:
        result = run_cli("investigate", *inputs(case), "--out", str(out), "--auto-approve", "--quiet",
                         "--max-steps", "40", *model_flags(server), env_home=tmp_path / "home", timeout=300)
        investigation_turns = sum(1 for body in server.requests if any(t["function"]["name"] == "change_events" for t in body.get("tools") or []))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GraphRecursionError" not in result.stderr
    assert investigation_turns == 40  # the step budget, not the recursion limit, ended the investigation
    assert postmortem(out)["approval"]["action"] in {"auto-approve", "not-needed"}


@pytest.mark.parametrize("steps, bound", [("0", "greater than or equal to 1"), ("1000", "less than or equal to 64")])
def test_max_steps_out_of_bounds_is_a_clear_error(steps, bound, case, tmp_path):
    result = run_cli("investigate", *inputs(case), "--out", str(tmp_path / "out"), "--max-steps", steps, env_home=tmp_path / "home")
    assert result.returncode == 2, result.stderr
    assert f"'max_steps': Input should be {bound} (got {steps})" in result.stderr
    assert "Traceback" not in result.stderr and everything_under(tmp_path) == []


def test_empty_state_dir_is_refused_not_replaced_by_the_default(case, tmp_path):
    result = run_cli("investigate", *inputs(case), "--out", str(tmp_path / "out"), "--state-dir", "", env_home=tmp_path / "home")
    assert result.returncode == 2 and "'state_dir'" in result.stderr, result.stderr
    assert everything_under(tmp_path) == []


def test_out_that_is_a_file_is_refused_before_the_run(case, tmp_path):
    blocker = tmp_path / "out"
    blocker.write_text("not a directory\n")
    result = run_cli("investigate", *inputs(case), "--out", str(blocker), "--auto-approve", env_home=tmp_path / "home")
    assert result.returncode == 2, result.stderr
    assert f"--out {blocker} is not a directory" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "home").exists()


# ------------------------------------------------------------------ 11. one decision per approval request


@contextmanager
def write_lock(store: Path) -> Iterator[None]:
    """Hold the SQLite file's write lock: readers go on (WAL), every writer waits for it."""
    conn = sqlite3.connect(store, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def connections_to(store: Path, proc: subprocess.Popen) -> int:
    """How many descriptors the running process has open on `store` (Linux /proc)."""
    assert proc.poll() is None, (proc.returncode, proc.stderr.read()[-2000:])
    count = 0
    for fd in Path(f"/proc/{proc.pid}/fd").iterdir():
        try:
            count += os.readlink(fd) == str(store)
        except OSError:  # closed meanwhile
            pass
    return count


def all_claiming(store: Path, procs: list[subprocess.Popen]) -> bool:
    """Every process waits in its claim: besides the checkpointer's, it has the claim's connection open."""
    return all(connections_to(store, proc) == 2 for proc in procs)


def wait_for(condition, *args, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition(*args):
        assert time.monotonic() < deadline, f"timed out waiting for {condition.__name__}"
        time.sleep(0.01)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc to see where each process is")
def test_two_people_deciding_at_once_exactly_one_decision_is_taken(waiting_home, tmp_path):
    """Both processes must have read the waiting thread before either decides, or the second
    would only find the first one's recorded decision: the test holds the checkpoint file's
    write lock until both wait inside their claim (the claim opens a second connection to the
    file), then releases it and they race on the claim itself."""
    winners, thread = [], "waiting"
    decisions = {"alice": ["--approve"], "bob": ["--reject", "not during the sale"]}
    for round_ in range(5):
        home = copy_of(waiting_home, tmp_path / f"home-{round_}")
        store = home / "checkpoints.sqlite"
        outs = {who: tmp_path / f"out-{round_}-{who}" for who in decisions}
        with write_lock(store):
            # $USER and $LOGNAME are the caller's to set: the recorded identity must not come from them.
            procs = {who: cli_process("resume", "--thread-id", thread, *decisions[who], "--by", who, "--out", str(outs[who]),
                                      home=home, USER="mallory", LOGNAME="mallory")
                     for who in decisions}
            wait_for(all_claiming, store, list(procs.values()))
        results = {who: (*proc.communicate(timeout=120), proc.returncode) for who, proc in procs.items()}
        codes = sorted(code for _, _, code in results.values())
        assert codes == [0, 2], {who: (code, err[-2000:]) for who, (_, err, code) in results.items()}
        winner = next(who for who, (_, _, code) in results.items() if code == 0)
        loser = "bob" if winner == "alice" else "alice"
        winners.append(winner)

        _, loser_err, _ = results[loser]
        assert f"error: thread {thread} is already decided: another process (CLI or server) answered" in loser_err, loser_err
        assert "Traceback" not in loser_err
        assert not outs[loser].exists()  # the loser wrote nothing
        approval = postmortem(outs[winner])["approval"]
        assert approval["by"] == winner
        assert approval["action"] == ("approve" if winner == "alice" else "reject")
        assert approval["authenticated_as"] == f"local user {REAL_USER}"
        winner_out, _, _ = results[winner]
        assert f"decision: {approval['action']} by {winner} (local user {REAL_USER})" in winner_out
    print("winners:", winners)

    # A third decision once the thread has finished is refused too, and changes nothing.
    written = (outs[winner] / "postmortem.json").read_bytes()
    late = run_cli("resume", "--thread-id", thread, "--approve", "--by", "carol", "--out", str(outs[winner]), env_home=home)
    assert late.returncode == 2, late.stderr
    assert f"thread {thread} is already decided: {approval['action']} by {winner}" in late.stderr and "it has finished" in late.stderr
    assert (outs[winner] / "postmortem.json").read_bytes() == written


def test_a_decision_claimed_by_another_entry_point_is_refused(waiting_home, tmp_path):
    """The server's workers claim in the same table of the same file: a claim they hold stops the CLI."""
    home, out = copy_of(waiting_home, tmp_path / "home"), tmp_path / "out"
    store = home / "checkpoints.sqlite"
    request = waiting_request_id(store, "waiting")
    assert claim_in_sqlite(store, decision_claim_key("waiting", request), "server worker 1")
    result = run_cli("resume", "--thread-id", "waiting", "--approve", "--out", str(out), env_home=home)
    assert result.returncode == 2, result.stderr
    assert f"answered approval request {request} first; nothing was written" in result.stderr
    assert not out.exists()


# ------------------------------------------------------------------ 16. --out on resume, prod labels, full disks


def test_resume_writes_where_its_out_says(waiting_home, tmp_path):
    home, second = copy_of(waiting_home, tmp_path / "home"), tmp_path / "second"
    resumed = run_cli("resume", "--thread-id", "waiting", "--approve", "--out", str(second), env_home=home)
    assert resumed.returncode == 0, resumed.stderr
    assert postmortem(second)["approval"]["action"] == "approve"
    assert not (waiting_home.parent / "first-out").exists()  # the --out investigate was given


RESTART_LABELLED_SAFE = {
    "id": "M9", "hypothesis_id": "H1", "mechanism": "tls", "title": "Restart the database",
    "steps": ["Check the certificate chain", "Restart the database"], "rollback": "none", "owner": "dba",
    "eta_minutes": 5, "touches_prod": False,
}


def test_edited_plan_restart_labelled_no_prod_change_is_recorded_as_touching_prod(waiting_home, tmp_path):
    home, out = copy_of(waiting_home, tmp_path / "home"), tmp_path / "out"
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps([RESTART_LABELLED_SAFE]))
    resumed = run_cli("resume", "--thread-id", "waiting", "--plan", str(plan), "--by", "carol", "--out", str(out), env_home=home)
    assert resumed.returncode == 0, resumed.stderr
    [mitigation] = postmortem(out)["mitigations"]
    assert mitigation["touches_prod"] is True
    assert mitigation["prod_change"] == 'step 2 says "Restart"'
    assert 'Restart the database (approved; touches prod (proposed as no prod change: step 2 says "Restart")' in resumed.stdout


class RestartLabelledSafe:
    """A model that investigates briefly, then proposes a restart it labels 'no prod change'."""

    def __call__(self, body: dict) -> Reply:
        tools = {t["function"]["name"] for t in body.get("tools") or []}
        if "change_events" in tools:
            if any(m["role"] == "tool" for m in body["messages"]):
                return Reply(content="The certificate of the root service expired; see the evidence above.")
            return Reply(tool_calls=[("log_pattern_scan", {}), ("service_error_onsets", {"start": None}), ("change_events", {})])
        if "MitigationPlan" in tools:
            return Reply(tool_calls=[("MitigationPlan", {"mitigations": [RESTART_LABELLED_SAFE]})])
        return Reply(status=400, error_message="the offline analyst answers this phase")


def test_model_plan_restart_labelled_no_prod_change_is_shown_as_touching_prod(case, tmp_path, monkeypatch):
    monkeypatch.setenv("INCIDENT_GRAPH_LLM_RETRIES", "0")
    with FakeOpenAIServer(RestartLabelledSafe()) as server:
        started = run_cli("investigate", *inputs(case), "--out", str(tmp_path / "out"), "--quiet", *model_flags(server),
                          env_home=tmp_path / "home")
    assert started.returncode == 3, started.stderr[-3000:]
    assert 'M9. Restart the database (touches prod (proposed as no prod change: step 2 says "Restart");' in started.stdout


def test_plan_line_shows_what_a_step_does_over_its_label():
    plan = [Mitigation.model_validate({**RESTART_LABELLED_SAFE, "id": i, "touches_prod": prod, "steps": steps})
            for i, prod, steps in (("M1", False, ["Page the owner"]), ("M2", True, ["Roll back"]), ("M3", False, ["Check", "restart it"]))]
    lines = [plan_line(m) for m in labelled(plan)]
    assert "(no prod change; owner dba; ETA 5 min)" in lines[0]
    assert "(touches prod; owner dba" in lines[1]
    assert '(touches prod (proposed as no prod change: step 2 says "restart"); owner dba' in lines[2]
    assert "(approved; touches prod;" in plan_line(plan[1].model_copy(update={"status": "approved"}))


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 600 kB tmpfs: a disk that can really be filled or made read-only (needs root and mount)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount_point)], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root and mount permission): {made.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def fill(disk: Path) -> Path:
    """Write zeros until the file system refuses another byte."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while f.write(b"\0" * 4096):
                pass
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def remount(disk: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(disk)], check=True)


DISK_FAULTS = {
    # fault: (make it, its message, fix it; None: leave it and finish into another --out)
    "full-then-freed": (fill, "no space left on device (ENOSPC)", lambda disk: (disk / "filler").unlink()),
    "read-only-then-another-out": (lambda disk: remount(disk, "ro"), "read-only file system (EROFS)", None),
}


@pytest.mark.parametrize("fault", list(DISK_FAULTS))
def test_out_on_a_failing_disk_is_a_clear_error_and_the_thread_finishes_later(fault, waiting_home, tmp_path, small_tmpfs):
    make, message, fix = DISK_FAULTS[fault]
    home, disk = copy_of(waiting_home, tmp_path / "home"), small_tmpfs
    make(disk)

    failed = run_cli("resume", "--thread-id", "waiting", "--approve", "--by", "alice", "--out", str(disk), env_home=home)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "error: thread waiting stopped: " + message in failed.stderr
    assert f"finish it with: incident-graph resume --thread-id waiting --out {disk}" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert sorted(p.name for p in disk.iterdir()) == (["filler"] if make is fill else [])  # nothing half-written

    again = run_cli("resume", "--thread-id", "waiting", "--approve", "--out", str(disk), env_home=home)
    assert again.returncode == 2 and "already decided: approve by alice" in again.stderr, again.stderr
    assert "resume it without --approve, --reject or --plan to finish it" in again.stderr

    if fix:
        fix(disk)
    out = disk if fix else tmp_path / "elsewhere"
    finished = run_cli("resume", "--thread-id", "waiting", "--out", str(out), env_home=home)
    assert finished.returncode == 0, finished.stderr
    assert "[approve]" not in finished.stdout  # the decision came from the checkpoint, not again
    approval = postmortem(out)["approval"]
    assert (approval["action"], approval["by"]) == ("approve", "alice")


# ------------------------------------------------------------------ the decision flags
# Refused before the checkpoint file is opened, so `main` runs in this process (a refusal costs
# no interpreter start); an exception escaping it would fail the test as a traceback would.

HUGE = 4 * 2**20 + 1
BAD_PLANS = {
    "missing": (None, "cannot be read: No such file or directory"),
    "a-directory": ("dir", "cannot be read: Is a directory"),
    "huge": (b" " * HUGE, "is larger than 4 MiB"),
    "not-json": (b"restart everything", "is not valid JSON"),
    "not-utf8": (b'["\xc3\x28"]', "is not valid JSON"),
    "nested-too-deeply": (b"[" * 200_000, "nested too deeply"),
    "an-object": (b'{"id": "M1"}', "'mitigations': Input should be a valid list"),
    "empty": (b"[]", "an edited plan must keep at least one mitigation"),
    "missing-fields": (b'[{"id": "M1"}]', "'mitigations.0.hypothesis_id': Field required"),
    "too-many": (json.dumps([RESTART_LABELLED_SAFE] * 31).encode(), "'mitigations': List should have at most 30 items"),
}


def resume_in_process(*flags: str, out: Path) -> int:
    from cli import main

    return main(["resume", "--thread-id", "t", *flags, "--out", str(out)])


@pytest.mark.parametrize("kind", list(BAD_PLANS))
def test_bad_plan_file_is_a_clear_error_before_anything_is_touched(kind, tmp_path, state_dir, capsys):
    content, message = BAD_PLANS[kind]
    plan = tmp_path / "plan.json"
    if content == "dir":
        plan.mkdir()
    elif content is not None:
        plan.write_bytes(content)
    assert resume_in_process("--plan", str(plan), out=tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert f"error: --plan {plan}" in err and message in err, err[-2000:]
    assert not state_dir.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, message", [
    (["--approve", "--by", "x" * 301], "'by': String should have at most 300 characters"),
    (["--reject", "n" * 4001], "'note': String should have at most 4000 characters"),
])
def test_over_long_decision_text_is_a_clear_error(flags, message, tmp_path, state_dir, capsys):
    assert resume_in_process(*flags, out=tmp_path / "out") == 2
    assert f"error: decision: {message}" in capsys.readouterr().err
    assert not state_dir.exists()


def test_bad_plan_on_a_waiting_thread_leaves_the_decision_open(waiting_home, tmp_path):
    """Refused before the claim: a malformed answer does not use up the one decision."""
    home, out, plan = copy_of(waiting_home, tmp_path / "home"), tmp_path / "out", tmp_path / "plan.json"
    plan.write_bytes(b"[" * 200_000)
    refused = run_cli("resume", "--thread-id", "waiting", "--plan", str(plan), "--out", str(out), env_home=home)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "is not a plan: its JSON is nested too deeply" in refused.stderr and "Traceback" not in refused.stderr
    approved = run_cli("resume", "--thread-id", "waiting", "--approve", "--by", "dana", "--out", str(out), env_home=home)
    assert approved.returncode == 0, approved.stderr
    assert postmortem(out)["approval"]["by"] == "dana"
