"""The trainer's end of server mode (`rollout_engine: remote`): the client, the process count told to the server,
and the weight sync by the configured transport.

`remote.weight_transport`:

* ``group`` (default): the main process streams the weights in buckets over a process group it shares with the
  server (`videor1.generation.weight_group`); no file, no shared directory, and it works under ZeRO-3 / FSDP2
  (every process takes part in the gathers, only the main one sends). Needs the server to reach
  `remote.group_host` (the trainer's address; loopback when both run on one node).
* ``file``: the main process writes ``<weights_dir>/policy.safetensors`` and the server reads it
  (`RemoteEngine.sync_weights`): for a server that cannot join a group (another network, a firewall). Needs
  `weights_dir` on a RAM disk both see, and whole weights on the main process (one process, DDP, ZeRO-2).

Why group by default: a 7B policy is ~15 GB per step in bf16; the file path writes it to memory-backed storage
and reads it back (two copies in host memory for a while) where the group sends it once from the gathered
tensors, and the group is the only path for sharded policies.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from videor1.generation.remote import RemoteEngine
from videor1.generation.weight_group import GroupSender, state_manifest
from videor1.generation.weights import _is_dtensor, _is_zero3, full_state_items


def announce_ranks(remote: RemoteEngine, ranks: int) -> None:
    """Tell the server how many processes send rollout requests (its batcher waits for that many); an
    explicit, different `serve-rollouts --ranks` is an error naming both."""
    remote._call("POST", "/trainer", {"ranks": int(ranks)})


def sharded(model: torch.nn.Module) -> bool:
    """True when some parameter is a ZeRO-3 placeholder or an FSDP2 DTensor (gathering is collective)."""
    return any(_is_zero3(p) or _is_dtensor(p) for p in model.parameters())


def connect_remote(settings: Any, model: torch.nn.Module, accelerator: Any, *, run: str,
                   dtype: torch.dtype | None) -> tuple[RemoteEngine, Callable[[int], None]]:
    """The rollout client and `sync(step)` for `settings` (an `RLConfig.remote`); `model` is the prepared
    policy. Every process calls `sync(step)`; the main one told the server the process count and (group)
    joined the weight group here, so a server that cannot join fails the run before its first step."""
    remote = RemoteEngine(settings.url, weights_dir=settings.weights_dir, run=run, timeout_s=settings.timeout_s,
                          token_file=settings.token_file, dtype=dtype)
    main, policy = accelerator.is_main_process, accelerator.unwrap_model(model)
    if main:
        announce_ranks(remote, accelerator.num_processes)
    if settings.weight_transport == "file":
        return remote, lambda step: remote.sync_weights(policy, version=step, writer=main)
    sender = None
    if main:
        sender = GroupSender(remote._call, backend=settings.group_backend, host=settings.group_host,
                             bucket_bytes=settings.bucket_bytes, timeout_s=settings.timeout_s)
        sender.join()
    gathers = sharded(policy)

    def sync(step: int) -> None:
        if sender is not None:
            sender.send(full_state_items(model, accelerator, dtype=dtype), state_manifest(model, accelerator, dtype),
                        run=run, version=step)
            return
        if gathers:   # the main process's gathers are collectives: take part in each, in the same order
            for _ in full_state_items(model, accelerator, dtype=dtype):
                pass
        remote.sync_weights(policy, version=step, writer=False)   # until the server reports this version

    return remote, sync
