"""Issue 16: hostile but honest inputs give one line + exit 2 (or a named skip), never a traceback, and
nothing is silently lost or overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from videor1.atomic import atomic_write_text, model_fingerprint
from videor1.cli import app
from videor1.config import ConfigError
from videor1.data.media import MediaError, load_image
from videor1.data.records import DatasetFileError, read_records
from videor1.evaluate.runner import check_resumable
from videor1.limits import DEFAULT_LIMITS, InputLimits, limits_in_force
from videor1.train.checkpoint import STATE_FILE, resolve_resume

RECORD = {"problem_id": 1, "problem": "What moves?", "data_type": "video", "problem_type": "multiple choice",
          "options": ["A. a", "B. b"], "solution": "<answer>A</answer>", "path": "x.mp4"}


@pytest.fixture(autouse=True)
def default_limits():
    """Commands put their limits in force process-wide; every test here starts and ends with the defaults."""
    with limits_in_force(DEFAULT_LIMITS):
        yield


def _cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in (result.output or ""), result.output
    return result


def test_nested_200000_deep_is_one_line(tmp_path):
    bad = tmp_path / "deep.jsonl"
    bad.write_text("[" * 200_000 + "]" * 200_000 + "\n")
    result = _cli("data", "check", str(bad), "--media-root", str(tmp_path))
    assert result.exit_code == 2 and "nested too deep" in result.output
    with pytest.raises(DatasetFileError, match="deep.jsonl"):
        read_records(bad)


def test_depth_record_size_and_option_limits_name_the_record(tmp_path):
    rows = [dict(RECORD, problem_id="deep", extra=[[[[[1]]]]]), dict(RECORD, problem_id="big", problem="x" * 500),
            dict(RECORD, problem_id="opts", options=[f"{chr(65 + i)}. o" for i in range(5)]), RECORD]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    limits = InputLimits(max_depth=3, max_record_bytes=400, max_options=4)
    good, errors = read_records(path, limits=limits)
    assert [r.problem_id for r in good] == [1]
    reasons = " | ".join(str(e) for e in errors)
    assert "max_depth=3" in reasons and "max_record_bytes=400" in reasons and "max_options=4" in reasons
    assert "record 'deep'" in reasons and "record 'opts'" in reasons


def test_bom_is_tolerated_jsonl_and_json_list(tmp_path):
    jsonl, jlist = tmp_path / "a.jsonl", tmp_path / "a.json"
    jsonl.write_bytes(b"\xef\xbb\xbf" + (json.dumps(RECORD) + "\n").encode() * 2)
    jlist.write_bytes(b"\xef\xbb\xbf" + json.dumps([RECORD]).encode())
    assert [len(read_records(p)[0]) for p in (jsonl, jlist)] == [2, 1]


def test_empty_dataset_fails_data_check(tmp_path):
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    result = _cli("data", "check", str(empty), "--media-root", str(tmp_path))
    assert result.exit_code == 1 and "no records" in result.output


def test_extreme_aspect_ratio_and_pixel_count_are_media_errors(tmp_path, monkeypatch):
    wide = tmp_path / "wide.png"
    Image.fromarray(np.zeros((2, 600, 3), np.uint8)).save(wide)
    with pytest.raises(MediaError, match="max_aspect_ratio"):
        load_image(wide)
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(big)
    with limits_in_force(InputLimits(max_decoded_pixels=5000)), pytest.raises(MediaError,
                                                                              match="max_decoded_pixels=5000"):
        load_image(big)


def test_bad_port_and_negative_limit_are_one_line(tmp_path):
    result = _cli("serve-rollouts", "--model", str(tmp_path), "--port", "99999")
    assert result.exit_code == 2 and "--port" in result.output
    result = _cli("eval", "--model", str(tmp_path), "--bench", "videor1", "--data", str(tmp_path / "x.jsonl"),
                  "--media-root", str(tmp_path), "--out", str(tmp_path / "o"), "--limit", "-1")
    assert result.exit_code == 2 and "limit" in result.output


def _checkpoint(out: Path, step: int) -> Path:
    ckpt = out / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    torch.save({"step": step}, ckpt / STATE_FILE)
    (ckpt / "config.json").write_text("{}")
    return ckpt


@pytest.mark.parametrize("damage", ["garbage_state", "no_state", "bad_config", "no_config", "short_weights"])
def test_damaged_latest_checkpoint_is_named_and_the_previous_used(tmp_path, damage):
    out = tmp_path / "run"
    good = _checkpoint(out, 1)
    bad = _checkpoint(out, 2)
    if damage == "short_weights":
        (bad / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    elif damage == "garbage_state":
        (bad / STATE_FILE).write_bytes(b"not a torch file")
    elif damage == "no_state":
        (bad / STATE_FILE).unlink()
    elif damage == "bad_config":
        (bad / "config.json").write_text("{broken")
    elif damage == "no_config":
        (bad / "config.json").unlink()
    lines: list[str] = []
    assert resolve_resume(True, out, log=lines.append) == good
    assert len(lines) == 1 and "checkpoint-2 is damaged" in lines[0] and "using checkpoint-1" in lines[0]
    assert str(bad) in lines[0]


def test_finished_output_dir_is_never_overwritten_silently(tmp_path):
    out = tmp_path / "run"
    (out / "final").mkdir(parents=True)
    (out / "metrics.jsonl").write_text("{}\n")
    for resume in (False, True):
        with pytest.raises(ConfigError, match="overwrite=true"):
            resolve_resume(resume, out)
    _checkpoint(out, 3)
    lines: list[str] = []
    assert resolve_resume(False, out, overwrite=True, log=lines.append) is None
    assert not (out / "checkpoint-3").exists() and "overwrite" in lines[0]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        resolve_resume(False, tmp_path / "file")


def test_rl_stops_when_every_prompt_is_skipped(tmp_path):
    from videor1.rl.trainer import _check_skipped

    cfg = type("Cfg", (), {"max_skipped_fraction": 1.0, "max_prompt_length": 1})()
    with pytest.raises(ConfigError, match="4 of 4 prompts were skipped"):
        _check_skipped(cfg, 4, 4, tmp_path)
    _check_skipped(cfg, 3, 4, tmp_path)  # some prompts trained: go on
    cfg.max_skipped_fraction = 0.5
    with pytest.raises(ConfigError, match="max_skipped_fraction"):
        _check_skipped(cfg, 3, 4, tmp_path)


def test_eval_refuses_to_resume_onto_changed_weights(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"a" * 100)
    before = model_fingerprint(model)
    out = tmp_path / "out"
    out.mkdir()
    atomic_write_text(out / "meta.json", json.dumps({"model": str(model), "model_fingerprint": before}))
    (out / "predictions.jsonl").write_text("")
    check_resumable(out, {"model": str(model), "model_fingerprint": before})
    (model / "model.safetensors").write_bytes(b"b" * 100)
    after = model_fingerprint(model)
    assert after != before
    with pytest.raises(ValueError, match="model weights changed"):
        check_resumable(out, {"model": str(model), "model_fingerprint": after})
    assert not list(out.glob(".*.tmp"))  # the atomic writer leaves no temporary file
