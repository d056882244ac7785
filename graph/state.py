"""The graph's typed state and the pydantic models it carries.

Every structured thing the investigation produces (evidence, hypotheses, critic verdicts,
mitigations, the human decision, the postmortem) is a pydantic model so that model output,
offline or LLM, is validated before it is trusted.
"""

import operator
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NotRequired

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)
from typing_extensions import TypedDict

POSTMORTEM_SCHEMA_VERSION = "2.2"



def _plain_utc(value: datetime) -> datetime:
    # A plain datetime even from a pandas Timestamp (a subclass), which the checkpoint serializer
    # refuses to revive.
    utc = value.astimezone(UTC)
    return datetime.combine(utc.date(), utc.timetz())


# An instant with its zone, held in UTC: ISO text with any offset is accepted, naive text is not
# (it could be any zone); JSON shows it as `...Z`.
UtcInstant = Annotated[AwareDatetime, AfterValidator(_plain_utc)]


class Evidence(BaseModel):
    """One tool result or computation, citable by id."""

    id: str
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    method: str = Field(description="The SQL or the computation that produced the numbers.")
    summary: str
    data: dict[str, Any] = Field(default_factory=dict)


class IncidentWindow(BaseModel):
    start: UtcInstant
    end: UtcInstant

    @property
    def minutes(self) -> float:
        return (self.end - self.start).total_seconds() / 60.0


class WindowSummary(BaseModel):
    """One incident window the detector found, as the postmortem and the API list them."""

    rank: int = Field(ge=1, description="1 = highest impact.")
    start: UtcInstant
    end: UtcInstant
    minutes: float
    impact: float = Field(description="z-minutes of deviation times the number of signals that deviated.")
    peak_z: float
    signals: list[str] = Field(description="The metrics that left their baseline in it, strongest first.")


class Detection(BaseModel):
    incident_detected: bool
    window: IncidentWindow | None = None
    signals: list[dict[str, Any]] = Field(default_factory=list)
    evidence_id: str
    windows: list[WindowSummary] = Field(default_factory=list, description="Every incident window found, highest impact first.")
    investigated_rank: int | None = Field(None, description="The rank of the window investigated; None when the operator gave START..END.")


class Hypothesis(BaseModel):
    id: str
    service: str
    kind: str = Field(description="Error kind or mechanism name, e.g. DBConnPoolExhausted.")
    mechanism: str = Field(description="Mechanism class used to pick mitigations, e.g. 'connection_pool'.")
    signature: str = Field(description="Representative masked log template of the fault.")
    confidence: float = Field(ge=0.0, le=1.0)
    summary: str
    evidence_ids: list[str] = Field(min_length=1)
    support: dict[str, Any] = Field(default_factory=dict)
    status: Literal["proposed", "upheld", "weakened", "overturned"] = "proposed"
    source: Literal["offline", "model", "model+statistics", "statistics"] = Field(
        default="offline", description="Who proposed it: the offline analyst, or the LLM merged with the statistical ranking."
    )
    unconfirmed: str | None = Field(
        default=None, description="Why the critic could not confirm it (missing or non-supporting citations); None when grounded."
    )

    @field_validator("evidence_ids")
    @classmethod
    def _no_blank_ids(cls, ids: list[str]) -> list[str]:
        if any(not i.strip() for i in ids):
            raise ValueError("evidence ids must be non-empty strings")
        return ids


class HypothesisSet(BaseModel):
    """What the hypothesize step must return (also the LLM's structured output)."""

    hypotheses: list[Hypothesis] = Field(min_length=1)


class CriticVerdict(BaseModel):
    hypothesis_id: str
    round: int
    challenge: str
    finding: str
    verdict: Literal["upheld", "weakened", "overturned"]
    confidence_delta: float = 0.0
    evidence_ids: list[str] = Field(default_factory=list)
    source: Literal["statistics", "model", "grounding"] = Field(
        default="statistics", description="statistics: the offline checks; model: the LLM critic; grounding: the citation check."
    )


class CriticReport(BaseModel):
    """The critic's structured output for one round."""

    verdicts: list[CriticVerdict]


# Free text from a model or a client is bounded: a plan or a note is read by a person, and
# everything stored goes into every later checkpoint and the postmortem.
ShortText = Annotated[str, StringConstraints(max_length=300)]
LongText = Annotated[str, StringConstraints(max_length=4000)]


class Mitigation(BaseModel):
    id: ShortText
    hypothesis_id: ShortText
    mechanism: ShortText
    title: ShortText
    steps: list[LongText] = Field(min_length=1, max_length=30)
    rollback: LongText
    owner: ShortText
    eta_minutes: int = Field(ge=0, le=100_000)
    touches_prod: bool = Field(description="As proposed, or true when a step changes production whatever was proposed.")
    prod_change: ShortText | None = Field(
        default=None, description="Why the plan counts as touching production when its proposer said it does not."
    )
    reversible: bool = True
    status: Literal["proposed", "approved", "rejected"] = "proposed"


