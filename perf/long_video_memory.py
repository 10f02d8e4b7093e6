"""Projected per-GPU peak of Qwen2.5-VL-7B T-GRPO on long video (projected, not measured: no GPU has been used):
64 to 1,024 frames at sequence-parallel sizes 1, 2 and 4, ZeRO-3 on 8 x 80 GB, colocated vLLM at
gpu_memory_utilization 0.5; which frame count fits at each SP size.

`project_long_video(frames, sp)` returns one setting's figures (perf/long_video.py prints them beside its CPU
measurements); `python perf/long_video_memory.py` (or `perf/gpu_memory.py --long-video`) prints the table.

What is assumed (beside perf/gpu_memory.py's method, whose terms are reused from perf/memory_model.py):
- Media: each frame at the recipe's 128*28*28 px: 64 merged vision tokens per frame (128 per temporal patch of
  2 frames); the prompt is those plus 126 text tokens; G 8 completions of 768 tokens in the shared-prefix layout,
  one group per loss pass (loss_micro_batch_size 1), the chunked log-softmax, gradient checkpointing, bf16.
- Sequence parallelism (DeepSpeed Ulysses): each rank holds 1/SP of the sequence between attention calls and
  the whole sequence over 1/SP of the heads inside them, so its text-decoder activations are those of a
  sequence of L / SP tokens (traced as such; flash attention: no L x L scores). The completions sit at the
  end of the sequence: the rank holding the last chunk computes the logits of min(G*C, L / SP) positions (no
  redistribution of the lm_head work assumed). Ulysses' all-to-all buffers: q, k, v and the output of one
  layer at L / SP tokens (its recompute), counted.
- Every rank builds the whole sequence's `inputs_embeds` and holds the all-gathered vision embeddings
  (2 x L x hidden, bf16) before slicing its chunk, counted.
- The vision tower is sharded by temporal patches (`videor1.model.vision_shard`): each rank keeps 1/SP of
  the tower's checkpointed activations (perf/memory_model.vision_gb's formula).
- Model states: ZeRO-3 over all 8 GPUs (the SP groups' ranks are ZeRO ranks too), 16 bytes per parameter / 8,
  the reference model 2 / 8, plus the largest module and a prefetch bucket gathered.
- vLLM at 0.5 x 80 GB, awake during the loss (no sleep mode: the `peak` column), or asleep during it (sleep
  mode, `vllm.sleep_level` 1 or 2: perf/gpu_memory.py's assumed 1 GB residual; the `asleep` column); its own
  need (weights, the KV cache of the ordered and the shuffled prompt and 8 + 4 completions, workspace) is
  checked against its share (the rollout phase: states + vLLM, always below the loss pass here).
- Fits when peak <= 0.95 x 80 GB - 1 GB (perf/gpu_memory.py's rule).
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))   # perf/memory_model.py beside this script
from memory_model import (GB, QWEN25_VL_7B, Shapes, parameter_counts, qwen_config, trace_7b,  # noqa: E402
                          vision_gb, zero3_live_gb, zero3_states_gb)

FRAMES = (64, 128, 256, 512, 1024)
SP_SIZES = (1, 2, 4)
TOKENS_PER_FRAME = 64          # merged vision tokens of one 128*28*28 px frame (128 per 2-frame temporal patch)
TEXT_TOKENS = 126              # the prompt's text around the video (perf/memory_model.Shapes: 1,150 - 1,024)
G, C = 8, 768
GPUS, GPU_GB, VLLM_UTIL = 8, 80.0, 0.5
FIT_FRACTION, CUDA_CONTEXT_GB = 0.95, 1.0     # perf/gpu_memory.py's fit rule
VLLM_WORKSPACE_GB = 1.0                        # perf/gpu_memory.py's assumptions
VLLM_ASLEEP_GB = 1.0


def sequence_length(frames: int) -> int:
    """Tokens of one group's shared-prefix row: prompt (vision + text) + G completions of C tokens."""
    return frames * TOKENS_PER_FRAME + TEXT_TOKENS + G * C


