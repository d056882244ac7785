"""Scoring of the template benchmark (benchmarks/templates.py) on hand-made examples."""

import json

import pandas as pd
import pytest

from benchmarks.templates import grouping_accuracy, main, normalise_templates, parsing_accuracy


def test_grouping_accuracy_counts_lines_whose_group_is_exactly_their_event():
    truth = pd.Series(["A", "A", "B", "B", "C", "D"])
    # A's lines are one group of their own: right. B is split in two: both wrong. C and D share a
    # group: both wrong. The names of the groups do not matter, only who is with whom.
    predicted = pd.Series(["x", "x", "y", "z", "w", "w"])
    assert grouping_accuracy(truth, predicted) == pytest.approx(2 / 6)
    assert grouping_accuracy(truth, truth.map({"A": 1, "B": 2, "C": 3, "D": 4})) == 1.0
    assert grouping_accuracy(pd.Series([], dtype=str), pd.Series([], dtype=str)) == 0.0


def test_normalised_templates_have_one_placeholder_and_single_spaces():
    templates = pd.Series(["took <NUM> ms  from <IP>", "took <*> ms from <*>:<*>", " at <*>.<*>\tdone ", "<HEX> a<NUM>b"])
    assert normalise_templates(templates).tolist() == ["took <*> ms from <*>", "took <*> ms from <*>", "at <*> done", "<*> a<*>b"]


def test_parsing_accuracy_compares_normalised_templates_per_line():
    truth = pd.Series(["took <*> ms", "took <*> ms", "user <*> left", "disk full"])
    predicted = pd.Series(["took <NUM> ms", "took <NUM>  ms", "user bob left", "disk <*>"])
    assert parsing_accuracy(truth, predicted) == pytest.approx(2 / 4)


def test_runs_on_a_folder_of_structured_files_and_writes_results(tmp_path, capsys):
    data, out = tmp_path / "loghub", tmp_path / "results"
    (data / "Tiny").mkdir(parents=True)
    lines = [(f"worker {i} started in {i * 3} ms", "E1", "worker <*> started in <*> ms") for i in range(10)]
    lines += [(f"disk {d} full", "E2", "disk <*> full") for d in ("sda", "sdb", "sdc", "sdd", "sde", "sdf", "sdg", "sdh")]
    pd.DataFrame(lines, columns=["Content", "EventId", "EventTemplate"]).to_csv(data / "Tiny" / "Tiny_2k.log_structured.csv", index=False)

    assert main([str(data), "--out", str(out)]) == 0
    rows = json.loads((out / "templates.json").read_text())["rows"]
    assert [r["dataset"] for r in rows] == ["Tiny", "average"]
    assert rows[0]["ours"]["ga"] == 1.0 and rows[0]["ours"]["pa"] == 1.0 and rows[0]["ours"]["groups"] == 2
    assert 0 <= rows[0]["drain3"]["ga"] <= 1 and rows[0]["drain3"]["messages_per_s"] > 0
    assert "| Tiny | 18 | 2 | 1.000 |" in (out / "templates.md").read_text()
    assert "Tiny" in capsys.readouterr().out


def test_skips_with_a_reason_when_the_folder_is_absent(tmp_path, capsys):
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path / "results")]) == 0
    assert "skipped" in capsys.readouterr().out
    assert not (tmp_path / "results").exists()
