"""One group's loss work, today's path (one row per completion) vs the shared prefix (each prompt once), side
by side in one run: time and peak memory of a policy forward + backward plus a reference forward, with the
ratio predicted from FLOPs beside the measured one; then the FLOP and activation-memory projection for
Qwen2.5-VL-7B at 16 and 32 frames; and the HF rollout engine's prompt prefill, G repeated rows vs one row
whose KV cache is repeated (`HFEngine._prefill_once`).

The model has Qwen2.5-VL-7B's proportions scaled down (`--scale` divides every width, `--layers` LLM layers):
heads of 128 dims with the 7B's 7:1 query:KV grouping, MLP 5.29 x hidden; a vision tower of 80-dim heads and
MLP 2.67 x hidden whose depth is set so that vision FLOPs per merged vision token / LLM FLOPs per token is
the 7B's (0.42); the vocabulary scaled so that the lm_head's share of the work is the 7B's. Prompts are one
video (16 frames of 128 x 28 x 28 px at the 7B lengths: 1,024 vision tokens) + text, completions all of C
tokens (the longest case; no padding), random weights, fp32, gradient checkpointing on (as the 7B recipe),
sdpa (`shared_sdpa` for the shared path). Each variant runs in its own process (so peak RSS is its own),
--warmup passes first, median of --repeats.

The hybrid case (`--models qwen3_5`) runs the same measurements on a Qwen3.5 (three Gated DeltaNet layers per
full-attention layer) with Qwen3.5-9B's text proportions scaled down (model card: hidden 4096, MLP 12288, 32
layers, attention 16 query / 4 KV heads of 256, Gated DeltaNet 16 query-key / 32 value heads of 128,
vocabulary 248320; `--layers` of them, the last of each four full attention), a vision tower as above
(patch 16; its size is not the 9B's, only its FLOP share) and the same lengths (the video as Qwen3.5's
processor lays it out: 8 frames of 128 merged tokens). transformers' torch fallbacks run the Gated
DeltaNet layers (no flash-linear-attention here); no FLOP prediction is printed for it.

    .venv/bin/python perf/shared_prefix.py [--scale 4 --layers 4 --repeats 2 --threads 2 --models qwen2_5_vl,qwen3_5]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, replace

# Qwen2.5-VL-7B (config.json of the release)
D7, INTER7, LAYERS7, HEADS7, KV7, VOCAB7 = 3584, 18944, 28, 28, 4, 152064
VD7, VINTER7, VDEPTH7, VHEADS7 = 1280, 3420, 32, 16
# Qwen3.5-9B's text model (model card): hidden, MLP, layers, attention heads / KV heads of HEAD9, Gated DeltaNet
# query-key / value heads of LIN9, vocabulary; one full-attention layer in FULL_EVERY
D9, INTER9, LAYERS9, HEADS9, KV9, HEAD9, LK9, LV9, LIN9, VOCAB9 = 4096, 12288, 32, 16, 4, 256, 16, 32, 128, 248320
FULL_EVERY = 4


@dataclass(frozen=True)
class Shape:
    """One group: P prompt tokens of which V vision tokens (grid t x h x w merged tokens), G completions of C."""

    name: str
    P: int
    C: int
    G: int
    grid: tuple[int, int, int]  # video grid (t, h, w) in patches, as video_grid_thw

    @property
    def V(self) -> int:
        t, h, w = self.grid
        return t * h * w // 4


SHAPES = {"7b": Shape("7B recipe (16 frames)", 1200, 400, 8, (8, 16, 32)),
          "demo": Shape("demo (4 frames 56x56)", 160, 24, 4, (2, 4, 4))}


# ---------------------------------------------------------------------------------------------- FLOPs
@dataclass(frozen=True)
class Dims:
    d: int
    inter: int
    layers: int
    heads: int
    kv: int
    vocab: int
    vd: int
    vinter: int
    vdepth: int


def dims_7b() -> Dims:
    return Dims(D7, INTER7, LAYERS7, HEADS7, KV7, VOCAB7, VD7, VINTER7, VDEPTH7)


def llm_token_flops(m: Dims) -> float:
    """Forward FLOPs of the LLM's linear layers per token (q, k, v, o, MLP), all layers."""
    kv_dim = m.d // m.heads * m.kv
    return 2.0 * m.layers * (2 * m.d * m.d + 2 * m.d * kv_dim + 3 * m.d * m.inter)


