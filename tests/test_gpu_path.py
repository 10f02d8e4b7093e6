"""CPU checks of the GPU path (issue 11): what we hand vLLM 0.33, DeepSpeed 0.19 and accelerate 1.15, checked
against the shapes in their sources (vLLM is imported when installed; otherwise the shapes below are the ones
read in vllm 0.33.0's source: `vllm/inputs/data.py` TextPrompt, `vllm/multimodal/parse.py` video items,
`vllm/v1/engine/parallel_sampling.py` child seeds, `vllm/v1/worker/worker_base.py` worker extensions)."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from videor1.generation.engines import SamplingParams, VLLMEngine, in_process, llm_constructor_kwargs
from videor1.generation.vllm_worker import RPC_METHOD, WORKER_EXTENSION, WeightSyncExtension
from videor1.generation.weights import full_state_items
from videor1.train.common import enable_gradient_checkpointing, fill_deepspeed_auto, param_groups, param_ndim


@pytest.fixture(scope="module")
def samples(bikes_mp4):
    from videor1.data.media import VideoSpec, load_video
    from videor1.model.inputs import Sample

    clip = load_video(bikes_mp4, VideoSpec(max_frames=4, min_pixels=28 * 28, max_pixels=56 * 56 * 2))
    video = Sample(record=SimpleNamespace(problem_id="bikes"), media=clip, messages=[
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Where do the bikes go?"}]}])
    still = Sample(record=SimpleNamespace(problem_id="still"), media=np.ascontiguousarray(clip.frames[-1][:, :56]),
                   messages=[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}])
    return [video, still]


# ----------------------------------------------------------------------------- vLLM request objects
class _Params:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


class _Engine:
    def __init__(self):
        self.encoder_resets = 0

    def reset_encoder_cache(self):
        self.encoder_resets += 1


class _LLM:
    def __init__(self):
        self.rpc, self.resets = [], 0
        self.llm_engine = _Engine()

    def generate(self, requests, sampling_params=None, use_tqdm=True):
        return [SimpleNamespace(outputs=[SimpleNamespace(text="x", token_ids=[1], finish_reason="length",
                                                         stop_reason=None)] * sp.kwargs["n"])
                for sp in sampling_params]

    def collective_rpc(self, method, args=()):
        self.rpc.append((method, args))

    def reset_prefix_cache(self):
        self.resets += 1


def _vllm_child_seeds(params) -> list[int]:
    """vLLM 0.33's ParentRequest: with n > 1 the j-th child gets seed + j (parallel_sampling.py)."""
    kw = params.kwargs
    return [kw["seed"] + j for j in range(kw["n"])]


def test_request_shape_matches_vllm_0_33(processor, samples):
    engine = VLLMEngine(processor, llm=_LLM(), sampling_params_cls=_Params)
    for sample in samples:
        req = engine.request(sample)
        assert set(req) <= {"prompt", "multi_modal_data", "mm_processor_kwargs"}  # TextPrompt keys
        assert isinstance(req["prompt"], str)
        (modality, item), = req["multi_modal_data"].items()
        if modality == "video":  # (frames, metadata): Qwen2.5-VL sets video_needs_metadata=True
            frames, meta = item
            assert isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim == 4
            assert frames.shape[-1] == 3
            assert {"fps", "total_num_frames", "frames_indices", "duration", "video_backend"} <= set(meta)
            assert meta["total_num_frames"] == len(frames) and len(meta["frames_indices"]) == len(frames)
            assert req["mm_processor_kwargs"]["do_sample_frames"] is False
    try:  # the real classes, when vLLM is installed
        from vllm import SamplingParams as VSP
        from vllm.inputs import TextPrompt
    except ImportError:
        return
    assert {"prompt", "multi_modal_data", "mm_processor_kwargs"} <= set(TextPrompt.__annotations__)
    engine = VLLMEngine(processor, llm=_LLM(), sampling_params_cls=VSP)
    sp = engine.sampling_params(SamplingParams(n=4, seed=3), 1)
    assert sp.n == 4 and sp.seed == 7


