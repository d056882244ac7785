"""The committed postmortem JSON schema is the one the models generate, at the current version."""

import json
from pathlib import Path

from graph.report import postmortem_json_schema
from graph.state import POSTMORTEM_SCHEMA_VERSION

COMMITTED = Path(__file__).resolve().parent.parent / "docs" / "postmortem.schema.json"


def test_committed_schema_equals_the_generated_one():
    assert COMMITTED.read_text() == postmortem_json_schema(), (
        "docs/postmortem.schema.json is stale: regenerate it with "
        "`python -c 'from graph.report import postmortem_json_schema; print(postmortem_json_schema(), end=\"\")' > docs/postmortem.schema.json` "
        "and bump POSTMORTEM_SCHEMA_VERSION when the contract changes"
    )


def test_schema_carries_the_version_and_the_approval_identity():
    schema = json.loads(COMMITTED.read_text())
    assert schema["properties"]["schema_version"]["default"] == POSTMORTEM_SCHEMA_VERSION
    approval = schema["$defs"]["Approval"]["properties"]
    assert {"by", "authenticated_as"} <= set(approval)
    assert approval["note"]["maxLength"] > 0, "free text in the postmortem is bounded"
