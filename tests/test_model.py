"""videor1.model: the tiny checkpoint, its tokenizer / chat template / processor, and loading."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from videor1.model.load import count_parameters, load_model, load_processor, pick_device, pick_dtype
from videor1.model.tiny import CHAT_TEMPLATE, FORMAT_TOKENS, SPECIAL_TOKENS, build_tiny


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu"), load_processor(tiny_model_dir)


def test_directory_is_a_safetensors_hf_checkpoint(tiny_model_dir):
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json"} <= names
    assert not any(n.endswith(".bin") for n in names)
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl"
    assert config["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]


def test_config_is_small_and_consistent(tiny):
    model, processor = tiny
    text, vision = model.config.text_config, model.config.vision_config
    assert text.initializer_range == 0.1 and vision.initializer_range == 0.1
    assert vision.out_hidden_size == text.hidden_size
    assert (vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size) == (14, 2, 2)
    head_dim = text.hidden_size // text.num_attention_heads
    assert sum(text.rope_parameters["mrope_section"]) * 2 == head_dim
    assert text.vocab_size == len(processor.tokenizer)
    assert 500_000 < count_parameters(model) < 1_500_000


def test_special_tokens_are_single_ids_in_qwen_order(tiny):
    _, processor = tiny
    tok = processor.tokenizer
    ids = [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert ids == list(range(ids[0], ids[0] + len(SPECIAL_TOKENS)))  # contiguous, Qwen's order
    for t in SPECIAL_TOKENS + FORMAT_TOKENS:
        assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1, t
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    text = "<think>hmm, it moves left</think><answer>A</answer>"
    enc = tok(text + "<|im_end|>", add_special_tokens=False)["input_ids"]
    assert tok.decode(enc, skip_special_tokens=True) == text  # format tags survive, im_end does not
    assert processor.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")


def test_chat_template_renders_like_qwen(tiny):
    _, processor = tiny
    user = {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Which way?"}]}
    got = processor.apply_chat_template([user], tokenize=False, add_generation_prompt=True)
    assert got == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                   "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Which way?<|im_end|>\n"
                   "<|im_start|>assistant\n")
    system = {"role": "system", "content": [{"type": "text", "text": "Be brief."}]}
    image = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}
    reply = {"role": "assistant", "content": "<answer>red</answer>"}
    got = processor.apply_chat_template([system, image, reply], tokenize=False, add_generation_prompt=False)
    assert got == ("<|im_start|>system\nBe brief.<|im_end|>\n"
                   "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Colour?<|im_end|>\n"
                   "<|im_start|>assistant\n<answer>red</answer><|im_end|>\n")
    assert processor.tokenizer.chat_template == CHAT_TEMPLATE


def test_generation_config_stops_at_im_end(tiny):
    model, processor = tiny
    tok = processor.tokenizer
    eos = model.generation_config.eos_token_id
    assert set(eos) == {tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")}
    assert model.generation_config.pad_token_id == tok.pad_token_id


def test_processor_does_not_resize_or_resample(tiny):
    _, processor = tiny
    frames = np.random.default_rng(0).integers(0, 256, (6, 56, 84, 3), dtype=np.uint8)
    meta = [{"fps": 3.0, "total_num_frames": 6, "frames_indices": list(range(6))}]
    out = processor.video_processor(videos=[frames], video_metadata=meta, return_tensors="pt")
    assert out["video_grid_thw"].tolist() == [[3, 4, 6]]  # 6 frames / 2, 56 / 14, 84 / 14
    raw = processor.video_processor(videos=[frames], video_metadata=meta, do_resize=False, return_tensors="pt")
    assert torch.equal(out["pixel_values_videos"], raw["pixel_values_videos"])  # pixels untouched
    image = np.random.default_rng(1).integers(0, 256, (84, 28 * 5, 3), dtype=np.uint8)
    out = processor.image_processor(images=[image], return_tensors="pt")
    assert out["image_grid_thw"].tolist() == [[1, 6, 10]]
    raw = processor.image_processor(images=[image], do_resize=False, return_tensors="pt")
    assert torch.equal(out["pixel_values"], raw["pixel_values"])


def test_build_is_deterministic_for_a_seed(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    a = load_file(str(build_tiny(tmp_path / "a", seed=0) / "model.safetensors"))
    ref = load_file(str(tiny_model_dir / "model.safetensors"))
    assert a.keys() == ref.keys()
    assert all(torch.equal(a[k], ref[k]) for k in a)
    b = load_file(str(build_tiny(tmp_path / "b", seed=1) / "model.safetensors"))
    assert not torch.equal(a["lm_head.weight"], b["lm_head.weight"])


def test_load_goes_through_from_pretrained_without_cuda(tiny_model_dir, monkeypatch):
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    calls = []
    real_model = Qwen2_5_VLForConditionalGeneration.from_pretrained.__func__
    real_proc = AutoProcessor.from_pretrained.__func__

    def spy_model(cls, path, *args, **kwargs):
        calls.append(("model", path, kwargs))
        return real_model(cls, path, *args, **kwargs)

    def spy_proc(cls, path, *args, **kwargs):
        calls.append(("processor", path, kwargs))
        return real_proc(cls, path, *args, **kwargs)

    monkeypatch.setattr(Qwen2_5_VLForConditionalGeneration, "from_pretrained", classmethod(spy_model))
    monkeypatch.setattr(AutoProcessor, "from_pretrained", classmethod(spy_proc))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    model = load_model(tiny_model_dir)
    load_processor(tiny_model_dir)
    kinds = {c[0]: c for c in calls}
    assert kinds["model"][1] == str(tiny_model_dir) and kinds["model"][2]["trust_remote_code"] is False
    assert kinds["model"][2]["dtype"] == torch.float32
    assert kinds["processor"][1] == str(tiny_model_dir) and kinds["processor"][2]["trust_remote_code"] is False
    assert next(model.parameters()).device.type == "cpu"
    with pytest.raises(FileNotFoundError, match="no such model directory"):
        load_model(tiny_model_dir / "missing")


def test_pick_device_and_dtype(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device() == torch.device("cpu")
    assert pick_dtype(pick_device()) == torch.float32
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device() == torch.device("mps")
    assert pick_dtype("mps") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert pick_device() == torch.device("cuda")
    assert pick_dtype("cuda") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert pick_dtype("cuda") == torch.float32


def test_forward_backward_on_a_real_video(tiny, bikes_mp4):
    from videor1.data.media import VideoSpec, load_video
    from videor1.model.inputs import Sample, encode

    model, processor = tiny
    clip = load_video(bikes_mp4, VideoSpec(max_frames=4, min_pixels=28 * 28, max_pixels=56 * 56 * 2))
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves?"}]}]
    batch = encode(processor, [Sample(record=None, media=clip, messages=messages)],
                   responses=["<think>bikes</think><answer>B</answer>"])
    model.train()
    model.zero_grad()
    out = model(**{k: v for k, v in batch.items() if k != "completion_mask"})
    assert math.isfinite(out.loss.item()) and out.loss.item() > 0
    out.loss.backward()
    vision_grads = [p.grad for n, p in model.named_parameters() if n.startswith("model.visual.")]
    assert vision_grads and all(g is not None for g in vision_grads)
    assert sum(float(g.abs().sum()) for g in vision_grads) > 0
    patch = model.model.visual.patch_embed.proj.weight.grad
    assert patch is not None and float(patch.abs().sum()) > 0
    model.zero_grad()
    model.eval()
