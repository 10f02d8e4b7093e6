"""The shared-prefix loss forward (videor1.rl.shared_prefix) against today's path (one row per completion):
per-token log-probs and every parameter's gradient, on the tiny model of every family, in fp32.

Tolerances (fp32; the two paths sum the same terms in other orders): completion-token log-probs within
1e-5 * max(1, |logp|) of each other; each parameter's gradient within 1e-5 * (its largest |entry|) in every
entry. Seen on this machine: <= 4e-6 absolute on log-probs of magnitude ~13, <= 2.2e-6 relative on gradients.
"""

from __future__ import annotations

import pytest
import torch

from videor1.data.media import ImageSpec, VideoSpec
from videor1.data.records import read_records
from videor1.model.inputs import append_tokens, pad_token_id, repeat_rows, vision_token_ids
from videor1.model.load import load_model, load_processor
from videor1.model.positions import rope_index, rule_of
from videor1.rl.algorithms import policy_loss
from videor1.rl.config import RLConfig
from videor1.rl.shared_prefix import (SEGMENTS, SHARED_SDPA, attention_mask, check_model, layout_of, packed_positions,
                                      text_attention)
from videor1.rl.step import completion_logps, load_prompts, loss_inputs
from videor1.config import ConfigError, config_from_dict
from videor1.rewards import register
from videor1.rl.trainer import train
from videor1.train.metrics import METRICS_FILE, read_metrics
from videor1.train.common import enable_gradient_checkpointing

VIDEO = VideoSpec(fps=2.0, min_frames=4, max_frames=4, min_pixels=56 * 56, max_pixels=56 * 56)
IMAGE = ImageSpec(min_pixels=56 * 56, max_pixels=56 * 56)
FAMILY_NAMES = ["qwen2_5_vl", "qwen3_vl", "qwen2_vl"]
LOGP_TOL, GRAD_TOL = 1e-5, 1e-5


def family_prompts(model_dir, synth_dir) -> dict:
    """kind ("mixed": 2 videos + 1 image, of different lengths; "video"; "image") -> Prompts, and "processor",
    for the tiny model in `model_dir`."""
    records, _ = read_records(synth_dir / "rl.jsonl", synth_dir)
    videos = [r for r in records if r.data_type == "video"]
    images = [r for r in records if r.data_type == "image"]
    picks = {"mixed": [videos[0], videos[1], images[0]], "video": [videos[2]], "image": [images[1]]}
    processor = load_processor(model_dir)
    out = {kind: load_prompts(chosen, list(range(len(chosen))), list(range(len(chosen))), processor,
                              media_root=synth_dir, video=VIDEO, image=IMAGE, max_prompt_length=4096)
           for kind, chosen in picks.items()}
    out["processor"] = processor
    return out


@pytest.fixture(scope="module")
def prompts_of(family_model_dirs, synth_dir):
    """family -> `family_prompts` of its tiny model."""
    return {name: family_prompts(family_model_dirs[name], synth_dir) for name in FAMILY_NAMES}


@pytest.fixture(scope="module")
def models(family_model_dirs):
    """family -> its tiny model, fp32, in train mode (as the trainer uses it)."""
    return {name: load_model(family_model_dirs[name], device="cpu", dtype=torch.float32).train()
            for name in FAMILY_NAMES}


def _completions(processor, n_rows: int, seed: int, longest: int = 9) -> list[list[int]]:
    """Random completions of 1..longest tokens (mixed lengths), never a vision special token."""
    gen = torch.Generator().manual_seed(seed)
    banned = set(vision_token_ids(processor))
    out = []
    for _ in range(n_rows):
        n = int(torch.randint(1, longest + 1, (1,), generator=gen))
        ids = [int(x) for x in torch.randint(0, 1000, (n,), generator=gen) if int(x) not in banned]
        out.append(ids or [11])
    return out