def test_bare_frames_are_refused(processor):
    with pytest.raises(ValueError, match="metadata"):
        VLLMEngine(processor, llm=_LLM(), sampling_params_cls=_Params, video_metadata=False)


def test_every_completion_of_a_call_gets_its_own_seed(processor, samples):
    """G = 8 as 2 x n = 4 of the same prompt, plus shuffled copies: no seed is used twice."""
    video = [s for s in samples if getattr(s.media, "frames", None) is not None][:1]
    shuffled = [type(s)(s.record, s.media.permuted(list(range(len(s.media.frames)))[::-1]), s.messages)
                for s in video]
    engine = VLLMEngine(processor, llm=_LLM(), sampling_params_cls=_Params)
    call = video * 2 + shuffled * 2
    seeds = [seed for i in range(len(call))
             for seed in _vllm_child_seeds(engine.sampling_params(SamplingParams(n=4, seed=1000), i))]
    assert len(seeds) == 16 and len(set(seeds)) == 16


def test_engine_is_built_with_the_worker_extension():
    kwargs = llm_constructor_kwargs({"max_model_len": 17152})
    assert kwargs["worker_extension_cls"] == WORKER_EXTENSION and kwargs["max_model_len"] == 17152
    module, _, name = WORKER_EXTENSION.rpartition(".")
    import importlib

    assert getattr(importlib.import_module(module), name) is WeightSyncExtension
    assert callable(getattr(WeightSyncExtension, RPC_METHOD))


def _recording_worker(reloads, fail=False):
    def reload_weights(self, weights_iterator):
        got = []
        for pair in weights_iterator:
            got.append(pair)
            if fail:
                raise KeyError("no such layer")
        reloads.append(got)
    return type("W", (WeightSyncExtension,), {"reload_weights": reload_weights})()


def test_worker_extension_streams_buckets_into_one_reload():
    """Blobs (multi-process) feed ONE reload_weights running in a worker thread, bucket by bucket (vLLM's layerwise
    reload would leave layers missing from a partial reload empty); the final bucket finishes it."""
    from videor1.generation.vllm_worker import encode_weights

    reloads = []
    worker = _recording_worker(reloads)
    tied = torch.arange(4.0).reshape(2, 2)
    blob = encode_weights([("a.weight", tied), ("b.weight", tied), ("tiny", torch.ones(1))])  # shared + < 256 bytes
    assert isinstance(blob, bytes)
    assert worker.videor1_load_weights(blob, False) == 3 and reloads == []   # the reload waits for more
    assert worker.videor1_load_weights([("c.weight", torch.zeros(3))], True) == 4
    (pairs,) = reloads
    assert sorted(n for n, _ in pairs[:3]) == ["a.weight", "b.weight", "tiny"] and pairs[3][0] == "c.weight"
    got = dict(pairs)
    assert torch.equal(got["a.weight"], tied) and torch.equal(got["b.weight"], tied) and torch.equal(got["tiny"], torch.ones(1))
    worker.videor1_load_weights([("d", torch.ones(1))])
    assert [n for n, _ in reloads[1]] == ["d"]  # a new sync, a new reload
    with pytest.raises(TypeError, match="safetensors blob"):  # what msgpack makes of a tensor
        worker.videor1_load_weights([("e", ["float32", [2], 0])])


def test_worker_extension_in_process_stream_and_a_failing_reload():
    reloads = []
    worker = _recording_worker(reloads)
    made = []
    stream = ((made.append(i) or f"w{i}", torch.full((2,), float(i))) for i in range(3))
    assert worker.videor1_load_weights(stream, True) == 3 and [n for n, _ in reloads[0]] == ["w0", "w1", "w2"]
    with pytest.raises(ValueError, match="whole sync"):
        worker.videor1_load_weights(iter([("x", torch.ones(1))]), False)
    broken = _recording_worker([], fail=True)   # the error surfaces at the final bucket; no put blocks
    broken.videor1_load_weights([("a", torch.ones(1))], False)
    broken.videor1_load_weights([("b", torch.ones(1))], False)
    with pytest.raises(RuntimeError, match="weight sync failed in the vLLM worker: KeyError"):
        broken.videor1_load_weights([("c", torch.ones(1))], True)


