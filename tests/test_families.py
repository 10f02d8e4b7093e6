"""Model families (Qwen2.5-VL, Qwen3-VL, Qwen2-VL, Qwen3.5, Qwen3.5 MoE): the family interface, and the video
really reaching each family's model (vision weights get gradients; shuffled frames change the vision inputs).

The end-to-end runs (SFT, GRPO, T-GRPO, evaluation, inference, annotation, the demo) on the Qwen3-VL and
Qwen2-VL tiny models are in tests/test_families_e2e.py (marked slow); Qwen2.5-VL's are the rest of the suite.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from accelerate.utils.dataclasses import get_module_class_from_name
from typer.testing import CliRunner

from videor1.cli import app
from videor1.data.media import Clip, load_video, VideoSpec
from videor1.generation.engines import HFEngine, SamplingParams
from videor1.model.families import (FAMILIES, family_of, family_of_model_type, family_of_processor, get_family,
                                    is_vision_param, vision_exclude_regex)
from videor1.model.inputs import Sample, encode, vision_token_ids
from videor1.model.load import load_model, load_processor
from videor1.train.common import enable_gradient_checkpointing, freeze_vision, set_fsdp_wrap_classes

NAMES = ["qwen2_5_vl", "qwen3_vl", "qwen2_vl", "qwen3_5", "qwen3_5_moe"]
QUESTION = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Which way do the bikes move?"}]}]


@pytest.fixture(scope="module", params=NAMES)
def fam(request, family_model_dirs):
    """(family module, model dir, processor, model in eval mode) for each family."""
    path = family_model_dirs[request.param]
    return get_family(request.param), path, load_processor(path), load_model(path, device="cpu").eval()


@pytest.fixture(scope="module")
def clip(bikes_mp4) -> Clip:
    return load_video(bikes_mp4, VideoSpec(fps=2.0, min_frames=4, max_frames=4, max_pixels=4 * 28 * 28 * 2))


def _sample(clip: Clip) -> Sample:
    return Sample(record=None, media=clip, messages=QUESTION)


def test_registry_and_family_of(fam):
    family, path, processor, model = fam
    assert FAMILIES[family.NAME] is family and family_of(path) is family and family_of(model.config) is family
    assert isinstance(model, family.MODEL_CLASS) and isinstance(processor, family.PROCESSOR_CLASS)
    assert family_of_processor(processor) is family
    assert json.loads((path / "config.json").read_text())["model_type"] in family.MODEL_TYPES


def test_unknown_families_are_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="qwen3_vl"):
        family_of_model_type("llava")
    with pytest.raises(KeyError, match="qwen2_vl"):
        get_family("qwen4_vl")
    with pytest.raises(ValueError, match="no model family"):
        family_of_processor(object())


def test_vision_weights_receive_gradients(fam, clip):
    """The video reaches the loss: every family's vision tower gets non-zero gradients from a video sample."""
    family, _, processor, model = fam
    batch = encode(processor, [_sample(clip)], responses=["<answer>B</answer>"])
    assert "pixel_values_videos" in batch and int((batch["mm_token_type_ids"] == 2).sum()) > 0
    model.zero_grad(set_to_none=True)
    inputs = {k: v for k, v in batch.items() if k != "completion_mask"}
    model(**inputs).loss.backward()
    vision = {n: p for n, p in model.named_parameters() if is_vision_param(n, family)}
    with_grad = [n for n, p in vision.items() if p.grad is not None and p.grad.abs().sum() > 0]
    assert vision and len(with_grad) >= 0.9 * len(vision), sorted(set(vision) - set(with_grad))
    assert any("patch_embed" in n for n in with_grad)
    model.zero_grad(set_to_none=True)


def test_shuffled_frames_change_the_vision_inputs(fam, clip):
    family, _, processor, model = fam
    shuffled = clip.permuted([2, 0, 3, 1])
    a = encode(processor, [_sample(clip)])
    b = encode(processor, [_sample(shuffled)])
    assert torch.equal(a["input_ids"], b["input_ids"])  # same prompt (Qwen3-VL: the same timestamps)
    assert torch.equal(a["video_grid_thw"], b["video_grid_thw"])
    assert not torch.equal(a["pixel_values_videos"], b["pixel_values_videos"])
    with torch.no_grad():
        la, lb = model(**a).logits[0, -1], model(**b).logits[0, -1]
    assert not torch.allclose(la, lb)