def _run(model, prompts, tokens, n, pad, *, shared, loss_type="grpo", ref=None, extra=None):
    """(log-probs, ids, mask, loss, {name: grad}) of one policy forward + loss + backward."""
    model.zero_grad(set_to_none=True)
    inputs, ids, mask = loss_inputs(prompts.batch, tokens, n, pad, shared=shared)
    logp = completion_logps(model, inputs, ids, 0.7)
    old, ref_logp, adv = extra
    out = policy_loss(logp, logp.detach() + old, adv, mask, ref_logp=logp.detach() + ref_logp, beta=0.04,
                      epsilon=0.2, loss_type=loss_type, max_completion_length=ids.shape[1])
    out.loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return logp.detach(), ids, mask, out.loss.detach(), grads


def _extra(n_rows: int, c: int, seed: int):
    """Old-logp and reference-logp offsets (so that clipping and the KL term both act) and advantages."""
    gen = torch.Generator().manual_seed(seed + 1)
    return 0.3 * torch.randn(n_rows, c, generator=gen), 0.2 * torch.randn(n_rows, c, generator=gen), \
        torch.randn(n_rows, generator=gen)


def assert_same(model, prompts, processor, n, *, seed=0, loss_type="grpo", logp_tol=LOGP_TOL, grad_tol=GRAD_TOL,
                grad_floor=0.0):
    """Today's path and the shared one give the same log-probs and gradients (tolerances above; a parameter's
    gradient error is measured against max(its largest |entry|, grad_floor * the model's largest |entry|))."""
    pad = pad_token_id(processor)
    tokens = _completions(processor, len(prompts.samples) * n, seed)
    c = max(len(t) for t in tokens)
    extra = _extra(len(tokens), c, seed)
    lp0, ids0, m0, loss0, g0 = _run(model, prompts, tokens, n, pad, shared=False, loss_type=loss_type, extra=extra)
    lp1, ids1, m1, loss1, g1 = _run(model, prompts, tokens, n, pad, shared=True, loss_type=loss_type, extra=extra)
    assert torch.equal(m0, m1) and torch.equal(ids0[m0.bool()], ids1[m1.bool()])
    on = m0.bool()
    assert ((lp0 - lp1).abs()[on] <= logp_tol * lp0.abs()[on].clamp(min=1)).all(), \
        float((lp0 - lp1).abs()[on].max())
    assert torch.allclose(loss0, loss1, rtol=1e-5, atol=1e-7)
    assert set(g0) == set(g1) and g0
    top = max(float(g.abs().max()) for g in g0.values())
    for name in g0:
        scale = float(g0[name].abs().max())
        assert scale > 0, f"{name}: no gradient reached it"
        err = float((g0[name] - g1[name]).abs().max())
        assert err <= grad_tol * max(scale, grad_floor * top), \
            f"{name}: max |grad diff| {err:.3g} vs max |grad| {scale:.3g}"
    return g0


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("n", [1, 2, 8])
def test_mixed_batch_logps_and_gradients_equal_todays(family, n, models, prompts_of):
    """Two videos and an image of different prompt lengths (padding), completions of 1-9 tokens, G = n."""
    grads = assert_same(models[family], prompts_of[family]["mixed"], prompts_of[family]["processor"], n, seed=n)
    assert any("visual" in name for name in grads)  # the vision tower is in the comparison


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("kind", ["video", "image"])
def test_single_media_kind_batches(family, kind, models, prompts_of):
    assert_same(models[family], prompts_of[family][kind], prompts_of[family]["processor"], 2, seed=3)


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo", "bnpo"])
def test_every_loss_type(loss_type, models, prompts_of):
    p = prompts_of["qwen2_5_vl"]
    assert_same(models["qwen2_5_vl"], p["mixed"], p["processor"], 4, seed=5, loss_type=loss_type)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_with_gradient_checkpointing(family, family_model_dirs, prompts_of):
    model = load_model(family_model_dirs[family], device="cpu", dtype=torch.float32)
    enable_gradient_checkpointing(model)
    model.train()
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    p = prompts_of[family]
    assert_same(model, p["mixed"], p["processor"], 8, seed=7)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_with_lora(family, family_model_dirs, prompts_of):
    from peft import LoraConfig, get_peft_model

    base = load_model(family_model_dirs[family], device="cpu", dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                            target_modules=["q_proj", "v_proj", "up_proj"])).train()
    with torch.no_grad():   # LoRA's B starts at 0; give it values so the adapters shape the forward too
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.02, generator=torch.Generator().manual_seed(0))
    p = prompts_of[family]
    grads = assert_same(model, p["mixed"], p["processor"], 4, seed=9)
    assert grads and all("lora_" in name for name in grads)


