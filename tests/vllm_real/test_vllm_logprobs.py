"""The behaviour log-probs vLLM returns (`Completion.logprobs`, asked with logprobs=0) on the tiny model: at
temperature 1 they are the trainer's log-probs of the same tokens (vLLM's raw_logprobs: log_softmax of the
logits over the whole vocabulary), the distribution `async_rollouts`' importance correction compares with. A
prompt longer than the engine's max_model_len is refused as `RequestRejected` and the engine goes on."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("vllm")

from videor1.data.media import VideoSpec, load_video  # noqa: E402
from videor1.generation.engines import RequestRejected, SamplingParams, VLLMEngine  # noqa: E402
from videor1.model.inputs import Sample, encode, pad_token_id  # noqa: E402
from videor1.model.load import load_model, load_processor  # noqa: E402
from videor1.rl.step import completion_logps, loss_inputs  # noqa: E402

QUESTION = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Where do the bikes go?"}]}]


def test_vllm_sampled_logprobs_are_the_trainers_at_temperature_one(tiny_model_dir, bikes_mp4, vllm_memory):
    processor = load_processor(tiny_model_dir)
    clip = load_video(bikes_mp4, VideoSpec(min_frames=4, max_frames=4, fps=8.0, min_pixels=1024, max_pixels=6272))
    samples = [Sample(SimpleNamespace(problem_id="a"), clip, QUESTION),
               Sample(SimpleNamespace(problem_id="b"), clip.permuted([1, 3, 0, 2]), QUESTION)]
    engine = VLLMEngine(processor, model_path=str(tiny_model_dir), llm_kwargs={"gpu_memory_utilization": vllm_memory})
    params = SamplingParams(n=2, max_new_tokens=10, temperature=1.0, top_p=1.0, seed=5)
    try:
        groups = engine.generate(samples, params)
        # a prompt longer than max_model_len (the tiny model's 4,096 positions): the call is refused as
        # RequestRejected (the evaluation runner then retries item by item), and the engine goes on serving
        long = load_video(bikes_mp4, VideoSpec(min_frames=64, max_frames=64, fps=30.0, min_pixels=200 * 28 * 28,
                                               max_pixels=200 * 28 * 28))
        with pytest.raises(RequestRejected, match="longer than the maximum model length"):
            engine.generate([samples[0], Sample(SimpleNamespace(problem_id="long"), long, QUESTION)], params)
        again = engine.generate(samples, params)
    finally:
        engine.close()
    assert [[c.token_ids for c in g] for g in again] == [[c.token_ids for c in g] for g in groups]   # seeded
    completions = [c for g in groups for c in g]
    assert all(len(c.logprobs) == len(c.token_ids) for c in completions)
    model = load_model(tiny_model_dir, device="cpu").eval()
    inputs, ids, _ = loss_inputs(encode(processor, samples), [c.token_ids for c in completions], 2,
                                 pad_token_id(processor))
    with torch.no_grad():
        trainer = completion_logps(model, inputs, ids, 1.0)
    width = ids.shape[1]
    for row, c in enumerate(completions):
        mine = trainer[row, width - len(c.token_ids):].numpy()
        assert np.allclose(c.logprobs, mine, atol=1e-3), (c.logprobs, mine.tolist())
