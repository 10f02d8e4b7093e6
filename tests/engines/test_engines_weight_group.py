"""Weight sync over the group from a 2-process trainer under DeepSpeed ZeRO-3 and FSDP2 (gloo): every process
takes part in the gathers, only the main one sends; afterwards the server (`videor1 serve-rollouts --engine hf
--ranks 2`, its own process) generates greedily exactly what HF does with the trainer's weights."""

from __future__ import annotations

import textwrap

import pytest

from engines_common import launch
from rollout_server import start_server
from test_weight_group import GREEDY, changed_policy, image_samples

SCRIPT = textwrap.dedent('''
    import sys
    from types import SimpleNamespace
    import torch
    from videor1.generation.remote_sync import connect_remote
    from videor1.model.load import load_model
    from videor1.train.common import fill_deepspeed_auto, set_fsdp_wrap_classes
    from videor1.train.engine import make_accelerator

    _, _, model_dir, url, token_file, out_dir = sys.argv
    acc = make_accelerator()
    model = load_model(model_dir, device=acc.device, dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fill_deepspeed_auto(acc, micro_batch=1, accumulation=1, max_grad_norm=1.0, model=model)
    set_fsdp_wrap_classes(acc, model)
    model, opt = acc.prepare(model, opt)
    params = list(acc.unwrap_model(model).parameters())
    sharded = hasattr(params[0], "ds_id") or any(hasattr(p, "full_tensor") for p in params)
    settings = SimpleNamespace(url=url, weights_dir=None, timeout_s=60, token_file=token_file,
                               weight_transport="group", group_backend="gloo", group_host="127.0.0.1",
                               bucket_bytes=1 << 16)
    engine, sync = connect_remote(settings, model, acc, run="engines", dtype=torch.float32)
    for step in (1, 2):
        sync(step)
    state = engine.health()
    with open(f"{out_dir}/sync{acc.process_index}.txt", "w") as handle:
        handle.write(f"version={state['version']} sharded={sharded}")
''')


@pytest.mark.parametrize("config", ["zero3", "fsdp2"])
def test_weight_group_sync_from_sharded_trainer(config, tiny_model_dir, processor, tmp_path):
    from videor1.generation.engines import HFEngine
    from videor1.generation.remote import RemoteEngine

    policy = changed_policy(tiny_model_dir, 5)
    trained = tmp_path / "trained"
    policy.save_pretrained(str(trained))
    processor.save_pretrained(str(trained))
    server = start_server(tiny_model_dir, tmp_path, "--ranks", "2")
    url, token = server.url, server.token
    try:
        samples = image_samples()
        before = [g[0].token_ids for g in RemoteEngine(url, token=token).generate(samples, GREEDY)]
        launch(config, "sync", [str(trained), url, str(server.token_file), str(tmp_path)], tmp_path,
               script_text=SCRIPT)
        for rank in (0, 1):
            assert (tmp_path / f"sync{rank}.txt").read_text() == "version=2 sharded=True"
        want = [g[0].token_ids for g in HFEngine(policy, processor).generate(samples, GREEDY)]
        got = [g[0].token_ids for g in RemoteEngine(url, token=token).generate(samples, GREEDY)]
        assert got == want and got != before
    finally:
        server.stop()


def test_zero3_rl_through_the_server_over_the_group(tiny_model_dir, synth_dir, tmp_path):
    """T-GRPO under ZeRO-3 (2 processes) with rollouts from `serve-rollouts --engine hf --ranks 2`: every
    step's sync over the group (both processes gather, the main one sends); a process without a prompt at
    step 2 sends no rollout request; the server ends at version 3 (the policy of the start of step 3)."""
    from test_engines_rl import _data, _overrides

    from engines_common import metrics_of
    from videor1.generation.remote import RemoteEngine

    data = _data(tmp_path, synth_dir, with_bad=True)
    out = tmp_path / "run"
    server = start_server(tiny_model_dir, tmp_path, "--ranks", "2")
    url, token = server.url, server.token
    try:
        launch("zero3", "rl", _overrides(tiny_model_dir, data, tmp_path, out) + [
            "save_steps=0", "rollout_engine=remote", f"remote.url={url}", f"remote.token_file={server.token_file}",
            "remote.bucket_bytes=65536", "remote.timeout_s=60"], tmp_path)
        metrics = metrics_of(out)
        assert [m["step"] for m in metrics] == [1, 2, 3] and [m["prompts"] for m in metrics] == [4, 2, 4]
        assert all(m["completion_length"] > 0 for m in metrics)
        state = RemoteEngine(url, token=token).health()
        assert state["version"] == 3 and state["run"] == str(out.resolve())
    finally:
        server.stop()
