"""The checks of `gpu_smoke.py` that run under `accelerate launch` (ZeRO-2 / ZeRO-3 T-GRPO, FSDP2 SFT), and the
worker they launch: this file with `--worker rl|sft`."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))   # gpu_smoke_common beside this file, however run

from gpu_smoke_common import REPO, Skip, _metrics, _needs_cuda, _rl_config  # noqa: E402


def _launch(work: Path, name: str, accel_config: str, kind: str, model: Path, data: dict) -> dict:
    """Run this script's `--worker KIND` under `accelerate launch` (one process); returns the worker's JSON."""
    out = work / name
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / accel_config),
           "--num_processes", "1", str(Path(__file__).resolve()), "--worker", kind, "--out", str(out),
           "--model", str(model), "--data", json.dumps({k: str(v) for k, v in data.items()})]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=420, env=env, cwd=str(REPO))
    if proc.returncode != 0:
        raise AssertionError(f"{kind} exited {proc.returncode}: {proc.stdout[-1500:]}\n{proc.stderr[-3000:]}")
    return json.loads((out / "worker.json").read_text())


def _needs_deepspeed(require_gpu: bool) -> None:
    _needs_cuda(require_gpu)
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        if require_gpu:
            raise
        raise Skip("DeepSpeed is not installed") from None


def check_zero3(work: Path, model: Path, data: dict, require_gpu: bool = False) -> str:
    _needs_deepspeed(require_gpu)
    return _check_zero(work, model, data, "zero3")


def check_zero2(work: Path, model: Path, data: dict, require_gpu: bool = False) -> str:
    _needs_deepspeed(require_gpu)
    return _check_zero(work, model, data, "zero2")


def _check_zero(work: Path, model: Path, data: dict, stage: str) -> str:
    res = _launch(work, f"rl_{stage}", f"configs/accelerate/{stage}.yaml", "rl", model, data)
    if not res["decay_params"] > 0 or not res["max_change"] > 0 or res["steps"] != 2:
        raise AssertionError(f"{stage}: {res}")
    return f"2 T-GRPO steps, beta 0.04: {res}"


def check_fsdp2_sft(work: Path, model: Path, data: dict, require_gpu: bool = False) -> str:
    _needs_cuda(require_gpu)
    res = _launch(work, "sft_fsdp2", "configs/accelerate/fsdp2.yaml", "sft", model, data)
    if not res["max_change"] > 0 or res["empty"]:
        raise AssertionError(f"fsdp2 sft: {res}")
    return f"SFT under FSDP2, final save loaded back: {res}"


def _max_change(before_dir: Path, after_dir: Path) -> tuple[float, list[str]]:
    from safetensors.torch import load_file

    def tensors(d: Path) -> dict:
        out = {}
        for f in sorted(d.glob("*.safetensors")):
            out.update(load_file(str(f)))
        return out

    before, after = tensors(before_dir), tensors(after_dir)
    empty = [k for k, v in after.items() if v.numel() == 0 or k not in before]
    change = max((after[k].float() - before[k].float()).abs().max().item() for k in before if k in after)
    return change, empty


def worker(kind: str, out: Path, model: Path, data: dict) -> None:
    """Runs under `accelerate launch` (see `_launch`): 2 T-GRPO steps or 5 SFT steps; writes worker.json."""
    from accelerate import PartialState

    result: dict[str, Any] = {}
    if kind == "rl":
        import videor1.rl.trainer as rl

        build = rl._build_optimizer

        def recording(cfg, m):  # the weight-decay group must not be empty (ZeRO-3 placeholder shapes)
            opt, sched = build(cfg, m)
            result["decay_params"] = len(opt.param_groups[0]["params"])
            return opt, sched

        rl._build_optimizer = recording
        final = rl.train(_rl_config(out, "run", model, data, max_steps=2, bf16="true", gradient_checkpointing="true",
                                    prompts_per_step=1))
        result["steps"] = len(_metrics(out / "run"))
        result["kl"] = [round(r.get("kl", 0.0), 6) for r in _metrics(out / "run")]
    else:
        from videor1.config import load_config
        from videor1.sft.config import SFTConfig
        from videor1.sft.trainer import train_sft

        cfg = load_config(SFTConfig, REPO / "configs" / "sft_demo_cpu.yaml", [
            f"model={model}", f"train_data={data['cot']}", f"media_root={data['media_root']}",
            f"output_dir={out / 'run'}", "max_steps=5", "save_steps=0", "report_to=[]", "progress=false",
            "bf16=true", "gradient_checkpointing=true"])
        final = train_sft(cfg)
    if PartialState().is_main_process:
        from videor1.model.load import load_model

        load_model(final, device="cpu")  # the final save loads back
        result["max_change"], empty = _max_change(model, Path(final))
        result["empty"] = empty[:5]
        (out / "worker.json").write_text(json.dumps(result))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=("rl", "sft"), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", required=True)
    args = parser.parse_args()
    worker(args.worker, args.out, args.model, json.loads(args.data))