def test_generation_suppresses_the_vision_tokens(fam, clip):
    family, _, processor, model = fam
    ids = vision_token_ids(processor)
    assert ids == [processor.tokenizer.convert_tokens_to_ids(t) for t in family.SUPPRESSED_TOKENS]
    engine = HFEngine(model, processor, batch_size=2)
    assert engine.suppress_ids == ids
    out = engine.generate([_sample(clip)], SamplingParams(n=2, max_new_tokens=6, seed=0))
    assert len(out) == 1 and len(out[0]) == 2
    assert not {t for c in out[0] for t in c.token_ids} & set(ids)


def test_freeze_vision_and_lora_exclusion(fam):
    from peft import LoraConfig, get_peft_model

    family, path, _, _ = fam
    model = load_model(path, device="cpu")
    freeze_vision(model)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and frozen == {n for n, _ in model.named_parameters() if is_vision_param(n, family)}
    lora = get_peft_model(load_model(path, device="cpu"), LoraConfig(
        r=2, target_modules=["q_proj", "v_proj", "up_proj"], exclude_modules=vision_exclude_regex(family)))
    adapted = [n for n, _ in lora.named_parameters() if "lora_" in n]
    assert adapted and not [n for n in adapted if is_vision_param(n, family)]


def test_fsdp_wrap_classes_and_gradient_checkpointing(fam):
    family, path, _, _ = fam
    model = load_model(path, device="cpu")
    assert set(family.FSDP_WRAP_CLASSES) == set(model._no_split_modules)
    for name in family.FSDP_WRAP_CLASSES:
        assert get_module_class_from_name(model, name) is not None, name
    plugin = SimpleNamespace(transformer_cls_names_to_wrap=["Qwen2_5_VLDecoderLayer"])
    set_fsdp_wrap_classes(SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin)), model)
    assert plugin.transformer_cls_names_to_wrap == list(family.FSDP_WRAP_CLASSES)
    set_fsdp_wrap_classes(SimpleNamespace(state=SimpleNamespace()), model)  # no FSDP: nothing to do
    enable_gradient_checkpointing(model)  # the trainers' call, across the supported transformers range
    layers = [m for m in model.modules() if type(m).__name__ == family.DECODER_LAYER_CLASS]
    assert len(layers) == model.config.text_config.num_hidden_layers
    assert all(m.gradient_checkpointing for m in layers)


