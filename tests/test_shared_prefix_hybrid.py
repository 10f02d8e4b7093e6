"""The shared prefix on hybrid decoders (Qwen3.5 dense and MoE: Gated DeltaNet + full-attention layers):
the loss forward (videor1.rl.shared_prefix + shared_prefix_linear) against today's path (one row per
completion), and HF rollouts' prefill-once against repeated-row prefill, on tiny models of 4 decoder layers
(3 Gated DeltaNet, 1 full attention), fp32.

Tolerances: completion-token log-probs within 5e-5 * max(1, |logp|); each parameter's gradient within
5e-4 * max(its largest |entry|, 1e-3 * the model's largest |entry|) in every entry. Seen on this machine:
<= 1.6e-5 relative on log-probs (MoE with LoRA), <= 1.6e-4 on gradients by that measure. The unshared path
moves about as much against itself when its rows get 5 more columns of left padding (<= 9.3e-6 and
<= 2.5e-4): fp32 reordering, largest on the Gated DeltaNet decay parameters (A_log, dt_bias), whose
gradients are small sums of large terms of both signs (up to 1.3e-3 of their own scale, hence the floor).
"""

from __future__ import annotations

import pytest
import torch

from test_shared_prefix import (_completions, prefill_once_and_repeated_rows, assert_same, assert_same_runs,
                                family_prompts)
from videor1.model.inputs import pad_token_id
from videor1.model.load import load_model
from videor1.model.tiny import build_tiny
from videor1.rl import shared_prefix_linear
from videor1.rl.shared_prefix import check_model
from videor1.rl.shared_prefix_linear import linear_layers
from videor1.rl.step import completion_logps, loss_inputs
from videor1.train.common import enable_gradient_checkpointing

HYBRIDS = ["qwen3_5", "qwen3_5_moe"]
TOLS = {"logp_tol": 5e-5, "grad_tol": 5e-4, "grad_floor": 1e-3}


@pytest.fixture(scope="module")
def hybrid_dirs(tmp_path_factory) -> dict:
    """family -> a tiny model directory with 4 decoder layers (3 Gated DeltaNet, then full attention)."""
    return {name: build_tiny(tmp_path_factory.mktemp(f"hybrid_{name}") / "model", family=name, seed=0,
                             num_layers=4) for name in HYBRIDS}


@pytest.fixture(scope="module")
def prompts_of(hybrid_dirs, synth_dir):
    return {name: family_prompts(hybrid_dirs[name], synth_dir) for name in HYBRIDS}


def _model(path, *, checkpointing: bool = False):
    model = load_model(path, device="cpu", dtype=torch.float32)
    if checkpointing:
        enable_gradient_checkpointing(model)
    return model.train()


@pytest.fixture(scope="module")
def models(hybrid_dirs):
    return {name: _model(hybrid_dirs[name]) for name in HYBRIDS}


def test_tiny_models_are_hybrid(models):
    for model in models.values():
        types = model.config.text_config.layer_types
        assert types.count("linear_attention") == 3 and types[-1] == "full_attention"
        assert len(linear_layers(model)) == 3


@pytest.mark.parametrize("family", HYBRIDS)
@pytest.mark.parametrize("n", [1, 2, pytest.param(8, marks=pytest.mark.slow)])
def test_mixed_batch_logps_and_gradients_equal_todays(family, n, models, prompts_of):
    """Two videos and an image of different prompt lengths (left padding), completions of 1-9 tokens."""
    p = prompts_of[family]
    grads = assert_same(models[family], p["mixed"], p["processor"], n, seed=n, **TOLS)
    assert any("visual" in name for name in grads) and any("linear_attn" in name for name in grads)


@pytest.mark.parametrize("family", HYBRIDS)
@pytest.mark.parametrize("kind", ["video", "image"])
def test_single_media_kind_batches(family, kind, models, prompts_of):
    p = prompts_of[family]
    assert_same(models[family], p[kind], p["processor"], 2, seed=3, **TOLS)


