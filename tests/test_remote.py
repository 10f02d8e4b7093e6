"""Server-mode rollouts: the wire format, a real server on the tiny model, weight sync, and RL through it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rollout_server import start_server

from videor1.data.media import VideoSpec, load_video
from videor1.generation.remote import RemoteEngine, sample_from_wire, sample_to_wire
from videor1.generation.server import RolloutServer
from videor1.generation.engines import HFEngine, SamplingParams
from videor1.model.inputs import Sample

SMALL = VideoSpec(max_frames=4, min_pixels=28 * 28, max_pixels=56 * 56 * 2)
QUESTION = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves?"}]}]
IMAGE_Q = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]}]


class Recording:
    """Wraps an engine and keeps the samples it was asked to generate for."""

    def __init__(self, engine):
        self.engine, self.seen = engine, []

    def generate(self, samples, params):
        self.seen.extend(samples)
        return self.engine.generate(samples, params)

    def load_weights(self, pairs):
        self.engine.load_weights(pairs)


@pytest.fixture
def samples(bikes_mp4):
    clip = load_video(bikes_mp4, SMALL)
    image = np.zeros((56, 56, 3), np.uint8)
    image[10:30, 10:30] = (230, 30, 30)
    return [Sample(None, clip, QUESTION), Sample(None, clip.permuted([3, 1, 0, 2]), QUESTION),
            Sample(None, image, IMAGE_Q)]


@pytest.fixture
def served(tiny_model_dir, processor, tmp_path):
    """A RolloutServer in a thread with the HF engine on its own copy of the tiny model."""
    from videor1.model.load import load_model

    engine = Recording(HFEngine(load_model(tiny_model_dir, device="cpu").eval(), processor))
    server = RolloutServer(engine, weights_dir=tmp_path / "weights", port=0).start()
    yield server, engine
    server.close()


def test_wire_round_trip_keeps_frames_order_and_timing(samples):
    for sample in samples:
        back = sample_from_wire(json.loads(json.dumps(sample_to_wire(sample))))
        assert back.messages == sample.messages
        if isinstance(sample.media, np.ndarray):
            assert np.array_equal(back.media, sample.media)
        else:
            assert np.array_equal(back.media.frames, sample.media.frames)
            assert back.media.sample_fps == sample.media.sample_fps
            assert back.media.indices == sample.media.indices


def test_remote_generation_equals_local(served, samples, model, processor):
    server, engine = served
    remote = RemoteEngine(server.address, token=server.token)
    for params in (SamplingParams(n=1, max_new_tokens=12, do_sample=False),
                   SamplingParams(n=3, max_new_tokens=12, temperature=1.0, seed=7)):
        got = remote.generate(samples, params)
        want = HFEngine(model, processor).generate(samples, params)
        assert [[c.token_ids for c in g] for g in got] == [[c.token_ids for c in g] for g in want]
        assert [[c.text for c in g] for g in got] == [[c.text for c in g] for g in want]
    # the server saw exactly the frames sent, in the order sent (the permuted clip stays permuted)
    assert np.array_equal(engine.seen[1].media.frames, samples[1].media.frames)
    assert not np.array_equal(engine.seen[1].media.frames, engine.seen[0].media.frames)


def test_weight_sync_and_versions(served, tiny_model_dir, tmp_path):
    from videor1.model.load import load_model

    server, engine = served
    policy = load_model(tiny_model_dir, device="cpu")
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.01)
    writer = RemoteEngine(server.address, token=server.token, weights_dir=tmp_path / "weights", run="runA")
    writer.sync_weights(policy, version=3)
    served_state = engine.engine.model.state_dict()
    assert all(torch.equal(served_state[k], v) for k, v in policy.state_dict().items())
    assert server.health()["version"] == 3 and server.health()["run"] == "runA"
    RemoteEngine(server.address, token=server.token, run="runA").sync_weights(policy, version=3, writer=False)  # returns at once
    bf16 = RemoteEngine(server.address, token=server.token, weights_dir=tmp_path / "weights", run="runA",
                        dtype=torch.bfloat16)   # the rollout dtype of a bf16 run: half the file of fp32
    bf16.sync_weights(policy, version=5)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "weights" / "policy.safetensors"), "pt") as handle:
        assert {handle.get_slice(k).get_dtype() for k in handle.keys()} == {"BF16"}
    served_state = engine.engine.model.state_dict()
    assert all(torch.equal(served_state[k], v.bfloat16().float()) for k, v in policy.state_dict().items())
    (tmp_path / "weights" / "cut.safetensors").write_bytes((tmp_path / "weights" / "policy.safetensors").read_bytes()[:-64])
    with pytest.raises(RuntimeError, match="cannot be read"):   # a partial file: refused, the model untouched
        bf16._call("POST", "/load_weights", {"file": "cut.safetensors", "run": "runA", "version": 6})
    assert server.health()["version"] == 5
    with pytest.raises(TimeoutError, match="version 4"):
        RemoteEngine(server.address, token=server.token, run="runA", timeout_s=0.3).sync_weights(policy, version=4, writer=False)


def test_server_refuses_weights_outside_its_directory(served, tmp_path):
    server, _ = served
    remote = RemoteEngine(server.address, token=server.token)
    with pytest.raises(RuntimeError, match="HTTP 403.*outside"):
        remote._call("POST", "/load_weights", {"file": "../elsewhere.safetensors", "version": 1})
    with pytest.raises(RuntimeError, match="HTTP 404"):
        remote._call("GET", "/nothing")


def test_remote_engine_needs_a_weights_dir():
    from videor1.config import ConfigError, load_config
    from videor1.rl.config import RLConfig

    root = Path(__file__).resolve().parents[1] / "configs"
    with pytest.raises(ConfigError, match="remote.weights_dir"):
        load_config(RLConfig, root / "rl_demo_cpu.yaml", ["rollout_engine=remote", "remote.weight_transport=file"])


def test_unreachable_server_names_the_command():
    with pytest.raises(ConnectionError, match="serve-rollouts"):
        RemoteEngine("http://127.0.0.1:9", timeout_s=2).health()


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["file", "group"])
def test_rl_through_the_cli_server(transport, tiny_model_dir, synth_dir, tmp_path):
    """`videor1 serve-rollouts --engine hf` in its own process; T-GRPO trains 3 steps through it and the
    server ends up with the policy of the start of step 3, synced through a file or over the weight group."""
    from videor1.rl.config import RLConfig
    from videor1.rl.trainer import train
    from videor1.config import load_config

    weights = tmp_path / "shm"
    server = start_server(tiny_model_dir, tmp_path, "--weights-dir", str(weights))
    try:
        url = server.url
        root = Path(__file__).resolve().parents[1] / "configs"
        cfg = load_config(RLConfig, root / "rl_demo_cpu.yaml", [
            f"model={tiny_model_dir}", f"train_data={synth_dir / 'rl.jsonl'}", f"media_root={synth_dir}",
            f"output_dir={tmp_path / 'run'}", "max_steps=3", "save_steps=0", "report_to=[]",
            "progress=false", "rollout_engine=remote", f"remote.url={url}", f"remote.weights_dir={weights}",
            f"remote.weight_transport={transport}", f"remote.token_file={server.token_file}"])
        final = train(cfg)
        rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [1, 2, 3]
        assert all(r["completion_length"] > 0 for r in rows)
        health = RemoteEngine(url, token=server.token).health()
        assert health["version"] == 3 and health["run"] == str((tmp_path / "run").resolve())
        assert health["behaviour_logprobs"] == "any temperature"   # the HF engine's (async_rollouts checks it)
        assert (weights / "policy.safetensors").is_file() == (transport == "file")
        assert (final / "model.safetensors").is_file()
    finally:
        server.stop()
