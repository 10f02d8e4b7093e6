"""Issue 33.1: the rollout server serves concurrent requests by one engine call, each request getting its
own completions; seeds survive batching (per-row generators for HF, per-request vLLM params)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest

from videor1.data.media import VideoSpec, load_video
from videor1.generation.batching import Batching, run_batch
from videor1.generation.engines import Completion, HFEngine, SamplingParams, VLLMEngine
from videor1.generation.remote import RemoteEngine
from videor1.generation.server import RolloutServer, ServerLimits
from videor1.model.inputs import Sample

SMALL = VideoSpec(max_frames=4, min_pixels=28 * 28, max_pixels=56 * 56 * 2)
VIDEO_Q = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves?"}]}]
IMAGE_Q = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]}]


def ids(groups):
    return [[c.token_ids for c in g] for g in groups]


def each(results):
    """The token ids of each request's completions (a `generate_many` result)."""
    return [ids(groups) for groups in results]


@pytest.fixture(scope="module")
def samples(bikes_mp4):
    clip = load_video(bikes_mp4, SMALL)
    image = np.zeros((56, 56, 3), np.uint8)
    image[10:30, 10:30] = (230, 30, 30)
    return [Sample(SimpleNamespace(problem_id="v"), clip, VIDEO_Q),
            Sample(SimpleNamespace(problem_id="s"), clip.permuted([3, 1, 0, 2]), VIDEO_Q),
            Sample(SimpleNamespace(problem_id="i"), image, IMAGE_Q)]


# ------------------------------------------------------------------------------------ HF engine
def test_hf_batched_requests_do_not_depend_on_their_companions(model, processor, samples):
    """Seeded sampling: a request's completions are the same alone or batched with others (own generators per
    row; equal tokens here, where only the left padding differs); greedy ones equal `generate`'s."""
    engine = HFEngine(model, processor, batch_size=2)   # chunks of 2 rows cut across the requests
    a = (samples[:2], SamplingParams(n=2, max_new_tokens=8, seed=5))
    b = (samples[2:], SamplingParams(n=2, max_new_tokens=8, seed=9))
    both = engine.generate_many([a, b])
    assert each(both) == each(engine.generate_many([a])) + each(engine.generate_many([b]))
    assert each(engine.generate_many([b, a])) == each(both)[::-1]
    assert each(engine.generate_many([(a[0], SamplingParams(n=2, max_new_tokens=8, seed=6))]))[0] != each(both)[0]
    greedy = SamplingParams(n=2, max_new_tokens=8, do_sample=False)
    assert each(engine.generate_many([(samples[:2], greedy), (samples[2:], greedy)])) == \
        [ids(engine.generate(samples[:2], greedy)), ids(engine.generate(samples[2:], greedy))]
    with pytest.raises(ValueError, match="equal except for the seed"):
        engine.generate_many([a, (samples[2:], SamplingParams(n=3, max_new_tokens=8, seed=9))])


def test_hf_row_sampler_applies_the_warpers(model, processor, samples):
    """top_k = 1 leaves one token per step: per-row sampling must then give the greedy completions."""
    engine = HFEngine(model, processor)
    sharp = SamplingParams(n=2, max_new_tokens=8, temperature=0.7, top_k=1, seed=3)
    greedy = SamplingParams(n=2, max_new_tokens=8, do_sample=False)
    assert ids(engine.generate_many([(samples, sharp)])[0]) == ids(engine.generate(samples, greedy))


# ------------------------------------------------------------------------------------ vLLM adapter
class _EchoLLM:
    """Stands in for vllm.LLM: each completion's token ids name its request's prompt and seed."""

    def __init__(self):
        self.calls = []

    def generate(self, requests, sampling_params=None, use_tqdm=True):
        self.calls.append((requests, [sp.kwargs for sp in sampling_params]))
        return [SimpleNamespace(outputs=[SimpleNamespace(token_ids=[len(r["prompt"]), sp.kwargs.get("seed", 1000) + j],
                                                         finish_reason="length", stop_reason=None)
                                         for j in range(sp.kwargs["n"])])
                for r, sp in zip(requests, sampling_params)]


