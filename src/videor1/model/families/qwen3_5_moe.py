"""Qwen3.5 MoE (`model_type` "qwen3_5_moe"): Qwen3.5 (`videor1.model.families.qwen3_5`) whose MLPs are
sparse mixtures of experts with a shared expert. The experts' weights are 3-D `nn.Parameter`s
(`gate_up_proj`, `down_proj` of `Qwen3_5MoeExperts`), not `nn.Linear` modules."""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from transformers import Qwen3_5MoeConfig, Qwen3_5MoeForConditionalGeneration

from videor1.model.families.qwen3_5 import (CHAT_TEMPLATE, FRAME_FACTOR, HYBRID_LINEAR_ATTENTION,  # noqa: F401
                                            LORA_TARGETS, MROPE, PROCESSOR_CLASS, ROUNDS_FRAME_SIZES,
                                            SUPPRESSED_TOKENS, TOKENIZER_REGEX, VISION_MODULE, VLLM_CPU_DTYPE,
                                            VLLM_ENGINE_KWARGS, prompt_text, tiny_hybrid_config, tiny_processor,
                                            video_metadata)

NAME = "qwen3_5_moe"
MODEL_TYPES: tuple[str, ...] = ("qwen3_5_moe",)
MODEL_CLASS = Qwen3_5MoeForConditionalGeneration
DECODER_LAYER_CLASS = "Qwen3_5MoeDecoderLayer"
VISION_BLOCK_CLASS = "Qwen3_5MoeVisionBlock"
FSDP_WRAP_CLASSES: tuple[str, ...] = (DECODER_LAYER_CLASS, VISION_BLOCK_CLASS)
# the routed experts' 3-D weights [experts, out, in]: peft adapts them only as parameters (target_parameters);
# LORA_TARGETS' gate/up/down_proj reach the shared expert's nn.Linear layers
LORA_EXPERT_PARAMETERS: tuple[str, ...] = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")
_GATE_UP, _DOWN = "mlp.experts.gate_up_proj", "mlp.experts.down_proj"


def vllm_weights(pairs: Iterable[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
    """The policy's (name, tensor) pairs in the checkpoint layout vLLM loads: each routed-expert block's fused
    `gate_up_proj` [E, 2I, H] and `down_proj` [E, H, I] as E experts' `gate_proj` / `up_proj` [I, H] and
    `down_proj` [H, I] (`experts.<e>.*.weight`; transformers' qwen2_moe conversion, reversed; gate first, as the
    forward chunks it). vLLM 0.32's Qwen3.5-MoE loader takes only those names: a sync of the fused tensors left
    its experts unloaded (greedy answers off by 5.5 nats in log-prob after a head-only sync)."""
    for name, tensor in pairs:
        if name.endswith(_GATE_UP):
            gate, up = tensor.chunk(2, dim=1)
            base = name[: -len("gate_up_proj")]
            for e in range(tensor.shape[0]):
                yield f"{base}{e}.gate_proj.weight", gate[e]
                yield f"{base}{e}.up_proj.weight", up[e]
        elif name.endswith(_DOWN):
            base = name[: -len("down_proj")]
            for e in range(tensor.shape[0]):
                yield f"{base}{e}.down_proj.weight", tensor[e]
        else:
            yield name, tensor


def tiny_config(tokenizer: Any, **sizes: Any) -> Qwen3_5MoeConfig:
    """A small `Qwen3_5MoeConfig`: the tiny Qwen3.5 decoder with 4 experts (2 per token) and a shared expert."""
    width = int(sizes.get("hidden_size", 128))
    experts = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=width,
                   shared_expert_intermediate_size=width)
    return tiny_hybrid_config(Qwen3_5MoeConfig, tokenizer, experts=experts, **sizes)
