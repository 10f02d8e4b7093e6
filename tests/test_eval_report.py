"""Reports: the per-run Markdown / PNG and several runs side by side (from scores.json, no model)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from videor1.cli import app
from videor1.evaluate.benchmarks import get_benchmark
from videor1.evaluate.report import compare_runs, render_report, write_outputs
from videor1.evaluate.runner import score_row, summarize


def rows_for(outputs):
    """MVBench rows for two tasks with the given outputs (truth: A for every item)."""
    rows = []
    for i, (task, out) in enumerate(outputs):
        rows.append({"id": str(i), "problem_type": "multiple choice", "options": ["A. x", "B. y"],
                     "solution": "<answer>A</answer>", "answer": "A", "meta": {"task": task},
                     "output": out, "error": None, "n_tokens": 5, "shuffled": False})
    rows.append({**rows[0], "id": "bad", "output": "", "error": "MediaError: x.mp4: no such file"})
    return [score_row(get_benchmark("mvbench"), r) for r in rows]


@pytest.fixture()
def two_runs(tmp_path):
    dirs = []
    for name, outs in [("run16", ["A", "A", "B"]), ("run32", ["(A) x", "B", "B"])]:
        rows = rows_for([("Action Sequence", outs[0]), ("Action Sequence", outs[1]), ("State Change", outs[2])])
        summary = summarize(get_benchmark("mvbench"), rows, {"video": {"max_frames": int(name[3:])}})
        write_outputs(tmp_path / name, summary)
        dirs.append(tmp_path / name)
    return dirs


def test_single_report_has_official_reference_counts_and_errors(two_runs):
    summary = json.loads((two_runs[0] / "scores.json").read_text())
    # tasks: Action Sequence [1, 1, error 0] -> 2/3; State Change [0] -> 0; mean of tasks 1/3
    assert summary["official"]["overall"] == pytest.approx((2 / 3 + 0.0) / 2)
    assert summary["reference"]["overall"] == pytest.approx(2 / 4)
    md = render_report(summary)
    assert "| **official** (mean of per-task accuracies) | **33.3** | 4 |" in md
    assert "| reference (SPEC §7, item mean) | 50.0 | 4 |" in md
    assert "| Action Sequence | 3 | 66.7 | 66.7 |" in md and "MediaError" in md
    assert (two_runs[0] / "scores.png").stat().st_size > 1000


def test_compare_runs_side_by_side(two_runs, tmp_path):
    text = compare_runs(two_runs, out=tmp_path / "cmp")
    assert "run16 (mvbench, 16f)" in text and "run32 (mvbench, 32f)" in text
    # run32: "(A) x" is right officially, wrong for the strict reference; Action Sequence 1/3 -> 33.3
    assert "| official (headline) | 33.3 | 16.7 |" in text
    assert "| task: Action Sequence | 66.7 | 33.3 |" in text
    assert (tmp_path / "cmp/comparison.png").is_file()
    res = CliRunner().invoke(app, ["eval", "report", *map(str, two_runs)])
    assert res.exit_code == 0 and "| errors | 1 | 1 |" in res.output
    missing = CliRunner().invoke(app, ["eval", "report", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "scores.json" in missing.output
