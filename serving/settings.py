"""The server's own settings, read from the environment once when the app is made.

Each is `INCIDENT_GRAPH_<NAME>` (the state dir is `INCIDENT_GRAPH_HOME`); a malformed or
out-of-range value is a startup error naming the variable. These are the operator's: no request
can change them (the run settings a client may choose are `graph.configuration.CLIENT_SETTABLE`).
"""

import os
import socket
from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from graph.configuration import Configuration, readable_errors
from serving.security import PublicPaths, parse_api_keys, parse_origins


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INCIDENT_GRAPH_", frozen=True, extra="ignore", populate_by_name=True)

    state_dir: Path = Field(default_factory=lambda: Path(Configuration().state_dir),
                            validation_alias="INCIDENT_GRAPH_HOME",
                            description="Checkpoints, work databases, uploads and postmortems.")
    api_key: SecretStr | None = Field(None, description="One shared bearer key (recorded as 'api-key').")
    named_api_keys: SecretStr | None = Field(None, validation_alias="INCIDENT_GRAPH_API_KEYS",
                                       description="'alice:KEY1,bob:KEY2': a key per person, so a decision records who took it.")
    allowed_origins_list: str | None = Field(None, validation_alias="INCIDENT_GRAPH_ALLOWED_ORIGINS",
                                             description="Web origins besides the server's own that may send state changes.")
    data_dir: Path | None = Field(None, description="Files under it can be investigated by path.")
    postgres_dsn: str | None = Field(None, description="Share incidents between workers and hosts through PostgreSQL.")
    max_upload_mb: int = Field(512, ge=1, le=1_000_000, description="Uploads of one incident, in MiB.")
    # Every body but an upload (decisions, paths, /graph requests); free text is bounded by the models.
    max_json_kb: int = Field(1024, ge=1, le=1_000_000, description="Any other request body, in KiB.")
    # A run whose last checkpoint is older than this, and that no task of this worker runs, is
    # taken to be orphaned by a dead worker and resumed. Longer than any single node takes.
    recover_after_s: float = Field(120.0, ge=0.0, le=86_400.0, description="Seconds without progress before a run counts as orphaned.")
    worker: str = Field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}", description="This worker's name in claims.")

    @classmethod
    def from_environment(cls) -> "ServerSettings":
        try:
            settings = cls()
        except ValidationError as exc:
            raise ValueError(f"server settings: {readable_errors(exc)}") from None
        settings.api_keys  # noqa: B018 (malformed keys and origins fail at startup, not at the first request)
        settings.allowed_origins  # noqa: B018
        return settings

    @cached_property
    def api_keys(self) -> dict[str, str]:
        """{key: identity}: the shared key is "api-key", named keys are their name."""
        return parse_api_keys(*(key.get_secret_value() if key else None for key in (self.api_key, self.named_api_keys)))

    @cached_property
    def allowed_origins(self) -> frozenset[str]:
        return parse_origins(self.allowed_origins_list)

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 2**20

    @property
    def max_json_bytes(self) -> int:
        return self.max_json_kb * 1024

    @property
    def checkpoint_file(self) -> Path:
        return self.state_dir / "checkpoints.sqlite"

    @property
    def artifacts_dir(self) -> Path:
        return self.state_dir / "incidents"

    @property
    def uploads_dir(self) -> Path:
        return self.state_dir / "uploads"

    @property
    def input_roots(self) -> list[Path]:
        """Where runs may read: the data directory (relative paths resolve there) and uploads."""
        return [self.data_dir, self.uploads_dir] if self.data_dir else [self.uploads_dir]

    @cached_property
    def public(self) -> PublicPaths:
        """Messages as a client may see them: no directory of this server spelled out."""
        return PublicPaths({"<uploads>": self.uploads_dir, "<data>": self.data_dir, "<state>": self.state_dir})