def test_slots_longer_than_a_delta_rule_chunk(models, prompts_of):
    """Completions of up to 80 tokens: slots run over several 64-token chunks of the delta rule."""
    p = prompts_of["qwen3_5"]
    pad, model = pad_token_id(p["processor"]), models["qwen3_5"]
    tokens = _completions(p["processor"], 3 * 2, seed=37, longest=80)
    assert max(len(t) for t in tokens) > 64
    out = []
    for shared in (False, True):
        inputs, ids, mask = loss_inputs(p["mixed"].batch, tokens, 2, pad, shared=shared)
        with torch.no_grad():
            out.append((completion_logps(model, inputs, ids, 1.0), mask.bool()))
    (a, m), (b, _) = out
    assert ((a - b).abs()[m] <= TOLS["logp_tol"] * a.abs()[m].clamp(min=1)).all(), float((a - b).abs()[m].max())


@pytest.mark.parametrize("family", HYBRIDS)
def test_with_gradient_checkpointing(family, hybrid_dirs, prompts_of):
    model = _model(hybrid_dirs[family], checkpointing=True)
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    p = prompts_of[family]
    assert_same(model, p["mixed"], p["processor"], 8 if family == "qwen3_5" else 2, seed=7, **TOLS)


@pytest.mark.parametrize("family", HYBRIDS)
def test_with_lora_on_the_linear_attention_projections(family, hybrid_dirs, prompts_of):
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "v_proj", "in_proj_qkv", "in_proj_z", "in_proj_b", "out_proj"]
    model = get_peft_model(_model(hybrid_dirs[family]), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                                   target_modules=targets)).train()
    with torch.no_grad():   # LoRA's B starts at 0; give it values so the adapters shape the forward too
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.02, generator=torch.Generator().manual_seed(0))
    p = prompts_of[family]
    grads = assert_same(model, p["mixed"], p["processor"], 4, seed=9, **TOLS)
    assert grads and all("lora_" in name for name in grads)
    assert any("linear_attn.in_proj_qkv.lora_" in name for name in grads)


def test_plain_packing_is_wrong_without_the_linear_route(hybrid_dirs, prompts_of, monkeypatch):
    """Without the Gated DeltaNet route a packed row leaks each slot's state into the next: slot 1 of a
    group still matches, later slots do not (what the tests above would catch)."""
    model = _model(hybrid_dirs["qwen3_5"]).eval()
    monkeypatch.setattr(shared_prefix_linear, "install_shared_linear", lambda m: None)
    p = prompts_of["qwen3_5"]
    tokens = [t + [11, 12] for t in _completions(p["processor"], 3 * 2, seed=41)]   # read past the prompt
    out = []
    for shared in (False, True):
        inputs, ids, mask = loss_inputs(p["mixed"].batch, tokens, 2, pad_token_id(p["processor"]), shared=shared)
        with torch.no_grad():
            out.append((completion_logps(model, inputs, ids, 1.0), mask.bool()))
    (a, m), (b, _) = out
    err = ((a - b).abs() * m).amax(dim=1)
    assert float(err[0::2].max()) < 1e-4 and float(err[1::2].min()) > 1e-3


def test_installed_layers_leave_other_forwards_unchanged(hybrid_dirs, prompts_of):
    """After a shared forward the Gated DeltaNet layers take the packed layout; an ordinary forward gives
    bit-identical logits to the layers' own forward."""
    model = _model(hybrid_dirs["qwen3_5"]).eval()
    p = prompts_of["qwen3_5"]
    pad = pad_token_id(p["processor"])
    tokens = _completions(p["processor"], 6, seed=43)
    inputs, _, _ = loss_inputs(p["mixed"].batch, tokens, 2, pad)
    original = type(linear_layers(model)[0])
    with torch.no_grad():
        before = model(**inputs).logits
        packed, ids, _ = loss_inputs(p["mixed"].batch, tokens, 2, pad, shared=True)
        completion_logps(model, packed, ids, 1.0)
        assert all(type(layer) is not original and isinstance(layer, original) for layer in linear_layers(model))
        after = model(**inputs).logits
    assert torch.equal(before, after)