def vision_token_flops(m: Dims) -> float:
    """Forward FLOPs of the vision tower per merged vision token (4 patches; linear layers + merger)."""
    per_patch = 2.0 * m.vdepth * (4 * m.vd * m.vd + 3 * m.vd * m.vinter)
    merger = 2.0 * (4 * m.vd) * (4 * m.vd + m.d)
    return 4 * per_patch + merger


def attention_flops(m: Dims, q: int, k: float) -> float:
    """Score + weighted-sum FLOPs of q queries over k keys on average, all layers."""
    return 4.0 * m.layers * q * k * m.d


def group_flops(m: Dims, s: Shape, shared: bool) -> dict[str, float]:
    """Forward FLOPs of one group's loss forward by part. Today: G rows of P + C, causal attention (a kernel
    skips the upper triangle); shared (`shared_sdpa`): the prompt's causal attention, then G masked SDPAs
    of C queries over P + C keys (a masked kernel skips nothing)."""
    if shared:
        tokens, copies = s.P + s.G * s.C, 1
        attn = attention_flops(m, s.P, s.P / 2) + s.G * attention_flops(m, s.C, s.P + s.C)
    else:
        tokens, copies = s.G * (s.P + s.C), s.G
        attn = s.G * attention_flops(m, s.P + s.C, (s.P + s.C) / 2)
    return {"llm": tokens * llm_token_flops(m), "attention": attn, "vision": copies * s.V * vision_token_flops(m),
            "lm_head": 2.0 * s.G * s.C * m.d * m.vocab}


def step_flops(m: Dims, s: Shape, shared: bool) -> float:
    """Policy forward + backward under gradient checkpointing (forward, recompute, 2x backward) + reference
    forward: 5 forwards' worth (the lm_head is not recomputed: 4)."""
    f = group_flops(m, s, shared)
    return 5 * (f["llm"] + f["attention"] + f["vision"]) + 4 * f["lm_head"]


# ------------------------------------------------------------------------------------------- the model
def _vision_depth_and_vocab(probe, llm_flops: float, head_share: float) -> tuple[int, int]:
    """Vision depth giving the 7B's vision / LLM FLOPs per token, and the vocabulary giving the lm_head the
    share `head_share` of the LLM's FLOPs per token, for a scaled model (`probe`: vdepth 1)."""
    ratio = vision_token_flops(dims_7b()) / llm_token_flops(dims_7b())
    merger = vision_token_flops(replace(probe, vdepth=0))
    vdepth = max(1, round((ratio * llm_flops - merger) / (vision_token_flops(probe) - merger)))
    return vdepth, int(head_share * llm_flops / (2.0 * probe.d))