def test_eager_attention(family_model_dirs, prompts_of):
    model = load_model(family_model_dirs["qwen2_5_vl"], device="cpu", dtype=torch.float32,
                       attn_implementation="eager").train()
    p = prompts_of["qwen2_5_vl"]
    assert_same(model, p["mixed"], p["processor"], 2, seed=11)


def test_reference_forward_without_grad(models, prompts_of):
    """The reference's no-grad forward gives the same log-probs on both paths."""
    p, model = prompts_of["qwen3_vl"], models["qwen3_vl"]
    pad = pad_token_id(p["processor"])
    tokens = _completions(p["processor"], 3 * 4, seed=13)
    out = []
    for shared in (False, True):
        inputs, ids, mask = loss_inputs(p["mixed"].batch, tokens, 4, pad, shared=shared)
        with torch.no_grad():
            out.append((completion_logps(model, inputs, ids, 1.0), mask.bool()))
    (a, m), (b, _) = out
    assert ((a - b).abs()[m] <= LOGP_TOL * a.abs()[m].clamp(min=1)).all()


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_slot_positions_continue_each_prompt_as_an_unpacked_row(family, models, prompts_of):
    """Every completion's M-RoPE positions in the packed row equal those of [prompt | completion] alone."""
    p, model = prompts_of[family], models[family]
    pad, n = pad_token_id(p["processor"]), 3
    tokens = _completions(p["processor"], 3 * n, seed=17)
    packed, ids, mask = loss_inputs(p["mixed"].batch, tokens, n, pad, shared=True)
    pos = packed_positions(model, packed, n, ids.shape[1])
    rows = append_tokens(repeat_rows(p["mixed"].batch, n), tokens, pad_id=pad, padding_side="right")
    want, _ = rope_index(rule_of(model.config), rows["input_ids"], rows["mm_token_type_ids"],
                         rows.get("image_grid_thw"), rows.get("video_grid_thw"), rows.get("second_per_grid_ts"),
                         attention_mask=rows["attention_mask"])
    segments, lp, c = packed[SEGMENTS], packed[SEGMENTS].shape[1] - n * ids.shape[1], ids.shape[1]
    for row, toks in enumerate(tokens):
        i, j = divmod(row, n)
        real = segments[i] == 0
        prompt_len = int(real.sum())
        got = torch.cat([pos[:, i, real], pos[:, i, lp + j * c: lp + j * c + len(toks)]], dim=1)
        assert torch.equal(got, want[:, row, :prompt_len + len(toks)])


def test_one_vision_call_per_media_kind_per_forward(models, prompts_of):
    """Like today's path, the shared forward runs the vision tower once per media kind present, on one copy
    of each prompt's pixels (today's: n copies)."""
    p, model = prompts_of["qwen2_5_vl"], models["qwen2_5_vl"]
    visual = model.model.visual
    calls: list[int] = []
    hook = visual.register_forward_hook(lambda mod, args, out: calls.append(int(args[0].shape[0])))
    try:
        pad = pad_token_id(p["processor"])
        tokens = _completions(p["processor"], 3 * 4, seed=19)
        for shared in (False, True):
            inputs, ids, _ = loss_inputs(p["mixed"].batch, tokens, 4, pad, shared=shared)
            with torch.no_grad():
                completion_logps(model, inputs, ids, 1.0)
    finally:
        hook.remove()
    today, shared_calls = calls[:2], calls[2:]
    assert len(today) == 2 and len(shared_calls) == 2       # images, then videos, in each forward
    assert [t // 4 for t in today] == shared_calls           # one copy of the patches instead of four


def test_refuses_attention_without_4d_masks(family_model_dirs):
    model = load_model(family_model_dirs["qwen2_5_vl"], device="cpu", dtype=torch.float32)
    model.model.language_model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="shared_prefix needs a text attention"):
        check_model(model)
    with pytest.raises(ConfigError, match="shared_prefix needs"):
        RLConfig(model="m", train_data="d", output_dir="o", attn_implementation="flash_attention_2").validate()
    RLConfig(model="m", train_data="d", output_dir="o", attn_implementation="flash_attention_2",
             shared_prefix=False).validate()


