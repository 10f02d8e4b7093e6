"""Projected per-GPU peak memory of the 7B recipes (projected, not measured: no GPU has been used), before and
after issue 35 (and the vLLM-scale issue's sleep mode and streamed weight sync), and a self-check of the
projection method against a measured peak on this CPU.

Recipes: configs/rl_qwen25vl7b_tgrpo.yaml (T-GRPO, G 8, completions of up to 768 tokens, 16 frames of
128x28x28 px, shared prefix, gradient checkpointing, bf16) under ZeRO-3 with colocated vLLM rollouts at
`vllm.gpu_memory_utilization` 0.5, with and without vLLM sleep mode (levels 1 and 2), on 8 GPUs; and
configs/sft_qwen25vl7b.yaml (ZeRO-2, one sample per GPU, same media) on 8 GPUs.

How each term is obtained:
- Parameter counts: Qwen2.5-VL-7B-Instruct built on the meta device from its published config.json
  (`QWEN25_VL_7B` below; no weights).
- Model states: ZeRO's sharding rules with bf16 mixed precision and AdamW (ZeRO paper: 2 bytes of bf16
  parameters, 2 of bf16 gradients, 12 of fp32 master + Adam moments per parameter): ZeRO-3 divides all 16
  by the GPU count, ZeRO-2 keeps the bf16 parameters whole (2 + 14 / N); the KL reference is an inference
  ZeRO-3 engine, bf16 partitions (2 / N). ZeRO-3 also holds gathered parameters while a module runs: the
  largest module (the embedding or lm_head) plus one prefetch bucket (accelerate's "auto": 0.9 hidden^2).
- Activations and logits: a forward + backward of the real Qwen2.5-VL-7B text decoder and lm_head at the
  recipe's sequence shapes, traced on fake tensors (`FakeTensorMode`, no memory behind them) with
  torch's `MemTracker` counting every tensor that would be allocated; gradient checkpointing on, as the
  recipes; parameter gradients freed as they are produced (ZeRO reduce-scatters them per bucket); traced at
  2, 4 and 6 layers of the real widths and extrapolated linearly to 28 (the third depth checks the line;
  `--depths` with no value traces all 28, slower on this shared CPU). The
  log-prob step is traced as each side computes it: before, `selective_log_softmax` as main has it (an fp32
  copy of each row's logits kept for backward) over the whole step's groups in one pass; after, one
  micro-batch of whole groups (`loss_micro_batch_size`) through a chunked log-softmax with its own backward
  (keeps the bf16 logits and one fp32 log-sum-exp per token, `chunked_logprobs` below: the definition, not
  branch i35a's code). SFT before: `token_nll` as main has it (the whole sequence's logits cast to fp32 for
  cross-entropy); after: the chunked log-softmax.
- Vision tower (trained in both recipes): its checkpointed block inputs and one block's recompute, by formula
  (its attention splits by data-dependent lengths, which fake tensors cannot trace).
- vLLM: it holds `gpu_memory_utilization` of the GPU while awake (weights + KV cache + its workspace). Asleep
  (sleep mode, level 1: weights to host RAM and KV cache dropped; level 2: both dropped) it keeps an assumed
  residual (`VLLM_ASLEEP_GB`); it is awake for rollouts and for the weight sync, asleep for the loss.
- Weight sync staging: before, the whole gathered bf16 state dict at once; after, streamed ~1 GB buckets (one
  bucket gathered + one being copied).
- Start-up: before, the issue's premise (policy loaded whole in fp32 and the reference in bf16 on every GPU);
  after, partitioned loading (each GPU its 1/N, plus the largest module built whole inside zero.Init). Note:
  main already partitioned at load (accelerate installs transformers' DeepSpeed config whatever
  `zero3_init_flag` says; tests/engines/test_engines_zero3_load.py), so the "before" start-up row is the
  issue's premise, not what main did.
A setting fits a GPU when its peak <= FIT_FRACTION x capacity - CUDA_CONTEXT_GB (allocator fragmentation,
CUDA context, NCCL buffers).

Self-check (`--check`, on by default): a small Qwen2.5-VL text model (hidden 256, 4 layers, vocabulary 32,000)
traced exactly as above and run for real on this CPU in a fresh process (fp32, the same shapes, gradient
checkpointing, gradients kept): the traced peak of forward + backward against the measured peak of anonymous
RSS over the same forward + backward (glibc's mmap threshold fixed so freed blocks go back), within
CHECK_TOLERANCE.

    .venv/bin/python perf/gpu_memory.py [--gpus 8] [--gpu-gb 40 80] [--no-check] [--check-only]
    .venv/bin/python perf/gpu_memory.py --long-video     (perf/long_video_memory.py: 64-1,024 frames, SP 1/2/4)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))   # perf/memory_model.py beside this script
from memory_model import (GB, QWEN25_VL_7B, Shapes, forward_loss, build_text_model, chunked_logprobs,  # noqa: E402
                          parameter_counts, qwen_config, trace_7b, trace_peak, vision_gb, zero2_states_gb,
                          zero3_live_gb, zero3_states_gb)

VLLM_ASLEEP_GB = 1.0      # assumed: what a sleeping vLLM keeps (CUDA graphs, allocator pools)
VLLM_WORKSPACE_GB = 1.0   # assumed: vLLM's activations / vision encoder workspace beside weights and KV cache
SYNC_BUCKET_GB = 1.0      # streamed weight sync bucket
FIT_FRACTION, CUDA_CONTEXT_GB = 0.95, 1.0
CHECK_TOLERANCE = 0.15    # |traced - measured| / measured of the self-check


@dataclass(frozen=True)
class RLSetting:
    name: str
    sleep_level: int = 0            # 0: no sleep mode
    before: bool = True             # before issue 35: one-pass fp32-row log-probs, whole-state-dict sync
    prompts_per_step: int = 1
    vllm_util: float = 0.5


def rl_peak(s: RLSetting, gpu_gb: float, gpus: int, counts: dict, act: dict, vis: float, hidden: int) -> dict:
    """Per-GPU peak (GB) over the step's phases: rollouts, weight sync, loss."""
    resident = zero3_states_gb(counts["total"], gpus) + 2 * counts["total"] / gpus / GB   # + reference
    vllm_awake = s.vllm_util * gpu_gb
    vllm_loss = VLLM_ASLEEP_GB if s.sleep_level else vllm_awake
    staging = 2 * counts["total"] / GB if s.before else 2 * SYNC_BUCKET_GB
    key = f"rl_before_{s.prompts_per_step}" if s.before else "rl_after"
    loss = act[key] + vis * (s.prompts_per_step if s.before else 1) + zero3_live_gb(counts, hidden)
    phases = {"rollout": resident + vllm_awake, "sync": resident + vllm_awake + staging,
              "loss": resident + vllm_loss + loss}
    return {"phases": phases, "peak": max(phases.values()), "bound": max(phases, key=phases.get)}