def scaled_dims(scale: int, layers: int) -> Dims:
    probe = Dims(D7 // scale, INTER7 // scale, layers, HEADS7 // scale, max(1, KV7 // scale), 0, VD7 // scale,
                 VINTER7 // scale, 1)
    vdepth, vocab = _vision_depth_and_vocab(probe, llm_token_flops(probe),
                                            2.0 * D7 * VOCAB7 / llm_token_flops(dims_7b()))
    return replace(probe, vocab=vocab, vdepth=vdepth)


@dataclass(frozen=True)
class Hybrid:
    """A Qwen3.5 text model's widths (attention heads of HEAD9, Gated DeltaNet heads of LIN9) + vision tower."""

    d: int
    inter: int
    layers: int
    heads: int
    kv: int
    lk: int
    lv: int
    vocab: int
    vd: int
    vinter: int
    vdepth: int


def hybrid_token_flops(m: Hybrid) -> float:
    """Forward FLOPs of a hybrid LLM's linear layers per token: Gated DeltaNet projections (qkv, z, a, b,
    out), gated attention (q with its gate, k, v, o), MLP."""
    full = m.layers // FULL_EVERY
    gdn = m.d * (2 * m.lk * LIN9 + 2 * m.lv * LIN9 + 2 * m.lv) + m.lv * LIN9 * m.d
    attn = m.d * (2 * m.heads + 2 * m.kv) * HEAD9 + m.heads * HEAD9 * m.d
    return 2.0 * ((m.layers - full) * gdn + full * attn + m.layers * 3 * m.d * m.inter)


def scaled_hybrid(scale: int, layers: int) -> Hybrid:
    nine = Hybrid(D9, INTER9, LAYERS9, HEADS9, KV9, LK9, LV9, VOCAB9, 0, 0, 0)
    probe = Hybrid(D9 // scale, INTER9 // scale, layers, max(1, HEADS9 // scale), max(1, KV9 // scale),
                   max(1, LK9 // scale), max(1, LV9 // scale), 0, VD7 // scale, VINTER7 // scale, 1)
    vdepth, vocab = _vision_depth_and_vocab(probe, hybrid_token_flops(probe),
                                            2.0 * D9 * VOCAB9 / hybrid_token_flops(nine))
    return replace(probe, vocab=vocab, vdepth=vdepth)


def build_model(m: Dims):
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from videor1.model.positions import install_mrope
    from videor1.train.common import enable_gradient_checkpointing

    ids = {"image_token_id": m.vocab - 4, "video_token_id": m.vocab - 3, "vision_start_token_id": m.vocab - 2,
           "vision_end_token_id": m.vocab - 1}
    text = dict(hidden_size=m.d, intermediate_size=m.inter, num_hidden_layers=m.layers, num_attention_heads=m.heads,
                num_key_value_heads=m.kv, vocab_size=m.vocab, max_position_embeddings=32768,
                bos_token_id=0, eos_token_id=1, pad_token_id=0,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]})
    vision = dict(depth=m.vdepth, hidden_size=m.vd, intermediate_size=m.vinter, num_heads=m.vd // 80,
                  out_hidden_size=m.d, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                  tokens_per_second=2, window_size=112, fullatt_block_indexes=[m.vdepth - 1])
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **ids)
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config).float()
    install_mrope(model)
    enable_gradient_checkpointing(model)
    return model.train(), ids


def build_hybrid(m: Hybrid):
    import torch
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration

    from videor1.model.positions import install_mrope
    from videor1.train.common import enable_gradient_checkpointing

    ids = {"image_token_id": m.vocab - 4, "video_token_id": m.vocab - 3, "vision_start_token_id": m.vocab - 2,
           "vision_end_token_id": m.vocab - 1}
    types = ["full_attention" if (i + 1) % FULL_EVERY == 0 else "linear_attention" for i in range(m.layers)]
    text = dict(hidden_size=m.d, intermediate_size=m.inter, num_hidden_layers=m.layers, num_attention_heads=m.heads,
                num_key_value_heads=m.kv, head_dim=HEAD9, linear_num_key_heads=m.lk, linear_num_value_heads=m.lv,
                linear_key_head_dim=LIN9, linear_value_head_dim=LIN9, linear_conv_kernel_dim=4, layer_types=types,
                vocab_size=m.vocab, max_position_embeddings=32768, bos_token_id=0, eos_token_id=1, pad_token_id=0,
                rope_parameters={"rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": 0.25,
                                 "mrope_section": [11, 11, 10], "mrope_interleaved": True})
    vision = dict(depth=m.vdepth, hidden_size=m.vd, intermediate_size=m.vinter, num_heads=m.vd // 80,
                  out_hidden_size=m.d, patch_size=16, spatial_merge_size=2, temporal_patch_size=2)
    config = Qwen3_5Config(text_config=text, vision_config=vision, tie_word_embeddings=False, **ids)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = Qwen3_5ForConditionalGeneration(config).float()
    install_mrope(model)
    enable_gradient_checkpointing(model)
    return model.train(), ids