class MitigationPlan(BaseModel):
    """The mitigate step's structured output."""

    mitigations: list[Mitigation] = Field(min_length=1)


class DecisionRequest(BaseModel):
    """A human's answer to the approval interrupt, as a client sends it."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["approve", "reject", "edit"]
    note: LongText = ""
    by: ShortText = Field(default="on-call", description="A name to record; a label only, not an identity.")
    mitigations: list[Mitigation] | None = Field(
        default=None, max_length=30, description="The edited plan, required when action is 'edit'."
    )

    @field_validator("mitigations")
    @classmethod
    def _edited_plan_not_empty(cls, plan: list[Mitigation] | None) -> list[Mitigation] | None:
        if plan is not None and not plan:
            raise ValueError("an edited plan must keep at least one mitigation")
        return plan


class Decision(DecisionRequest):
    """The answer the approval node resumes with: the request plus who the entry point (server,
    CLI) authenticated. A client cannot send `authenticated_as`: DecisionRequest forbids it."""

    authenticated_as: ShortText | None = Field(
        default=None, description="Who decided, as the entry point authenticated them (server key name, local user)."
    )

    def resume_value(self) -> dict:
        """What the approve node resumes with, and what is stored with the decision's claim."""
        return self.model_dump(mode="json", exclude_none=True)


class Approval(BaseModel):
    action: Literal["approve", "reject", "edit", "auto-approve", "not-needed"]
    note: LongText = ""
    by: ShortText = Field(description="The name the decider gave (a label).")
    authenticated_as: ShortText | None = Field(default=None, description="The identity the entry point authenticated, if any.")
    at: UtcInstant
    approved: list[str] = Field(default_factory=list)
    rejected: list[str] = Field(default_factory=list)


def _new_id() -> str:
    return uuid.uuid4().hex


class NodeRun(BaseModel):
    # The id lets the reducer drop the copies a subgraph hands back with its final state.
    id: str = Field(default_factory=_new_id)
    node: str
    seconds: float
    tokens_in: int = 0
    tokens_out: int = 0
    model_calls: int = 0


class RejectedOutput(BaseModel):
    """A model reply (or failed request) that did not pass validation, kept for the record."""

    id: str = Field(default_factory=_new_id)
    node: str
    attempt: int
    error: str
    raw: str = Field(default="", description="The reply as received (tool calls and text), cut to a few kB.")


class ModelFallback(BaseModel):
    """A step the offline analyst answered because the model could not (retries, timeouts, budget)."""

    id: str = Field(default_factory=_new_id)
    node: str
    reason: str
    attempts: int


class RootCause(BaseModel):
    service: str | None
    kind: str | None
    signature: str | None
    confidence: float
    summary: str


class Statement(BaseModel):
    """One line of the investigator's conclusion, with the evidence ids it cites."""

    text: str
    evidence_ids: list[str] = Field(default_factory=list)
    confirmed: bool = Field(description="True when it cites evidence and every cited id exists.")


def _unset(value: Any) -> bool:
    return value is None


class RankedHypothesis(Hypothesis):
    """A hypothesis as the postmortem lists it: its rank and the verdicts it faced."""

    rank: int = Field(ge=1)
    critic_verdicts: list[CriticVerdict] = Field(default_factory=list)


class TimelineEvent(BaseModel):
    ts: UtcInstant = Field(description="When, in UTC.")
    event: str
    evidence_id: str | None = Field(description="The evidence that shows it; None for the human decision.")


class ModelRecord(BaseModel):
    """Which model a run used, what it cost, and where it was not trusted. The endpoint and
    limits are recorded for an LLM run only."""

    model: str
    base_url: str | None = Field(default=None, exclude_if=_unset)
    temperature: float | None = Field(default=None, exclude_if=_unset)
    redact: bool | None = Field(default=None, exclude_if=_unset)
    token_budget: int | None = Field(default=None, exclude_if=_unset)
    llm_retries: int | None = Field(default=None, exclude_if=_unset)
    llm_timeout_s: float | None = Field(default=None, exclude_if=_unset)
    structured_output: str | None = Field(default=None, exclude_if=_unset)
    max_output_tokens: int | None = Field(default=None, exclude_if=_unset)
    max_steps: int | None = Field(default=None, exclude_if=_unset)
    tokens_in: int = 0
    tokens_out: int = 0
    model_calls: int = 0
    fallbacks: list[ModelFallback] = Field(default_factory=list)
    rejected_outputs: list[RejectedOutput] = Field(default_factory=list)


