"""RL step time, side by side, in one run on the same tiny model and synthetic data:

1. our GRPO vs TRL 1.16 `GRPOTrainer` on image-only prompts (same group size, prompts per step,
   completion length, sampling, beta, learning rate, loss type, one process);
2. our T-GRPO vs our GRPO on video-only prompts (the goal: T-GRPO <= 1.3 x GRPO).

Step time is measured around whole optimisation steps (rollout + rewards + loss + backward + optimizer),
the first `--warmup` steps excluded, median over the rest. The tiny model is random, so completions almost
always run to `--max-completion` tokens in every run: the work per step is comparable.

    .venv/bin/python perf/rl_step.py [--steps 6 --prompts 4 --generations 4 --max-completion 24]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path


PIXELS = 56 * 56


def _make_inputs(work: Path) -> tuple[Path, Path]:
    from videor1.data.synth.build import make_dataset
    from videor1.model.tiny import build_tiny

    paths = make_dataset(work / "synth", n_train=64, n_test=4, seed=0)
    return build_tiny(work / "tiny", seed=0), paths["rl"]


def _subset(rl: Path, data_type: str, out: Path) -> Path:
    rows = [json.loads(x) for x in rl.read_text().splitlines()]
    out.write_text("".join(json.dumps(r) + "\n" for r in rows if r["data_type"] == data_type))
    return out


def ours(model: Path, data: Path, media_root: Path, out: Path, algorithm: str, a: argparse.Namespace) -> list[float]:
    from videor1.config import config_from_dict
    from videor1.rl.trainer import RLConfig, train
    from videor1.train.metrics import read_metrics

    cfg = config_from_dict(RLConfig, dict(
        model=str(model), train_data=str(data), media_root=str(media_root), output_dir=str(out),
        algorithm=algorithm, num_generations=a.generations, prompts_per_step=a.prompts,
        max_steps=a.warmup + a.steps, max_completion_length=a.max_completion, beta=a.beta, loss_type="grpo",
        learning_rate=1e-4, lr_scheduler="constant", temperature=1.0, top_p=1.0, save_steps=0,
        report_to=(), progress=False, num_threads=a.threads, rewards=["accuracy", "format"],
        video={"min_frames": 4, "max_frames": 4, "min_pixels": PIXELS, "max_pixels": PIXELS},
        image={"min_pixels": PIXELS, "max_pixels": PIXELS}))
    train(cfg)
    return [m["step_time"] for m in read_metrics(out / "metrics.jsonl")][a.warmup:]


def trl_grpo(model_dir: Path, data: Path, media_root: Path, out: Path, a: argparse.Namespace) -> list[float]:
    """TRL 1.16 GRPOTrainer on the same images and settings (see perf/trl_baseline.py)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from trl_baseline import time_trl_grpo

    from videor1.data.records import load_records

    result = time_trl_grpo(
        model_dir, load_records(data, media_root), media_root, num_generations=a.generations,
        prompts_per_step=a.prompts, max_completion_length=a.max_completion, steps=a.steps, warmup=a.warmup,
        max_pixels=PIXELS, seed=0, learning_rate=1e-4, beta=a.beta, num_threads=a.threads, output_dir=out)
    return result["step_times_s"]


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
