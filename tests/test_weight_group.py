"""Weights to the rollout server over a process group (issue 33 item 3), against the real server process
(`videor1 serve-rollouts --engine hf` on the tiny model, the tests marked slow), gloo on this CPU; and the
trainer's process count told to the server (`POST /trainer`)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rollout_server import start_server

from videor1.generation.engines import HFEngine, SamplingParams
from videor1.generation.remote import RemoteEngine
from videor1.generation.remote_sync import announce_ranks
from videor1.generation.weight_group import (Entry, GroupSender, bucket_offsets, plan_buckets, split_buckets,
                                             state_manifest)
from videor1.generation.weights import full_state_items
from videor1.model.inputs import Sample

QUESTION = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]}]
GREEDY = SamplingParams(n=1, max_new_tokens=10, do_sample=False)


@pytest.fixture
def server(tiny_model_dir, tmp_path):
    started = start_server(tiny_model_dir, tmp_path)
    yield started.proc, started.url, started.token
    started.stop()


def changed_policy(model_dir: Path, seed: int) -> torch.nn.Module:
    """The tiny model with every weight visibly changed (greedy outputs differ from the initial model's)."""
    from videor1.model.load import load_model

    policy = load_model(model_dir, device="cpu").eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in policy.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * 0.05)
    return policy


def image_samples() -> list[Sample]:
    out = []
    for colour in ((230, 30, 30), (20, 200, 40)):
        image = np.zeros((56, 56, 3), np.uint8)
        image[8:40, 8:40] = colour
        out.append(Sample(None, image, QUESTION))
    return out


def send(sender: GroupSender, policy: torch.nn.Module, dtype: torch.dtype | None, version: int) -> dict:
    return sender.send(full_state_items(policy, dtype=dtype), state_manifest(policy, dtype=dtype), run="r",
                       version=version)


# ------------------------------------------------------------------------------------------- pure parts
def test_buckets_cover_the_entries_in_order():
    entries = [Entry("a", (3,), "float32"), Entry("b", (10,), "bfloat16"), Entry("c", (1000,), "float32"),
               Entry("d", (), "int64"), Entry("e", (2, 2), "float32")]
    assert plan_buckets(entries, 64) == [2, 1, 2]          # 16 + 24 bytes; 4000 alone; 8 + 16
    assert plan_buckets(entries, 1) == [1] * 5             # every tensor bigger than a bucket: one each
    assert plan_buckets(entries, 1 << 30) == [5]
    buckets = split_buckets(entries, [2, 1, 2])
    assert [[e.name for e in b] for b in buckets] == [["a", "b"], ["c"], ["d", "e"]]
    assert bucket_offsets(buckets[0]) == ([0, 16], 40)     # 12 bytes padded to 16 (aligned views)
    assert bucket_offsets(buckets[1]) == ([0], 4000)       # one tensor: its own bytes
    with pytest.raises(ValueError, match="adding up"):
        split_buckets(entries, [2, 2])
    with pytest.raises(ValueError, match="dtype"):
        Entry.from_wire({"name": "x", "shape": [1], "dtype": "object"})


def test_manifest_matches_the_stream(tiny_model_dir):
    policy = changed_policy(tiny_model_dir, 0)
    entries = state_manifest(policy, dtype=torch.bfloat16)
    got = [(n, tuple(t.shape), str(t.dtype).removeprefix("torch.")) for n, t in
           full_state_items(policy, dtype=torch.bfloat16)]
    assert [(e.name, e.shape, e.dtype) for e in entries] == got