def test_qwen3_vl_prompt_has_one_timestamped_block_per_temporal_patch(family_model_dirs, clip):
    processor = load_processor(family_model_dirs["qwen3_vl"])
    batch = encode(processor, [_sample(clip)])
    text = processor.tokenizer.decode(batch["input_ids"][0])
    # frames at source indices i (native fps f): a block's time is the mean of its two frames' i / f
    times = [(clip.indices[k] + clip.indices[k + 1]) / 2 / clip.native_fps for k in range(0, 4, 2)]
    blocks = [f"<{t:.1f} seconds><|vision_start|>" for t in times]
    assert all(b in text for b in blocks), text[:400]
    assert text.count("<|vision_start|>") == 2 and text.count("<|vision_end|>") == 2
    assert "<|vision_start|><0" not in text and "You are a helpful assistant" not in text
    assert int(batch["video_grid_thw"][0, 0]) == 2 and "second_per_grid_ts" not in batch
    # the processor rounds 28-multiples to its 32-multiples; the grids say so
    h, w = clip.frames.shape[1:3]
    side = [max(32, round(x / 32) * 32) // 16 for x in (h, w)]
    assert batch["video_grid_thw"][0, 1:].tolist() == side


def test_qwen2_5_vl_keeps_second_per_grid_ts(family_model_dirs, clip):
    batch = encode(load_processor(family_model_dirs["qwen2_5_vl"]), [_sample(clip)])
    assert batch["second_per_grid_ts"].tolist() == pytest.approx([2 / clip.sample_fps])


@pytest.mark.parametrize("name", ["qwen3_vl", "qwen2_vl", "qwen3_5", "qwen3_5_moe"])
def test_cli_model_tiny_family(tmp_path, name):
    out = tmp_path / name
    res = CliRunner().invoke(app, ["model", "tiny", "--out", str(out), "--family", name, "--hidden-size", "64"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "config.json").read_text())["model_type"] == name
    bad = CliRunner().invoke(app, ["model", "tiny", "--out", str(tmp_path / "x"), "--family", "llava"])
    assert bad.exit_code == 2 and "qwen3_vl" in bad.output


def test_video_metadata_per_family(clip):
    assert get_family("qwen2_5_vl").video_metadata(clip) == {
        "fps": clip.sample_fps, "total_num_frames": 4, "frames_indices": [0, 1, 2, 3]}
    meta = get_family("qwen3_vl").video_metadata(clip)
    assert meta == {"fps": clip.native_fps, "total_num_frames": clip.total_frames, "frames_indices": clip.indices}
    bare = Clip(frames=clip.frames, sample_fps=2.0, timestamps=[], indices=[], total_frames=0, native_fps=0.0, path="")
    assert get_family("qwen3_vl").video_metadata(bare)["fps"] == 2.0
    assert get_family("qwen3_vl").video_metadata(clip.permuted([1, 0, 3, 2])) == meta
    assert np.array_equal(clip.frames, clip.permuted([0, 1, 2, 3]).frames)


# ------------------------------------------------------------------------------------------- Qwen3.5
QWEN3_5 = ["qwen3_5", "qwen3_5_moe"]


@pytest.mark.parametrize("name", QWEN3_5)
def test_qwen3_5_processor_family_comes_from_the_model_type(family_model_dirs, name):
    """Qwen3.5 loads Qwen3-VL's processor class: the directory's model_type, not the class, names the family;
    a processor built in memory is ambiguous until its family is recorded."""
    from videor1.model.families import set_processor_family

    processor = load_processor(family_model_dirs[name])
    assert type(processor) is get_family("qwen3_vl").PROCESSOR_CLASS
    assert family_of_processor(processor) is get_family(name)
    assert family_of_processor(load_processor(family_model_dirs["qwen3_vl"])) is get_family("qwen3_vl")
    built = get_family(name).tiny_processor(processor.tokenizer)
    built.tokenizer.name_or_path = ""
    with pytest.raises(ValueError, match="serves families"):
        family_of_processor(built)
    assert family_of_processor(set_processor_family(built, get_family(name))) is get_family(name)
    with pytest.raises(ValueError, match="is not the qwen2_vl"):
        set_processor_family(built, get_family("qwen2_vl"))


@pytest.mark.parametrize("name", QWEN3_5)
def test_qwen3_5_model_has_both_layer_kinds_and_the_declared_classes(family_model_dirs, name):
    family, processor = get_family(name), load_processor(family_model_dirs[name])
    model = load_model(family_model_dirs[name], device="cpu")
    assert set(model.config.text_config.layer_types) == {"linear_attention", "full_attention"}
    assert family.HYBRID_LINEAR_ATTENTION and family.FRAME_FACTOR == 32 and family.MROPE == "frame_runs"
    assert type(processor.tokenizer).__name__ == "Qwen3_5Tokenizer"


def test_qwen3_5_tokenizer_is_trained_under_its_own_regex(family_model_dirs):
    """transformers reloads a Qwen3.5 directory's tokenizer as Qwen3_5Tokenizer (its own regex, which keeps
    combining marks inside words): the tiny tokenizer was trained and saved under that regex, so the saved and
    reloaded tokenizers agree on such text, where Qwen2's regex splits differently."""
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX as QWEN2
    from transformers.models.qwen3_5.tokenization_qwen3_5 import PRETOKENIZE_REGEX as QWEN3_5

    from videor1.model.tiny import train_tokenizer

    text = "नमस्ते दुनिया a\u0361b the video"   # Devanagari signs / virama, a combining breve: \p{M}
    reloaded = load_processor(family_model_dirs["qwen3_5"]).tokenizer
    own, qwen2 = train_tokenizer(regex=QWEN3_5), train_tokenizer(regex=QWEN2)
    assert reloaded(text)["input_ids"] == own(text)["input_ids"]

    def words(tokenizer):
        return [w for w, _ in tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)]
    assert words(reloaded) == words(own) != words(qwen2)
    assert get_family("qwen3_5").TOKENIZER_REGEX == QWEN3_5 and get_family("qwen3_vl").TOKENIZER_REGEX == QWEN2