def fits(peak: float, gpu_gb: float) -> bool:
    return peak <= FIT_FRACTION * gpu_gb - CUDA_CONTEXT_GB


def startup_gb(counts: dict, gpus: int, before: bool) -> float:
    """RL start-up: policy (fp32) and reference (bf16) whole on every GPU, or partitioned (+ the largest
    module built whole inside zero.Init)."""
    if before:
        return 6 * counts["total"] / GB
    return (4 + 2) * counts["total"] / gpus / GB + 4 * counts["largest_module"] / GB


# ------------------------------------------------------------------------------------------ report
def project(gpus: int, gpu_sizes: list[float], depths: tuple[int, ...]) -> dict:
    cfg = qwen_config(QWEN25_VL_7B["text"], QWEN25_VL_7B["vision"])
    counts = parameter_counts(cfg)
    hidden = QWEN25_VL_7B["text"]["hidden_size"]
    print(f"Qwen2.5-VL-7B: {counts['total'] / 1e9:.2f}B parameters ({counts['vision'] / 1e9:.2f}B vision), largest "
          f"module {counts['largest_module'] / 1e6:.0f}M (meta device)")
    rl, sft = Shapes(), Shapes(G=1, groups=1, logits_all=True)
    cases = {"rl_before_1": (rl, "rl_before"), "rl_after": (rl, "rl_after"),
             "rl_before_4": (replace(rl, groups=4), "rl_before"),
             "sft_before": (sft, "sft_before"), "sft_after": (sft, "sft_after")}
    print("tracing the 7B text decoder + lm_head on fake tensors (bf16, gradient checkpointing):")
    act = trace_7b(cfg, cases, depths)
    vis = vision_gb(rl, QWEN25_VL_7B["vision"])
    print(f"vision tower (formula): {vis:.2f} GB per prompt in the pass")
    rows = []
    print(f"\nT-GRPO 7B, ZeRO-3, {gpus} GPUs, colocated vLLM (gpu_memory_utilization 0.5): per-GPU peak, GB "
          "(projected, not measured)")
    print(f"{'setting':66s} " + " ".join(f"{g:>4.0f} GB GPU    " for g in gpu_sizes))
    settings = []
    for before in (True, False):
        for pps in ((1, 4) if before else (1, 4)):
            for sleep in (0, 1, 2):
                tag = "before" if before else "after "
                mb = "" if before else ", loss_micro_batch_size 1"
                settings.append(RLSetting(f"{tag} prompts_per_step {pps}{mb}, sleep_level {sleep}", sleep, before, pps))
    for s in settings:
        cells, row = [], {"setting": s.name}
        for g in gpu_sizes:
            r = rl_peak(s, g, gpus, counts, act, vis, hidden)
            cells.append(f"{r['peak']:5.1f} {'fits' if fits(r['peak'], g) else 'OOM '} {r['bound'][:4]}")
            row[f"{g:.0f}GB"] = {"peak": round(r["peak"], 1), "fits": fits(r["peak"], g), "bound": r["bound"],
                                 "phases": {k: round(v, 1) for k, v in r["phases"].items()}}
        rows.append(row)
        print(f"{s.name:66s} " + " ".join(cells))
    print(f"start-up: before {startup_gb(counts, gpus, True):.1f} GB per GPU (the issue's premise), after "
          f"{startup_gb(counts, gpus, False):.1f} GB (partitioned)")
    sft_rows = {}
    print(f"\nSFT 7B, ZeRO-2, {gpus} GPUs, one sample of {sft.P} + {sft.C} tokens per GPU: per-GPU peak, GB")
    for tag, key in (("before", "sft_before"), ("after", "sft_after")):
        states = zero2_states_gb(counts["total"], gpus)
        peak = states + act[key] + vis
        peak3 = zero3_states_gb(counts["total"], gpus) + act[key] + vis + zero3_live_gb(counts, hidden)
        sft_rows[tag] = {"zero2": round(peak, 1), "zero3": round(peak3, 1)}
        print(f"  {tag}: ZeRO-2 {peak:.1f} GB ({', '.join(('fits' if fits(peak, g) else 'OOM') + f' {g:.0f} GB' for g in gpu_sizes)}); "
              f"under ZeRO-3 {peak3:.1f} GB")
    print(f"  start-up (ZeRO-2 loads the fp32 policy whole on every GPU before DeepSpeed casts it): "
          f"{4 * counts['total'] / GB:.1f} GB")
    advise(rows, gpu_sizes, counts, gpus, act, vis, hidden)
    return {"counts": counts, "activations_gb": act, "vision_gb": vis, "rl": rows, "sft": sft_rows}