def test_in_process_detection_and_cpu_payload(processor):
    multi = _LLM()
    assert not in_process(multi)
    inproc = _LLM()
    inproc.rpc = []
    inproc.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(
        vllm_config=SimpleNamespace(parallel_config=SimpleNamespace(distributed_executor_backend="external_launcher"))))
    assert in_process(inproc)
    engine = VLLMEngine(processor, llm=multi, sampling_params_cls=_Params)
    engine.load_weights([("w", torch.ones(3))])
    (method, (payload, final)), = multi.rpc
    assert method == RPC_METHOD and isinstance(payload, bytes) and final is True  # a safetensors blob
    assert multi.resets == 1 and multi.llm_engine.encoder_resets == 1  # prefix AND encoder cache
    inproc.rpc, inproc.resets = [], 0
    inproc.llm_engine.reset_encoder_cache = lambda: None
    VLLMEngine(processor, llm=inproc, sampling_params_cls=_Params).load_weights([("w", torch.ones(3))])
    (_, (stream, final)), = inproc.rpc
    pairs = list(stream)   # in-process: one call, the pairs themselves as a stream
    assert pairs[0][0] == "w" and torch.is_tensor(pairs[0][1]) and final is True


def test_vllm_llm_kwargs_colocated_multi_gpu():
    from videor1.config import ConfigError
    from videor1.rl.config import RLConfig, VLLMConfig
    from videor1.rl.rollout_engine import vllm_llm_kwargs

    cfg = RLConfig(model="m", train_data="d", output_dir="o", rollout_engine="vllm", max_prompt_length=1000,
                   max_completion_length=200, bf16=True)
    one = vllm_llm_kwargs(cfg, 0, 1)
    assert "max_model_len" not in one and "distributed_executor_backend" not in one and one["dtype"] == "bfloat16"
    fp32 = RLConfig(model="m", train_data="d", output_dir="o", rollout_engine="vllm", bf16=False)
    assert vllm_llm_kwargs(fp32, 0, 1)["dtype"] == "float32"  # never "auto" (bf16 for an fp32 checkpoint)
    assert vllm_llm_kwargs(replace(fp32, vllm=VLLMConfig(max_model_len=999)), 0, 1)["max_model_len"] == 999
    many = vllm_llm_kwargs(cfg, 3, 4)
    assert many["distributed_executor_backend"] == "external_launcher" and many["seed"] == 3
    tp2 = RLConfig(model="m", train_data="d", output_dir="o", rollout_engine="vllm", vllm=VLLMConfig(tensor_parallel_size=2))
    assert vllm_llm_kwargs(tp2, 3, 4)["seed"] == 1
    with pytest.raises(ConfigError):
        vllm_llm_kwargs(tp2, 0, 3)


# ----------------------------------------------------------------------------- gathered weights
def test_full_state_items_plain_and_zero3_like():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    names = [n for n, _ in full_state_items(model)]
    assert names == list(model.state_dict())
    cast = dict(full_state_items(model, dtype=torch.bfloat16))   # the rollout dtype, one tensor at a time
    assert all(t.dtype == torch.bfloat16 and torch.equal(t, v.bfloat16()) for (n, v), t in
               zip(model.state_dict().items(), cast.values()))
    live = dict(full_state_items(model, dtype=torch.float32))   # already in the dtype: the live tensors
    assert live["0.weight"].data_ptr() == model[0].weight.data_ptr()
    uncast = dict(full_state_items(model, dtype=torch.bfloat16, cast_unsharded=False))   # an in-process engine casts
    assert uncast["0.weight"].data_ptr() == model[0].weight.data_ptr()


def test_module_groups_keep_a_modules_weights_together():
    from videor1.generation.weights import module_groups

    names = ["a.q.weight", "a.q.bias", "a.k.weight", "b.weight", "b.bias", "c"]
    assert module_groups(names) == [["a.q.weight", "a.q.bias"], ["a.k.weight"], ["b.weight", "b.bias"], ["c"]]


