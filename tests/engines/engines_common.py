"""Helpers of the engine tests (see conftest.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
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

    def stop_after_2(step, model, processor):
        """A stop check with a model forward (a collective under ZeRO-3 / FSDP2), True after step 2."""
        import torch
        from accelerate import PartialState
        ids = torch.tensor([[1, 2, 3]], device=next(model.parameters()).device)
        with torch.no_grad():
            logits = model(input_ids=ids).logits
        print(f"STOP-CHECK rank={PartialState().process_index} step={step} finite={bool(logits.isfinite().all())}",
              flush=True)
        return step >= 2

    if sys.argv[1] == "rl":
        from videor1.rl.trainer import run_training
        final = run_training(None, sys.argv[2:])
    elif sys.argv[1] == "sft-stop":
        from videor1.config import load_config
        from videor1.sft.trainer import SFTConfig, train_sft
        final = train_sft(load_config(SFTConfig, None, sys.argv[2:]), should_stop=stop_after_2)
    else:
        from videor1.sft.trainer import run_sft
        final = run_sft(None, sys.argv[2:])
    print(f"FINAL {final}", flush=True)
''')


def launch(config: str, kind: str, overrides: list[str], tmp: Path, *, num_processes: int = 2,
           extra_env: dict[str, str] | None = None, timeout: int = RUN_TIMEOUT_S,
           source: str = LAUNCHER) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file configs/accelerate/<config>.yaml --num_processes N` of the RL or SFT
    trainer (or of another script's `source`) with `overrides`; fails the test (with the output tail) on a
    non-zero exit or a timeout."""
    script = tmp / "launch_engine.py"
    script.write_text(source)
    accelerate = str(Path(sys.executable).parent / "accelerate")
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


def engine_of(out: Path) -> dict:
    return yaml.safe_load((out / "engine.yaml").read_text())


def metrics_of(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]


def copy_media(rows: list[dict], src: Path, dst: Path) -> None:
    for r in rows:
        if r.get("path") and (src / r["path"]).is_file():
            (dst / r["path"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src / r["path"], dst / r["path"])
