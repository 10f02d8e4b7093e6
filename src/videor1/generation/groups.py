"""Rollouts through a vLLM engine shared by a tensor-parallel group (colocated, `external_launcher`).

Under vLLM's `external_launcher` executor with `tensor_parallel_size` k > 1, ranks r, r+1, ..., r+k-1 (r a
multiple of k: vLLM lays its TP groups out on consecutive ranks, `vllm/distributed/parallel_state.py`) run ONE
engine together: each holds a shard of it, and every forward is a collective among them, so they must send
the same requests in the same order with the same seeds. `GroupEngine` makes that so: each `generate` first
gathers every rank's (samples, params) over the group (`all_gather_object`), then every rank issues the same
`engine.generate` on the concatenation of the group's samples with one set of sampling params (the first rank
with samples gives the seed), and keeps its own slice of the completions. A rank without samples still takes
part in the gather and the call, so its partners never wait for it; a group where no rank has samples makes no
call at all. Ranks whose params differ in more than the seed (e.g. n for image-only and video prompts in
T-GRPO) get one call per distinct params, in the order the group's ranks list them, identical on every rank.
The reference (TRL) gathers a TP group's prompts for the same reason.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import torch.distributed as dist

from videor1.generation.engines import Completion, RolloutEngine, SamplingParams
from videor1.model.inputs import Sample


def tp_group_ranks(world: int, tp: int) -> list[list[int]]:
    """The ranks of each tensor-parallel group: consecutive blocks of `tp` (vLLM's layout)."""
    if tp < 1 or world % tp:
        raise ValueError(f"tensor_parallel_size {tp} must divide the number of processes {world}")
    return [list(range(start, start + tp)) for start in range(0, world, tp)]


def plan_calls(gathered: Sequence[tuple[list[Sample], SamplingParams]]
               ) -> list[tuple[SamplingParams, list[tuple[int, int, int]]]]:
    """The generate calls of a group, from every member's (samples, params) in group order: one call per
    distinct params up to the seed, each [(member, start, stop)] giving where a member's samples sit in the
    call's concatenated list. Members without samples are left out; the call's params are those of its first
    member (its seed)."""
    calls: list[tuple[SamplingParams, list[tuple[int, int, int]]]] = []
    keys: list[SamplingParams] = []
    for member, (samples, params) in enumerate(gathered):
        if not samples:
            continue
        key = replace(params, seed=None)
        if key not in keys:
            keys.append(key)
            calls.append((params, []))
        slots = calls[keys.index(key)][1]
        start = slots[-1][2] if slots else 0
        slots.append((member, start, start + len(samples)))
    return calls


class GroupEngine:
    """Wraps the engine of a tensor-parallel group (see the module doc); other attributes are the engine's."""

    collective = True  # every rank must call generate, prompts or not

    def __init__(self, engine: RolloutEngine, group: Any, member: int, size: int) -> None:
        self.engine, self.group, self.member, self.size = engine, group, member, size

    def generate(self, samples: list[Sample], params: SamplingParams) -> list[list[Completion]]:
        gathered: list[Any] = [None] * self.size
        dist.all_gather_object(gathered, (list(samples), params), group=self.group)
        mine: list[list[Completion]] = []
        for call_params, slots in plan_calls(gathered):
            batch = [s for member, _, _ in slots for s in gathered[member][0]]
            out = self.engine.generate(batch, call_params)
            mine += [g for member, start, stop in slots if member == self.member for g in out[start:stop]]
        return mine

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


def group_engine(engine: RolloutEngine, world: int, rank: int, tp: int, backend: str | None = None) -> Any:
    """`engine` itself when tp == 1 or one process; else a `GroupEngine` over this rank's TP group (the groups
    are made here: a collective, every rank must call this)."""
    if tp == 1 or world == 1:
        return engine
    groups = [dist.new_group(ranks, backend=backend) for ranks in tp_group_ranks(world, tp)]
    return GroupEngine(engine, groups[rank // tp], rank % tp, tp)
