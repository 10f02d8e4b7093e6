"""A vLLM rollout server (`serve-rollouts --engine vllm`, its own process, the in-process engine) loads weights
sent over the weight group (gloo): afterwards its greedy generations equal HF's with the trainer's weights."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm")

import torch  # noqa: E402

from videor1.generation.engines import HFEngine  # noqa: E402
from videor1.generation.remote import RemoteEngine  # noqa: E402
from videor1.generation.weight_group import GroupSender, state_manifest  # noqa: E402
from videor1.generation.weights import full_state_items  # noqa: E402


def test_vllm_server_loads_weights_over_the_group(tiny_model_dir, processor, tmp_path, vllm_memory):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from rollout_server import start_server
    from test_weight_group import GREEDY, changed_policy, image_samples

    server = start_server(tiny_model_dir, tmp_path, "--dtype", "float32", "--gpu-memory-utilization",
                          str(vllm_memory), engine="vllm", env=dict(os.environ))
    try:
        remote = RemoteEngine(server.url, token=server.token, run="vllm")
        samples = image_samples()
        before = [g[0].token_ids for g in remote.generate(samples, GREEDY)]
        policy = changed_policy(tiny_model_dir, 6)
        sender = GroupSender(remote._call, bucket_bytes=1 << 16, timeout_s=120)
        state = sender.send(full_state_items(policy, dtype=torch.float32), state_manifest(policy, dtype=torch.float32),
                            run="vllm", version=1)
        assert state["version"] == 1
        want = [g[0].token_ids for g in HFEngine(policy, processor).generate(samples, GREEDY)]
        got = [g[0].token_ids for g in remote.generate(samples, GREEDY)]
        assert got == want and got != before
        sender.close()
    finally:
        assert server.stop() == 0, server.log.read_text()[-3000:]
