"""Checkpoints and the final model directory, shared by the SFT and RL loops.

- `save_checkpoint` writes `checkpoint-<step>.tmp/` (HF model directory in safetensors via
  `save_pretrained`, the processor, and `trainer_state.pt`: optimizer, scheduler, RNG states, data
  position, step, config) and then renames it to `checkpoint-<step>` with `os.replace`, so a kill never
  leaves a half-written checkpoint that `latest_checkpoint` would pick. Only the last N are kept.
- Distributed: pass the `accelerate.Accelerator`. Every rank must call `save_checkpoint` and `save_final`
  (gathering a sharded state dict, e.g. ZeRO-3, is collective); only the main process writes the model;
  each rank writes its own RNG state (`rng_state_<rank>.pt`) so each rank's sampling resumes exactly.
  With DeepSpeed or FSDP the optimizer is sharded: its state is saved with `accelerator.save_state`
  into `accelerator_state/` (every rank writes its shard) instead of in `trainer_state.pt` (the
  "optimizer" entry is dropped; the scheduler, not prepared by accelerate, stays in trainer_state.pt). That
  branch has not run here (no DeepSpeed on the CPU machine); the DDP / single-process branch is tested.
- `trainer_state.pt` is loaded with `torch.load(weights_only=True)`: only tensors and plain Python
  containers are stored (the numpy RNG state is converted to a tensor).
- `resolve_resume` turns the `resume` key (false, true, or a checkpoint path) into the checkpoint to
  continue from, the same way for both trainers.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any, Mapping

import torch
from accelerate import Accelerator
from transformers import PreTrainedModel, ProcessorMixin

from videor1.config import ConfigError
from videor1.train.common import barrier, is_sharded, params_sharded, rng_state

STATE_FILE = "trainer_state.pt"
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")


def save_checkpoint(out_dir: str | Path, step: int, model: torch.nn.Module, processor: ProcessorMixin | None,
                    state: Mapping[str, Any], *, accelerator: Accelerator | None = None,
                    save_total_limit: int | None = None) -> Path:
    """Atomically write `<out_dir>/checkpoint-<step>` and keep the last `save_total_limit` checkpoints.

    `state` holds what the loop needs to resume (optimizer / scheduler state dicts, data position, step,
    config); the RNG states of this process are added under "rng". Call on every rank when `accelerator`
    is given. Returns the checkpoint directory.
    """
    out_dir = Path(out_dir)
    final = out_dir / f"checkpoint-{step}"
    tmp = out_dir / f"checkpoint-{step}.tmp"
    main = accelerator is None or accelerator.is_main_process
    rank = 0 if accelerator is None else accelerator.process_index
    sharded = accelerator is not None and is_sharded(accelerator)
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(accelerator)
    state = dict(state)
    if sharded:
        accelerator.save_state(str(tmp / "accelerator_state"))
        state.pop("optimizer", None)
    # A sharded model (ZeRO-3 / FSDP) is gathered collectively; otherwise the module's own weights are saved.
    full_state_dict = accelerator.get_state_dict(model) if sharded else None
    if rank != 0:
        torch.save(rng_state(), tmp / f"rng_state_{rank}.pt")
    if main:
        unwrapped = accelerator.unwrap_model(model) if accelerator is not None else model
        unwrapped.save_pretrained(tmp, state_dict=full_state_dict)
        if processor is not None:
            processor.save_pretrained(tmp)
        torch.save({**state, "step": int(step), "rng": rng_state()}, tmp / STATE_FILE)
    barrier(accelerator)
    if main:
        _replace_dir(tmp, final)
        if save_total_limit is not None and save_total_limit > 0:
            for old in list_checkpoints(out_dir)[:-save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    barrier(accelerator)
    return final


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoint directories under `out_dir`, oldest step first (`.tmp` ones are ignored)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = []
    for child in out_dir.iterdir():
        m = _CKPT_RE.match(child.name)
        if m and child.is_dir() and (child / STATE_FILE).is_file():
            found.append((int(m.group(1)), child))
    return [p for _, p in sorted(found)]


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    ckpts = list_checkpoints(out_dir)
    return ckpts[-1] if ckpts else None


def load_trainer_state(ckpt: str | Path, *, rank: int = 0) -> dict[str, Any]:
    """`trainer_state.pt` of a checkpoint; for rank > 0 its "rng" is that rank's own saved RNG state."""
    ckpt = Path(ckpt)
    path = ckpt / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{ckpt}: not a checkpoint (no {STATE_FILE})")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if rank:
        rank_file = ckpt / f"rng_state_{rank}.pt"
        if not rank_file.is_file():
            raise FileNotFoundError(f"{ckpt}: no RNG state for rank {rank} ({rank_file.name}); "
                                    "was it saved with a different number of processes?")
        state["rng"] = torch.load(rank_file, map_location="cpu", weights_only=True)
    return state


def resolve_resume(resume: bool | str | Path, out_dir: str | Path) -> Path | None:
    """The checkpoint to continue from, for the `resume` key.

    false: none, and an `out_dir` that already holds checkpoints is refused (a fresh run never mixes with
    an old one); true: the newest checkpoint in `out_dir` (None, with a note, when there is none); a path:
    that checkpoint directory (refused unless it holds a trainer_state.pt).
    """
    if resume is False:
        latest = latest_checkpoint(out_dir)
        if latest is not None:
            raise ConfigError(f"resume: {out_dir} already holds {latest.name}: pass resume=true to continue it, "
                              "or use a new output_dir")
        return None
    if resume is True:
        latest = latest_checkpoint(out_dir)
        if latest is None:
            print(f"resume: no checkpoint in {out_dir}; starting from step 0")
        return latest
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise ConfigError(f"resume: {path} is not a checkpoint directory (no {STATE_FILE})")
    return path


def save_final(model: torch.nn.Module, processor: ProcessorMixin | None, accelerator: Accelerator, final: Path, *,
               lora: bool = False) -> Path:
    """Write the trained model as a plain HF directory (safetensors, LoRA merged into the base weights) and
    the processor, atomically: the main process writes `<final>.tmp` and renames it to `final`.

    Called on every process: with sharded parameters (ZeRO-3 / FSDP) the full state dict is gathered
    collectively with `accelerator.get_state_dict`. LoRA with sharded parameters is refused (the merge needs
    whole weights; the trainers refuse it up front).
    """
    final = Path(final)
    gather = params_sharded(accelerator)
    if gather and lora:
        raise ConfigError("lora: the adapter merge needs whole weights, not ZeRO-3 / FSDP shards")
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(model) if gather else None
    if accelerator.is_main_process:
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        unwrapped: PreTrainedModel = accelerator.unwrap_model(model)
        if lora:
            unwrapped = unwrapped.merge_and_unload()
        unwrapped.config.use_cache = True  # gradient checkpointing turned it off for training
        unwrapped.save_pretrained(str(tmp), state_dict=state_dict, safe_serialization=True)
        if processor is not None:
            processor.save_pretrained(str(tmp))
        _replace_dir(tmp, final)
    accelerator.wait_for_everyone()
    return final


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished directory `tmp` to `final`, replacing an older one."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
