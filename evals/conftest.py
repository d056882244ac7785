"""The eval run shared by the tests in evals/: generated once per session on the SCORING seeds.

Progress (one line per case) goes to stdout (`pytest -s evals/` shows it live); the table is
printed in pytest's terminal summary and written, with the command that made it, to
evals/out/results.md (gitignored, so `make test` never rewrites a tracked file). The committed
evals/results.md is refreshed deliberately: `make eval-report`.
"""

import os
from pathlib import Path

import pytest

from evals import suite

REPORT = Path(os.environ.get("INCIDENT_GRAPH_EVAL_REPORT") or Path(__file__).resolve().parent / "out" / "results.md")
_RESULTS = pytest.StashKey[list]()


@pytest.fixture(scope="session")
def scoring_results(request, tmp_path_factory) -> list[suite.CaseResult]:
    tmp = tmp_path_factory.mktemp("evals")
    seeds = suite.SCORING_SEEDS
    print(f"\nincident-graph evals: every fault x seeds {list(seeds)} (scoring set), product vs baseline", flush=True)
    results = suite.run_generated(seeds, tmp, progress=lambda line: print(line, flush=True))
    command = " ".join(["python -m pytest", *request.config.invocation_params.args])
    notes = [
        f"Cases: every fault in `evals.generator.FAULTS` (including `none`) x the SCORING seeds "
        f"{', '.join(map(str, seeds))} (`evals.suite.SCORING_SEEDS`; the tuning seeds "
        f"{', '.join(map(str, suite.TUNING_SEEDS))} are not scored here). Product: the whole graph, "
        "offline analyst, auto-approved. Baseline: `evals/baseline.py` (rolling z-score on p95_ms + "
        "WARN/ERROR counts, after the seed notebook).",
    ]
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(suite.render_report(results, command, notes=notes, enforced=True), encoding="utf-8")
    request.config.stash[_RESULTS] = results
    return results


@pytest.fixture(scope="session")
def eval_report(scoring_results) -> Path:
    """The Markdown report the scoring run wrote."""
    return REPORT


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    results = config.stash.get(_RESULTS, None)
    if not results:
        return
    terminalreporter.write_sep("=", "evals: product / baseline (scoring seeds)")
    terminalreporter.write_line(suite.table(results))
    terminalreporter.write_line("")
    for line in suite.threshold_lines(results, enforced=True):
        terminalreporter.write_line(line)
    wrong = suite.wrong_cases(results, "product")
    terminalreporter.write_line("product got wrong: " + ("none" if not wrong else ""))
    for line in wrong:
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"report: {REPORT}")
