"""RL step time, side by side, in one run on the same tiny model and synthetic data:

1. our GRPO vs TRL 1.16 `GRPOTrainer` on image-only prompts (same group size, prompts per step,
   completion length, sampling, beta, learning rate, loss type, one process);
2. our T-GRPO vs our GRPO on video-only prompts (the goal: T-GRPO <= 1.3 x GRPO).

Step time is measured around whole optimisation steps (rollout + rewards + loss + backward + optimizer),
the first `--warmup` steps excluded, median over the rest. The tiny model is random, so completions almost
always run to `--max-completion` tokens in every run: the work per step is comparable.

    .venv/bin/python benchmarks/rl_step.py [--steps 6 --prompts 4 --generations 4 --max-completion 24]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

PIXELS = 56 * 56


def _make_inputs(work: Path) -> tuple[Path, Path]:
    from videor1.data.synth import make_dataset
    from videor1.model import build_tiny

    paths = make_dataset(work / "synth", n_train=64, n_test=4, seed=0)
    return build_tiny(work / "tiny", seed=0), paths["rl"]


def _subset(rl: Path, data_type: str, out: Path) -> Path:
    rows = [json.loads(x) for x in rl.read_text().splitlines()]
    out.write_text("".join(json.dumps(r) + "\n" for r in rows if r["data_type"] == data_type))
    return out


def ours(model: Path, data: Path, media_root: Path, out: Path, algorithm: str, a: argparse.Namespace) -> list[float]:
    from videor1.config import config_from_dict
    from videor1.rl.trainer import RLConfig, train
    from videor1.training_utils import read_metrics

    cfg = config_from_dict(RLConfig, dict(
        model=str(model), train_data=str(data), media_root=str(media_root), output_dir=str(out),
        algorithm=algorithm, num_generations=a.generations, prompts_per_step=a.prompts,
        max_steps=a.warmup + a.steps, max_completion_length=a.max_completion, beta=a.beta, loss_type="grpo",
        learning_rate=1e-4, lr_scheduler="constant", temperature=1.0, top_p=1.0, save_steps=0,
        tensorboard=False, progress=False, num_threads=a.threads, rewards=["accuracy", "format"],
        video={"min_frames": 4, "max_frames": 4, "min_pixels": PIXELS, "max_pixels": PIXELS},
        image={"min_pixels": PIXELS, "max_pixels": PIXELS}))
    train(cfg)
    return [m["step_time"] for m in read_metrics(out / "metrics.jsonl")][a.warmup:]


def trl_grpo(model_dir: Path, data: Path, media_root: Path, out: Path, a: argparse.Namespace) -> list[float]:
    from datasets import Dataset
    from PIL import Image
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from videor1.data.media import ImageSpec, load_image
    from videor1.data.prompts import question_text
    from videor1.data.records import load_records, resolve_media_path
    from videor1.model import load_model, load_processor
    from videor1.rewards import get_reward

    records = load_records(data, media_root)
    spec = ImageSpec(min_pixels=PIXELS, max_pixels=PIXELS)
    rows = [{"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question_text(r)}]}],
             "image": Image.fromarray(load_image(resolve_media_path(media_root, r.path), spec)),
             "problem_type": r.problem_type, "solution": r.solution} for r in records]

    def accuracy(completions, **kw):
        return get_reward("accuracy")([c[0]["content"] for c in completions], **kw)

    def fmt(completions, **kw):
        return get_reward("format")([c[0]["content"] for c in completions])

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t0)

    torch.set_num_threads(a.threads)
    args = GRPOConfig(
        output_dir=str(out), max_steps=a.warmup + a.steps, per_device_train_batch_size=a.prompts * a.generations,
        num_generations=a.generations, max_completion_length=a.max_completion, temperature=1.0, top_p=1.0,
        beta=a.beta, loss_type="grpo", learning_rate=1e-4, lr_scheduler_type="constant", use_cpu=True,
        bf16=False, report_to=[], logging_steps=1, save_strategy="no", seed=0, dataloader_num_workers=0,
        gradient_accumulation_steps=1, num_iterations=1, disable_tqdm=True)
    trainer = GRPOTrainer(model=load_model(model_dir, dtype=torch.float32), reward_funcs=[accuracy, fmt], args=args,
                          train_dataset=Dataset.from_list(rows), processing_class=load_processor(model_dir),
                          callbacks=[Timer()])
    trainer.train()
    return times[a.warmup:]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=6, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=1, help="untimed first steps")
    p.add_argument("--prompts", type=int, default=4, help="prompts per step")
    p.add_argument("--generations", type=int, default=4, help="G (T-GRPO adds G/2 shuffled per video)")
    p.add_argument("--max-completion", type=int, default=24, help="max new tokens")
    p.add_argument("--beta", type=float, default=0.04, help="KL coefficient (a reference model when > 0)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--skip-trl", action="store_true", help="only our GRPO vs T-GRPO")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model, rl = _make_inputs(work)
        media_root = rl.parent
        images, videos = _subset(rl, "image", work / "images.jsonl"), _subset(rl, "video", work / "videos.jsonl")
        med = {}
        med["ours GRPO (images)"] = statistics.median(ours(model, images, media_root, work / "g_img", "grpo", a))
        if not a.skip_trl:
            med["TRL GRPOTrainer (images)"] = statistics.median(trl_grpo(model, images, media_root, work / "trl", a))
        med["ours GRPO (videos)"] = statistics.median(ours(model, videos, media_root, work / "g_vid", "grpo", a))
        med["ours T-GRPO (videos)"] = statistics.median(ours(model, videos, media_root, work / "t_vid", "tgrpo", a))
    print(f"\nsettings: {a.prompts} prompts x G={a.generations}, <= {a.max_completion} new tokens, beta {a.beta}, "
          f"{a.threads} thread(s), median of {a.steps} steps after {a.warmup} warm-up")
    for name, value in med.items():
        print(f"  {name:28s} {value:7.3f} s/step")
    if "TRL GRPOTrainer (images)" in med:
        print(f"ours GRPO / TRL GRPO (images): {med['ours GRPO (images)'] / med['TRL GRPOTrainer (images)']:.2f}")
    print(f"ours T-GRPO / ours GRPO (videos): {med['ours T-GRPO (videos)'] / med['ours GRPO (videos)']:.2f} "
          f"(goal <= 1.3)")


if __name__ == "__main__":
    main()