class LoadRecord(BaseModel):
    """What the load read (tools.loader.LoadSummary)."""

    db_path: str
    metrics_rows: int
    metric_columns: list[str]
    log_rows: int
    event_rows: int
    start: str = Field(description="First metrics timestamp, ISO 8601 UTC.")
    end: str = Field(description="Last metrics timestamp, ISO 8601 UTC.")
    log_columns: list[str] = Field(default_factory=list)
    time_offsets: dict[str, list[str]] = Field(
        default_factory=dict, description="Offsets other than UTC the text timestamps of each input were written in."
    )
    service_metric_rows: int = Field(default=0, description="Rows of the per-service metrics table service_metrics.")
    metric_services: list[str] = Field(default_factory=list, description="The services the metrics were given per service or pod for.")


class InputsRecord(BaseModel):
    """Where the telemetry came from (server paths when started over HTTP; never credentials)."""

    metrics: str
    logs: str
    events: str | None = None
    log_format: str | None = Field(default=None, exclude_if=_unset)
    log_fields: dict[str, str] | None = Field(default=None, exclude_if=_unset)
    service_map: str | None = Field(default=None, exclude_if=_unset, description="--service-map: pod or pattern -> service.")
    metrics_source: dict[str, Any] | None = Field(
        default=None, exclude_if=_unset, description="--prometheus: server (without credentials), queries, range, step."
    )


class PostmortemMetadata(BaseModel):
    thread_id: str
    generated_at: UtcInstant
    model: str
    inputs: InputsRecord
    data: LoadRecord | None = Field(description="None when the load itself failed.")
    node_runs: list[NodeRun]
    llm: ModelRecord


class Postmortem(BaseModel):
    """The written result; its JSON schema is `docs/postmortem.schema.json`."""

    schema_version: str = POSTMORTEM_SCHEMA_VERSION
    title: str
    incident_detected: bool
    incident_window: IncidentWindow | None
    incident_windows: list[WindowSummary] = Field(
        default_factory=list, description="Every incident window found in the range, highest impact first; the investigated one included.")
    investigated_rank: int | None = Field(None, description="Which of them was investigated; None when the operator gave START..END.")
    time_zone: str = "UTC"
    root_cause: RootCause
    hypotheses: list[RankedHypothesis]
    critic_transcript: list[CriticVerdict]
    mitigations: list[Mitigation]
    approval: Approval | None
    timeline: list[TimelineEvent]
    evidence: list[Evidence]
    investigation_summary: list[Statement] = Field(
        default_factory=list, description="The investigator's conclusion, line by line; uncited lines are unconfirmed."
    )
    metadata: PostmortemMetadata


def append_unique(existing: list | None, new: list | None) -> list:
    """Append items, skipping ids already present: a subgraph hands back the items it inherited,
    and evidence ids are content-derived, so the first item per id stands."""
    merged = list(existing or [])
    seen = {item.id for item in merged}
    for item in new or []:
        if item.id not in seen:
            merged.append(item)
            seen.add(item.id)
    return merged


class InputFiles(TypedDict):
    metrics: str
    logs: str  # a file, or a directory / glob of Parquet files read in place
    events: NotRequired[str | None]
    log_format: NotRequired[str]  # csv | ndjson | loki | otlp | parquet (default: auto)
    log_fields: NotRequired[dict[str, str]]  # log column -> source field path
    metrics_source: NotRequired[dict]  # --prometheus: server (no credentials), queries, range, step


class IncidentState(TypedDict, total=False):
    """The graph's state. Keys a node does not return are left untouched."""

    inputs: InputFiles
    out_dir: str
    db_path: str
    load_summary: dict[str, Any]
    detection: Detection
    messages: Annotated[list[AnyMessage], add_messages]
    evidence: Annotated[list[Evidence], append_unique]
    hypotheses: list[Hypothesis]
    critic_transcript: Annotated[list[CriticVerdict], operator.add]
    mitigations: list[Mitigation]
    approval: Approval
    artifacts: dict[str, str]
    node_runs: Annotated[list[NodeRun], append_unique]
    model_rejections: Annotated[list[RejectedOutput], append_unique]
    model_fallbacks: Annotated[list[ModelFallback], append_unique]
    model_settings: dict[str, Any]


class IncidentInput(TypedDict):
    """What a caller supplies to start an investigation."""

    inputs: InputFiles
    out_dir: NotRequired[str]


STATE_MODELS: tuple[type[BaseModel], ...] = (
    Evidence,
    IncidentWindow,
    Detection,
    Hypothesis,
    CriticVerdict,
    Mitigation,
    Approval,
    NodeRun,
    RejectedOutput,
    ModelFallback,
)