def advise(rows: list[dict], gpu_sizes: list[float], counts: dict, gpus: int, act: dict, vis: float,
           hidden: int) -> None:
    """For a 40 GB GPU: which setting fits, and if none, what would."""
    g = min(gpu_sizes)
    ok = [r["setting"] for r in rows if r[f"{g:.0f}GB"]["fits"]]
    print(f"\nOn {g:.0f} GB GPUs: " + (f"fits with: {'; '.join(ok)}" if ok else "no listed setting fits."))
    if ok:
        return
    budget = FIT_FRACTION * g - CUDA_CONTEXT_GB
    s = RLSetting("after", 2, False, 1)
    weights = 2 * counts["total"] / GB
    text = QWEN25_VL_7B["text"]
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    kv_token = 2 * text["num_hidden_layers"] * text["num_key_value_heads"] * head_dim * 2
    shapes = Shapes()
    kv = (shapes.G + shapes.G // 2) * (shapes.P + shapes.C) * kv_token / GB    # one prompt's G + G~ rollouts
    for tp in (1, 2):
        need = weights / tp + kv + VLLM_WORKSPACE_GB
        util = need / g
        r = rl_peak(replace(s, vllm_util=util), g, gpus, counts, act, vis, hidden)
        verdict = "fits" if r["peak"] <= budget else "does not fit"
        print(f"  vllm.tensor_parallel_size {tp}: vLLM needs {need:.1f} GB (weights {weights / tp:.1f} + KV of one "
              f"prompt's {shapes.G}+{shapes.G // 2} rollouts {kv:.1f} + workspace {VLLM_WORKSPACE_GB}), i.e. "
              f"gpu_memory_utilization {util:.2f}: peak {r['peak']:.1f} GB ({r['bound']}), {verdict}")
    offload = rl_peak(s, g, gpus, counts, act, vis, hidden)["peak"] - 12 * counts["total"] / gpus / GB
    print(f"  DeepSpeed offload_optimizer: cpu (fp32 master + Adam moments, {12 * counts['total'] / gpus / GB:.1f} GB "
          f"per GPU, to host RAM) with sleep_level 2 and utilization 0.5: peak {offload:.1f} GB "
          f"({'fits' if offload <= budget else 'does not fit'})")


def print_assumptions(gpus: int) -> None:
    print("assumptions: bf16 mixed precision, AdamW, ZeRO-3 16 bytes/parameter / N (+ reference 2 / N); "
          f"{gpus} GPUs; vLLM holds gpu_memory_utilization x GPU while awake, {VLLM_ASLEEP_GB} GB asleep; sync "
          f"staging whole state dict (before) or 2 x {SYNC_BUCKET_GB} GB (after); fits when peak <= "
          f"{FIT_FRACTION} x GPU - {CUDA_CONTEXT_GB} GB; prompt {Shapes.P} tokens (1,024 vision), G {Shapes.G}, "
          f"C {Shapes.C} (the longest completions); vision tower by formula; no vLLM sleep during rollouts/sync")


# ------------------------------------------------------------------------------------- self-check
SMALL_TEXT = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=32000, bos_token_id=0, eos_token_id=1, rms_norm_eps=1e-6, rope_theta=1000000.0,
                  max_position_embeddings=4096, rope_scaling={"type": "mrope", "mrope_section": [8, 12, 12]})
