"""Typed runtime configuration, read from a `RunnableConfig`'s `configurable` section.

LangServe does not pass `context`, so everything lives in `configurable`. Who may set what:

- the operator (environment of the process, CLI flags): every field. `INCIDENT_GRAPH_<FIELD>`
  (e.g. `INCIDENT_GRAPH_MAX_STEPS=12`) sets a field's default for a deployment; the model
  endpoint also comes from `OPENAI_BASE_URL`, and the state dir from `INCIDENT_GRAPH_HOME`.
  `auto_approve` never comes from the environment: only an explicit CLI flag turns it on.
- an HTTP client: only the fields in `CLIENT_SETTABLE`, within the same bounds. The server
  refuses any other key (`client_overrides`) and pins its own paths; the model endpoint, key,
  name, redaction, the approval settings and every limit stay the operator's.

Every field has bounds and a description (LangGraph Studio shows them as the assistant's
settings), so a value out of range is a clear error wherever it comes from.
"""

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from typing_extensions import TypedDict

from tools.detection import parse_window_choice

OFFLINE_MODEL = "offline-analyst"
DEFAULT_LLM_MODEL = "gpt-4o-mini"
STRUCTURED_OUTPUT_METHODS = ("function_calling", "json_mode")
ENV_PREFIX = "INCIDENT_GRAPH_"


def _default_state_dir() -> str:
    return os.environ.get("INCIDENT_GRAPH_HOME") or str(Path.home() / ".incident-graph")


