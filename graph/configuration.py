"""Typed runtime configuration, read from a `RunnableConfig`'s `configurable` section.

LangServe does not pass `context`, so everything lives in `configurable`; environment
variables supply the defaults a deployment sets once (model, endpoint).
"""

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from typing_extensions import TypedDict

OFFLINE_MODEL = "offline-analyst"
DEFAULT_LLM_MODEL = "gpt-4o-mini"
STRUCTURED_OUTPUT_METHODS = ("function_calling", "json_mode")


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
    # How structured answers are requested: a forced tool call, or JSON mode for servers whose
    # tool calling is unreliable. Never strict json_schema: many local servers reject it.
    structured_output: str = "function_calling"
    max_output_tokens: int | None = None  # per reply; None: the server's default
    critic_rounds: int = 2
    auto_approve: bool = False
    sql_timeout_s: float = 5.0
    sql_max_rows: int = 200
    change_lookback_minutes: int = 120
    onset_lookback_minutes: int = 60
    tool_result_chars: int = 6000
    approver: str = "on-call"
    # Set by the server: inputs must lie under one of input_roots (os.pathsep-separated; relative
    # paths resolve against the first), and artifacts go to artifacts_dir/<thread> whatever out_dir
    # a caller asked for, so an HTTP client can neither read nor write elsewhere.
    input_roots: str | None = None
    artifacts_dir: str | None = None
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
            "structured_output": os.environ.get("INCIDENT_GRAPH_STRUCTURED_OUTPUT"),
            "max_output_tokens": os.environ.get("INCIDENT_GRAPH_MAX_OUTPUT_TOKENS"),
        }
        for f in fields(cls):
            raw = configurable.get(f.name, env_defaults.get(f.name))
            if raw is None:
                continue
            values[f.name] = _coerce(f.type, raw, f.name)
        if "model" not in values and values.get("base_url"):
            # An endpoint alone (e.g. --base-url) means "use it", with a conventional model name.
            values["model"] = DEFAULT_LLM_MODEL
        if values.get("structured_output", "function_calling") not in STRUCTURED_OUTPUT_METHODS:
            raise ValueError(
                f"configuration 'structured_output': expected one of {', '.join(STRUCTURED_OUTPUT_METHODS)}, "
                f"got {values['structured_output']!r}"
            )
        return cls(**values)


def _env_model() -> str | None:
    # An endpoint or key alone means "use the LLM" with a conventional default model name.
    if os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"):
        return DEFAULT_LLM_MODEL
    return None


def _coerce(kind: Any, raw: Any, name: str) -> Any:
    kind_name = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    try:
        if "bool" in kind_name:
            return raw if isinstance(raw, bool) else str(raw).strip().lower() in {"1", "true", "yes", "on"}
        if kind_name in {"int", "int | None"}:
            return int(raw)
        if kind_name == "float":
            return float(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"configuration '{name}': expected {kind_name}, got {raw!r}") from exc
    return raw


# Fields the server sets itself for every request; a client cannot choose them.
SERVER_PINNED = frozenset({"state_dir", "input_roots", "artifacts_dir"})

# The graph's context schema: what LangServe lets clients send under `configurable` (it drops
# keys a graph does not declare) and what LangGraph Studio shows as the assistant's settings.
ConfigurableSettings = TypedDict(
    "ConfigurableSettings", {f.name: f.type for f in fields(Configuration) if f.name not in SERVER_PINNED}, total=False
)