def test_vllm_requests_go_in_one_call_with_their_own_seeds(processor, samples):
    llm = _EchoLLM()
    engine = VLLMEngine(processor, llm=llm, sampling_params_cls=lambda **kw: SimpleNamespace(kwargs=kw))
    a = (samples[:2], SamplingParams(n=2, max_new_tokens=7, seed=5))
    b = (samples[2:], SamplingParams(n=3, max_new_tokens=5, do_sample=False))   # greedy n=3: 3 requests
    batched = engine.generate_many([a, b])
    (requests, sent), = llm.calls
    alone = [engine.generate(*a), engine.generate(*b)]
    assert each(batched) == each(alone)
    assert sent == llm.calls[1][1] + llm.calls[2][1]   # the same vLLM params (seeds included) as alone
    assert len(requests) == 2 + 3 and [kw.get("seed") for kw in sent] == [5, 7, None, None, None]


# ------------------------------------------------------------------------------------ the server
class _CountingEngine:
    """Completions naming the sample and seed; records each engine call; fails on a sample named 'bad'."""

    def __init__(self):
        self.calls = []
        self.lock = threading.Lock()

    def generate_many(self, calls):
        with self.lock:
            self.calls.append(len(calls))
        names = {s.record.problem_id for samples, _ in calls for s in samples}
        if "bad" in names:
            raise ValueError("sample 'bad' cannot be generated")
        if "boom" in names:
            raise RuntimeError("the engine broke")
        return [[[Completion(text=f"{s.record.problem_id}/{p.seed}", token_ids=[1])] * p.n for s in samples]
                for samples, p in calls]

    def generate(self, samples, params):
        return self.generate_many([(samples, params)])[0]

    def load_weights(self, pairs):
        pass


def _image(name):
    return Sample(SimpleNamespace(problem_id=name), np.zeros((28, 28, 3), np.uint8), IMAGE_Q)


