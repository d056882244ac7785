"""Shared fixtures: generated scenarios on disk (made once per session) and an isolated state dir."""

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from evals.generator import generate, write_scenario
from tests.processes import LLM_ENV, ServerProcess, free_port

# Tests that drive real processes and servers (the CLI, uvicorn, PostgreSQL, Prometheus,
# Chromium, `langgraph dev`, the OpenAI-protocol stand-in): `make unit` leaves them out. A test
# is one when its module is listed here or it asks for one of the fixtures.
INTEGRATION_MODULES = frozenset({
    "test_bad_input", "test_benchmarks", "test_cli", "test_cli_security", "test_crash_resume", "test_hostile_sql",
    "test_llm_mode", "test_load", "test_page", "test_prompt_context", "test_server", "test_server_security",
    "test_sources_logs", "test_sources_parquet", "test_sources_prometheus", "test_studio",
})
INTEGRATION_FIXTURES = frozenset({"live_server", "postgres_server", "postgres_dsn", "fake_model"})


def pytest_collection_modifyitems(items):
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in INTEGRATION_MODULES or INTEGRATION_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def scenario_dir(tmp_path_factory):
    """Factory: (fault, seed) -> folder with metrics.csv, logs.csv, events.csv, truth.json."""
    made: dict[tuple[str, int], Path] = {}

    def make(fault: str, seed: int) -> Path:
        if (fault, seed) not in made:
            folder = tmp_path_factory.mktemp(f"{fault}-{seed}")
            write_scenario(generate(fault, seed), folder)
            made[(fault, seed)] = folder
        return made[(fault, seed)]

    return make


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    path = tmp_path / "state"
    monkeypatch.setenv("INCIDENT_GRAPH_HOME", str(path))
    for var in LLM_ENV:
        monkeypatch.delenv(var, raising=False)
    return path


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.call_failed = report.failed
    return report


@pytest.fixture
def live_server(request, tmp_path):
    """Factory: start servers that share a state dir unless told otherwise; all stopped at the end.
    When the test failed, each server's log ends the test's output: what the server saw is the
    only record of a failure that shows up on a loaded CI machine alone."""
    started: list[ServerProcess] = []

    def start(home: Path | None = None, port: int | None = None, workers: int = 1, **env: str) -> ServerProcess:
        server = ServerProcess(home or tmp_path / "state", env, port, workers=workers)
        started.append(server.start())
        return server

    yield start
    for server in started:
        server.stop()
        if getattr(request.node, "call_failed", False) and server.log.exists():
            print(f"\n--- {server.log} (last 6000 characters) ---\n{server.log.read_text(errors='replace')[-6000:]}")


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@pytest.fixture(scope="session")
def postgres_server():
    """A private PostgreSQL cluster on a loopback port (Debian's server binaries), or $TEST_POSTGRES_DSN."""
    if os.environ.get("TEST_POSTGRES_DSN"):
        yield os.environ["TEST_POSTGRES_DSN"]
        return
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql); set TEST_POSTGRES_DSN to use another")
    # Not under pytest's tmp dir: that is private to root, and initdb refuses to run as root, so
    # the cluster runs as the postgres user in a directory of its own.
    home = Path(tempfile.mkdtemp(prefix="incident-graph-pg-"))
    data = home / "data"
    data.mkdir()
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(home, "postgres")
        shutil.chown(data, "postgres")
    port = free_port()
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"], check=True, capture_output=True)
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(data / "log"), "-w", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def postgres_dsn(postgres_server):
    """A fresh database per test on the shared cluster."""
    import psycopg

    name = f"ig_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_server.rsplit("/", 1)[0] + f"/{name}"