@register("shared_prefix_test_variety", overwrite=True)
def _variety(completions, **columns):
    """Differs between random completions, so an untrained model gets non-zero advantages."""
    return [len(set(c)) / (1.0 + len(c)) for c in completions]


def _train_20(tiny_model_dir, synth_dir, out, shared: bool, steps: int = 20) -> list[dict]:
    cfg = config_from_dict(RLConfig, dict(
        model=str(tiny_model_dir), train_data=str(synth_dir / "rl.jsonl"), output_dir=str(out), algorithm="tgrpo",
        num_generations=4, num_shuffled_generations=2, prompts_per_step=2, max_completion_length=8, beta=0.04,
        learning_rate=1e-3, lr_scheduler="constant", top_p=1.0, rewards=["shared_prefix_test_variety", "accuracy"],
        save_steps=0, report_to=(), progress=False, seed=1, num_threads=1, max_steps=steps, shared_prefix=shared,
        video={"min_frames": 4, "max_frames": 4, "min_pixels": 3136, "max_pixels": 3136},
        image={"min_pixels": 3136, "max_pixels": 3136}))
    train(cfg)
    return read_metrics(out / METRICS_FILE)


def assert_same_runs(model_dir, synth_dir, tmp_path, steps: int = 20, rel: float = 1e-4,
                     rel_later: float | None = None) -> None:
    """`_train_20` with and without the shared prefix: same rollouts and metrics (loss, kl, grad_norm within
    `rel`; after the first step within `rel_later` when given)."""
    today = _train_20(model_dir, synth_dir, tmp_path / "today", shared=False, steps=steps)
    shared = _train_20(model_dir, synth_dir, tmp_path / "shared", shared=True, steps=steps)
    assert len(today) == len(shared) == steps
    assert {m["prompts"] for m in today} == {2}
    for a, b in zip(today, shared):
        assert set(a) == set(b)
        for key in a:
            if key == "step_time":
                continue
            if key in ("loss", "kl", "grad_norm"):
                tol = rel if rel_later is None or a["step"] == 1 else rel_later
                assert b[key] == pytest.approx(a[key], rel=tol, abs=1e-7), (a["step"], key)
            else:
                assert b[key] == a[key], (a["step"], key)


def test_twenty_step_run_has_todays_metrics(tiny_model_dir, synth_dir, tmp_path):
    """T-GRPO with a KL reference, video and image prompts, 20 steps: the same rollouts every step (every
    reward / accuracy / length metric equal), loss, kl and grad_norm within 1e-4 relative (seen: 1.5e-5; at
    learning rate 1e-2 AdamW amplifies the fp32 reordering to ~1% by step 20, so 1e-3 here)."""
    assert_same_runs(tiny_model_dir, synth_dir, tmp_path)


def test_layout_masks_are_the_dense_pattern(prompts_of):
    """`shared_sdpa`'s two masks are exactly the dense [P + G C]^2 pattern's non-empty blocks."""
    p = prompts_of["qwen2_5_vl"]
    n = 3
    tokens = _completions(p["processor"], 3 * n, seed=23)
    packed, ids, _ = loss_inputs(p["mixed"].batch, tokens, n, pad_token_id(p["processor"]), shared=True)
    segments, c = packed[SEGMENTS], ids.shape[1]
    dense = attention_mask(segments, "sdpa", torch.float32)[:, 0]     # [K, L, L]
    layout = layout_of(segments, n, c)
    lp = layout.lp
    assert layout.prompt_mask is not None                              # the image prompt is padded
    assert torch.equal(layout.prompt_mask[:, 0], dense[:, :lp, :lp])
    assert not dense[:, :lp, lp:].any()                                # the prompt never sees a completion
    for i in range(segments.shape[0]):
        for j in range(n):
            rows = dense[i, lp + j * c: lp + (j + 1) * c]
            want = torch.cat([rows[:, :lp], rows[:, lp + j * c: lp + (j + 1) * c]], dim=1)
            assert torch.equal(layout.slot_mask[i * n + j, 0], want)
            others = torch.cat([rows[:, lp: lp + j * c], rows[:, lp + (j + 1) * c:]], dim=1)
            assert not others.any()                                    # nor another completion