@pytest.mark.parametrize("name", QWEN3_5)
def test_qwen3_5_positions_equal_the_models_own(family_model_dirs, clip, name):
    """Our M-RoPE (Qwen3-VL's frame-run rule, installed by load_model) gives the positions and deltas of
    transformers' own Qwen3.5 `get_rope_index`, on a left-padded batch of a video and an image row."""
    from videor1.model.positions import rope_index, rule_of

    processor = load_processor(family_model_dirs[name])
    model = load_model(family_model_dirs[name], device="cpu")
    image = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]}]
    batch = encode(processor, [_sample(clip), Sample(record=None, media=clip.frames[0], messages=image)],
                   padding_side="left")
    keys = ("image_grid_thw", "video_grid_thw", "attention_mask", "mm_token_type_ids")
    ours = rope_index(rule_of(model.config), batch["input_ids"], **{k: batch[k] for k in keys})
    theirs = type(model.model).get_rope_index(model.model, batch["input_ids"], **{k: batch[k] for k in keys})
    mask = batch["attention_mask"].bool()
    assert torch.equal(ours[0][:, mask], theirs[0][:, mask])
    assert torch.equal(ours[1].reshape(-1), theirs[1].reshape(-1))


@pytest.mark.parametrize("name", QWEN3_5)
def test_prefix_sharing_is_refused_for_a_hybrid_decoder_without_a_tested_route(family_model_dirs, clip, name,
                                                                               monkeypatch):
    """A hybrid family not in `PREFIX_EXACT_HYBRIDS` (Qwen3.5 is, since tests/test_shared_prefix_hybrid.py:
    taken out of it here) is refused by the shared-prefix loss and the HF rollouts' prefill-once with one
    clear error; HF rollouts of n > 1 then generate from repeated prompt rows."""
    from videor1.model import families
    from videor1.model.families import check_prefix_sharing, shares_prefix_exactly
    from videor1.rl.shared_prefix import check_model

    model = load_model(family_model_dirs[name], device="cpu")
    assert shares_prefix_exactly(model.config)
    monkeypatch.setattr(families, "PREFIX_EXACT_HYBRIDS", frozenset())
    assert not shares_prefix_exactly(model.config)
    assert shares_prefix_exactly(load_model(family_model_dirs["qwen3_vl"], device="cpu").config)
    with pytest.raises(ValueError, match=f"shared_prefix is not exact yet for {name}.*shared_prefix: false"):
        check_model(model)
    with pytest.raises(ValueError, match="prefill-once is not exact yet"):
        check_prefix_sharing(model.config, "HF rollouts' prefill-once", "generate from repeated rows")
    engine = HFEngine(model, load_processor(family_model_dirs[name]), batch_size=2)
    with pytest.raises(ValueError, match="prefill-once is not exact yet"):
        engine._prefill_once(encode(engine.processor, [_sample(clip)], padding_side="left"), 2, "cpu", torch.float32)
    greedy = SamplingParams(n=2, max_new_tokens=4, do_sample=False)
    out = engine.generate([_sample(clip)] * 2, greedy)
    alone = engine.generate([_sample(clip)], SamplingParams(n=1, max_new_tokens=4, do_sample=False))
    assert [len(g) for g in out] == [2, 2]
    assert {tuple(c.token_ids) for g in out for c in g} == {tuple(alone[0][0].token_ids)}


@pytest.mark.parametrize("name", ["qwen3_vl", "qwen3_5"])
@pytest.mark.parametrize("unit", ["frame", "pair"])
def test_tgrpo_shuffle_keeps_the_timestamps_in_slot_order(name, unit, family_model_dirs, bikes_mp4):
    """T-GRPO's shuffled clip (`videor1.rl.step.shuffled_samples`) is prompted with the ordered clip's
    timestamps, in increasing order: each shuffled frame carries its slot's time, never its own; only the
    pixels move."""
    import re

    from videor1.rl.step import Prompts, shuffled_samples

    clip = load_video(bikes_mp4, VideoSpec(fps=4.0, min_frames=8, max_frames=8, max_pixels=4 * 28 * 28 * 2))
    processor = load_processor(family_model_dirs[name])
    prompts = Prompts(samples=[_sample(clip)], positions=[0], batch=None, skipped=[])
    shuffled, owners = shuffled_samples(prompts, seed=0, step=0, unit=unit)
    assert owners == [0] and not np.array_equal(shuffled[0].media.frames, clip.frames)
    ordered, mixed = encode(processor, [_sample(clip)]), encode(processor, shuffled)

    def stamps(batch):
        return [float(t) for t in re.findall(r"<([0-9.]+) seconds>", processor.tokenizer.decode(batch["input_ids"][0]))]
    slot_times = [(clip.indices[k] + clip.indices[k + 1]) / 2 / clip.native_fps for k in range(0, 8, 2)]
    assert stamps(mixed) == stamps(ordered) == pytest.approx(slot_times, abs=0.051)
    assert stamps(mixed) == sorted(stamps(mixed)) and len(set(stamps(mixed))) == 4
    assert torch.equal(mixed["input_ids"], ordered["input_ids"])
    assert not torch.equal(mixed["pixel_values_videos"], ordered["pixel_values_videos"])


