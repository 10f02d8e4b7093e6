"""The one CLI error wrapper: bad input to any command is one line `error: ...` on stderr and exit 2;
`--debug` (or VIDEOR1_DEBUG=1) shows the traceback instead."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from videor1.cli import app

RUNNER = CliRunner()


def _yaml(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _assert_one_line(result, *needles: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in err, (needle, err)


def _cases(tmp_path: Path) -> list[tuple[list[str], tuple[str, ...]]]:
    a_file = _yaml(tmp_path, "a_file.txt", "x")
    bad_yaml = _yaml(tmp_path, "broken.yaml", "model: m\ntrain_data: [a, b\n")
    no_train = _yaml(tmp_path, "no_train.yaml", f"model: {tmp_path}\noutput_dir: {tmp_path / 'o'}\n")
    bad_json = _yaml(tmp_path, "bad.json", "[{not json")
    preds = _yaml(tmp_path, "preds.jsonl", "")
    (tmp_path / "notademo").mkdir()
    (tmp_path / "notademo/keep.txt").write_text("x")
    missing = str(tmp_path / "missing")
    return [
        (["synth", "--out", str(a_file)], ("a_file.txt",)),
        (["data", "check", missing, "--media-root", str(tmp_path)], ("no such dataset file",)),
        (["data", "stats", str(bad_json)], ("bad.json",)),
        (["annotate", "--model", missing, "--data", str(a_file), "--media-root", str(tmp_path), "--out",
          str(tmp_path / "o.jsonl")], ("no such model directory",)),
        (["model", "tiny", "--out", str(a_file)], ("a_file.txt", "not a directory")),
        (["sft", "--config", str(no_train)], ("train_data",)),
        (["train", "--config", str(no_train)], ("train_data",)),
        (["train", "--config", str(bad_yaml)], ("broken.yaml", "not valid YAML")),
        (["sft", "--config", str(tmp_path / "nope.yaml")], ("no such config file",)),
        (["serve-rollouts", "--model", missing], ("no such model directory",)),
        (["eval", "--model", str(tmp_path), "--bench", "videor1", "--data", missing, "--media-root", str(tmp_path),
          "--out", str(tmp_path / "ev")], ("no such benchmark data file", "missing")),
        (["eval", "--model", str(tmp_path)], ("missing required keys", "bench")),
        (["eval", "--config", str(bad_yaml)], ("broken.yaml",)),
        (["eval", "--model", str(tmp_path), "--bench", "videor1", "--data", str(a_file), "--media-root", str(tmp_path),
          "--out", str(tmp_path / "ev"), "video.max_frames=7"], ("video.max_frames", "even")),
        (["eval", "report", missing], ("scores.json",)),
        (["score", "--bench", "videor1", "--predictions", str(preds)], ("no predictions",)),
        (["infer", "--model", str(tmp_path), "--video", missing, "--question", "q"], ("missing",)),
        (["infer", "--model", str(tmp_path), "--video", str(a_file), "--question", "q", "--frames", "5"],
         ("video.max_frames",)),
        (["demo", "--out", str(tmp_path / "notademo")], ("not a previous demo",)),
    ]


def test_every_command_reports_bad_input_in_one_line(tmp_path):
    for args, needles in _cases(tmp_path):
        result = RUNNER.invoke(app, args)
        try:
            _assert_one_line(result, *needles)
        except AssertionError as err:
            raise AssertionError(f"videor1 {' '.join(args)}: {err}") from None


def test_eval_flags_and_overrides_map_onto_the_config(tmp_path, monkeypatch):
    from videor1.evaluate import runner

    seen = {}
    monkeypatch.setattr(runner, "run_eval", lambda cfg, echo: seen.setdefault("cfg", cfg))
    cfg_file = _yaml(tmp_path, "e.yaml", f"model: {tmp_path}\nbench: videor1\ndata: d.jsonl\nmedia_root: {tmp_path}\n"
                                         "out: o\nvideo: {max_frames: 8}\nbatch_size: 2\n")
    result = RUNNER.invoke(app, ["eval", "--config", str(cfg_file), "--max-pixels", "3136", "--shuffle-frames",
                                 "--limit", "3", "batch_size=4", "video.fps=1"])
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]
    assert (cfg.video.max_frames, cfg.video.fps, cfg.video.max_pixels, cfg.image.max_pixels) == (8, 1.0, 3136, 3136)
    assert (cfg.batch_size, cfg.limit, cfg.shuffle_frames, cfg.data) == (4, 3, True, Path("d.jsonl"))


def test_debug_reraises_with_the_traceback(tmp_path):
    bad = _yaml(tmp_path, "bad.json", "[{not json")
    result = RUNNER.invoke(app, ["--debug", "data", "stats", str(bad)])
    assert result.exit_code != 2 and result.exception is not None and not isinstance(result.exception, SystemExit)
    env = {**os.environ, "VIDEOR1_DEBUG": "1"}
    proc = subprocess.run([sys.executable, "-m", "videor1.cli", "data", "stats", str(bad)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 1 and "Traceback" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "videor1.cli", "data", "stats", str(bad)], capture_output=True,
                          text=True, timeout=120, env={k: v for k, v in os.environ.items() if k != "VIDEOR1_DEBUG"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: ")


def test_unexpected_errors_are_not_hidden(tmp_path, monkeypatch):
    from videor1.evaluate import runner

    def boom(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(runner, "rescore", boom)
    preds = _yaml(tmp_path, "p.jsonl", json.dumps({"id": 1}) + "\n")
    result = RUNNER.invoke(app, ["score", "--bench", "videor1", "--predictions", str(preds)])
    assert isinstance(result.exception, KeyError)


@pytest.mark.parametrize("args", [["--help"], ["eval", "--help"]])
def test_help(args):
    assert RUNNER.invoke(app, args).exit_code == 0
