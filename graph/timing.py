"""Record how long each node took and what its model calls cost (kept in the state and the
postmortem metadata)."""

import functools
import time
from collections.abc import Callable

from graph.state import NodeRun


def timed(name: str) -> Callable:
    """Wrap a node so its update carries a NodeRun. A node that called a model returns its
    `ModelUsage` under `model_usage` (see graph.models.outcomes_update); it becomes the
    NodeRun's token counts instead of a state key."""

    def wrap(node: Callable) -> Callable:
        @functools.wraps(node)
        def run(*args, **kwargs) -> dict:
            started = time.perf_counter()
            update = dict(node(*args, **kwargs))
            spent = round(time.perf_counter() - started, 4)
            usage = update.pop("model_usage", None)
            tokens = {"tokens_in": usage.tokens_in, "tokens_out": usage.tokens_out, "model_calls": usage.calls} if usage else {}
            return {**update, "node_runs": [NodeRun(node=name, seconds=spent, **tokens)]}

        return run

    return wrap