@pytest.mark.parametrize("name", QWEN3_5)
def test_left_padded_batch_gives_each_rows_log_probs(name, family_model_dirs, clip):
    """A left-padded batch (a video prompt and a shorter image prompt, completions of different lengths)
    scores every completion token as the row alone does: the 2D mask reaches the Gated DeltaNet layers, so
    neither their causal conv nor their recurrent state reads the padding. Without the mask it would."""
    from videor1.rl.step import completion_logps, loss_inputs

    processor = load_processor(family_model_dirs[name])
    model = load_model(family_model_dirs[name], device="cpu").eval()
    image = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}]
    samples = [_sample(clip), Sample(record=None, media=clip.frames[0][:64, :64], messages=image)]
    completions = [[11, 12, 13, 14, 15], [21, 22]]
    pad = int(processor.tokenizer.pad_token_id)

    def logps(rows, ids, **overrides):
        inputs, tokens, mask = loss_inputs(encode(processor, rows, padding_side="left"), ids, 1, pad)
        with torch.no_grad():
            return completion_logps(model, {**inputs, **overrides}, tokens, 1.0), mask.bool()
    batched, mask = logps(samples, completions)
    assert int((encode(processor, samples, padding_side="left")["attention_mask"] == 0).sum()) > 20
    for row, (sample, ids) in enumerate(zip(samples, completions)):
        alone, _ = logps([sample], [ids])
        assert torch.allclose(batched[row][mask[row]], alone[0][-len(ids):], atol=1e-4), row
    inputs, tokens, _ = loss_inputs(encode(processor, samples, padding_side="left"), completions, 1, pad)
    with torch.no_grad():
        unmasked = completion_logps(model, {**inputs, "attention_mask": torch.ones_like(inputs["attention_mask"])},
                                    tokens, 1.0)
    assert not torch.allclose(unmasked[1][mask[1]], batched[1][mask[1]], atol=1e-2)


@pytest.mark.parametrize("name", QWEN3_5)
def test_left_padded_generation_equals_each_row_alone(name, family_model_dirs, clip):
    processor = load_processor(family_model_dirs[name])
    engine = HFEngine(load_model(family_model_dirs[name], device="cpu"), processor, batch_size=2)
    image = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}]
    samples = [_sample(clip), Sample(record=None, media=clip.frames[0][:64, :64], messages=image)]
    greedy = SamplingParams(n=1, max_new_tokens=8, do_sample=False)
    together = engine.generate(samples, greedy)
    assert [g[0].token_ids for g in together] == [engine.generate([s], greedy)[0][0].token_ids for s in samples]


def _lora_cfg(dropout: float, modules: tuple[str, ...] = ()) -> SimpleNamespace:
    return SimpleNamespace(lora_rank=2, lora_alpha=4.0, lora_dropout=dropout, lora_target_modules=modules,
                           lora_include_vision=False)


@pytest.mark.parametrize("name", NAMES)
def test_lora_default_targets_per_family(name, family_model_dirs):
    """SFT's LoRA with the default targets adapts the family's LORA_TARGETS: every attention / MLP projection,
    and for Qwen3.5 the five Gated DeltaNet projections of every linear-attention layer; none in vision."""
    from videor1.sft.lora import LORA_DEFAULT_TARGETS, wrap_lora

    family = get_family(name)
    model = wrap_lora(_lora_cfg(0.05), load_model(family_model_dirs[name], device="cpu"), None)
    adapted = {n.split(".lora_A")[0] for n, _ in model.named_parameters() if ".lora_A." in n}
    kinds = {a.split(".")[-1] for a in adapted}
    assert not [a for a in adapted if is_vision_param(a, family)]
    gdn = {"in_proj_qkv", "in_proj_z", "in_proj_a", "in_proj_b", "out_proj"}
    if name in QWEN3_5:
        layers = model.base_model.model.config.text_config.layer_types
        assert kinds == set(family.LORA_TARGETS) and gdn <= kinds
        assert sum(a.endswith("linear_attn.in_proj_z") for a in adapted) == layers.count("linear_attention")
    else:
        assert kinds == set(LORA_DEFAULT_TARGETS) == set(family.LORA_TARGETS) and not gdn & kinds