# --------------------------------------------------------------------------------- the real server
@pytest.mark.slow
def test_group_sync_then_greedy_equals_the_trainers(server, tiny_model_dir, processor):
    """A sync over the group (fp32, then bf16 with a bucket smaller than most tensors): the server's greedy
    generations equal the trainer's HF greedy generations of the same weights; the process count is told."""
    proc, url, token = server
    remote = RemoteEngine(url, token=token, run="r")
    samples = image_samples()
    before = [g[0].token_ids for g in remote.generate(samples, GREEDY)]
    policy = changed_policy(tiny_model_dir, 1)
    sender = GroupSender(remote._call, bucket_bytes=1 << 20, timeout_s=60)
    sender.join()
    state = send(sender, policy, torch.float32, version=1)
    assert state["version"] == 1 and state["run"] == "r" and state["loaded"] == len(policy.state_dict())
    want = [g[0].token_ids for g in HFEngine(policy, processor).generate(samples, GREEDY)]
    got = [g[0].token_ids for g in remote.generate(samples, GREEDY)]
    assert got == want and got != before

    small = GroupSender(remote._call, bucket_bytes=64, timeout_s=60)   # smaller than one tensor: one each
    policy2 = changed_policy(tiny_model_dir, 2)
    entries = state_manifest(policy2, dtype=torch.bfloat16)
    assert max(e.nbytes for e in entries) > 64 and len(plan_buckets(entries, 64)) > len(entries) // 2
    assert send(small, policy2, torch.bfloat16, version=2)["version"] == 2   # small joins afresh (sender left)
    rounded = changed_policy(tiny_model_dir, 2)
    with torch.no_grad():   # the trainer's weights as the server got them: rounded to the rollout dtype
        for param in rounded.parameters():
            param.copy_(param.bfloat16().float())
    want = [g[0].token_ids for g in HFEngine(rounded, processor).generate(samples, GREEDY)]
    assert [g[0].token_ids for g in remote.generate(samples, GREEDY)] == want
    small.close()
    sender.close()


@pytest.mark.slow
def test_wrong_token_refused_and_bad_manifest_leaves_the_model(server, tiny_model_dir):
    proc, url, token = server
    with pytest.raises(RuntimeError, match="HTTP 401"):
        GroupSender(RemoteEngine(url, token="wrong")._call, timeout_s=10).join()
    remote = RemoteEngine(url, token=token, run="r")
    sender = GroupSender(remote._call, timeout_s=30)
    sender.join()
    policy = changed_policy(tiny_model_dir, 3)
    entries = state_manifest(policy, dtype=torch.float32)
    bad = [Entry(entries[0].name, (1, 2, 3), entries[0].dtype), *entries[1:]]
    with pytest.raises(RuntimeError, match="HTTP 400.*do not match the served model"):
        sender.send(full_state_items(policy, dtype=torch.float32), bad, run="r", version=7)
    assert remote.health()["version"] is None   # nothing was swapped; the next sync joins afresh
    assert send(sender, policy, torch.float32, version=8)["version"] == 8


@pytest.mark.slow
def test_server_killed_mid_transfer_is_a_clean_error(tiny_model_dir, tmp_path):
    """SIGKILL of the server while buckets stream: the trainer's sync fails at once with a ConnectionError
    naming the version, not a hang."""
    started = start_server(tiny_model_dir, tmp_path)
    proc, url, token = started.proc, started.url, started.token
    try:
        remote = RemoteEngine(url, token=token, run="r", timeout_s=30)
        sender = GroupSender(remote._call, bucket_bytes=64, timeout_s=30)
        sender.join()
        policy = changed_policy(tiny_model_dir, 4)

        def slow_pairs():   # the server dies after the first tensors went out
            for index, pair in enumerate(full_state_items(policy, dtype=torch.float32)):
                if index == 5:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)
                yield pair

        start = time.monotonic()
        with pytest.raises(ConnectionError, match="version 9"):
            sender.send(slow_pairs(), state_manifest(policy, dtype=torch.float32), run="r", version=9)
        assert time.monotonic() - start < 20 and sender.group is None
    finally:
        proc.kill()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_trainer_tells_the_server_its_process_count(tiny_model_dir, tmp_path):
    started = start_server(tiny_model_dir, tmp_path, "--ranks", "3")
    try:
        remote = RemoteEngine(started.url, token=started.token)
        with pytest.raises(RuntimeError, match="HTTP 409.*--ranks 3 but the trainer runs 2 processes"):
            announce_ranks(remote, 2)
        announce_ranks(remote, 3)
    finally:
        started.stop()