def group_inputs(s: Shape, ids: dict, vocab: int, patch: int = 14, seconds: bool = True):
    """A one-prompt batch (text, one video, text) of exactly P tokens and G completions of C tokens."""
    import torch
    from transformers import BatchFeature

    gen = torch.Generator().manual_seed(0)
    text = s.P - s.V - 2
    before = text // 2
    words = torch.randint(0, vocab - 8, (s.P,), generator=gen)
    row = torch.cat([words[:before], torch.tensor([ids["vision_start_token_id"]]),
                     torch.full((s.V,), ids["video_token_id"]), torch.tensor([ids["vision_end_token_id"]]),
                     words[before:text]])
    mm = torch.zeros_like(row)
    mm[before + 1:before + 1 + s.V] = 2
    t, h, w = s.grid
    batch = BatchFeature({"input_ids": row[None], "attention_mask": torch.ones_like(row)[None],
                          "mm_token_type_ids": mm[None],
                          "pixel_values_videos": torch.randn(t * h * w, 3 * 2 * patch * patch, generator=gen),
                          "video_grid_thw": torch.tensor([list(s.grid)])})
    if seconds:   # Qwen2.5-VL's absolute time (Qwen3.5 writes time as text)
        batch["second_per_grid_ts"] = torch.tensor([1.0])
    completions = torch.randint(0, vocab - 8, (s.G, s.C), generator=gen).tolist()
    return batch, completions


def one_step(model, batch, completions, g: int, shared: bool) -> None:
    """Reference forward (no grad; the policy's weights stand in for the reference's) + policy forward +
    GRPO loss + backward, as `rl.trainer._optimise` does them."""
    import torch

    from videor1.rl.algorithms import policy_loss
    from videor1.rl.step import completion_logps, loss_inputs

    inputs, ids, mask = loss_inputs(batch, completions, g, pad_id=0, shared=shared)
    with torch.no_grad():
        ref = completion_logps(model, inputs, ids, 1.0)
    logp = completion_logps(model, inputs, ids, 1.0)
    adv = torch.linspace(-1, 1, g)
    out = policy_loss(logp, logp.detach(), adv, mask, ref_logp=ref, beta=0.04, loss_type="grpo")
    out.loss.backward()
    model.zero_grad(set_to_none=True)


def one_prefill(model, batch, g: int, once: bool) -> None:
    """The prompt prefill of G rollouts (no grad, KV cache kept): G repeated rows (the HF engine before), or
    one row whose cache is repeated G times (`HFEngine._prefill_once`). Decoding is the same in both."""
    import torch

    from videor1.generation.engines import repeat_cache
    from videor1.model.inputs import repeat_rows

    model.eval()
    with torch.no_grad():
        if once:
            repeat_cache(model(**batch, use_cache=True, logits_to_keep=1).past_key_values, g)
        else:
            model(**repeat_rows(batch, g), use_cache=True, logits_to_keep=1)
    model.train()


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # Linux: KiB


