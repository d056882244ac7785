"""`status_of` on real LangGraph snapshots: every checkpoint of a run, and the moments between
a step's saved writes and the next checkpoint, when `next` is empty but the run is not over."""

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt
from typing_extensions import TypedDict

from serving.status import status_of

CONFIG = {"configurable": {"thread_id": "t"}}


class State(TypedDict, total=False):
    inputs: str
    found: str
    decision: str


def investigate(state: State) -> dict:
    return {"found": "pool exhausted"}


def approve(state: State) -> dict:
    return {"decision": interrupt("approve the plan?")}


def fails(state: State) -> dict:
    raise ValueError("metrics.csv: no column 'ts'")


class RecordingSaver(InMemorySaver):
    """Takes the thread's snapshot just before each new checkpoint is saved: the previous
    step's writes are stored by then, the checkpoint that applies them not yet."""

    def __init__(self) -> None:
        super().__init__()
        self.graph = None
        self.between_steps: list = []

    def put(self, config, checkpoint, metadata, new_versions):
        if self.get_tuple(CONFIG) is not None:
            self.between_steps.append(self.graph.get_state(CONFIG))
        return super().put(config, checkpoint, metadata, new_versions)


def compiled(*nodes) -> tuple:
    builder = StateGraph(State)
    for node in nodes:
        builder.add_node(node.__name__, node)
    builder.add_edge(START, nodes[0].__name__)
    for first, then in zip(nodes, nodes[1:]):
        builder.add_edge(first.__name__, then.__name__)
    builder.add_edge(nodes[-1].__name__, END)
    saver = RecordingSaver()
    graph = builder.compile(checkpointer=saver)
    saver.graph = graph
    return graph, saver


def test_a_run_is_never_done_before_its_last_checkpoint():
    graph, saver = compiled(investigate, approve)
    assert status_of(graph.get_state(CONFIG))[0] == "queued", "no checkpoint yet"
    graph.invoke({"inputs": "incident.csv"}, CONFIG)
    history = list(reversed(list(graph.get_state_history(CONFIG))))
    assert history[0].next == ("__start__",) and history[0].metadata["step"] == -1
    assert [status_of(s)[0] for s in history] == ["queued", "running", "waiting_for_approval"]

    graph.invoke(Command(resume="approve"), CONFIG)
    assert status_of(graph.get_state(CONFIG)) == ("done", None)
    # Between a step's writes and the next checkpoint LangGraph reports no `next` node, only
    # the task whose writes wait to be applied: that thread is still running.
    between = saver.between_steps
    assert between and all(not s.next and s.tasks for s in between)
    assert {status_of(s)[0] for s in between} == {"running"}


def test_a_failed_task_is_reported_with_its_error():
    graph, _ = compiled(investigate, fails)
    try:
        graph.invoke({"inputs": "incident.csv"}, CONFIG)
    except ValueError:
        pass
    status, error = status_of(graph.get_state(CONFIG))
    assert status == "failed" and error.startswith("fails: ") and "no column 'ts'" in error
