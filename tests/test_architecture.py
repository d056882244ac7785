"""The directions of the imports the design asks for, read from the source with `ast`."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NODES = REPO / "graph" / "nodes"


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (a lazy import inside a function counts too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def python_files(*roots: str) -> list[Path]:
    files: list[Path] = []
    for root in roots:
        target = REPO / root
        files += [target] if target.is_file() else sorted(target.rglob("*.py"))
    return files


NODE_MODULES = {f"graph.nodes.{p.stem}" for p in NODES.glob("*.py") if p.stem != "__init__"}


@pytest.mark.parametrize("path", python_files("tools"), ids=lambda p: str(p.relative_to(REPO)))
def test_tools_import_nothing_from_graph_server_or_cli(path):
    bad = {m for m in imported_modules(path) if m.split(".")[0] in {"graph", "server", "cli", "serving", "langchain_core", "langgraph"}}
    assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}: tools/ stand alone (numpy, pandas, duckdb; no LangChain)"


@pytest.mark.parametrize("path", python_files("graph", "server.py", "cli.py", "serving", "evals", "benchmarks"),
                         ids=lambda p: str(p.relative_to(REPO)))
def test_node_modules_are_imported_only_by_the_graph(path):
    if path == REPO / "graph" / "graph.py":
        return
    imported_nodes = imported_modules(path) & NODE_MODULES
    assert not imported_nodes, (
        f"{path.relative_to(REPO)} imports node module(s) {sorted(imported_nodes)}: move what it needs to the module it belongs to"
    )


def test_the_walk_sees_imports():
    """The check above can fail: the graph itself imports every node."""
    assert NODE_MODULES and NODE_MODULES <= imported_modules(REPO / "graph" / "graph.py")
