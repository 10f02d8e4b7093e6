"""One-step off-policy rollouts (`async_rollouts: true`, server mode only): the rollout server generates step
t+1 while the trainer optimises step t.

The trainer's loop is unchanged; `attach` swaps in three things when the option is on:

* the prompt stream becomes a `Lookahead`, so step t+1's prompts (the seeded, resumable data order of
  `videor1.rl.step.PromptSource`) are known during step t;
* `run.sync_rollout_weights(t)` becomes `Prefetcher.sync`: wait for step t's rollouts (requested during step
  t-1), wait for every process to have them (one barrier: no process's step-t request may meet the new
  weights), write the current weights to the server as version t (the existing `RemoteEngine.sync_weights`),
  then ask the server, from a background thread, for step t+1's rollouts: the same `generate_rollouts` call,
  seed and T-GRPO frame shuffles (`shuffled_samples`) the synchronous loop makes at step t+1. The server
  generates them from version t (the weights of the start of step t) while the trainer optimises step t;
* `run.engine` becomes the `Prefetcher`, whose `generate` hands `_rollout` the request it made ahead (checked
  to be the very same request: samples, frames, params) instead of calling the server.

Staleness. Version t is the policy at the start of step t (after t-1 updates). Step t trains on rollouts of
version t-1: staleness 1; the first step of a run has nothing prefetched and is generated on the spot from
version t: staleness 0. The server reports the (run, version) each answer was generated with; anything but
the planned staleness (or a staleness above 1, or another run's weights) is an error. Logged per step as
`rollout_staleness`.

The loss then corrects for the stale behaviour policy with truncated importance sampling
(`videor1.rl.algorithms.truncated_is_weights`, on the engine's per-token `Completion.logprobs`).

Exact resume. A checkpoint of step t is written after step t's update, with step t+1's rollouts in flight
(from version t, which no checkpoint holds). `save_inflight` waits for them and writes them, per process, to
`<output_dir>/async_rollouts/step-<t+1>-rank-<r>.json` before the checkpoint is written; a resumed run trains
step t+1 on them (staleness 1, as the uninterrupted run) and goes on identically. Resuming a checkpoint that
has no such file (e.g. written without async_rollouts) generates step t+1 on the spot (staleness 0), with a
warning.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from videor1.atomic import atomic_write_json
from videor1.generation.engines import Completion, SamplingParams
from videor1.generation.remote import RemoteEngine, completion_from_wire, completion_to_wire, params_to_wire
from videor1.model.inputs import Sample
from videor1.rl.step import Prompts, generate_rollouts, shuffled_samples

_log = logging.getLogger(__name__)
MAX_STALENESS = 1
INFLIGHT_DIR = "async_rollouts"


class Lookahead:
    """An iterator that can show its next item without consuming it."""

    def __init__(self, items: Iterator[Any]) -> None:
        self.items, self.ahead = iter(items), deque()

    def __iter__(self) -> "Lookahead":
        return self

    def __next__(self) -> Any:
        return self.ahead.popleft() if self.ahead else next(self.items)

    def peek(self) -> Any | None:
        """The next item (None at the end)."""
        if not self.ahead:
            try:
                self.ahead.append(next(self.items))
            except StopIteration:
                return None
        return self.ahead[0]


@dataclass
class Call:
    """One generate request made ahead, and its answer."""

    ids: list[str | None]   # record ids of the samples, in order
    params: SamplingParams
    groups: list[list[Completion]]
    weights: tuple[str | None, int | None]   # (run, version) the server generated with
    samples: list[Sample] | None = None   # None when read back from a file (checked by ids and params only)


def _rid(sample: Sample) -> str | None:
    rid = getattr(sample.record, "problem_id", None)
    return None if rid is None else str(rid)


def _same_media(a: Any, b: Any) -> bool:
    a, b = getattr(a, "frames", a), getattr(b, "frames", b)
    return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)


class _Recorder:
    """Passes generate calls to the server and keeps each with its answer (the background thread's engine)."""

    def __init__(self, remote: RemoteEngine) -> None:
        self.remote, self.calls = remote, []

    def generate(self, samples: list[Sample], params: SamplingParams) -> list[list[Completion]]:
        groups, weights = self.remote.generate_versioned(samples, params)
        self.calls.append(Call([_rid(s) for s in samples], params, groups, weights, list(samples)))
        return groups


class Prefetcher:
    """The engine and weight sync of an async run (module doc). One per process."""

    def __init__(self, remote: RemoteEngine, sync: Callable[[int], None], prompts: Lookahead,
                 params_for: Callable[[int], SamplingParams], cfg: Any, barrier: Callable[[], None],
                 rank: int) -> None:
        self.remote, self.real_sync, self.prompts, self.params_for = remote, sync, prompts, params_for
        self.cfg, self.barrier, self.rank = cfg, barrier, rank
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="async-rollouts")
        self.pending: tuple[int, Future] | None = None   # (step, future of its calls) made ahead
        self.current: list[Call] | None = None   # this step's calls made ahead (None: generated on the spot)
        self.step = 0
        self.planned = 0   # the staleness planned for `step`
        self.seen: int | None = None   # the staleness the server reported for `step`

    # ---------------------------------------------------------------------------------- the loop's hooks
    def sync(self, step: int) -> None:
        """At the start of step `step` (see the module doc)."""
        self.step, self.seen = step, None
        ahead = self.pending is not None and self.pending[0] == step
        # step's rollouts are in (an error in the background thread shows here)
        self.current, self.pending = (self.pending[1].result() if ahead else None), None
        self.planned = MAX_STALENESS if ahead else 0
        self.barrier()
        self.real_sync(step)
        if step < self.cfg.max_steps:
            nxt = self.prompts.peek()
            if nxt is not None:
                self.pending = (step + 1, self.pool.submit(self._generate, step + 1, nxt[0]))

    def generate(self, samples: list[Sample], params: SamplingParams) -> list[list[Completion]]:
        """Step `step`'s rollouts: the request made ahead (checked to be this one), else the server's now."""
        if self.current is not None:
            if not self.current:
                raise RuntimeError(f"async_rollouts: step {self.step} asked for more generate calls than were "
                                   "made ahead")
            call = self.current.pop(0)
            _check_same(call, samples, params, self.step)
            groups, weights = call.groups, call.weights
        else:
            groups, weights = self.remote.generate_versioned(samples, params)
        self.seen = self._staleness(weights)
        return groups

    def metrics(self) -> dict[str, float]:
        return {"rollout_staleness": float(self.planned if self.seen is None else self.seen)}

    # --------------------------------------------------------------------------------------- the rest
    def _generate(self, step: int, prompts: Prompts) -> list[Call]:
        """In the background thread: step's generate call(s), exactly as `_rollout` will make them."""
        recorder = _Recorder(self.remote)
        if prompts.samples:
            shuffled = shuffled_samples(prompts, seed=self.cfg.seed, step=step, unit=self.cfg.shuffle_unit)[0] \
                if self.cfg.temporal else []
            generate_rollouts(recorder, prompts.samples, shuffled, self.params_for(step), self.cfg.num_generations,
                              self.cfg.shuffled_generations)
        return recorder.calls

    def _staleness(self, weights: tuple[str | None, int | None]) -> int:
        run, version = weights
        if run != self.remote.run or not isinstance(version, int):
            raise RuntimeError(f"async_rollouts: step {self.step}'s rollouts came from weights of run {run!r} "
                               f"version {version!r}, not from this run ({self.remote.run!r})")
        staleness = self.step - version
        if staleness != self.planned or not 0 <= staleness <= MAX_STALENESS:
            raise RuntimeError(f"async_rollouts: step {self.step}'s rollouts were generated from weight version "
                               f"{version} (staleness {staleness}); expected staleness {self.planned}, at most "
                               f"{MAX_STALENESS}")
        return staleness

    def inflight(self, step: int) -> list[Call] | None:
        """The rollouts of step + 1 made ahead (waited for), or None."""
        if self.pending is None or self.pending[0] != step + 1:
            return None
        return self.pending[1].result()

    def restore(self, step: int, calls: list[Call]) -> None:
        done: Future = Future()
        done.set_result(calls)
        self.pending = (step, done)