def _concurrently(server, requests):
    """Send each (names, params) from its own thread; each thread's completion texts or its error."""
    out: list = [None] * len(requests)

    def call(i, names, params):
        try:
            out[i] = [[c.text for c in g] for g in RemoteEngine(server.address, token=server.token).generate(
                [_image(n) for n in names], params)]
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            out[i] = exc

    threads = [threading.Thread(target=call, args=(i, *r)) for i, r in enumerate(requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_server_serves_all_ranks_by_one_engine_call():
    engine = _CountingEngine()
    server = RolloutServer(engine, weights_dir=None, port=0, batching=Batching(window_s=30, ranks=3)).start()
    try:
        out = _concurrently(server, [([f"r{r}a", f"r{r}b"], SamplingParams(n=2, seed=100 + r)) for r in range(3)])
        assert out == [[[f"r{r}a/{100 + r}"] * 2, [f"r{r}b/{100 + r}"] * 2] for r in range(3)]
        assert engine.calls == [3] and server.health()["engine_calls"] == 1 and server.health()["requests"] == 3
    finally:
        server.close()


def test_window_groups_by_params_and_an_error_stays_with_its_request():
    engine = _CountingEngine()
    server = RolloutServer(engine, weights_dir=None, port=0, batching=Batching(window_s=3.0)).start()
    try:
        out = _concurrently(server, [(["x"], SamplingParams(n=1, seed=1)), (["bad"], SamplingParams(n=1, seed=2)),
                                     (["y"], SamplingParams(n=2, seed=3))])
        assert out[0] == [["x/1"]] and out[2] == [["y/3", "y/3"]]
        assert isinstance(out[1], RuntimeError) and "HTTP 400" in str(out[1]) and "'bad'" in str(out[1])
        # one window: n=1 (x, bad: failed together, then each alone) and n=2 (y) as separate engine calls
        assert sorted(engine.calls) == [1, 1, 1, 2]
    finally:
        server.close()


def test_run_batch_without_batching_support_is_serial():
    class Plain:
        def __init__(self):
            self.calls = 0

        def generate(self, samples, params):
            self.calls += 1
            return [[Completion(text=s.record.problem_id, token_ids=[])] for s in samples]

    plain = Plain()
    out = run_batch(plain, [([_image("a")], SamplingParams()), ([_image("b")], SamplingParams(seed=1))])
    assert [[[c.text for c in g] for g in r] for r in out] == [[["a"]], [["b"]]] and plain.calls == 2


def test_an_engine_failure_is_a_500_and_the_server_keeps_serving():
    server = RolloutServer(_CountingEngine(), weights_dir=None, port=0, batching=Batching(window_s=0)).start()
    try:
        (failed,) = _concurrently(server, [(["boom"], SamplingParams())])
        assert isinstance(failed, RuntimeError) and "HTTP 500" in str(failed) and "the engine broke" in str(failed)
        assert _concurrently(server, [(["fine"], SamplingParams(seed=4))]) == [[["fine/4"]]]
    finally:
        server.close()


def test_no_batching_is_one_request_per_engine_call():
    engine = _CountingEngine()
    server = RolloutServer(engine, weights_dir=None, port=0, batching=Batching(enabled=False)).start()
    try:
        out = _concurrently(server, [([f"r{r}"], SamplingParams(seed=r)) for r in range(3)])
        assert out == [[[f"r{r}/{r}"]] for r in range(3)] and engine.calls == [1, 1, 1]
    finally:
        server.close()


def test_real_server_batches_hf_ranks(model, processor, samples):
    """Three ranks' T-GRPO-like requests (ordered + shuffled clips) through the HF engine in one engine call:
    each rank gets exactly what its request alone gives."""
    engine = HFEngine(model, processor, batch_size=4)
    server = RolloutServer(engine, weights_dir=None, port=0, batching=Batching(window_s=30, ranks=3)).start()
    calls = [(samples[:2], SamplingParams(n=2, max_new_tokens=6, seed=r)) for r in range(2)] + \
            [(samples[1:], SamplingParams(n=2, max_new_tokens=6, seed=7))]
    try:
        with ThreadPoolExecutor(3) as pool:   # three ranks asking at once
            got = list(pool.map(lambda call: RemoteEngine(server.address, token=server.token).generate(*call), calls))
        assert server.health()["engine_calls"] == 1
        assert [ids(g) for g in got] == [ids(engine.generate_many([c])[0]) for c in calls]
        assert ids(got[0]) != ids(got[1])   # different seeds, same prompts
    finally:
        server.close()


def test_serve_rollouts_batching_flags_are_checked(tmp_path):
    from typer.testing import CliRunner

    from videor1.cli import app

    for flag in ("--batch-window", "--ranks"):
        result = CliRunner().invoke(app, ["serve-rollouts", "--model", str(tmp_path), "--port", "0", flag, "-1"])
        assert result.exit_code == 2 and flag in result.output and ">= 0" in result.output
    with pytest.raises(ValueError, match="window_s >= 0"):
        Batching(window_s=-0.1)


def test_a_stalled_body_is_answered_408_and_the_server_keeps_serving():
    import http.client

    server = RolloutServer(_CountingEngine(), weights_dir=None, port=0,
                           limits=ServerLimits(request_timeout_s=0.5)).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.putrequest("POST", "/generate")
        for key, value in {"Authorization": f"Bearer {server.token}", "Content-Type": "application/json",
                           "Content-Length": "100"}.items():
            conn.putheader(key, value)
        conn.endheaders(b'{"samples": ')   # 12 of the 100 bytes announced, then nothing
        assert conn.getresponse().status == 408
        assert RemoteEngine(server.address, token=server.token).health()["ok"]
    finally:
        server.close()
