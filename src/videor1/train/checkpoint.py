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
  "optimizer" entry is dropped; the scheduler, not prepared by accelerate, stays in trainer_state.pt). Both
  branches run in the tests (tests/engines: ZeRO-2/3 and FSDP2 on gloo, resumed bit-identically).
- `trainer_state.pt` is loaded with `torch.load(weights_only=True)`: only tensors and plain Python
  containers are stored (the numpy RNG state is converted to a tensor).
- `resolve_resume` turns the `resume` key (false, true, or a checkpoint path) into the checkpoint to
  continue from, the same way for both trainers.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from accelerate import Accelerator
from transformers import PreTrainedModel, ProcessorMixin

from videor1.atomic import replace_dir
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


def checkpoint_step(path: str | Path) -> int:
    """The step of a `checkpoint-<step>` directory."""
    m = _CKPT_RE.match(Path(path).name)
    if m is None:
        raise ValueError(f"{path} is not a checkpoint-<step> directory")
    return int(m.group(1))


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


def check_checkpoint(ckpt: Path) -> str | None:
    """Why checkpoint `ckpt` cannot be resumed from, naming the damaged file (None when it is intact).

    Checked: trainer_state.pt loads (weights_only), config.json and every other JSON file parse, every
    safetensors file's header parses and its size matches the header, the shards an index names exist."""
    state = ckpt / STATE_FILE
    if not state.is_file():
        return f"{state}: missing"
    if not (ckpt / "config.json").is_file() and not (ckpt / "adapter_config.json").is_file():  # LoRA: adapter
        return f"{ckpt / 'config.json'}: missing"
    for path in sorted(ckpt.glob("*.json")):
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            return f"{path}: not valid JSON ({one_line_reason(exc)})"
    for path in sorted(ckpt.glob("*.safetensors")):
        problem = _safetensors_problem(path)
        if problem:
            return f"{path}: {problem}"
    index = ckpt / "model.safetensors.index.json"
    if index.is_file():
        shards = set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values())
        missing = sorted(name for name in shards if not (ckpt / name).is_file())
        if missing:
            return f"{ckpt / missing[0]}: missing (named by {index.name})"
    try:
        torch.load(state, map_location="cpu", weights_only=True)
    except Exception as exc:  # any damage: truncation, garbage, a pickle that is not weights-only
        return f"{state}: cannot be loaded ({one_line_reason(exc)})"
    return None


def one_line_reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(part.strip() for part in text.splitlines() if part.strip())[:200]


def _safetensors_problem(path: Path) -> str | None:
    """Why `path` is not a whole safetensors file (header parse + size check), or None."""
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                return f"truncated ({size} bytes)"
            header_len = struct.unpack("<Q", head)[0]
            if header_len > size - 8:
                return f"truncated or corrupt (header of {header_len} bytes in a {size}-byte file)"
            header = json.loads(handle.read(header_len))
    except (OSError, ValueError) as exc:
        return f"corrupt header ({one_line_reason(exc)})"
    if not isinstance(header, dict):
        return "corrupt header (not a mapping)"
    ends = [v["data_offsets"][1] for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v]
    if 8 + header_len + max(ends, default=0) != size:
        return f"truncated or corrupt ({size} bytes, the header describes {8 + header_len + max(ends, default=0)})"
    return None


def _candidates(out_dir: Path) -> list[Path]:
    """Every `checkpoint-<step>` directory (complete or not), newest first; `.tmp` ones are ignored."""
    found = [(int(m.group(1)), child) for child in (out_dir.iterdir() if out_dir.is_dir() else [])
             if (m := _CKPT_RE.match(child.name)) and child.is_dir()]
    return [p for _, p in sorted(found, reverse=True)]


def newest_intact_checkpoint(out_dir: str | Path, *, log: Callable[[str], None] = print) -> Path | None:
    """The newest checkpoint of `out_dir` that `check_checkpoint` finds intact; each damaged newer one is
    named in a log line saying which one is used instead."""
    damaged: list[str] = []
    for ckpt in _candidates(Path(out_dir)):
        problem = check_checkpoint(ckpt)
        if problem is None:
            for line in damaged:
                log(f"resume: {line}; using {ckpt.name} instead")
            return ckpt
        damaged.append(f"{ckpt.name} is damaged: {problem}")
    if damaged:
        raise ConfigError(f"resume: no intact checkpoint in {out_dir}: " + "; ".join(damaged))
    return None


def _previous_run(out_dir: Path) -> str | None:
    """What of an earlier run `out_dir` holds (final/, metrics.jsonl or checkpoints), or None."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"output_dir: {out_dir} exists and is not a directory")
    held = [name for name in ("final", "metrics.jsonl") if (out_dir / name).exists()]
    held += [p.name for p in _candidates(out_dir)[:1]]
    return ", ".join(held) or None


def resolve_resume(resume: bool | str | Path, out_dir: str | Path, *, overwrite: bool = False,
                   log: Callable[[str], None] = print) -> Path | None:
    """The checkpoint to continue from, for the `resume` key.

    false: none; an `out_dir` that holds an earlier run (checkpoints, final/, metrics.jsonl) is refused
    unless `overwrite` (then its checkpoints are removed, so the runs never mix). true: the newest intact
    checkpoint in `out_dir` (damaged newer ones are named in a log line); with none, a fresh start, refused
    when `out_dir` holds a finished run and not `overwrite`. A path: that checkpoint (refused, naming the
    file, unless intact).
    """
    out_dir = Path(out_dir)
    previous = _previous_run(out_dir)
    if resume is False or resume is True:
        latest = newest_intact_checkpoint(out_dir, log=log) if resume is True else None
        if latest is not None:
            return latest
        if previous and not overwrite:
            how = "pass resume=true to continue it, " if resume is False and _candidates(out_dir) else ""
            raise ConfigError(f"output_dir: {out_dir} already holds an earlier run ({previous}): {how}pass "
                              "overwrite=true to replace it, or use a new output_dir")
        if previous:
            log(f"overwrite: replacing the earlier run in {out_dir} ({previous})")
            for old in _candidates(out_dir):
                shutil.rmtree(old, ignore_errors=True)  # every process may get here
        elif resume is True:
            log(f"resume: no checkpoint in {out_dir}; starting from step 0")
        return None
    path = Path(resume)
    problem = check_checkpoint(path) if path.is_dir() else f"{path}: not a directory"
    if problem is not None:
        raise ConfigError(f"resume: {path} is not a checkpoint directory to resume from: {problem}")
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
    """Move the finished directory `tmp` to `final`, replacing an older one (never leaving no `final`)."""
    replace_dir(tmp, final)