# ----------------------------------------------------------------------------- DeepSpeed / accelerate
def _ds_accelerator(config: dict, n: int = 2):
    plugin = SimpleNamespace(deepspeed_config=config)
    return SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin), num_processes=n)


def test_fill_deepspeed_auto_keeps_our_clipping_and_fills_buckets_from_the_text_config():
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs" / "deepspeed"
    for name in ("zero2.json", "zero3.json"):
        ds = json.loads((root / name).read_text())
        model = SimpleNamespace(config=SimpleNamespace(text_config=SimpleNamespace(hidden_size=3584)))
        fill_deepspeed_auto(_ds_accelerator(ds), micro_batch=8, accumulation=1, max_grad_norm=5.0, model=model)
        assert ds["train_micro_batch_size_per_gpu"] == 8 and ds["train_batch_size"] == 16
        assert ds["gradient_clipping"] == 5.0 and ds["gradient_accumulation_steps"] == 1
        zero = ds["zero_optimization"]
        assert zero["reduce_bucket_size"] == 3584 * 3584
        # accelerate 1.15 (`_prepare_deepspeed`) fills only entries still "auto": none of these is left
        assert not [k for k, v in zero.items() if v == "auto"]
        if zero["stage"] == 3:
            assert zero["stage3_param_persistence_threshold"] == 35840


def test_weight_decay_split_uses_zero3_shapes():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    for p in model.parameters():  # what zero.Init leaves: empty 1-D tensors, real shape in ds_shape
        p.ds_shape = p.shape
        p.data = torch.empty(0)
    decay, no_decay = param_groups(model, 0.1)
    assert len(decay["params"]) == 1 and len(no_decay["params"]) == 3
    assert param_ndim(model[0].weight) == 2


def test_gradient_checkpointing_across_transformers_versions():
    calls = []

    class Old:  # transformers <= 5.20: only gradient_checkpointing_enable
        config = SimpleNamespace(use_cache=True)

        def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
            calls.append(("old", gradient_checkpointing_kwargs))

    class New(Old):
        def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None):
            calls.append(("new", activation_checkpointing_kwargs))

    old, new = Old(), New()
    enable_gradient_checkpointing(old)
    enable_gradient_checkpointing(new)
    assert calls == [("old", {"use_reentrant": False}), ("new", {"use_reentrant": False})]
    assert old.config.use_cache is False and new.config.use_cache is False


def test_attn_implementation_falls_back_to_sdpa():
    from videor1.model.load import resolve_attn_implementation

    assert resolve_attn_implementation("auto") is None and resolve_attn_implementation("eager") == "eager"
    if not torch.cuda.is_available():
        assert resolve_attn_implementation("flash_attention_2") == "sdpa"


def test_the_7b_probe_runs_its_gpu_code_on_a_scaled_architecture():
    """`gpu_smoke --only probe7b`'s code path (generate + checkpointed forward/backward) on a CPU, with the 7B's
    config shrunk: the published architecture itself is checked on the meta device (8.29 B parameters)."""
    from videor1.model.architectures import qwen25_vl_7b_config
    from videor1.tools.probe7b import probe

    with torch.device("meta"):
        from transformers import Qwen2_5_VLForConditionalGeneration

        full = Qwen2_5_VLForConditionalGeneration._from_config(qwen25_vl_7b_config())
    assert round(sum(p.numel() for p in full.parameters()) / 1e9, 2) == 8.29
    cfg = qwen25_vl_7b_config(
        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, rope_scaling={"type": "mrope", "mrope_section": [2, 1, 1]}),
        vision=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                    fullatt_block_indexes=[1]))
    r = probe("cpu", frames=4, rows=2, new_tokens=3, config=cfg, dtype=torch.float32)
    assert (r["rows"], r["new_tokens"], r["video_tokens"]) == (2, 3, 2 * 16 * 32 // 4)
    assert r["train_tokens"] == r["video_tokens"] + 13 + 3 and np.isfinite(r["loss"])
