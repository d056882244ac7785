"""Shared fixtures: generated scenarios on disk (made once per session) and an isolated state dir."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from evals.generator import generate, write_scenario

REPO = Path(__file__).resolve().parent.parent


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
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "INCIDENT_GRAPH_MODEL"):
        monkeypatch.delenv(var, raising=False)
    return path


def run_cli(*args: str, env_home: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real `incident-graph` command in its own process."""
    env = {k: v for k, v in os.environ.items() if k not in {"OPENAI_API_KEY", "OPENAI_BASE_URL", "INCIDENT_GRAPH_MODEL"}}
    env["INCIDENT_GRAPH_HOME"] = str(env_home)
    return subprocess.run(
        [sys.executable, str(REPO / "cli.py"), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO
    )