def test_refuses_a_linear_attention_layer_it_was_not_tested_on(hybrid_dirs):
    """A Gated DeltaNet class whose forward is not the tested code (here: same name, other source), or a
    linear-attention layer of another class, is refused with an error naming it."""
    model = _model(hybrid_dirs["qwen3_5"])
    layer = linear_layers(model)[0]
    base = type(layer)

    def forward(self, hidden_states, cache_params=None, attention_mask=None, **kwargs):
        return base.forward(self, hidden_states, cache_params, attention_mask, **kwargs) * 1.0

    layer.__class__ = type(base.__name__, (base,), {"forward": forward})
    with pytest.raises(ValueError, match="Qwen3_5GatedDeltaNet.forward .* is not the code .* shared_prefix: false"):
        check_model(model)
    layer.__class__ = type("OtherDeltaNet", (base,), {})
    with pytest.raises(ValueError, match="no exact path for the linear-attention layer OtherDeltaNet"):
        check_model(model)


@pytest.mark.parametrize("family", HYBRIDS)
def test_hf_rollouts_prefill_once_gives_the_samples_of_repeated_rows(family, models, prompts_of):
    """Seeded sampling from one prefill per prompt (attention keys / values and the Gated DeltaNet conv and
    recurrent states repeated n times) gives the same tokens as n prefills of repeated rows: two videos
    and a padded image prompt, n = 4, 10 tokens each."""
    want, flat, calls = prefill_once_and_repeated_rows(models[family], prompts_of[family])
    assert want == flat
    assert len({tuple(t) for t in flat}) > 3       # the n samples of a prompt differ: states were copied, not shared
    assert len(calls) == 2                         # one prefill: images, then videos, once


@pytest.mark.slow
@pytest.mark.parametrize("family", HYBRIDS)
def test_tgrpo_run_has_todays_metrics(family, hybrid_dirs, synth_dir, tmp_path):
    """T-GRPO with a KL reference, video and image prompts, shared prefix on vs off (HF rollouts prefill once
    in both): the same rollouts and rewards every step; loss / kl / grad_norm within 1e-4 relative at step 1
    (seen: 1.2e-5), 1e-2 after (seen: up to 1.8e-3: AdamW's normalised update turns the gradients' fp32
    differences on near-zero entries, such as the decay parameters', into whole steps). 3 steps: by step 5
    the drift has flipped a sampled token (seen on both models; on MoE through a top-k expert choice)."""
    assert_same_runs(hybrid_dirs[family], synth_dir, tmp_path, steps=3, rel_later=1e-2)


def test_training_refuses_an_untested_linear_attention_layer_before_any_rollout(hybrid_dirs, synth_dir, tmp_path,
                                                                                monkeypatch):
    """With shared_prefix on, a linear-attention class the route was not tested on stops the run at setup."""
    from videor1.config import config_from_dict
    from videor1.rl.config import RLConfig
    from videor1.rl.trainer import train

    monkeypatch.setattr(shared_prefix_linear, "TESTED_FORWARDS", {})
    cfg = config_from_dict(RLConfig, dict(
        model=str(hybrid_dirs["qwen3_5"]), train_data=str(synth_dir / "rl.jsonl"), output_dir=str(tmp_path / "o"),
        num_generations=2, prompts_per_step=1, max_completion_length=4, max_steps=1, save_steps=0, report_to=(),
        progress=False, num_threads=1))
    with pytest.raises(ValueError, match="no exact path for the linear-attention layer Qwen3_5GatedDeltaNet"):
        train(cfg)
    assert not (tmp_path / "o" / "metrics.jsonl").exists()