def _check_same(call: Call, samples: list[Sample], params: SamplingParams, step: int) -> None:
    same = call.params == params and call.ids == [_rid(s) for s in samples]
    if same and call.samples is not None:
        same = len(call.samples) == len(samples) and all(
            a.messages == b.messages and _same_media(a.media, b.media) for a, b in zip(call.samples, samples))
    if not same:
        raise RuntimeError(f"async_rollouts: step {step}'s generate request differs from the one made ahead "
                           f"(records {call.ids[:3]}..., params {call.params}); the data order or the shuffles "
                           "are not what the loop uses")


# ----------------------------------------------------------------------------------------- the trainer
def attach(run: Any, stream: Iterator[Any], params_for: Callable[[int], SamplingParams]) -> Iterator[Any]:
    """The loop's prompt stream; with `async_rollouts` on, `run.engine` and `run.sync_rollout_weights` are
    swapped for a `Prefetcher` (module doc) and, when resuming, the stored in-flight rollouts are loaded."""
    cfg = run.cfg
    if not cfg.async_rollouts:
        return stream
    if not isinstance(run.engine, RemoteEngine):
        raise TypeError(f"async_rollouts needs a RemoteEngine, got {type(run.engine).__name__}")
    check_behaviour_logprobs(run.engine.health().get("behaviour_logprobs"), cfg.temperature)
    ahead = Lookahead(stream)
    rank = run.accelerator.process_index
    prefetcher = Prefetcher(run.engine, run.sync_rollout_weights, ahead, params_for, cfg,
                            run.accelerator.wait_for_everyone, rank)
    if run.resumed and run.step < cfg.max_steps:
        path = inflight_path(run.out, run.step + 1, rank)
        if path.is_file():
            prefetcher.restore(run.step + 1, read_calls(path))
        else:
            _log.warning("async_rollouts: %s is missing (checkpoint written without async_rollouts?): step %d "
                         "is generated from the current weights (staleness 0), not as the run would have",
                         path, run.step + 1)
    run.engine, run.sync_rollout_weights = prefetcher, prefetcher.sync
    return ahead