def test_process_count_sets_the_batchers_ranks(tmp_path):
    from test_hostile_server import FakeEngine

    from videor1.generation.server import RolloutServer

    server = RolloutServer(FakeEngine(), weights_dir=None, port=0, token="t" * 32).start()
    try:
        assert server.batcher.batching.ranks == 0
        announce_ranks(RemoteEngine(server.address, token="t" * 32), 4)
        assert server.batcher.batching.ranks == 4
        with pytest.raises(RuntimeError, match="HTTP 400.*ranks"):
            RemoteEngine(server.address, token="t" * 32)._call("POST", "/trainer", {"ranks": 0})
    finally:
        server.close()


def test_group_routes_refuse_bad_requests():
    """Refusals are immediate HTTP errors naming the field, before any group or load exists."""
    from test_hostile_server import FakeEngine

    from videor1.generation.server import RolloutServer

    server = RolloutServer(FakeEngine(), weights_dir=None, port=0, token="t" * 32).start()
    try:
        call = RemoteEngine(server.address, token="t" * 32)._call
        entries = [{"name": "weight", "shape": [2, 2], "dtype": "float32"},
                   {"name": "bias", "shape": [2], "dtype": "float32"}]
        with pytest.raises(RuntimeError, match="HTTP 403.*join first"):
            call("POST", "/weight_group/load", {"entries": entries, "buckets": [2], "version": 1})
        with pytest.raises(RuntimeError, match="HTTP 400.*adding up"):
            call("POST", "/weight_group/load", {"entries": entries, "buckets": [1], "version": 1})
        with pytest.raises(RuntimeError, match="HTTP 400.*do not match"):
            call("POST", "/weight_group/load", {"entries": entries[:1], "buckets": [1], "version": 1})
        join = {"port": 1234, "backend": "gloo", "nonce": "n" * 32, "timeout_s": 5}
        for bad, match in (({"port": 0}, "port"), ({"nonce": "short"}, "nonce"), ({"timeout_s": -1}, "timeout_s"),
                           ({"backend": "mpi"}, "backend must be one of")):
            with pytest.raises(RuntimeError, match=f"HTTP 400.*{match}"):
                call("POST", "/weight_group/join", {**join, **bad})
        if not torch.cuda.is_available():
            with pytest.raises(RuntimeError, match="HTTP 400.*nccl needs CUDA"):
                call("POST", "/weight_group/join", {**join, "backend": "nccl"})
        with pytest.raises(RuntimeError, match="HTTP 403.*no weight load"):
            call("POST", "/weight_group/done", {"version": 1})
    finally:
        server.close()


@pytest.mark.slow
def test_trainer_failing_mid_stream_fails_the_servers_load_at_once(server, tiny_model_dir):
    """The trainer's weights break off after a few tensors: its sync raises that error, the server's pending
    load fails within seconds (not at the timeout) and reports version null (its weights are a mix); the
    next sync joins afresh and loads."""
    proc, url, token = server
    remote = RemoteEngine(url, token=token, run="r")
    sender = GroupSender(remote._call, bucket_bytes=64, timeout_s=120)
    policy = changed_policy(tiny_model_dir, 7)
    assert send(sender, policy, torch.float32, version=1)["version"] == 1

    def broken():
        for index, pair in enumerate(full_state_items(policy, dtype=torch.float32)):
            if index == 4:
                raise OSError("disk gone")
            yield pair

    start = time.monotonic()
    with pytest.raises(OSError, match="disk gone"):
        sender.send(broken(), state_manifest(policy, dtype=torch.float32), run="r", version=2)
    while remote.health()["version"] is not None and time.monotonic() - start < 30:
        time.sleep(0.1)
    assert remote.health()["version"] is None and time.monotonic() - start < 30
    assert send(sender, policy, torch.float32, version=3)["version"] == 3
    sender.close()
