"""Sequence parallelism (`videor1.parallel.sequence`) without processes: its refusals, the long-video recipes, and
the pure parts of the lm_head spread. The 2-process exactness runs are in tests/engines/test_engines_sp.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType

from videor1.config import ConfigError, load_config
from videor1.model.load import load_model
from videor1.parallel import sequence
from videor1.rl.config import RLConfig
from videor1.sft.config import SFTConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_long_video_recipes_load_and_validate():
    rl = load_config(RLConfig, CONFIGS / "rl_qwen25vl7b_tgrpo_long.yaml", [])
    sft = load_config(SFTConfig, CONFIGS / "sft_qwen25vl7b_long.yaml", [])
    for cfg in (rl, sft):
        assert cfg.sequence_parallel_size == 4 and cfg.video.max_frames == 256 and cfg.video.max_pixels == 128 * 28 * 28
    vision_tokens = 256 // 2 * 128   # temporal patches x merged tokens per patch at 128*28*28 px
    assert rl.max_prompt_length > vision_tokens and sft.max_length > vision_tokens
    assert rl.shared_prefix and rl.attn_implementation == "sdpa" and rl.algorithm == "tgrpo"
    # 8 GPUs / SP 4 = 2 data-parallel ranks; SFT keeps the 16-frame recipe's 8 samples a step
    assert 8 // sft.sequence_parallel_size * sft.per_device_batch_size * sft.gradient_accumulation_steps == 8
    # frames are configuration
    assert load_config(RLConfig, CONFIGS / "rl_qwen25vl7b_tgrpo_long.yaml",
                       ["video.max_frames=512", "max_prompt_length=33792"]).video.max_frames == 512


@pytest.mark.parametrize("overrides, message", [
    (["sequence_parallel_size=0"], "sequence_parallel_size must be >= 1"),
    (["sequence_parallel_size=2", "shared_prefix=false"], "needs shared_prefix: true"),
    (["sequence_parallel_size=2", "attn_implementation=eager"], "attn_implementation auto or sdpa"),
])
def test_rl_config_refusals(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(RLConfig, CONFIGS / "rl_demo_cpu.yaml", overrides)


def test_sft_config_refuses_size_zero():
    with pytest.raises(ConfigError, match="sequence_parallel_size must be >= 1"):
        load_config(SFTConfig, CONFIGS / "sft_demo_cpu.yaml", ["sequence_parallel_size=0"])


@pytest.fixture(scope="module")
def tiny_models(family_model_dirs):
    return {name: load_model(family_model_dirs[name], device="cpu", dtype=torch.float32) for name in
            ("qwen2_5_vl", "qwen3_vl", "qwen2_vl", "qwen3_5")}


def test_model_refusals(tiny_models):
    sequence.check_model(tiny_models["qwen2_5_vl"], 2)     # 4 heads, 2 KV heads
    sequence.check_model(tiny_models["qwen3_vl"], 2)
    with pytest.raises(ConfigError, match=r"must divide the attention heads \(4\) and the KV heads \(2\)"):
        sequence.check_model(tiny_models["qwen2_5_vl"], 4)
    with pytest.raises(ConfigError, match="supports model types qwen2_5_vl, qwen3_vl; this model is 'qwen2_vl'"):
        sequence.check_model(tiny_models["qwen2_vl"], 2)
    with pytest.raises(ConfigError, match="linear-attention layers are not sequence-parallel"):
        sequence.check_model(tiny_models["qwen3_5"], 2)


def test_eager_attention_is_refused(family_model_dirs):
    model = load_model(family_model_dirs["qwen2_5_vl"], device="cpu", dtype=torch.float32,
                       attn_implementation="eager")
    with pytest.raises(ConfigError, match="needs attn_implementation sdpa"):
        sequence.check_model(model, 2)


@pytest.mark.parametrize("kind, name", [(DistributedType.NO, "single"), (DistributedType.MULTI_CPU, "ddp"),
                                        (DistributedType.FSDP, "fsdp2")])
def test_engines_other_than_deepspeed_are_refused(kind, name):
    state = SimpleNamespace(fsdp_plugin=SimpleNamespace(fsdp_version=2))
    accelerator = SimpleNamespace(distributed_type=kind, num_processes=2 if name == "ddp" else 1, state=state)
    with pytest.raises(ConfigError, match=f"needs the DeepSpeed engine .* this run uses {name}"):
        sequence.check_engine(accelerator)


def test_size_one_changes_nothing():
    cfg = SimpleNamespace(sequence_parallel_size=1)
    engine = object()
    assert sequence.sequence_parallel(cfg, None, (None,), (engine, None)) == (engine, None)
    assert not sequence.active() and sequence.replicas() == 1
    assert sequence.data_parallel(SimpleNamespace(process_index=3, num_processes=4)) == (3, 4)


def test_share_plan_splits_logit_positions_evenly():
    # 10 positions, the first 2 held by rank 0, the rest by rank 1 (completions sit at the end of the sequence)
    owners = torch.tensor([0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
    share, dest, slot = sequence.share_plan(10, owners, 2)
    assert share == 5 and dest.tolist() == [0] * 5 + [1] * 5
    assert slot.tolist() == [0, 1, 0, 1, 2, 0, 1, 2, 3, 4]   # index within each (owner, destination) pair
    _, dest3, _ = sequence.share_plan(7, torch.zeros(7, dtype=torch.long), 3)
    assert dest3.tolist() == [0, 0, 0, 1, 1, 1, 2]


def test_chunk_positions_carry_a_text_row_and_continue_into_the_padding():
    pos = torch.tensor([[[0, 1, 2, 2, 3]], [[0, 1, 1, 2, 3]], [[0, 1, 2, 1, 3]]])   # [3, 1, 5]
    out = sequence.chunk_positions(pos, 6)
    assert out.shape == (4, 1, 6)
    assert out[0, 0].tolist() == list(range(6))
    assert torch.equal(out[1:, :, :5], pos) and out[1:, 0, 5].tolist() == [4, 4, 4]


def test_installed_sp_attention_leaves_generation_and_other_forwards_unchanged(family_model_dirs):
    """Only calls carrying the SP keyword go through Ulysses: HF generate and plain forwards of a model whose text
    attention is SP_SDPA give what sdpa gives (the HF rollout engine is not wrapped)."""
    model = load_model(family_model_dirs["qwen2_5_vl"], device="cpu", dtype=torch.float32).eval()
    ids = torch.tensor([[5, 17, 99, 230, 41, 8]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
        gen_before = model.generate(input_ids=ids, max_new_tokens=6, do_sample=False)
        sequence.register()
        sequence.install(model)
        assert sequence._text_configs(model)[0]._attn_implementation == sequence.SP_SDPA
        after = model(input_ids=ids).logits
        gen_after = model.generate(input_ids=ids, max_new_tokens=6, do_sample=False)
    assert torch.equal(before, after) and torch.equal(gen_before, gen_after)
