"""`videor1 infer` on a real video with the tiny model."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from videor1.cli import app
from videor1.tools.infer import make_question_record, split_output


def test_infer_json_on_real_video(tiny_model_dir, bikes_mp4):
    res = CliRunner().invoke(app, [
        "infer", "--model", str(tiny_model_dir), "--video", str(bikes_mp4), "--question", "Which way do the bikes go?",
        "--type", "multiple choice", "--options", "left", "--options", "right", "--frames", "4",
        "--max-pixels", str(8 * 28 * 28), "--max-new-tokens", "8", "--json"])
    assert res.exit_code == 0, res.output
    obj = json.loads(next(line for line in res.stdout.splitlines() if line.startswith("{")))
    assert obj["options"] == ["A. left", "B. right"] and obj["problem_type"] == "multiple choice"
    assert obj["frames"] == 4 and obj["sample_fps"] > 0 and 1 <= obj["n_tokens"] <= 8
    assert set(obj) >= {"reasoning", "answer", "output", "format_ok", "max_pixels", "decoding"}


def test_infer_text_output_and_bad_input(tiny_model_dir, bikes_mp4):
    cli = CliRunner()
    res = cli.invoke(app, ["infer", "--model", str(tiny_model_dir), "--video", str(bikes_mp4), "--question",
                           "How many bikes?", "--type", "numerical", "--frames", "4", "--max-pixels",
                           str(8 * 28 * 28), "--max-new-tokens", "4"])
    assert res.exit_code == 0, res.output
    assert "Reasoning:" in res.output and "Answer:" in res.output
    bad = cli.invoke(app, ["infer", "--model", str(tiny_model_dir), "--video", str(bikes_mp4), "--question", "q",
                           "--type", "essay"])
    assert bad.exit_code == 2 and "unknown --type" in bad.output


def test_split_output_and_record(tmp_path):
    parts = split_output("<think> wait, the bikes go right </think><answer>B</answer>")
    assert parts == {"reasoning": "wait, the bikes go right", "answer": "B", "format_ok": True}
    assert split_output("just text")["answer"] == ""
    rec = make_question_record(tmp_path / "x.png", "What colour?", "free-form", [])
    assert rec.data_type == "image" and rec.path == "x.png"