def test_lora_moe_experts_adapted_only_without_dropout(family_model_dirs, caplog):
    """The MoE experts' 3-D weights: left out with a log line under LoRA dropout (peft's ParamWrapper refuses
    it); adapted as parameters with dropout 0, where the adapted forward equals the merged model's."""
    import logging

    from videor1.sft.lora import wrap_lora

    path = family_model_dirs["qwen3_5_moe"]
    with caplog.at_level(logging.WARNING, logger="videor1.sft.lora"):
        left_out = wrap_lora(_lora_cfg(0.05), load_model(path, device="cpu"), None)
    assert "experts' 3-D parameters (mlp.experts.gate_up_proj, mlp.experts.down_proj) are left out" in caplog.text
    assert not [n for n, _ in left_out.named_parameters() if "experts" in n and "lora_" in n]
    assert [n for n, _ in left_out.named_parameters() if "shared_expert.down_proj.lora_A" in n]
    model = wrap_lora(_lora_cfg(0.0), load_model(path, device="cpu"), None).eval()
    experts = [p for n, p in model.named_parameters() if "mlp.experts" in n and "lora_B" in n]
    assert experts and all(p.requires_grad for p in experts)
    torch.manual_seed(0)
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.3)
    ids = torch.randint(0, 400, (1, 10))
    inputs = {"input_ids": ids, "mm_token_type_ids": torch.zeros_like(ids)}
    with torch.no_grad():
        adapted = model(**inputs).logits
        merged = model.merge_and_unload()(**inputs).logits
        base = load_model(path, device="cpu").eval()(**inputs).logits
    assert (adapted - base).abs().max() > 0.1 and torch.allclose(adapted, merged, atol=1e-3)


def test_vllm_engine_settings_per_family(family_model_dirs):
    """The hybrid families ask vLLM for its "align" prefix-cache mode (vLLM 0.32's only prefix caching for
    Gated DeltaNet state); other families add nothing; the caller's llm_kwargs win."""
    from videor1.generation.vllm_engine import llm_constructor_kwargs

    for name in QWEN3_5:
        assert llm_constructor_kwargs({}, model_path=family_model_dirs[name])["mamba_cache_mode"] == "align"
        assert llm_constructor_kwargs({"mamba_cache_mode": "none"},
                                      model_path=family_model_dirs[name])["mamba_cache_mode"] == "none"
    assert "mamba_cache_mode" not in llm_constructor_kwargs({}, model_path=family_model_dirs["qwen3_vl"])


def test_qwen3_5_recipe_configs_load():
    """The Qwen3.5-9B recipe configs load; T-GRPO there runs with the shared prefix (exact for the family's
    Gated DeltaNet layers) on sdpa, and SFT's LoRA takes the family's targets."""
    from pathlib import Path

    from videor1.config import load_config
    from videor1.rl.config import RLConfig
    from videor1.sft.config import SFTConfig

    root = Path(__file__).resolve().parents[1] / "configs"
    rl = load_config(RLConfig, root / "rl_qwen35_9b_tgrpo.yaml", [])
    assert rl.algorithm == "tgrpo" and rl.shared_prefix and rl.attn_implementation == "sdpa"
    assert rl.model == "runs/sft_qwen35_9b/final"
    sft = load_config(SFTConfig, root / "sft_qwen35_9b.yaml", [])
    assert sft.lora_target_modules == () and sft.model == "models/Qwen3.5-9B"


@pytest.mark.parametrize("name", NAMES)
def test_vllm_weights_split_the_moe_experts_as_the_checkpoint(name, family_model_dirs):
    """What a weight sync sends vLLM (`vllm_weights` of the policy's state dict): the state dict as it is,
    except Qwen3.5 MoE's fused 3-D expert weights, sent per expert with the names and values of the checkpoint
    transformers saved (vLLM 0.32 loads only those; the fused names left its experts unloaded)."""
    from safetensors.torch import load_file

    state = load_model(family_model_dirs[name], device="cpu").state_dict()
    sent = dict(get_family(name).vllm_weights(state.items()))
    fused = {k for k in state if ".mlp.experts." in k}
    assert {k: v for k, v in sent.items() if ".mlp.experts." not in k} == {k: state[k] for k in state if k not in fused}
    assert bool(fused) == (name == "qwen3_5_moe")
    if fused:
        saved = load_file(str(family_model_dirs[name] / "model.safetensors"))
        experts = {k: v for k, v in sent.items() if ".mlp.experts." in k}
        assert set(experts) == {k for k in saved if ".mlp.experts." in k} and len(experts) == 3 * 4 * len(fused) // 2
        assert all(torch.equal(v, saved[k]) for k, v in experts.items())
