"""videor1.generation.engines: HF generation on real media, and the vLLM adapter against a recording stand-in."""

from __future__ import annotations

import copy
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from videor1.data.media import VideoSpec, load_video
from videor1.generation.engines import (Completion, HFEngine, SamplingParams, VLLMEngine, check_prompt_lengths,
                                        trim_completion)
from videor1.model.inputs import Sample, append_tokens, encode, pad_token_id, repeat_rows, vision_token_ids

SMALL = VideoSpec(max_frames=4, min_pixels=28 * 28, max_pixels=56 * 56 * 2)


@pytest.fixture(scope="module")
def samples(bikes_mp4):
    clip = load_video(bikes_mp4, SMALL)
    video = Sample(record=SimpleNamespace(problem_id="bikes"), media=clip, messages=[
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Where do the bikes go?"}]}])
    image = np.ascontiguousarray(clip.frames[-1][:, :56])
    still = Sample(record=SimpleNamespace(problem_id="still"), media=image, messages=[
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}])
    return [video, still]


class _BiasedHead(torch.nn.Module):
    def __init__(self, head, bias):
        super().__init__()
        self.head, self.bias = head, bias

    def forward(self, hidden):
        return self.head(hidden) + self.bias


def _biased_copy(model, token_ids, bias=100.0):
    """A copy of the model whose output layer adds `bias` to the logits of `token_ids`."""
    biased = copy.deepcopy(model)
    extra = torch.zeros(biased.lm_head.out_features)
    extra[list(token_ids)] = bias
    biased.lm_head = _BiasedHead(biased.lm_head, extra)
    return biased


def test_generate_on_a_real_video_and_an_image(model, processor, samples):
    engine = HFEngine(model, processor, batch_size=2)
    out = engine.generate(samples, SamplingParams(n=3, max_new_tokens=6, seed=0))
    assert len(out) == 2 and all(len(group) == 3 for group in out)
    banned = set(vision_token_ids(processor))
    for group in out:
        for c in group:
            assert isinstance(c, Completion) and 1 <= len(c.token_ids) <= 6
            assert not banned & set(c.token_ids)
            assert c.text == processor.tokenizer.decode(c.token_ids, skip_special_tokens=True)
    assert len({tuple(c.token_ids) for c in out[0]}) > 1  # temperature 1 on a random model: samples differ


def test_seeded_sampling_is_reproducible_and_leaves_global_rng_alone(model, processor, samples):
    engine = HFEngine(model, processor, batch_size=2)
    params = SamplingParams(n=2, max_new_tokens=5, seed=123)
    state = torch.random.get_rng_state()
    a = engine.generate(samples, params)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = engine.generate(samples, params)
    c = engine.generate(samples, SamplingParams(n=2, max_new_tokens=5, seed=124))
    ids = lambda res: [[x.token_ids for x in g] for g in res]  # noqa: E731
    assert ids(a) == ids(b)
    assert ids(a) != ids(c)


def test_greedy_is_batch_size_invariant(model, processor, samples):
    params = SamplingParams(n=2, max_new_tokens=6, do_sample=False)
    one = HFEngine(model, processor, batch_size=1).generate(samples, params)
    two = HFEngine(model, processor, batch_size=2).generate(samples, params)
    assert [[c.token_ids for c in g] for g in one] == [[c.token_ids for c in g] for g in two]
    assert one[0][0].token_ids == one[0][1].token_ids  # greedy: the n copies agree


def test_loss_forward_on_the_returned_batch_reproduces_greedy_choices(model, processor, samples):
    engine = HFEngine(model, processor, batch_size=2)
    params = SamplingParams(n=2, max_new_tokens=5, do_sample=False)
    completions, batch = engine.generate_with_inputs(samples, params)
    assert torch.equal(batch["input_ids"], encode(processor, samples)["input_ids"])
    flat = [c.token_ids for group in completions for c in group]
    full = append_tokens(repeat_rows(batch, params.n), flat, pad_id=pad_token_id(processor))
    with torch.no_grad():
        logits = model(**{k: v for k, v in full.items() if k not in ("labels", "completion_mask")}).logits
    logits[..., vision_token_ids(processor)] = float("-inf")
    for row, ids in enumerate(flat):
        pos = full["completion_mask"][row].nonzero().flatten()
        predicted = logits[row, pos - 1].argmax(-1).tolist()  # logits at t-1 predict token t
        assert predicted == ids


def test_vision_tokens_are_suppressed_even_when_favoured(model, processor, samples):
    banned = vision_token_ids(processor)
    biased = _biased_copy(model, banned)
    with torch.no_grad():  # sanity: without suppression the biased model would emit a vision token
        logits = biased(**encode(processor, samples[:1])).logits[0, -1]
    assert int(logits.argmax()) in banned
    out = HFEngine(biased, processor).generate(samples, SamplingParams(n=2, max_new_tokens=4, seed=0))
    assert all(not set(banned) & set(c.token_ids) for g in out for c in g)


def test_generation_stops_at_im_end(model, processor, samples):
    im_end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    biased = _biased_copy(model, [im_end])
    out = HFEngine(biased, processor).generate(samples, SamplingParams(n=2, max_new_tokens=8, do_sample=False))
    for group in out:
        for c in group:
            assert c.token_ids == [im_end] and c.finished and c.text == ""


def test_trim_completion():
    assert trim_completion([5, 6, 2, 0, 0], [2, 1], pad_id=0) == ([5, 6, 2], True)
    assert trim_completion([5, 6, 7], [2], pad_id=0) == ([5, 6, 7], False)
    assert trim_completion([5, 0, 0], [2], pad_id=0) == ([5], False)


def test_sampling_params_validation():
    with pytest.raises(ValueError, match="n must be"):
        SamplingParams(n=0)
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=0.0)
    SamplingParams(temperature=0.0, do_sample=False)  # greedy ignores temperature