def test_installed_attention_leaves_other_forwards_unchanged(family_model_dirs, prompts_of):
    """After a shared forward the text attention is `shared_sdpa`; an ordinary forward (generation, today's
    loss path) gives bit-identical logits to plain sdpa."""
    model = load_model(family_model_dirs["qwen2_5_vl"], device="cpu", dtype=torch.float32).eval()
    p = prompts_of["qwen2_5_vl"]
    inputs, ids, _ = loss_inputs(p["mixed"].batch, _completions(p["processor"], 6, seed=29), 2,
                                 pad_token_id(p["processor"]))
    with torch.no_grad():
        before = model(**inputs).logits
        packed, pids, _ = loss_inputs(p["mixed"].batch, _completions(p["processor"], 6, seed=29), 2,
                                      pad_token_id(p["processor"]), shared=True)
        completion_logps(model, packed, pids, 1.0)
        assert text_attention(model) == SHARED_SDPA
        after = model(**inputs).logits
    assert torch.equal(before, after)


# ------------------------------------------------------------------------------ HF rollouts: prefill once
def _generate_repeating_rows(engine, sub, params):
    """The HF engine's previous way: every prompt row repeated n times, vision tensors included."""
    from videor1.generation.engines import _seeded
    from videor1.model.inputs import move_batch

    inputs = move_batch(repeat_rows(sub, params.n), "cpu", torch.float32)
    with torch.no_grad(), _seeded(params.seed, 0, torch.device("cpu")):
        out = engine.model.generate(**inputs, **engine._generate_kwargs(params), synced_gpus=False)
    return out[:, sub["input_ids"].shape[1]:].tolist()


def prefill_once_and_repeated_rows(model, p) -> tuple[list[list[int]], list[list[int]], list[int]]:
    """Seeded samples (n = 4, 10 tokens) of `p["mixed"]` from n prefills of repeated rows and from
    HFEngine's one prefill per prompt, and the number of patches of each vision-tower call of the latter."""
    from videor1.generation.engines import HFEngine, SamplingParams

    engine = HFEngine(model, p["processor"], batch_size=8)
    params = SamplingParams(max_new_tokens=10, temperature=1.0, top_p=1.0, do_sample=True, n=4, seed=31)
    want = _generate_repeating_rows(engine, p["mixed"].batch, params)
    calls: list[int] = []
    hook = model.model.visual.register_forward_hook(lambda mod, args, out: calls.append(int(args[0].shape[0])))
    try:
        got = engine._generate_chunk(p["mixed"].batch, params, 0)
    finally:
        hook.remove()
    return [engine._completion(ids).token_ids for ids in want], [c.token_ids for group in got for c in group], calls


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_hf_rollouts_prefill_each_prompt_once_with_the_same_samples(family, models, prompts_of):
    """Seeded sampling from one prefill per prompt gives the same tokens as n prefills of repeated rows
    (two videos and a padded image prompt, n = 4, 10 tokens each), with one vision pass per media kind."""
    model, p = models[family], prompts_of[family]
    want, flat, calls = prefill_once_and_repeated_rows(model, p)
    assert model.training   # put back in train mode
    assert want == flat
    assert len(calls) == 2 and sum(calls) == int(p["mixed"].batch["image_grid_thw"].prod(-1).sum()
                                                  + p["mixed"].batch["video_grid_thw"].prod(-1).sum())