def child(a: argparse.Namespace) -> None:
    """One variant in this process: print {"times": [...], "cpu": [...], "base_mb", "peak_mb"} as JSON (wall
    and process CPU seconds of each timed pass: on a shared machine the CPU time is the steadier measure)."""
    import torch

    torch.set_num_threads(a.threads)
    if a.model == "qwen3_5":
        h = scaled_hybrid(a.scale, a.layers)
        model, ids = build_hybrid(h)
        batch, completions = group_inputs(SHAPES[a.shape], ids, h.vocab, patch=16, seconds=False)
    else:
        m = scaled_dims(a.scale, a.layers)
        model, ids = build_model(m)
        batch, completions = group_inputs(SHAPES[a.shape], ids, m.vocab)
    base = rss_mb()
    times, cpu = [], []
    for _ in range(a.warmup + a.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        if a.variant.startswith("prefill"):
            one_prefill(model, batch, SHAPES[a.shape].G, a.variant == "prefill_once")
        else:
            one_step(model, batch, completions, SHAPES[a.shape].G, a.variant == "shared")
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    print(json.dumps({"times": times[a.warmup:], "cpu": cpu[a.warmup:], "base_mb": base, "peak_mb": rss_mb()}))


def run_variant(a: argparse.Namespace, shape: str, variant: str, model: str = "qwen2_5_vl") -> dict:
    cmd = [sys.executable, __file__, "--child", "--variant", variant, "--shape", shape, "--model", model,
           "--scale", str(a.scale),
           "--layers", str(a.layers), "--repeats", str(a.repeats), "--warmup", str(a.warmup),
           "--threads", str(a.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{model} {variant} at {shape} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------ 7B projection
def activation_gb(m: Dims, s: Shape, shared: bool, bytes_: int = 2) -> dict[str, float]:
    """Activation memory of the policy's loss step under gradient checkpointing in bf16 (GB): saved layer
    inputs of LLM and vision tower, one LLM layer's recompute working set (about 10 d + 4 intermediate
    values a token), the logits (bf16 + their fp32 copy) and, shared, the 4D boolean mask."""
    tokens = s.P + s.G * s.C if shared else s.G * (s.P + s.C)
    copies = 1 if shared else s.G
    saved = tokens * m.d * bytes_ * m.layers + copies * 4 * s.V * m.vd * bytes_ * m.vdepth
    layer = tokens * (10 * m.d + 4 * m.inter) * bytes_
    logits = s.G * s.C * m.vocab * (bytes_ + 4)
    mask = (s.P + s.G * s.C) ** 2 if shared else 0
    return {k: v / 1e9 for k, v in {"saved": saved, "layer": layer, "logits": logits, "mask": mask}.items()}


def projection() -> None:
    m = dims_7b()
    print("\nQwen2.5-VL-7B projection, one group (policy fwd+bwd with checkpointing + reference fwd), "
          "G 8, C 400, 128x28x28 px frames:")
    print(f"{'frames':>6} {'P':>5} {'tokens today':>12} {'shared':>7} {'TFLOP today':>11} {'shared':>7} "
          f"{'ratio':>5} {'act GB today':>12} {'shared':>7}")
    for frames in (16, 32):
        s = Shape(f"{frames}f", 176 + 64 * frames, 400, 8, (frames // 2, 16, 32))
        ft, fs = step_flops(m, s, False), step_flops(m, s, True)
        mt, ms = sum(activation_gb(m, s, False).values()), sum(activation_gb(m, s, True).values())
        print(f"{frames:>6} {s.P:>5} {s.G * (s.P + s.C):>12} {s.P + s.G * s.C:>7} {ft / 1e12:>11.0f} "
              f"{fs / 1e12:>7.0f} {ft / fs:>5.2f} {mt:>12.1f} {ms:>7.1f}")


def describe(a: argparse.Namespace, model: str) -> str:
    """One line of the scaled model's sizes."""
    seven = vision_token_flops(dims_7b()) / llm_token_flops(dims_7b())
    if model == "qwen3_5":
        h = scaled_hybrid(a.scale, a.layers)
        return (f"Qwen3.5 (hybrid): LLM d {h.d}, {h.layers} layers ({h.layers // FULL_EVERY} full attention), "
                f"attention {h.heads} heads ({h.kv} KV) of {HEAD9}, Gated DeltaNet {h.lk}/{h.lv} heads of {LIN9}, "
                f"MLP {h.inter}, vocab {h.vocab}; vision d {h.vd}, depth {h.vdepth}; vision/LLM FLOPs per token "
                f"{vision_token_flops(h) / hybrid_token_flops(h):.2f} (7B: {seven:.2f}); {a.threads} threads")
    m = scaled_dims(a.scale, a.layers)
    return (f"Qwen2.5-VL: LLM d {m.d}, {m.layers} layers, {m.heads} heads ({m.kv} KV), MLP {m.inter}, vocab {m.vocab}; "
            f"vision d {m.vd}, depth {m.vdepth}, MLP {m.vinter}; vision/LLM FLOPs per token "
            f"{vision_token_flops(m) / llm_token_flops(m):.2f} (7B: {seven:.2f}); {a.threads} threads")


def loss_table(a: argparse.Namespace, model: str) -> None:
    """Today vs shared: time (median), speedup, FLOP-predicted speedup (Qwen2.5-VL only), peak memory."""
    print(f"{'shape':<24} {'P/C/G':>12} {'today s':>8} {'shared s':>8} {'speedup':>7} {'CPU s':>13} {'CPU x':>6} "
          f"{'FLOP pred':>9} {'today MB':>8} {'shared MB':>9}")
    for key in a.shapes.split(","):
        s = SHAPES[key]
        today, shared = run_variant(a, key, "today", model), run_variant(a, key, "shared", model)
        tt, ts = statistics.median(today["times"]), statistics.median(shared["times"])
        ct, cs = statistics.median(today["cpu"]), statistics.median(shared["cpu"])
        pred = "-"
        if model == "qwen2_5_vl":
            m = scaled_dims(a.scale, a.layers)
            pred = f"{step_flops(m, s, False) / step_flops(m, s, True):.2f}"
        mem_t, mem_s = today["peak_mb"] - today["base_mb"], shared["peak_mb"] - shared["base_mb"]
        print(f"{s.name:<24} {f'{s.P}/{s.C}/{s.G}':>12} {tt:>8.2f} {ts:>8.2f} {tt / ts:>7.2f} "
              f"{f'{ct:.1f}/{cs:.1f}':>13} {ct / cs:>6.2f} {pred:>9} {mem_t:>8.0f} {mem_s:>9.0f}", flush=True)
    print("(s: wall seconds, CPU s: process CPU seconds today/shared; MB: peak RSS of the step above the "
          "process's RSS after building model and inputs)")


def prefill_table(a: argparse.Namespace, model: str) -> None:
    print("HF rollouts, the prompt prefill of G samples (no grad): G repeated rows vs one row + cache repeat")
    for key in a.shapes.split(","):
        s = SHAPES[key]
        today, once = run_variant(a, key, "prefill_today", model), run_variant(a, key, "prefill_once", model)
        tt, to = statistics.median(today["times"]), statistics.median(once["times"])
        ct, co = statistics.median(today["cpu"]), statistics.median(once["cpu"])
        print(f"{s.name:<24} {f'{s.P}/{s.G}':>12} {tt:>8.2f} {to:>8.2f} {tt / to:>7.2f}x  CPU {ct / co:.2f}x "
              f"{today['peak_mb'] - today['base_mb']:>8.0f} {once['peak_mb'] - once['base_mb']:>9.0f} MB", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scale", type=int, default=4, help="divide the 7B's (9B's) widths by this")
    p.add_argument("--layers", type=int, default=4, help="LLM layers of the scaled model")
    p.add_argument("--repeats", type=int, default=2, help="timed passes per variant (median)")
    p.add_argument("--warmup", type=int, default=1, help="untimed passes first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--shapes", default="demo,7b")
    p.add_argument("--models", default="qwen2_5_vl,qwen3_5", help="qwen2_5_vl and/or qwen3_5 (hybrid)")
    p.add_argument("--no-prefill", dest="prefill", action="store_false", help="skip the HF prefill measurement")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", choices=["today", "shared", "prefill_today", "prefill_once"], default="today",
                   help=argparse.SUPPRESS)
    p.add_argument("--shape", default="7b", help=argparse.SUPPRESS)
    p.add_argument("--model", choices=["qwen2_5_vl", "qwen3_5"], default="qwen2_5_vl", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(a)
    models = a.models.split(",")
    for model in models:
        print(describe(a, model))
        loss_table(a, model)
        if a.prefill:
            prefill_table(a, model)
        print()
    if "qwen2_5_vl" in models:
        projection()


if __name__ == "__main__":
    main()
