"""TRL baseline for the RL step-time benchmark: TRL 1.16 `GRPOTrainer` on our tiny model and image data.

`time_trl_grpo` trains TRL's GRPO on the image records of the synthetic set and returns the median time of
one optimizer step (rollout + rewards + loss forward/backward + optimizer) after `warmup` untimed steps.
`perf/rl_step.py` may import it to print TRL next to our trainer; run alone it prints TRL's time.

Settings matched to our `videor1.rl.trainer` run (same values as `RLConfig` where TRL has the knob):
  * the same tiny Qwen2.5-VL, loaded by `videor1.model.load.load_model` in float32 (bf16 only when asked), and
    the same processor object (`processing_class=processor`); one process; no gradient checkpointing;
  * one generation batch per optimizer step: `per_device_train_batch_size = prompts_per_step *
    num_generations`, `steps_per_generation = 1`, `gradient_accumulation_steps = 1`, `num_iterations = 1`;
  * group size G = `num_generations`, `max_completion_length`, temperature / top_p (top_k 0), `beta`
    (a reference model only when beta > 0), `loss_type="grpo"`, group reward scaling, constant LR, AdamW
    weight decay 0.01, grad-norm clip 5.0 (our defaults);
  * prompts: the conversational form `[{"role": "user", "content": [{"type": "image"}, {"type": "text",
    "text": question_text(record)}]}]` with the image in an "image" column (a PIL image made from
    `load_image(path, ImageSpec(min_pixels=max_pixels, max_pixels=max_pixels))`, the size ours uses);
  * rewards: `videor1.rewards.REGISTRY["accuracy"]` and `["format"]`, which accept TRL's message-list
    completions and its column keywords as they are.
Images only: TRL 1.16 cannot train on video (see the report; the loss forward never sees video tensors).
Timing: a TrainerCallback, perf_counter at on_step_begin / on_step_end (transformers calls training_step,
where TRL generates, and the optimizer step between them); the interval between successive step ends
(which adds data loading and logging) is returned too. Offline: HF_HUB_OFFLINE=1, report_to="none".

    .venv/bin/python perf/trl_baseline.py [--steps 5 --prompts 2 --generations 4 --max-completion 32]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_DISABLED", "true")

import torch  # noqa: E402


def build_rows(records: Sequence[Any], media_root: str | os.PathLike, max_pixels: int) -> list[dict]:
    """TRL dataset rows (conversational prompt + PIL "image" + reward columns) for the image records.
    A record whose image cannot be read is reported on stderr and skipped."""
    from PIL import Image

    from videor1.data.media import ImageSpec, MediaError, load_image
    from videor1.data.prompts import question_text
    from videor1.data.records import RecordError, resolve_media_path

    spec = ImageSpec(min_pixels=max_pixels, max_pixels=max_pixels)
    rows = []
    for r in records:
        if r.data_type != "image":
            raise ValueError(f"record {r.problem_id!r}: data_type {r.data_type!r}; TRL's GRPO takes images only")
        try:
            pixels = load_image(resolve_media_path(media_root, r.path, record_id=r.problem_id), spec)
        except (MediaError, RecordError) as exc:
            print(f"skipped record {r.problem_id!r}: {exc}", file=sys.stderr)
            continue
        prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question_text(r)}]}]
        rows.append({"prompt": prompt, "image": Image.fromarray(pixels),
                     "problem_type": r.problem_type, "solution": r.solution})
    if not rows:
        raise ValueError("no usable image records for the TRL baseline")
    return rows


def reward_functions() -> list:
    """Our registry's accuracy and format rewards, named for TRL's logs (TRL passes extra keywords:
    prompts, completion_ids, trainer_state, image ...; the registry functions ignore unknown columns)."""
    from videor1.rewards import REGISTRY

    def accuracy(completions: list, **columns: Any) -> list[float]:
        return REGISTRY["accuracy"](completions, **columns)

    def format(completions: list, **columns: Any) -> list[float]:  # noqa: A001 (TRL logs rewards/format)
        return REGISTRY["format"](completions, **columns)

    return [accuracy, format]


def _step_timer(begins: list[float], ends: list[float]) -> Any:
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            begins.append(time.perf_counter())

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            ends.append(time.perf_counter())

    return StepTimer()


def _log_mean(history: list[dict], key: str, skip: int) -> float | None:
    values = [h[key] for h in history if key in h][skip:]
    return statistics.fmean(values) if values else None


def time_trl_grpo(model_dir: str | os.PathLike, records: Sequence[Any], media_root: str | os.PathLike, *,
                  num_generations: int = 4, prompts_per_step: int = 2, max_completion_length: int = 32,
                  steps: int = 5, warmup: int = 1, max_pixels: int = 56 * 56, seed: int = 0,
                  learning_rate: float = 1e-5, beta: float = 0.0, temperature: float = 1.0, top_p: float = 1.0,
                  loss_type: str = "grpo", num_threads: int | None = None, bf16: bool = False,
                  output_dir: str | os.PathLike | None = None) -> dict:
    """Train TRL's GRPOTrainer for warmup + steps optimizer steps; the median step time after warmup."""
    import trl
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from videor1.model.load import load_model, load_processor, pick_device

    if steps < 1 or warmup < 0:
        raise ValueError(f"need steps >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    device = pick_device()
    rows = build_rows(records, media_root, max_pixels)
    begins: list[float] = []
    ends: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        args = GRPOConfig(
            output_dir=str(output_dir or tmp), max_steps=warmup + steps, seed=seed, data_seed=seed,
            per_device_train_batch_size=prompts_per_step * num_generations, steps_per_generation=1,
            gradient_accumulation_steps=1, num_iterations=1, num_generations=num_generations,
            max_completion_length=max_completion_length, temperature=temperature, top_p=top_p, top_k=0,
            beta=beta, loss_type=loss_type, scale_rewards="group", learning_rate=learning_rate,
            lr_scheduler_type="constant", weight_decay=0.01, max_grad_norm=5.0, use_cpu=device.type == "cpu",
            bf16=bf16, gradient_checkpointing=False, report_to="none", logging_steps=1, save_strategy="no",
            disable_tqdm=True, dataloader_num_workers=0, log_completions=False)
        trainer = GRPOTrainer(
            model=load_model(model_dir, device=device, dtype=torch.float32), reward_funcs=reward_functions(),
            args=args, train_dataset=Dataset.from_list(rows), processing_class=load_processor(model_dir),
            callbacks=[_step_timer(begins, ends)])
        trainer.train()
        history = list(trainer.state.log_history)
    if len(ends) != warmup + steps:
        raise RuntimeError(f"TRL ran {len(ends)} optimizer steps, expected {warmup + steps}")
    step_times = [e - b for b, e in zip(begins, ends)][warmup:]
    intervals = [b - a for a, b in zip(ends, ends[1:])][max(warmup - 1, 0):]
    return {
        "step_time_s": statistics.median(step_times), "steps": steps, "warmup": warmup,
        "step_times_s": step_times,
        "step_interval_s": statistics.median(intervals) if intervals else None,
        "completion_mean_length": _log_mean(history, "completions/mean_length", warmup),
        "reward_mean": _log_mean(history, "reward", warmup),
        "settings": {"num_generations": num_generations, "prompts_per_step": prompts_per_step,
                     "max_completion_length": max_completion_length, "max_pixels": max_pixels, "beta": beta,
                     "learning_rate": learning_rate, "temperature": temperature, "top_p": top_p,
                     "loss_type": loss_type, "num_threads": torch.get_num_threads(), "bf16": bf16,
                     "n_prompts": len(rows)},
        "device": str(device), "trl_version": trl.__version__,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed first steps")
    p.add_argument("--prompts", type=int, default=2, help="prompts per step")
    p.add_argument("--generations", type=int, default=4, help="group size G")
    p.add_argument("--max-completion", type=int, default=32, help="max new tokens")
    p.add_argument("--beta", type=float, default=0.0, help="KL coefficient (a reference model when > 0)")
    p.add_argument("--lr", type=float, default=1e-5, help="learning rate")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for the tiny model)")
    p.add_argument("--n-train", type=int, default=32, help="synthetic RL records to make (images are a part)")
    a = p.parse_args()
    from videor1.data.records import load_records
    from videor1.data.synth.build import make_dataset
    from videor1.model.tiny import build_tiny

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_dataset(Path(tmp) / "synth", n_train=a.n_train, n_test=2, seed=0)
        model_dir = build_tiny(Path(tmp) / "tiny", seed=0)
        images = [r for r in load_records(paths["rl"], paths["media_root"]) if r.data_type == "image"]
        res = time_trl_grpo(model_dir, images, paths["media_root"], num_generations=a.generations,
                            prompts_per_step=a.prompts, max_completion_length=a.max_completion, steps=a.steps,
                            warmup=a.warmup, beta=a.beta, learning_rate=a.lr, num_threads=a.threads)
    s = res["settings"]
    print(f"TRL {res['trl_version']} GRPOTrainer on {res['device']}: {s['prompts_per_step']} prompts x "
          f"G={s['num_generations']}, <= {s['max_completion_length']} new tokens, beta {s['beta']}, "
          f"{s['num_threads']} thread(s), {s['n_prompts']} image prompts")
    print(f"  step time  {res['step_time_s']:.3f} s (median of {res['steps']} after {res['warmup']} warm-up; "
          f"all: {', '.join(f'{t:.3f}' for t in res['step_times_s'])})")
    if res["step_interval_s"] is not None:
        print(f"  step-end to step-end  {res['step_interval_s']:.3f} s (adds data loading and logging)")
    print(f"  mean completion length {res['completion_mean_length']}, mean reward {res['reward_mean']}")


if __name__ == "__main__":
    main()
