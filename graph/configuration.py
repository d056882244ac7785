"""Typed runtime configuration, read from a `RunnableConfig`'s `configurable` section.

LangServe does not pass `context`, so everything lives in `configurable`; environment
variables supply the defaults a deployment sets once (model, endpoint).
"""

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig

OFFLINE_MODEL = "offline-analyst"


@dataclass(frozen=True)
class Configuration:
    model: str = OFFLINE_MODEL
    base_url: str | None = None
    temperature: float = 0.0
    max_steps: int = 8
    token_budget: int = 200_000
    redact: bool = True
    llm_retries: int = 2
    llm_timeout_s: float = 60.0
    critic_rounds: int = 2
    auto_approve: bool = False
    sql_timeout_s: float = 5.0
    sql_max_rows: int = 200
    change_lookback_minutes: int = 120
    onset_lookback_minutes: int = 60
    tool_result_chars: int = 6000
    approver: str = "on-call"
    state_dir: str = field(default_factory=lambda: os.environ.get("INCIDENT_GRAPH_HOME") or str(Path.home() / ".incident-graph"))

    @property
    def uses_llm(self) -> bool:
        return self.model != OFFLINE_MODEL

    @classmethod
    def from_runnable_config(cls, config: RunnableConfig | None = None) -> "Configuration":
        configurable: dict[str, Any] = dict((config or {}).get("configurable") or {})
        values: dict[str, Any] = {}
        env_defaults = {
            "model": os.environ.get("INCIDENT_GRAPH_MODEL") or _env_model(),
            "base_url": os.environ.get("OPENAI_BASE_URL"),
        }
        for f in fields(cls):
            raw = configurable.get(f.name, env_defaults.get(f.name))
            if raw is None:
                continue
            values[f.name] = _coerce(f.type, raw, f.name)
        return cls(**values)


def _env_model() -> str | None:
    # An endpoint or key alone means "use the LLM" with a conventional default model name.
    if os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"):
        return "gpt-4o-mini"
    return None


def _coerce(kind: Any, raw: Any, name: str) -> Any:
    kind_name = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    try:
        if "bool" in kind_name:
            return raw if isinstance(raw, bool) else str(raw).strip().lower() in {"1", "true", "yes", "on"}
        if kind_name == "int":
            return int(raw)
        if kind_name == "float":
            return float(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"configuration '{name}': expected {kind_name}, got {raw!r}") from exc
    return raw
