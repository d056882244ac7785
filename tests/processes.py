"""The product as real processes, for tests and benchmarks: `incident-graph serve` on a loopback
port, the CLI, and a look into the checkpoint file they leave. Not part of the installed package."""

import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
from langgraph.checkpoint.sqlite import SqliteSaver

from graph.checkpointing import serializer
from graph.graph import build_graph

REPO = Path(__file__).resolve().parent.parent
LLM_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "INCIDENT_GRAPH_MODEL", "INCIDENT_GRAPH_STRUCTURED_OUTPUT", "INCIDENT_GRAPH_MAX_OUTPUT_TOKENS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, process: subprocess.Popen | None = None, timeout: float = 60) -> None:
    """Until `url` answers 2xx; fails early if the server's process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


class ServerProcess:
    """One server process with its own environment (state dir, API key, DSN ...) and log file."""

    def __init__(self, home: Path, env: dict[str, str], port: int | None = None, log: Path | None = None, workers: int = 1,
                 host: str = "127.0.0.1"):
        self.home, self.extra_env, self.workers, self.host = home, env, workers, host
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log = log or home.parent / f"server-{self.port}.log"

    def start(self) -> "ServerProcess":
        # Only what the caller sets: no model endpoint or server setting leaks in from the shell.
        env = {k: v for k, v in os.environ.items() if k not in LLM_ENV and not k.startswith("INCIDENT_GRAPH_")}
        env.update(INCIDENT_GRAPH_HOME=str(self.home), **self.extra_env)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, str(REPO / "cli.py"), "serve", "--host", self.host, "--port", str(self.port), "--workers", str(self.workers)],
            cwd=REPO, env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
        )
        try:
            wait_http(f"{self.url}/healthz", self.process)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}\n{self.log.read_text()[-3000:]}") from exc
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers run, exactly like a crashed worker."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def run_cli(*args: str, env_home: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real `incident-graph` command in its own process."""
    env = {k: v for k, v in os.environ.items() if k not in LLM_ENV}
    env["INCIDENT_GRAPH_HOME"] = str(env_home)
    return subprocess.run(
        [sys.executable, str(REPO / "cli.py"), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO
    )


def waiting_request_id(store: Path, thread: str) -> str:
    """The id of the approval request the thread waits on, read from its checkpoint file."""
    conn = sqlite3.connect(store)
    try:
        snapshot = build_graph(SqliteSaver(conn, serde=serializer())).get_state({"configurable": {"thread_id": thread}})
    finally:
        conn.close()
    return next(pending.id for task in snapshot.tasks for pending in task.interrupts)