def chunk_shapes(frames: int, sp: int) -> Shapes:
    """The last SP rank's chunk as a traceable pass: L / SP tokens, the logits on its completion positions."""
    chunk = -(-sequence_length(frames) // sp)
    kept = min(G * C, chunk)
    return Shapes(P=chunk - kept, G=1, C=kept, groups=1, vision_tokens=frames * TOKENS_PER_FRAME)


@functools.lru_cache(maxsize=None)
def _model() -> tuple:
    cfg = qwen_config(QWEN25_VL_7B["text"], QWEN25_VL_7B["vision"])
    return cfg, parameter_counts(cfg)


@functools.lru_cache(maxsize=None)
def _traced_gb(chunk: int, kept: int, depths: tuple[int, ...]) -> float:
    cfg, _ = _model()
    shapes = Shapes(P=chunk - kept, G=1, C=kept, groups=1)
    return trace_7b(cfg, {f"L/SP {chunk}": (shapes, "rl_after")}, depths)[f"L/SP {chunk}"]


def vllm_need_gb(frames: int, total_params: int) -> float:
    """vLLM's own need: bf16 weights + KV of the ordered and shuffled prompts and G + G/2 completions + workspace."""
    text = QWEN25_VL_7B["text"]
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    kv_token = 2 * text["num_hidden_layers"] * text["num_key_value_heads"] * head_dim * 2   # K and V, bf16
    prompt = frames * TOKENS_PER_FRAME + TEXT_TOKENS
    return (2 * total_params + (2 * prompt + (G + G // 2) * C) * kv_token) / GB + VLLM_WORKSPACE_GB


def project_long_video(frames: int, sp: int, *, depths: tuple[int, ...] = (2, 4, 6)) -> dict:
    """Projected per-GPU peak (GB) of one T-GRPO loss pass of Qwen2.5-VL-7B at `frames` frames and SP size `sp`
    (see the module doc), by term, with `fits` on 80 GB. Traces the text decoder on fake tensors (cached per
    chunk length; a few seconds each on this CPU)."""
    cfg, counts = _model()
    hidden = QWEN25_VL_7B["text"]["hidden_size"]
    shapes = chunk_shapes(frames, sp)
    length = sequence_length(frames)
    chunk = shapes.P + shapes.C
    terms = {
        "model_states": zero3_states_gb(counts["total"], GPUS) + 2 * counts["total"] / GPUS / GB,
        "zero3_gathered": zero3_live_gb(counts, hidden),
        "vllm": VLLM_UTIL * GPU_GB,
        "text_activations": _traced_gb(chunk, shapes.C, tuple(depths)),
        "vision_activations": vision_gb(shapes, QWEN25_VL_7B["vision"]) / sp,
        "full_embeds": 2 * length * hidden * 2 / GB,
        "ulysses_buffers": (4 * chunk * hidden * 2 / GB) if sp > 1 else 0.0,
    }
    peak = sum(terms.values())
    asleep = peak - terms["vllm"] + VLLM_ASLEEP_GB
    budget = FIT_FRACTION * GPU_GB - CUDA_CONTEXT_GB
    vllm_need = vllm_need_gb(frames, counts["total"])
    return {"frames": frames, "sp": sp, "sequence": length, "chunk": chunk, "logit_positions": shapes.C,
            "terms_gb": {k: round(v, 2) for k, v in terms.items()}, "peak_gb": round(peak, 1),
            "budget_gb": budget, "fits": peak <= budget, "peak_vllm_asleep_gb": round(asleep, 1),
            "fits_vllm_asleep": asleep <= budget, "vllm_need_gb": round(vllm_need, 1),
            "vllm_fits": vllm_need <= VLLM_UTIL * GPU_GB, "projected": True}


def print_table(frames: tuple[int, ...] = FRAMES, sp_sizes: tuple[int, ...] = SP_SIZES,
                depths: tuple[int, ...] = (2, 4, 6)) -> list[dict]:
    rows = [project_long_video(f, sp, depths=depths) for f in frames for sp in sp_sizes]
    print(f"\nLong video, Qwen2.5-VL-7B T-GRPO, ZeRO-3, {GPUS} x {GPU_GB:.0f} GB, colocated vLLM at {VLLM_UTIL} "
          f"(awake): per-GPU peak of a loss pass, GB (PROJECTED, not measured)")
    print(f"{'frames':>6} {'tokens':>7} {'SP':>3} {'chunk':>6} {'states':>6} {'vLLM':>5} {'text act':>8} "
          f"{'vision':>6} {'embeds':>6} {'a2a':>5} {'peak':>6} {'fits':>5} {'asleep':>6} {'fits':>5} {'vLLM need':>9}")
    for r in rows:
        t = r["terms_gb"]
        print(f"{r['frames']:>6} {r['sequence']:>7} {r['sp']:>3} {r['chunk']:>6} "
              f"{t['model_states'] + t['zero3_gathered']:>6.1f} {t['vllm']:>5.0f} {t['text_activations']:>8.1f} "
              f"{t['vision_activations']:>6.1f} {t['full_embeds']:>6.1f} {t['ulysses_buffers']:>5.1f} "
              f"{r['peak_gb']:>6.1f} {'yes' if r['fits'] else 'no':>5} {r['peak_vllm_asleep_gb']:>6.1f} "
              f"{'yes' if r['fits_vllm_asleep'] else 'no':>5} {r['vllm_need_gb']:>9.1f}"
              f"{'' if r['vllm_fits'] else ' !'}")
    budget = rows[0]["budget_gb"]
    for sp in sp_sizes:
        awake = [r["frames"] for r in rows if r["sp"] == sp and r["fits"]]
        asleep = [r["frames"] for r in rows if r["sp"] == sp and r["fits_vllm_asleep"]]
        print(f"  SP {sp}: largest frame count that fits ({budget:.0f} GB usable): vLLM awake "
              f"{max(awake) if awake else 'none of these'}, vLLM asleep during the loss "
              f"{max(asleep) if asleep else 'none of these'} (projected)")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs="+", default=list(FRAMES))
    ap.add_argument("--sp", type=int, nargs="+", default=list(SP_SIZES))
    ap.add_argument("--depths", type=int, nargs="*", default=[2, 4, 6])
    args = ap.parse_args()
    print(__doc__.split("\n\n")[2])
    print_table(tuple(args.frames), tuple(args.sp), tuple(args.depths))


if __name__ == "__main__":
    main()
