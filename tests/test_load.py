"""The load benchmark itself, at a small size: concurrent incidents through one server, no mixing."""

import json

from benchmarks.load import main


def test_concurrent_investigations_each_get_their_own_correct_postmortem(tmp_path):
    assert main(["--concurrency", "3", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "load.json").read_text())
    assert result["errors"] == 0 and result["correct"] == 3
    timings = result["load"]["incidents"]
    assert len({(t["fault"], t["seed"]) for t in timings}) == 3
    assert all(t["first_event_s"] <= t["first_node_s"] <= t["waiting_s"] for t in timings)
    assert "| first node |" in (tmp_path / "load.md").read_text()
