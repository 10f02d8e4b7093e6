"""Smoke checks for the paths CI cannot run: bf16 on a GPU, the reference model, vLLM, server mode.

One short script for a session that is lent a GPU (it also runs on a CPU, where the GPU-only checks are
reported as skipped). Each check runs on the tiny model and a small synthetic set made on the spot, is
timed, and is reported as ok / FAILED (with the reason) / skipped; the script goes on after a failure and
exits 1 if any check failed. Results also go to ``OUT/gpu_smoke.json``.

    python scripts/gpu_smoke.py [--out DIR] [--only sft,rl,eval,vllm,server] [--dry-run]

``--dry-run`` runs only the preflight (imports every module the checks use; no model, no data, seconds)
and reports the selected checks as skipped: the test suite uses it to prove the script works.

Checks: ``sft`` (5 steps, bf16 where supported: the loss is finite and falls), ``rl`` (3 T-GRPO steps with
beta 0.04, i.e. with a reference model: metrics written, vision tower changed), ``eval`` (batched greedy
evaluation, ordered and shuffled frames), ``vllm`` (VLLMEngine on real frames, ordered and permuted,
plus a weight sync; needs vLLM and CUDA), ``server`` (3 T-GRPO steps through ``videor1 serve-rollouts
--engine vllm``; needs vLLM and CUDA).
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

CHECKS = ("sft", "rl", "eval", "vllm", "server")
PREFLIGHT_MODULES = ("torch", "safetensors.torch", "videor1.config", "videor1.data.synth.build",
                     "videor1.model.tiny", "videor1.model.load", "videor1.model.inputs",
                     "videor1.data.records", "videor1.data.media", "videor1.generation.engines",
                     "videor1.generation.remote", "videor1.sft.trainer", "videor1.rl.config",
                     "videor1.rl.trainer", "videor1.evaluate.runner")


class Skip(Exception):
    """A check that cannot run here (no CUDA, no vLLM)."""


def _needs_vllm() -> None:
    import torch

    if not torch.cuda.is_available():
        raise Skip("no CUDA device")
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise Skip("vLLM is not installed") from None


def _metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _rl_config(work: Path, name: str, model: Path, data: dict, **over: Any) -> Any:
    from videor1.config import load_config
    from videor1.rl.config import RLConfig

    root = Path(__file__).resolve().parents[1] / "configs"
    pairs = {"model": model, "train_data": data["rl"], "media_root": data["media_root"],
             "output_dir": work / name, "max_steps": 3, "save_steps": 0, "tensorboard": "false",
             "progress": "false", "beta": 0.04, "prompts_per_step": 2, **over}
    return load_config(RLConfig, root / "rl_demo_cpu.yaml", [f"{k}={v}" for k, v in pairs.items()])


def check_sft(work: Path, model: Path, data: dict) -> str:
    from videor1.config import load_config
    from videor1.sft.config import SFTConfig
    from videor1.sft.trainer import train_sft

    root = Path(__file__).resolve().parents[1] / "configs"
    cfg = load_config(SFTConfig, root / "sft_demo_cpu.yaml", [
        f"model={model}", f"train_data={data['cot']}", f"media_root={data['media_root']}",
        f"output_dir={work / 'sft'}", "max_steps=5", "save_steps=0", "tensorboard=false", "progress=false",
        "bf16=auto", "gradient_checkpointing=true"])
    train_sft(cfg)
    losses = [r["loss"] for r in _metrics(work / "sft")]
    if not all(x == x and abs(x) < 1e4 for x in losses) or not losses[-1] < losses[0]:
        raise AssertionError(f"SFT losses {losses}")
    return f"losses {losses[0]:.3f} -> {losses[-1]:.3f}"


def check_rl(work: Path, model: Path, data: dict) -> str:
    import torch
    from safetensors.torch import load_file

    from videor1.rl.trainer import train

    final = train(_rl_config(work, "rl", model, data, bf16="auto", gradient_checkpointing="true"))
    before, after = load_file(str(model / "model.safetensors")), load_file(str(final / "model.safetensors"))
    moved = max((after[k].float() - before[k].float()).abs().max().item() for k in before if "visual" in k)
    rows = _metrics(work / "rl")
    if len(rows) != 3 or not moved > 0:
        raise AssertionError(f"{len(rows)} metric rows, vision tower moved {moved}")
    kl = [round(r.get("kl", 0.0), 5) for r in rows]
    return f"3 steps, kl {kl}, vision tower max change {moved:.2e}, cuda={torch.cuda.is_available()}"


def check_eval(work: Path, model: Path, data: dict) -> str:
    from videor1.data.media import ImageSpec, VideoSpec
    from videor1.evaluate.config import EvalConfig
    from videor1.evaluate.runner import run_eval

    summary = run_eval(EvalConfig(model=Path(model), bench="videor1", data=Path(data["test"]),
                                  media_root=Path(data["media_root"]), out=work / "eval",
                                  video=VideoSpec(max_frames=4, max_pixels=3136), image=ImageSpec(max_pixels=3136),
                                  batch_size=8, max_new_tokens=16, shuffle_frames=True), echo=lambda _: None)
    return f"official {summary['official']['overall']:.3f} over {summary['official'].get('n', '?')} items"


def check_vllm(work: Path, model: Path, data: dict) -> str:
    _needs_vllm()
    import numpy as np

    from videor1.data.media import ImageSpec, VideoSpec
    from videor1.data.records import load_records
    from videor1.model.load import load_model, load_processor
    from videor1.generation.engines import SamplingParams, VLLMEngine
    from videor1.model.inputs import make_sample

    processor = load_processor(model)
    engine = VLLMEngine(processor, model_path=str(model), llm_kwargs={"gpu_memory_utilization": 0.3})
    records = [r for r in load_records(data["test"]) if r.data_type == "video"][:4]
    video, image = VideoSpec(max_frames=4, max_pixels=3136), ImageSpec(max_pixels=3136)
    samples = [make_sample(r, data["media_root"], video, image) for r in records]
    shuffled = [type(s)(s.record, s.media.permuted(list(np.random.default_rng(0).permutation(4))), s.messages)
                for s in samples]
    out = engine.generate(samples + shuffled, SamplingParams(n=2, max_new_tokens=16, seed=0))
    if len(out) != 8 or not all(len(g) == 2 for g in out):
        raise AssertionError(f"vLLM returned {[len(g) for g in out]}")
    engine.sync_weights(load_model(model))
    return f"8 prompts x 2 completions, first: {out[0][0].text[:40]!r}; weight sync ok"


def check_server(work: Path, model: Path, data: dict) -> str:
    _needs_vllm()
    from videor1.rl.trainer import train

    weights = work / "shm"
    videor1 = str(Path(sys.executable).parent / "videor1")
    proc = subprocess.Popen([videor1, "serve-rollouts", "--model", str(model), "--engine", "vllm", "--port", "0",
                             "--weights-dir", str(weights), "--gpu-memory-utilization", "0.3"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("serving rollouts on "):
            raise AssertionError(f"server said {line!r}")
        url = line.split()[-1]
        train(_rl_config(work, "rl_remote", model, data, rollout_engine="remote", **{"remote.url": url,
                                                                                   "remote.weights_dir": weights}))
        return f"3 T-GRPO steps through {url}"
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def preflight() -> str:
    """Import every module the checks use (no model, no data): a broken import or layout fails here."""
    for name in PREFLIGHT_MODULES:
        importlib.import_module(name)
    return f"{len(PREFLIGHT_MODULES)} modules import"


def _run(name: str, fn: Callable[[], str], results: dict) -> None:
    t0 = time.perf_counter()
    try:
        status, detail = "ok", fn()
    except Skip as exc:
        status, detail = "skipped", str(exc)
    except Exception as exc:  # report and go on: one run should show every failing path
        status, detail = "FAILED", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
    results[name] = {"status": status, "seconds": round(time.perf_counter() - t0, 1), "detail": detail}
    print(f"{name:9s} {status:8s} {results[name]['seconds']:6.1f} s  {detail.splitlines()[0]}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the checks; write OUT/gpu_smoke.json; return the exit status (1 if any check failed)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--only", default=",".join(CHECKS))
    parser.add_argument("--dry-run", action="store_true",
                        help="preflight only (imports); report the selected checks as skipped")
    args = parser.parse_args(argv)
    only = [name for name in args.only.split(",") if name]
    unknown = sorted(set(only) - set(CHECKS))
    if unknown:
        parser.error(f"unknown check(s) {', '.join(unknown)}; known: {', '.join(CHECKS)}")
    import torch

    work = args.out or Path(tempfile.mkdtemp(prefix="videor1-gpu-smoke-"))
    work.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(f"torch {torch.__version__}, device {device}, work dir {work}", flush=True)
    results: dict[str, dict] = {}
    _run("preflight", preflight, results)
    if args.dry_run:
        for name in only:
            results[name] = {"status": "skipped", "seconds": 0.0, "detail": "dry run"}
    elif results["preflight"]["status"] == "ok":
        from videor1.data.synth.build import make_dataset
        from videor1.model.tiny import build_tiny

        data = make_dataset(work / "synth", n_train=32, n_test=16, seed=0)
        model = build_tiny(work / "tiny", seed=0)
        checks: dict[str, Callable[[Path, Path, dict], str]] = {
            "sft": check_sft, "rl": check_rl, "eval": check_eval, "vllm": check_vllm, "server": check_server}
        for name in only:
            _run(name, lambda fn=checks[name]: fn(work, model, data), results)
    (work / "gpu_smoke.json").write_text(json.dumps({"device": device, "torch": torch.__version__,
                                                     "dry_run": args.dry_run, "results": results}, indent=1))
    return 1 if any(r["status"] == "FAILED" for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