def check_behaviour_logprobs(kind: str | None, temperature: float) -> None:
    """Refuses a server whose engine's log-probs are not the behaviour policy's at this temperature (every
    process asks the server, so all refuse together): the correction would be biased, not merely noisy."""
    if kind == "any temperature" or (kind == "temperature 1" and temperature == 1.0):
        return
    if kind == "temperature 1":
        raise ValueError(f"async_rollouts at temperature {temperature}: the rollout server's engine (vLLM) reports "
                         f"log-probs before temperature (its raw_logprobs), the behaviour policy's only at "
                         f"temperature 1; train at temperature 1 or serve with --engine hf")
    raise ValueError(f"async_rollouts needs the rollout server's behaviour log-probs, but its /health reports "
                     f"behaviour_logprobs {kind!r} (a server older than async_rollouts?)")


def rollout_metrics(engine: Any) -> dict[str, float]:
    """This step's `rollout_staleness` in an async run; {} otherwise."""
    return engine.metrics() if isinstance(engine, Prefetcher) else {}


def save_inflight(engine: Any, out: Path, step: int) -> None:
    """Before the checkpoint of `step` is written: store step + 1's rollouts made ahead (async runs only)."""
    calls = engine.inflight(step) if isinstance(engine, Prefetcher) else None
    if calls is not None:
        atomic_write_json(inflight_path(out, step + 1, engine.rank), [call_to_json(c) for c in calls])


def prune_inflight(engine: Any, out: Path, kept_steps: Iterable[int]) -> None:
    """After a checkpoint is written (and older ones deleted): drop this process's stored in-flight rollouts
    that no kept checkpoint resumes into (checkpoint-s resumes with step s + 1's file)."""
    if not isinstance(engine, Prefetcher):
        return
    wanted = {inflight_path(out, s + 1, engine.rank) for s in kept_steps}
    for path in (Path(out) / INFLIGHT_DIR).glob(f"step-*-rank-{engine.rank}.json"):
        if path not in wanted:
            path.unlink(missing_ok=True)


def inflight_path(out: Path, step: int, rank: int) -> Path:
    return Path(out) / INFLIGHT_DIR / f"step-{step}-rank-{rank}.json"


def call_to_json(call: Call) -> dict[str, Any]:
    groups = [[completion_to_wire(c) for c in group] for group in call.groups]
    return {"ids": call.ids, "params": params_to_wire(call.params), "groups": groups,
            "weights": list(call.weights)}


def read_calls(path: Path) -> list[Call]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    return [Call(row["ids"], SamplingParams(**row["params"]),
                 [[completion_from_wire(c) for c in group] for group in row["groups"]],
                 (row["weights"][0], row["weights"][1])) for row in rows]
