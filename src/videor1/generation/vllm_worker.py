"""vLLM worker extension for weight sync (`LLM(..., worker_extension_cls=WORKER_EXTENSION)`).

vLLM 0.33 mixes `worker_extension_cls` into its GPU worker class, so `llm.collective_rpc(RPC_METHOD,
args=(pairs,))` runs `videor1_load_weights` on every worker (every tensor-parallel rank). Without the
extension the method does not exist on the worker. This module imports nothing from vLLM: it is loaded
by name inside vLLM's worker processes, and CPU tests import it directly.

Payload: a list of (HF parameter name, tensor) pairs. Through a multi-process engine the RPC arguments are
msgpack-encoded, which only takes CPU tensors (`vllm/v1/serial_utils.py: MsgpackEncoder._encode_tensor`
views the tensor's bytes with numpy); an in-process engine (`external_launcher`, or
`VLLM_ENABLE_V1_MULTIPROCESSING=0`) gets the tensors as they are, CUDA ones included.
"""

from __future__ import annotations

from typing import Any, Iterable

WORKER_EXTENSION = "videor1.generation.vllm_worker.WeightSyncExtension"
RPC_METHOD = "videor1_load_weights"


class WeightSyncExtension:
    """Mixed into vLLM's worker: `self.model_runner` is the worker's GPU model runner."""

    def videor1_load_weights(self, pairs: Iterable[tuple[str, Any]]) -> int:
        """Load (HF name, tensor) pairs into the worker's model (vLLM maps HF names and fuses q/k/v,
        gate/up itself); returns how many pairs were given."""
        model = self.model_runner.model  # type: ignore[attr-defined]
        device = next(model.parameters()).device
        pairs = [(str(name), tensor.to(device, non_blocking=True)) for name, tensor in pairs]
        model.load_weights(pairs)
        return len(pairs)
