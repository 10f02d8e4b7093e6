"""Helpers of the engine tests (see conftest.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DIST_TIMEOUT_S = 60
RUN_TIMEOUT_S = 300

LAUNCHER = textwrap.dedent('''
    import sys
    from videor1.rewards import register

    @register("engine_test_variety", overwrite=True)
    def variety(completions, **columns):
        return [len(set(c)) / (1.0 + len(c)) for c in completions]

    def demo_stop(cfg, val):
        """The demo's own cold-start check (greedy accuracy on `val`) from step 2 on, stopping at once (0.0)."""
        from dataclasses import replace
        from pathlib import Path
        from videor1.tools.demo import DEFAULT, VAL_LOG, cold_start_check
        settings = replace(DEFAULT, sft_stop_at=0.0, sft_min_steps=2, sft_check_every=1, eval_batch=4,
                           eval_max_tokens=4, frames=4, max_pixels=3136)
        check = cold_start_check(Path(cfg.output_dir) / VAL_LOG, settings,
                                 {"val": Path(val), "media_root": Path(cfg.media_root)})
        def logged(step, model, processor):
            from accelerate import PartialState
            answer = check(step, model, processor)
            print(f"STOP-CHECK rank={PartialState().process_index} step={step} answer={answer}", flush=True)
            return answer
        return logged

    if sys.argv[1] == "rl":
        from videor1.rl.trainer import run_training
        final = run_training(None, sys.argv[2:])
    elif sys.argv[1] == "sft-demo-stop":     # argv: sft-demo-stop VAL_RECORDS key=value...
        from videor1.config import load_config
        from videor1.sft.trainer import SFTConfig, train_sft
        cfg = load_config(SFTConfig, None, sys.argv[3:])
        final = train_sft(cfg, should_stop=demo_stop(cfg, sys.argv[2]))
    else:
        from videor1.sft.trainer import run_sft
        final = run_sft(None, sys.argv[2:])
    print(f"FINAL {final}", flush=True)
''')


def launch(config: str, kind: str, overrides: list[str], tmp: Path, *, num_processes: int = 2,
           extra_env: dict[str, str] | None = None, timeout: int = RUN_TIMEOUT_S,
           script_text: str = LAUNCHER, script: Path | None = None,
           python: str = sys.executable) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file configs/accelerate/<config>.yaml --num_processes N` of the RL or SFT
    trainer with `overrides` (or of `script`, a file, or `script_text`, with arguments `kind, *overrides`); fails
    the test (with the output tail) on a non-zero exit or a timeout. `python`: the interpreter whose venv's
    `accelerate` launches."""
    if script is None:
        script = tmp / "launch_engine.py"
        script.write_text(script_text)
    accelerate = str(Path(python).parent / "accelerate")
    cmd = [accelerate, "launch", "--config_file", str(REPO / "configs" / "accelerate" / f"{config}.yaml"),
           "--num_processes", str(num_processes), "--num_machines", "1", "--main_process_port", "0", "--mixed_precision", "no",
           str(script), kind, *overrides]
    env = dict(os.environ, VIDEOR1_DIST_TIMEOUT_S=str(DIST_TIMEOUT_S), OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu",
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **(extra_env or {}))
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"")[-3000:] if isinstance(exc.stdout, bytes) else (exc.stdout or "")[-3000:]
        pytest.fail(f"{config} {kind}: no end after {timeout} s (a deadlock?)\n{out}")
    if proc.returncode != 0:
        pytest.fail(f"{config} {kind}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def run_together(cmds: list[list[str]], logs: list[Path], *, env: dict[str, str], timeout: float = RUN_TIMEOUT_S,
                 cwd: Path = REPO) -> list[str]:
    """Start every command at once (e.g. the launchers of a multi-node run), each writing stdout and stderr to its
    own log file, wait for all of them and return their outputs; fails the test with each output's tail as soon as
    one exits non-zero (killing the others, which would wait for it in a collective) or when they have not all
    ended after `timeout` s.

    Files, not pipes: a pipe holds 64 KiB, and a process whose pipe nobody drains blocks in its next write. Reading
    one launcher's pipe to its end before the other's (`communicate` in turn) deadlocked the two-node ZeRO-3 run
    once the second node's output (FutureWarnings included) passed 64 KiB: that process stopped inside a
    collective's warning, the other waited in the collective until gloo's timeout."""
    sinks = [log.open("w") for log in logs]
    # each in its own process group, so that a kill reaches the launcher's workers too
    procs = [subprocess.Popen(cmd, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True) for cmd, sink in zip(cmds, sinks)]
    deadline = time.monotonic() + timeout
    try:
        while not _all_ended_or_one_failed([proc.poll() for proc in procs]) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        timed_out = time.monotonic() >= deadline
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for sink in sinks:
            sink.close()
    outputs = [log.read_text() for log in logs]
    codes = [proc.returncode for proc in procs]
    if codes != [0] * len(procs):
        why = f"no end after {timeout} s (a deadlock?)" if timed_out else "a process failed, the others were killed"
        tails = "\n".join(f"--- {log.name} (exit {code})\n{text[-3000:]}" for log, code, text in zip(logs, codes, outputs))
        pytest.fail(f"{why}\n{tails}")
    return outputs


def _all_ended_or_one_failed(codes: list[int | None]) -> bool:
    return all(code is not None for code in codes) or any(code not in (None, 0) for code in codes)


def engine_of(out: Path) -> dict:
    return yaml.safe_load((out / "engine.yaml").read_text())


def metrics_of(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]


def copy_media(rows: list[dict], src: Path, dst: Path) -> None:
    for r in rows:
        if r.get("path") and (src / r["path"]).is_file():
            (dst / r["path"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src / r["path"], dst / r["path"])
