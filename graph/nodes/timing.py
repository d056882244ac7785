"""Record how long each node took (kept in the state and the postmortem metadata)."""

import functools
import time
from collections.abc import Callable

from graph.state import NodeRun


def timed(name: str) -> Callable:
    def wrap(node: Callable) -> Callable:
        @functools.wraps(node)
        def run(*args, **kwargs) -> dict:
            started = time.perf_counter()
            update = node(*args, **kwargs)
            spent = round(time.perf_counter() - started, 4)
            return {**update, "node_runs": [NodeRun(node=name, seconds=spent)]}

        return run

    return wrap
