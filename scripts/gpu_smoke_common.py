"""What `gpu_smoke.py` and `gpu_smoke_launch.py` share: the repository root, `Skip`, the CUDA gate and the RL
run settings of the checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


class Skip(Exception):
    """A check that cannot run here (no CUDA, no vLLM)."""


def _needs_cuda(require_gpu: bool) -> None:
    import torch

    if not torch.cuda.is_available():
        if require_gpu:
            raise AssertionError("no CUDA device")
        raise Skip("no CUDA device")


def _metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _rl_config(work: Path, name: str, model: Path, data: dict, **over: Any) -> Any:
    from videor1.config import load_config
    from videor1.rl.config import RLConfig

    root = REPO / "configs"
    pairs = {"model": model, "train_data": data["rl"], "media_root": data["media_root"],
             "output_dir": work / name, "max_steps": 3, "save_steps": 0, "report_to": "[]",
             "progress": "false", "beta": 0.04, "prompts_per_step": 2, **over}
    return load_config(RLConfig, root / "rl_demo_cpu.yaml", [f"{k}={v}" for k, v in pairs.items()])
