"""The rollout engine of an RL run and its weight sync, from the config's `rollout_engine`: transformers
`generate` on the policy itself (hf), colocated vLLM (vllm), or a rollout server (remote)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from accelerate import Accelerator
from transformers import ProcessorMixin

from videor1.config import ConfigError
from videor1.generation.engines import HFEngine, RolloutEngine, VLLMEngine
from videor1.generation.groups import group_engine
from videor1.generation.remote_sync import connect_remote
from videor1.generation.vllm_engine import check_sleep_level
from videor1.rl.config import RLConfig
from videor1.train.common import mixed_precision


def build_rollout_engine(cfg: RLConfig, model: torch.nn.Module, processor: ProcessorMixin, accelerator: Accelerator
                  ) -> tuple[RolloutEngine, Callable[[int], None]]:
    """The rollout engine and `sync(step)`, which gives an engine with its own weights the policy's.

    `model` is the prepared policy (DeepSpeed engine / FSDP2 module); the engines get the unwrapped one."""
    policy = accelerator.unwrap_model(model)
    if cfg.rollout_engine == "hf":   # sampling in the training forward's numerics (bf16 autocast where it trains so)
        return HFEngine(policy, processor, batch_size=cfg.rollout_batch_size or 1 << 30,
                        autocast=accelerator.autocast), lambda step: None
    rollout_dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32
    if cfg.rollout_engine == "remote":
        return connect_remote(cfg.remote, model, accelerator, run=str(Path(cfg.output_dir).resolve()),
                              dtype=rollout_dtype)
    rank, world, v = accelerator.process_index, accelerator.num_processes, cfg.vllm
    try:
        check_sleep_level(v.sleep_level)   # before vLLM starts: sleep mode needs CUDA
    except ValueError as err:
        raise ConfigError(str(err)) from None
    engine = VLLMEngine(processor, model_path=cfg.model, video_metadata=v.video_metadata, rpc_method=v.rpc_method,
                        llm_kwargs=vllm_llm_kwargs(cfg, rank, world), sleep_level=v.sleep_level,
                        default_max_model_len=cfg.max_prompt_length + cfg.max_completion_length)
    grouped = group_engine(engine, world, rank, v.tensor_parallel_size)   # TP groups send identical requests
    return grouped, lambda step: engine.sync_weights(model, accelerator)


def vllm_llm_kwargs(cfg: RLConfig, rank: int, world: int) -> dict:
    """`vllm.LLM` arguments of the colocated engine. One process: vLLM's own executor. Several (accelerate
    launch): vLLM's `external_launcher` executor, as TRL does, so each rank's in-process engine runs on that
    rank's GPU inside the launcher's torch.distributed world (else every rank builds its own engine on
    cuda:0); ranks of one tensor-parallel group share a seed and send identical requests
    (`videor1.generation.groups.GroupEngine` gathers their prompts). `max_model_len` is `vllm.max_model_len` when
    set; otherwise the engine uses the longest sequence training makes (max_prompt_length +
    max_completion_length, `build_rollout_engine`) cut to the model's max_position_embeddings, so vLLM does not
    profile the model's 128k-token maximum. dtype: bfloat16 when training runs in bf16 autocast (the numerics
    of the trained forward), else float32 like the policy (never vLLM's "auto", which serves a float32
    checkpoint in bfloat16)."""
    v = cfg.vllm
    kwargs: dict = {"gpu_memory_utilization": v.gpu_memory_utilization, "tensor_parallel_size": v.tensor_parallel_size,
                    "dtype": "bfloat16" if mixed_precision(cfg.bf16) == "bf16" else "float32"}
    if v.max_model_len:
        kwargs["max_model_len"] = v.max_model_len
    if world > 1:
        if world % v.tensor_parallel_size:
            raise ConfigError(f"vllm.tensor_parallel_size {v.tensor_parallel_size} must divide the number of "
                              f"processes {world}")
        kwargs.update(distributed_executor_backend="external_launcher", seed=rank // v.tensor_parallel_size)
    return kwargs
