"""The rollout server's batching: concurrent /generate requests (one per training process) served by one
engine call, each request getting exactly its own completions back.

`Batcher.generate` queues a request; once the engine is free, all waiting requests go to it together as soon
as `Batching.ranks` of them wait or the oldest has waited `Batching.window_s`. The engine runs in one worker
thread that also does the weight loads (so a load never overlaps a generation); requests arriving while it
works form the next batch. With batching off, every request is its own engine call, one
at a time (the server of before).

Requests whose `SamplingParams` differ in more than the seed go to separate engine calls (a training run
sends equal params from every process, with a per-process seed). Seeds survive batching:

* vLLM (`VLLMEngine.generate_many`): one `llm.generate` over all requests' prompts; each prompt keeps the vLLM
  `SamplingParams` (and so the seed) that `VLLMEngine.generate` gives it within its own request (request
  seed + i * n), and vLLM draws every seeded request from its own generator.
* transformers (`HFEngine.generate_many`): one batch; sampled rows draw from their own generators (request
  seed + i * n + j), so a request's completions depend on its batch companions only through the fp rounding
  of a different left padding (tests: equal tokens on the tiny model). They are not `HFEngine.generate`'s
  draws (one seeded RNG per chunk): with batching off the server returns exactly those.
* any other engine: its requests are generated one after another.

Every answer carries what `Batcher.weights` returns when its engine call starts, read in the worker thread
(the server's run and weight version: the weights the completions were generated with, since weight loads
run in the same thread).

If a batched engine call fails, each of its requests is retried alone, so the error reaches only the
request that caused it.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

from videor1.generation.engines import Completion, SamplingParams
from videor1.model.inputs import Sample

Call = tuple[list[Sample], SamplingParams]
Groups = list[list[Completion]]


@dataclass(frozen=True)
class Batching:
    """How the rollout server gathers requests (`serve-rollouts --batch-window / --ranks / --no-batching`).

    window_s: the longest wait, after the first request of a batch arrives, for more requests.
    ranks: send the batch as soon as this many requests wait (the trainer's process count); 0: unknown.
    enabled: False serves each request by itself, one at a time.
    """

    window_s: float = 0.05
    ranks: int = 0
    enabled: bool = True

    def __post_init__(self) -> None:
        if not self.window_s >= 0 or self.ranks < 0:
            raise ValueError(f"batching needs window_s >= 0 and ranks >= 0, got {self.window_s!r}, {self.ranks!r}")


def generate_many(engine: Any, calls: Sequence[Call]) -> list[Groups]:
    """Each call's completions, from one engine call where the engine allows it (see the module doc)."""
    if hasattr(engine, "generate_many"):
        return engine.generate_many(list(calls))
    return [engine.generate(samples, params) for samples, params in calls]


def run_batch(engine: Any, calls: Sequence[Call]) -> list[Groups | Exception]:
    """Each call's completions or its error: calls with equal params but for the seed share an engine call."""
    keys: dict[SamplingParams, list[int]] = {}
    for index, (_, params) in enumerate(calls):
        keys.setdefault(replace(params, seed=None), []).append(index)
    results: list[Groups | Exception] = [ValueError("not generated")] * len(calls)
    for indices in keys.values():
        try:
            for i, groups in zip(indices, generate_many(engine, [calls[i] for i in indices])):
                results[i] = groups
        except Exception as exc:
            if len(indices) == 1:
                results[indices[0]] = exc
                continue
            for i in indices:   # alone, so the error reaches only its own request
                results[i] = run_batch(engine, [calls[i]])[0]
    return results


@dataclass
class _Job:
    call: Call
    future: asyncio.Future
    arrived: float   # the event loop's clock


@dataclass
class Batcher:
    """Gathers `generate` requests into engine calls run by `executor` (one worker thread); see the module doc.
    `engine_calls` / `requests` count what it did (reported by the server's /health). `generate` returns the
    completions and `weights()` as read when their engine call started."""

    engine: Any
    executor: Executor
    batching: Batching = Batching()
    weights: Callable[[], Any] = lambda: None
    engine_calls: int = 0
    requests: int = 0
    _pending: list[_Job] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)   # bound to the loop at its first wait
    _task: asyncio.Task | None = None

    def _with_weights(self, fn: Callable[..., Any], *args: Any) -> tuple[Any, Any]:
        weights = self.weights()   # in the worker thread, before the engine call
        return fn(*args), weights

    async def generate(self, samples: list[Sample], params: SamplingParams) -> tuple[Groups, Any]:
        loop = asyncio.get_running_loop()
        self.requests += 1
        if not self.batching.enabled:
            self.engine_calls += 1
            return await loop.run_in_executor(self.executor, self._with_weights, self.engine.generate, samples, params)
        job = _Job((samples, params), loop.create_future(), loop.time())
        self._pending.append(job)
        self._arrived.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await job.future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            await self._gather(loop)
            jobs, self._pending = self._pending, []
            self.engine_calls += len({replace(j.call[1], seed=None) for j in jobs})
            weights = None
            try:
                results, weights = await loop.run_in_executor(self.executor, self._with_weights, run_batch,
                                                              self.engine, [j.call for j in jobs])
            except Exception as exc:  # run_batch catches engine errors; this is the executor itself failing
                results = [exc] * len(jobs)
            for job, result in zip(jobs, results):
                if job.future.done():   # the request went away
                    continue
                if isinstance(result, Exception):
                    job.future.set_exception(result)
                else:
                    job.future.set_result((result, weights))

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait until `ranks` requests are pending or `window_s` has passed since the oldest one arrived."""
        deadline = self._pending[0].arrived + self.batching.window_s
        while not 0 < self.batching.ranks <= len(self._pending):
            left = deadline - loop.time()
            if left <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except asyncio.TimeoutError:  # not yet the builtin TimeoutError on Python 3.10
                return