# ----------------------------------------------------------------------------------------- vLLM stand-in
class _RecordingLLM:
    """Stands in for vllm.LLM: records generate / weight-sync calls, returns canned outputs."""

    def __init__(self, end_id):
        self.calls = []
        self.loaded = []
        self.rpc = []
        self.resets = 0
        self.end_id = end_id
        runner_model = SimpleNamespace(load_weights=lambda pairs: self.loaded.append(list(pairs)))
        worker = SimpleNamespace(model_runner=SimpleNamespace(model=runner_model))
        self.encoder_resets = 0
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(driver_worker=SimpleNamespace(worker=worker)),
                                          reset_encoder_cache=self._reset_encoder)

    def _reset_encoder(self):
        self.encoder_resets += 1

    def generate(self, requests, sampling_params=None, use_tqdm=True):
        self.calls.append((requests, sampling_params, use_tqdm))
        outs = []
        for sp in sampling_params:
            finished = SimpleNamespace(text="<answer>A</answer>", token_ids=[11, 12, self.end_id],
                                       finish_reason="stop", stop_reason=None)
            cut = SimpleNamespace(text="abc", token_ids=[13, 14], finish_reason="length", stop_reason=None)
            outs.append(SimpleNamespace(outputs=[finished, cut][: sp.kwargs["n"]] * (sp.kwargs["n"] // 2 or 1)))
        return outs

    def collective_rpc(self, method, args=()):
        self.rpc.append((method, args))

    def reset_prefix_cache(self):
        self.resets += 1


class _RecordingSamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


def test_vllm_engine_sends_what_we_intend(processor, samples):
    im_end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    llm = _RecordingLLM(im_end)
    engine = VLLMEngine(processor, llm=llm, sampling_params_cls=_RecordingSamplingParams)
    clip = samples[0].media
    perm = [2, 0, 3, 1]
    shuffled = Sample(record=samples[0].record, media=clip.permuted(perm), messages=samples[0].messages)
    out = engine.generate([samples[0], shuffled, samples[1]],
                          SamplingParams(n=2, max_new_tokens=7, temperature=0.9, top_p=0.95, seed=5))
    (requests, sps, use_tqdm), = llm.calls
    assert use_tqdm is False and len(requests) == 3
    expected_prompt = processor.apply_chat_template(samples[0].messages, tokenize=False, add_generation_prompt=True)
    assert requests[0]["prompt"] == expected_prompt and "<|video_pad|>" in expected_prompt
    frames, meta = requests[0]["multi_modal_data"]["video"]
    np.testing.assert_array_equal(frames, clip.frames)
    assert meta["fps"] == pytest.approx(clip.sample_fps) and meta["total_num_frames"] == len(clip.frames)
    keep = {"shortest_edge": 28 * 28, "longest_edge": 1 << 34}   # the pixel range the loss's encode pins
    assert requests[0]["mm_processor_kwargs"] == {"fps": pytest.approx(clip.sample_fps), "do_sample_frames": False,
                                                  "size": keep}
    assert requests[2]["mm_processor_kwargs"] == {"size": keep}
    shuffled_frames, _ = requests[1]["multi_modal_data"]["video"]
    np.testing.assert_array_equal(shuffled_frames, clip.frames[perm])  # T-GRPO: the shuffled frames go out
    assert "image" in requests[2]["multi_modal_data"] and "<|image_pad|>" in requests[2]["prompt"]
    for i, sp in enumerate(sps):
        kw = sp.kwargs
        # one seed per completion: request i seeds its n children seed + i * n + j (vLLM's parallel sampling)
        assert (kw["n"], kw["max_tokens"], kw["temperature"], kw["top_p"], kw["seed"]) == (2, 7, 0.9, 0.95, 5 + 2 * i)
        assert im_end in kw["stop_token_ids"]
        assert sorted(kw["logit_bias"]) == sorted(vision_token_ids(processor))
        assert all(v <= -100 for v in kw["logit_bias"].values())
        assert kw["logprobs"] == 0   # the sampled token's log-prob (async_rollouts' behaviour policy)
        assert "top_k" not in kw
    decode = lambda ids: processor.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731 (as HFEngine)
    assert out[0][0] == Completion(text=decode([11, 12, im_end]), token_ids=[11, 12, im_end], finished=True)
    assert out[0][1] == Completion(text=decode([13, 14]), token_ids=[13, 14], finished=False)


def test_vllm_engine_greedy_and_weight_sync(processor, samples, model):
    llm = _RecordingLLM(processor.tokenizer.convert_tokens_to_ids("<|im_end|>"))
    engine = VLLMEngine(processor, llm=llm, sampling_params_cls=_RecordingSamplingParams)
    engine.generate(samples[:1], SamplingParams(n=1, do_sample=False, temperature=0.7))
    kw = llm.calls[0][1][0].kwargs
    assert kw["temperature"] == 0.0 and kw["top_p"] == 1.0 and "seed" not in kw
    engine.sync_weights(model)  # always collective_rpc to videor1's worker extension (never driver_worker)
    assert llm.loaded == [] and len(llm.rpc) == 1 and llm.rpc[0][0] == "videor1_load_weights"
    blob, final = llm.rpc[0][1]
    from safetensors.torch import load

    pairs = load(blob)  # multi-process: one safetensors blob (msgpack mangles tensors)
    assert final is True and sorted(pairs) == sorted(model.state_dict().keys())  # safetensors sorts names
    assert all(torch.equal(pairs[k], v) for k, v in model.state_dict().items())
    assert llm.resets == 1 and llm.encoder_resets == 1
    engine.sync_weights(model, chunk_bytes=1)  # one chunk per tensor, only the last one final
    finals = [args[1] for _, args in llm.rpc[1:]]
    assert len(finals) == len(pairs) and finals[-1] is True and not any(finals[:-1])
    rpc_engine = VLLMEngine(processor, llm=llm, sampling_params_cls=_RecordingSamplingParams,
                            rpc_method="update_weights")
    rpc_engine.sync_weights(model)
    assert llm.rpc[-1][0] == "update_weights" and len(load(llm.rpc[-1][1][0])) == len(pairs) and llm.resets == 3


def test_vllm_engine_greedy_n_is_n_requests(processor, samples):
    """vLLM refuses greedy with n > 1: the engine sends n greedy requests per sample instead."""
    llm = _RecordingLLM(processor.tokenizer.convert_tokens_to_ids("<|im_end|>"))
    engine = VLLMEngine(processor, llm=llm, sampling_params_cls=_RecordingSamplingParams)
    out = engine.generate(samples[:2], SamplingParams(n=3, do_sample=False, max_new_tokens=5))
    (requests, sps, _), = llm.calls
    assert len(requests) == 6 and all(sp.kwargs["n"] == 1 and sp.kwargs["temperature"] == 0.0 for sp in sps)
    assert requests[0] == requests[2] and requests[3]["prompt"] == requests[5]["prompt"]
    assert [len(group) for group in out] == [3, 3]


def test_vllm_max_model_len_is_bounded(tiny_model_dir):
    from videor1.generation.vllm_engine import llm_constructor_kwargs

    derived = llm_constructor_kwargs({}, model_path=tiny_model_dir, default_max_model_len=4120)
    assert derived["max_model_len"] == 4096 and derived["dtype"] == "float32"  # the tiny model's limit; CPU dtype
    assert llm_constructor_kwargs({}, model_path=tiny_model_dir)["max_model_len"] == 4096
    assert llm_constructor_kwargs({"max_model_len": 1000}, model_path=tiny_model_dir)["max_model_len"] == 1000
    with pytest.raises(ValueError, match="max_position_embeddings 4096"):
        llm_constructor_kwargs({"max_model_len": 5000}, model_path=tiny_model_dir)


def test_vllm_engine_without_llm_or_path_is_refused(processor):
    with pytest.raises(ValueError, match="llm"):
        VLLMEngine(processor, sampling_params_cls=_RecordingSamplingParams)


def test_hf_rollouts_run_under_the_training_autocast(model, processor, samples):
    """Generation under the autocast the trainer passes (its training forward's): the logits come out in bf16."""
    seen = []
    hook = model.lm_head.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    try:
        HFEngine(model, processor, autocast=lambda: torch.autocast("cpu", dtype=torch.bfloat16)).generate(
            samples[:1], SamplingParams(n=1, max_new_tokens=2, do_sample=False))
        assert seen and set(seen) == {torch.bfloat16}
        seen.clear()
        HFEngine(model, processor).generate(samples[:1], SamplingParams(n=1, max_new_tokens=2, do_sample=False))
        assert set(seen) == {torch.float32}
    finally:
        hook.remove()


def test_prompt_length_check_names_the_record(samples):
    groups = [[Completion("a", [1], prompt_len=120), Completion("b", [2], prompt_len=None)], [Completion("c", [3])]]
    check_prompt_lengths(samples, groups, [120, 40])   # equal, or not reported
    with pytest.raises(RuntimeError, match=r"record 'bikes': the rollout engine's prompt has 150 tokens and the "
                                           r"loss's 120"):
        check_prompt_lengths(samples, [[Completion("a", [1], prompt_len=150)], []], [120, 40])


class _SleepyLLM(_RecordingLLM):
    def __init__(self, end_id):
        super().__init__(end_id)
        self.events = []

    def sleep(self, level):
        self.events.append(("sleep", level))

    def wake_up(self, tags=None):
        self.events.append(("wake_up", tags))

    def collective_rpc(self, method, args=()):
        self.events.append(("rpc", method))
        super().collective_rpc(method, args)


def test_sleep_mode_wakes_before_generation_and_around_a_sync(processor, samples, model, monkeypatch):
    from videor1.generation.vllm_engine import check_sleep_level

    with pytest.raises(ValueError, match="vllm.sleep_level 1 needs a CUDA GPU"):   # this machine
        VLLMEngine(processor, llm=_SleepyLLM(0), sampling_params_cls=_RecordingSamplingParams, sleep_level=1)
    with pytest.raises(ValueError, match="must be 0"):
        check_sleep_level(3)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    llm = _SleepyLLM(processor.tokenizer.convert_tokens_to_ids("<|im_end|>"))
    engine = VLLMEngine(processor, llm=llm, sampling_params_cls=_RecordingSamplingParams, sleep_level=2)
    engine.sleep()
    engine.sleep()   # once asleep, not again
    engine.sync_weights(model)   # weights woken, loaded, then the KV cache (vLLM's order)
    assert llm.events == [("sleep", 2), ("wake_up", ["weights"]), ("rpc", "videor1_load_weights"),
                          ("wake_up", ["kv_cache"])]
    engine.sleep()
    engine.generate(samples[:1], SamplingParams(n=1, max_new_tokens=2))
    assert llm.events[-2:] == [("sleep", 2), ("wake_up", None)] and len(llm.calls) == 1
    off = VLLMEngine(processor, llm=_SleepyLLM(0), sampling_params_cls=_RecordingSamplingParams)
    off.sleep()   # level 0: never asleep
    assert off.llm.events == []


# ------------------------------------------------------------------------ vLLM tensor-parallel groups
class _EchoEngine:
    """Answers each sample with '<id>@<seed>' and records its calls (ids, n, seed)."""

    def __init__(self):
        self.calls = []

    def generate(self, samples, params):
        self.calls.append(([s.record.problem_id for s in samples], params.n, params.seed))
        return [[Completion(f"{s.record.problem_id}@{params.seed}", [i])] * params.n for i, s in enumerate(samples)]


def _sample_of(rid):
    return Sample(record=SimpleNamespace(problem_id=rid), media=np.zeros((28, 28, 3), np.uint8), messages=[])


def _group_member(rank, world, init, out_dir):
    import json

    import torch.distributed as dist

    from videor1.generation.groups import group_engine

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    inner = _EchoEngine()
    engine = group_engine(inner, world, rank, 2, backend="gloo")
    mine = {0: (["a", "b"], 10), 1: (["c"], 20)}[rank]   # other prompts, other seeds per rank
    texts = [[[c.text for c in g] for g in engine.generate([_sample_of(r) for r in mine[0]],
                                                           SamplingParams(n=2, seed=mine[1]))]]
    texts.append([[c.text for c in g] for g in engine.generate([_sample_of("d")] if rank == 0 else [],
                                                               SamplingParams(n=2, seed=mine[1]))])
    texts.append(engine.generate([], SamplingParams(n=2)))   # nobody has prompts: no call at all
    (out_dir / f"{rank}.json").write_text(json.dumps({"texts": texts, "calls": inner.calls}))
    dist.destroy_process_group()


@pytest.mark.slow
def test_a_tensor_parallel_group_gathers_its_prompts_over_gloo(tmp_path):
    """Two processes of one TP group (a real gloo group): one identical generate per step with the group's
    prompts and one seed; each rank gets its own completions back; a rank without prompts still joins."""
    import json
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_group_member, args=(2, f"tcp://127.0.0.1:{port}", tmp_path), nprocs=2, join=True)
    got = [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in (0, 1)]
    assert got[0]["calls"] == got[1]["calls"] == [[["a", "b", "c"], 2, 10], [["d"], 2, 10]]
    assert got[0]["texts"] == [[["a@10", "a@10"], ["b@10", "b@10"]], [["d@10", "d@10"]], []]
    assert got[1]["texts"] == [[["c@10", "c@10"]], [], []]


def test_group_plans_and_layout():
    from videor1.generation.groups import plan_calls, tp_group_ranks

    assert tp_group_ranks(4, 2) == [[0, 1], [2, 3]] and tp_group_ranks(2, 1) == [[0], [1]]
    with pytest.raises(ValueError, match="must divide"):
        tp_group_ranks(3, 2)
    a, b, c = (_sample_of(x) for x in "abc")
    video, images = SamplingParams(n=4, seed=1), SamplingParams(n=8, seed=2)   # T-GRPO: n differs by media
    plan = plan_calls([([a], video), ([], images), ([b, c], images), ([a], replace(video, seed=9))])
    assert plan == [(video, [(0, 0, 1), (3, 1, 2)]), (images, [(2, 0, 2)])]


def test_trainer_refuses_sleep_mode_without_cuda(processor, model):
    from videor1.config import ConfigError
    from videor1.rl.config import RLConfig, VLLMConfig
    from videor1.rl.rollout_engine import build_rollout_engine

    cfg = RLConfig(model="m", train_data="d", output_dir="o", rollout_engine="vllm", vllm=VLLMConfig(sleep_level=1))
    accelerator = SimpleNamespace(unwrap_model=lambda m: m, is_main_process=True, mixed_precision="no",
                                  process_index=0, num_processes=1)
    with pytest.raises(ConfigError, match="vllm.sleep_level 1 needs a CUDA GPU"):   # before vLLM would start
        build_rollout_engine(cfg, model, processor, accelerator)
    with pytest.raises(ConfigError, match="vllm.sleep_level must be 0, 1 or 2"):
        RLConfig(model="m", train_data="d", output_dir="o", vllm=VLLMConfig(sleep_level=3)).validate()


def test_a_rank_without_prompts_joins_its_groups_generate(processor):
    """The trainer's rollout on a process with no usable prompt still calls a collective engine's generate."""
    from videor1.model.inputs import pad_token_id
    from videor1.rl.config import RLConfig
    from videor1.rl.step import Prompts
    from videor1.rl.trainer import _rollout

    class Collective(_EchoEngine):
        collective = True

    cfg = RLConfig(model="m", train_data="d", output_dir="o", rollout_engine="vllm", num_generations=4)
    engine = Collective()
    run = SimpleNamespace(cfg=cfg, engine=engine, model=None, accelerator=None, processor=processor,
                          pad_id=pad_token_id(processor))
    batch = _rollout(run, Prompts([], [], None, []), SamplingParams(n=1, seed=3), step=1)
    assert engine.calls == [([], 4, 3)] and batch.weight == 0.0   # joined with nothing; a zero-weighted batch
    engine.collective = False
    _rollout(run, Prompts([], [], None, []), SamplingParams(n=1, seed=3), step=1)
    assert len(engine.calls) == 1   # an engine of its own: nothing to join


def test_an_empty_weight_sync_is_refused(processor):
    llm = _RecordingLLM(0)
    with pytest.raises(ValueError, match="no weights to load"):
        VLLMEngine(processor, llm=llm, sampling_params_cls=_RecordingSamplingParams).load_weights([])
    assert llm.rpc == []