class Configuration(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    model: str = Field(OFFLINE_MODEL, min_length=1, max_length=200,
                       description="Chat model name, or 'offline-analyst' for the embedded deterministic analyst.")
    base_url: str | None = Field(None, max_length=2000, description="OpenAI-compatible endpoint (vLLM, Ollama, llama.cpp, OpenAI).")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Sampling temperature of the model.")
    max_steps: int = Field(8, ge=1, le=64, description="ReAct steps (model turns) before the investigation must conclude.")
    token_budget: int = Field(200_000, ge=1, le=20_000_000, description="Tokens in + out one run may spend on the model.")
    redact: bool = Field(True, description="Mask identifiers and secrets in everything sent to the model.")
    llm_retries: int = Field(2, ge=0, le=10, description="Retries of one model call after a transport error or an invalid reply.")
    llm_timeout_s: float = Field(60.0, gt=0.0, le=600.0, description="Seconds one model request may take.")
    # Never strict json_schema: many local servers reject it.
    structured_output: Literal["function_calling", "json_mode"] = Field(
        "function_calling", description="How structured answers are requested: a forced tool call, or JSON mode for servers "
        "whose tool calling is unreliable.")
    max_output_tokens: int | None = Field(None, ge=1, le=200_000, description="Tokens per model reply; unset: the server's default.")
    critic_rounds: int = Field(2, ge=0, le=6, description="Rounds of the critic's debate over the hypotheses.")
    auto_approve: bool = Field(False, description="Approve the mitigation plan without asking a human (CLI --auto-approve only).")
    sql_timeout_s: float = Field(5.0, gt=0.0, le=120.0, description="Seconds one model-written SQL query may run.")
    sql_max_rows: int = Field(200, ge=1, le=10_000, description="Rows one model-written SQL query may return.")
    change_lookback_minutes: int = Field(120, ge=1, le=10_080, description="How far before the window change events are looked for.")
    onset_lookback_minutes: int = Field(60, ge=1, le=1_440, description="How far before the window error onsets are looked for.")
    window: str | None = Field(None, max_length=200, description="Which incident window to investigate: a rank (1 = highest impact, "
                               "the default) or START..END in ISO 8601.")
    tool_result_tokens: int = Field(2000, ge=50, le=50_000, description="Tokens (cl100k_base) of one tool result the model sees.")
    approver: str = Field("on-call", min_length=1, max_length=200, description="Who an auto-approval is recorded as.")
    # Set by the server: inputs must lie under one of input_roots (os.pathsep-separated; relative
    # paths resolve against the first), and artifacts go to artifacts_dir/<thread> whatever out_dir
    # a caller asked for, so an HTTP client can neither read nor write elsewhere.
    input_roots: str | None = Field(None, description="Set by the server: the only directories inputs may come from.")
    artifacts_dir: str | None = Field(None, description="Set by the server: where every thread's postmortem is written.")
    state_dir: str = Field(default_factory=_default_state_dir, min_length=1,
                           description="Checkpoints and work databases ($INCIDENT_GRAPH_HOME or ~/.incident-graph).")

    @field_validator("window")
    @classmethod
    def _window_is_a_rank_or_a_range(cls, value: str | None) -> str | None:
        if value is not None:
            parse_window_choice(value)
        return value

    @model_validator(mode="before")
    @classmethod
    def _endpoint_means_llm(cls, values: Any) -> Any:
        # An endpoint alone (e.g. --base-url) means "use it", with a conventional model name.
        if isinstance(values, dict) and values.get("base_url") and not values.get("model"):
            return {**values, "model": DEFAULT_LLM_MODEL}
        return values

    @property
    def uses_llm(self) -> bool:
        return self.model != OFFLINE_MODEL

    @property
    def recursion_limit(self) -> int:
        """LangGraph's super-step limit for one run: the investigation takes two per ReAct step
        (model, tools) plus its brief and conclusion; the outer graph has eight nodes."""
        return 2 * self.max_steps + 16

    @classmethod
    def from_runnable_config(cls, config: RunnableConfig | None = None) -> "Configuration":
        configurable: Mapping[str, Any] = (config or {}).get("configurable") or {}
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = configurable.get(name)
            if raw is None:
                raw = _env_default(name)
            if raw is not None:
                values[name] = raw
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ValueError(f"configuration: {readable_errors(exc)}") from None


# Fields whose default a deployment sets in the environment under another name.
_ENV_ALIASES = {"base_url": ("OPENAI_BASE_URL",), "state_dir": ("INCIDENT_GRAPH_HOME",)}
# Never from the environment: turning the human gate off must be an explicit flag of one run,
# and the server's paths are pinned per request.
_NOT_FROM_ENV = frozenset({"auto_approve", "approver", "input_roots", "artifacts_dir"})


def _env_default(name: str) -> str | None:
    if name in _NOT_FROM_ENV:
        return None
    for var in (*_ENV_ALIASES.get(name, ()), ENV_PREFIX + name.upper()):
        if os.environ.get(var):
            return os.environ[var]
    if name == "model" and (os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL")):
        return DEFAULT_LLM_MODEL  # a key or endpoint alone means "use the LLM"
    return None


def readable_errors(exc: ValidationError, limit: int = 5) -> str:
    """'max_steps: Input should be less than or equal to 64 (got 500); ...'"""
    parts = [f"'{'.'.join(map(str, e['loc'])) or 'value'}': {e['msg']} (got {e.get('input')!r:.80})" for e in exc.errors()[:limit]]
    return "; ".join(parts)


# What an HTTP client may choose for its own run: analysis windows, within the bounds above.
# Everything else (model, endpoint, key, redaction, approval, every limit) is the operator's.
CLIENT_SETTABLE = frozenset({"change_lookback_minutes", "onset_lookback_minutes", "window"})
# Fields the server sets itself for every request.
SERVER_PINNED = frozenset({"state_dir", "input_roots", "artifacts_dir"})
# Keys LangGraph itself puts in `configurable`, which are not settings.
_RUNTIME_KEYS = frozenset({"thread_id", "checkpoint_id", "checkpoint_ns", "run_id"})


class ClientSettingRefused(ValueError):
    """An HTTP client asked for a setting only the operator may choose, or out of bounds."""


def client_overrides(requested: Mapping[str, Any] | None) -> dict[str, Any]:
    """The settings an HTTP client asked for, checked: only CLIENT_SETTABLE keys, each within
    its bounds. Anything else is refused (not silently dropped), naming the key."""
    requested = {k: v for k, v in (requested or {}).items() if k not in _RUNTIME_KEYS and v is not None}
    refused = sorted(set(requested) - CLIENT_SETTABLE)
    if refused:
        raise ClientSettingRefused(
            f"configurable {', '.join(map(repr, refused))} may only be set by the server's operator; "
            f"a client may set {', '.join(sorted(CLIENT_SETTABLE))}")
    try:
        checked = Configuration.model_validate(requested)
    except ValidationError as exc:
        raise ClientSettingRefused(f"configurable: {readable_errors(exc)}") from None
    return {name: getattr(checked, name) for name in requested}


THREAD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class InvalidThreadId(ValueError):
    """A thread id that could name a path outside its directory, or is not one."""


def validate_thread_id(thread_id: Any) -> str:
    """The one rule for thread ids (CLI, API headers, LangServe): 1-128 of [A-Za-z0-9_.-],
    starting with a letter or digit, so an id is always a single, plain file name."""
    if not isinstance(thread_id, str) or not THREAD_ID.fullmatch(thread_id):
        raise InvalidThreadId(f"thread id {str(thread_id)[:60]!r} is not valid: use 1-128 letters, digits, '_', '-' or '.', "
                              f"starting with a letter or digit")
    return thread_id


def thread_id_of(config: RunnableConfig | None) -> str:
    """The run's thread id, validated; 'default' for a run without one (no checkpointer)."""
    return validate_thread_id(((config or {}).get("configurable") or {}).get("thread_id", "default"))


def thread_path(base: str | Path, thread_id: str, suffix: str = "") -> Path:
    """base/<thread_id><suffix>, which cannot leave base whatever the id holds."""
    root = Path(base).resolve()
    path = root / f"{validate_thread_id(thread_id)}{suffix}"
    if path.parent != root:  # unreachable with a valid id; kept as the invariant paths rely on
        raise InvalidThreadId(f"thread id {thread_id!r} leaves {root}")
    return path


def runnable_config(thread_id: str, configurable: Mapping[str, Any] | None = None) -> RunnableConfig:
    """The config of one run: validated settings, the thread id, and a recursion limit that
    follows max_steps (so no max_steps can end a run in GraphRecursionError)."""
    configurable = {**(configurable or {}), "thread_id": validate_thread_id(thread_id)}
    settings = Configuration.from_runnable_config({"configurable": configurable})
    return {"configurable": configurable, "recursion_limit": settings.recursion_limit}


# The graph's context schema: what LangServe lets clients send under `configurable` (it drops
# keys a graph does not declare; the server then refuses all but CLIENT_SETTABLE) and what
# LangGraph Studio shows as the assistant's settings.
ConfigurableSettings = TypedDict(
    "ConfigurableSettings",
    {name: f.annotation for name, f in Configuration.model_fields.items() if name not in SERVER_PINNED},
    total=False,
)
