"""Evidence items: their ids, the one way to make one, and what a model sees of them.

An evidence item is a tool result or a computation, citable by id; hypotheses, verdicts and the
postmortem cite the same ids. The model never sees an item whole: `model_view` cuts it to a
budget in tokens, saying what it left out.
"""

import hashlib
import json
import re
from typing import Any

from graph.prompts import dump_data
from graph.state import Evidence
from graph.tokens import count_tokens

# What `evidence_id` makes: how prompts, redaction and the postmortem recognise a citation.
EVIDENCE_ID = re.compile(r"\bev-[a-z0-9-]+-[0-9a-f]{8}\b")


def evidence_id(tool_name: str, args: dict[str, Any]) -> str:
    """Content-derived, so re-running a step after a resume yields the same id."""
    digest = hashlib.sha1(json.dumps([tool_name, args], sort_keys=True, default=str).encode()).hexdigest()
    return f"ev-{tool_name.replace('_', '-')}-{digest[:8]}"


def to_jsonable(value: Any) -> Any:
    """`value` as plain JSON types (timestamps and numpy numbers become strings / numbers)."""
    return json.loads(json.dumps(value, default=str))


def make_evidence(tool: str, args: dict[str, Any], *, method: str, summary: str, data: dict[str, Any]) -> Evidence:
    """An evidence item whose id follows from the tool and its arguments."""
    return Evidence(id=evidence_id(tool, args), tool=tool, args=args, method=method, summary=summary, data=to_jsonable(data))


def model_view(item: Evidence, budget_tokens: int) -> str:
    """What the model sees of an evidence item: id, summary and data, within a token budget.

    Written with `dump_data`, so log text in a result can never close a prompt's data fence.
    Lists are shortened from the longest down (they are ranked, so the tail matters least) so
    the result stays valid JSON that says how much was left out.
    """
    data = {k: v for k, v in item.data.items() if k != "sql"}
    view = {"evidence_id": item.id, "summary": item.summary, "data": data}
    text = dump_data(view)
    while count_tokens(text) > budget_tokens:
        lists = [(len(v), k) for k, v in data.items() if isinstance(v, list) and len(v) > 1]
        if not lists:
            view = {"evidence_id": item.id, "summary": item.summary, "data_omitted": f"over {budget_tokens} tokens"}
            return dump_data(view)
        size, key = max(lists)
        data[key] = data[key][: size // 2]
        data.setdefault("shortened", {}).setdefault(key, size)  # how many there were, not the last cut
        text = dump_data(view)
    return text


def evidence_digest(items: list[Evidence], budget_tokens: int) -> list[dict]:
    """Evidence as a prompt shows it: each item through `model_view`, plus its tool name."""
    return [{"tool": e.tool, "id": e.id, **json.loads(model_view(e, budget_tokens))} for e in items]