SMALL_SHAPES = Shapes(P=256, G=4, C=128, groups=2)


def _small():
    return qwen_config(SMALL_TEXT, dict(depth=1, hidden_size=64, num_heads=4, out_hidden_size=256))


def _rss_anon() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))


def measure_small() -> float:
    """Measured peak anonymous RSS (bytes) over one real forward + backward of the small model (fp32)."""
    import threading

    torch.manual_seed(0)
    model, head = build_text_model(_small(), torch.float32)
    shapes = SMALL_SHAPES
    length = shapes.P + shapes.G * shapes.C
    emb = torch.randn(shapes.groups, length, SMALL_TEXT["hidden_size"])
    pos = torch.arange(length).expand(3, shapes.groups, length)
    ids = torch.randint(0, SMALL_TEXT["vocab_size"], (shapes.groups * shapes.G, shapes.C))
    base, peak, done = _rss_anon(), [0], []

    def sample() -> None:
        while not done:
            peak[0] = max(peak[0], _rss_anon())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    forward_loss(model, head, emb, pos, ids, shapes, "rl_before").backward()
    done.append(True)
    sampler.join()
    return float(max(peak[0], _rss_anon()) - base)


def check_chunked() -> bool:
    """`chunked_logprobs` (the "after" log-prob definition) against log_softmax + gather: values and gradient."""
    torch.manual_seed(0)
    x = torch.randn(7, 50, dtype=torch.float64, requires_grad=True)
    ids, w = torch.randint(0, 50, (7,)), torch.randn(7, dtype=torch.float64)
    ref = torch.log_softmax(x, -1).gather(-1, ids[:, None]).squeeze(-1)
    out = chunked_logprobs(x, ids, chunk=3).double()
    g_ref, = torch.autograd.grad((ref * w).sum(), x)
    g_out, = torch.autograd.grad((out * w).sum(), x)
    err = max(float((ref - out).detach().abs().max()), float((g_ref - g_out).abs().max()))
    print(f"chunked log-softmax vs log_softmax + gather: max difference {err:.1e} (values and gradient; fp32 inside)")
    return err < 1e-5


def self_check() -> bool:
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        model, head = build_text_model(_small(), torch.float32)
        traced = trace_peak(model, head, SMALL_SHAPES, "rl_before", dtype=torch.float32, free_grads=False)["peak"]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, __file__, "--measure-small"], env=env, capture_output=True, text=True,
                          check=True)
    measured = float(json.loads(proc.stdout.strip().splitlines()[-1])["measured"])
    err = abs(traced - measured) / measured
    ok = err <= CHECK_TOLERANCE
    print(f"self-check (small model on this CPU, fp32, {SMALL_SHAPES.groups} groups x {SMALL_SHAPES.G} x "
          f"{SMALL_SHAPES.C} + {SMALL_SHAPES.P}): traced {traced / 2**20:.1f} MiB, measured peak RSS "
          f"{measured / 2**20:.1f} MiB, off by {err:.1%} (tolerance {CHECK_TOLERANCE:.0%}): "
          f"{'PASS' if ok else 'FAIL'}", flush=True)
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--gpu-gb", type=float, nargs="+", default=[40.0, 80.0])
    ap.add_argument("--depths", type=int, nargs="*", default=[2, 4, 6],
                    help="decoder depths to trace and extrapolate from (none: all 28 layers, slower)")
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--check-only", action="store_true")
    ap.add_argument("--measure-small", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--long-video", action="store_true",
                    help="only the long-video table (64-1,024 frames at SP 1/2/4; perf/long_video_memory.py)")
    args = ap.parse_args()
    if args.long_video:
        from long_video_memory import print_table

        print_table(depths=tuple(args.depths))
        return
    if args.measure_small:
        print(json.dumps({"measured": measure_small()}))
        return
    ok = True if args.no_check else check_chunked() and self_check()
    if not args.check_only:
        print_assumptions(args.gpus)
        result = project(args.gpus, sorted(args.gpu_gb), tuple(args.depths))
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(result, f, indent=1, default=str)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
