"""Evaluation on 2 processes under `accelerate launch -m videor1.cli eval` (HF engine, tiny model, real videos,
gloo-free: the processes meet in the launcher's store): the merged predictions.jsonl is byte for byte a
one-process run's and scores.json equal apart from `num_processes`; a killed 2-process folder (a shard with a
half-written line) resumes, keeping what was written; a process that is dealt no item still joins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engines_common import DIST_TIMEOUT_S, REPO, RUN_TIMEOUT_S
from test_eval_runner import small_set  # noqa: F401  (a fixture: 6 video items, a missing and a broken video)
from test_eval_shards import killed_two_process_folder
from videor1.evaluate.runner import read_predictions
from videor1.evaluate.shards import PREDICTIONS, shard_files

SETTINGS = ["--bench", "videor1", "--batch-size", "2", "--max-new-tokens", "6", "--report-to", "none"]
OVERRIDES = ["video.max_frames=4", "video.max_pixels=6272", "image.max_pixels=6272"]   # after the options


def run_cli(model: Path, data: Path, out: Path, *extra: str, num_processes: int = 1) -> str:
    """`videor1 eval` in a subprocess: plain (1 process) or under `accelerate launch --num_processes N`."""
    args = ["-m", "videor1.cli", "eval", "--model", str(model), "--data", str(data / "test.jsonl"),
            "--media-root", str(data), "--out", str(out), *SETTINGS, *extra, *OVERRIDES]
    if num_processes > 1:
        accelerate = str(Path(sys.executable).parent / "accelerate")
        cmd = [accelerate, "launch", "--config_file", str(REPO / "configs/accelerate/multi_gpu.yaml"),
               "--num_processes", str(num_processes), "--num_machines", "1", "--main_process_port", "0",
               "--mixed_precision", "no", *args]
    else:
        cmd = [sys.executable, *args]
    env = dict(os.environ, VIDEOR1_DIST_TIMEOUT_S=str(DIST_TIMEOUT_S), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"eval on {num_processes} processes: no end after {RUN_TIMEOUT_S} s (a deadlock?)\n{exc.stdout}")
    if proc.returncode != 0:
        pytest.fail(f"eval on {num_processes} processes: exit {proc.returncode}\n{proc.stdout[-3000:]}\n"
                    f"{proc.stderr[-6000:]}")
    return proc.stdout


def scores_without_process_count(out: Path) -> dict:
    scores = json.loads((out / "scores.json").read_text())
    scores["settings"].pop("num_processes")
    return scores


def test_two_processes_merge_into_a_one_process_run_and_resume(tiny_model_dir, small_set, tmp_path):  # noqa: F811
    one, two = tmp_path / "one", tmp_path / "two"
    run_cli(tiny_model_dir, small_set, one)
    stdout = run_cli(tiny_model_dir, small_set, two, num_processes=2)
    assert stdout.count("videor1: official") == 1                  # one console voice: the main process
    assert (two / PREDICTIONS).read_bytes() == (one / PREDICTIONS).read_bytes()
    assert scores_without_process_count(two) == scores_without_process_count(one)
    assert json.loads((two / "meta.json").read_text())["num_processes"] == 2
    assert json.loads((one / "meta.json").read_text())["num_processes"] == 1
    assert shard_files(two) == [] and (two / "report.md").is_file()

    # killed: shard 0 holds one row (its output replaced by a sentinel) and half a line; resumed on 2 processes
    ids = [r["id"] for r in read_predictions(one / PREDICTIONS)]
    first = killed_two_process_folder(one, tmp_path / "killed", ids, 2)
    run_cli(tiny_model_dir, small_set, tmp_path / "killed", num_processes=2)
    got = read_predictions(tmp_path / "killed" / PREDICTIONS)
    want = read_predictions(one / PREDICTIONS)
    assert [r["id"] for r in got] == ids and shard_files(tmp_path / "killed") == []
    assert next(r for r in got if r["id"] == first)["output"] == "SENTINEL"   # kept, not generated again
    assert [r for r in got if r["id"] != first] == [r for r in want if r["id"] != first]

    # two items in one batch: the second process is dealt none, and still joins the barriers
    run_cli(tiny_model_dir, small_set, tmp_path / "few", "--limit", "2", num_processes=2)
    assert read_predictions(tmp_path / "few" / PREDICTIONS) == want[:2]
