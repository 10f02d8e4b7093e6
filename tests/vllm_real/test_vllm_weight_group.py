"""A vLLM rollout server (`serve-rollouts --engine vllm`, its own process, the in-process engine) loads weights
sent over the weight group (gloo): afterwards its greedy generations equal HF's with the trainer's weights."""

from __future__ import annotations

import os
import subprocess
import sys
import time
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
    from test_weight_group import GREEDY, changed_policy, image_samples

    videor1 = str(Path(sys.executable).parent / "videor1")
    log, token_file = tmp_path / "server.log", tmp_path / "token"
    with open(log, "w") as sink:   # vLLM logs to stdout too: a file never blocks the server
        proc = subprocess.Popen([videor1, "serve-rollouts", "--model", str(tiny_model_dir), "--engine", "vllm",
                                 "--dtype", "float32", "--port", "0", "--token-file", str(token_file),
                                 "--gpu-memory-utilization", str(vllm_memory)], stdout=sink,
                                stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
    try:
        url = None
        deadline = time.monotonic() + 300
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            lines = [x for x in log.read_text(errors="replace").splitlines() if x.startswith("serving rollouts on")]
            url = lines[0].split()[-1] if lines else time.sleep(0.5)
        assert url, log.read_text()[-3000:]
        remote = RemoteEngine(url, token=token_file.read_text().strip(), run="vllm")
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
        proc.terminate()
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
