"""T-GRPO against GRPO over several seeds, with the demo's pipeline (tiny model, synthetic data, CPU).

For each seed: make the synthetic dataset and a tiny Qwen2.5-VL, SFT cold start, then two RL runs from the
same SFT checkpoint with the same seed, data and budget (GRPO and T-GRPO), then evaluate both on the test
set with ordered and with shuffled frames. It prints one line per seed and the mean and standard
deviation over seeds of the T-GRPO minus GRPO difference in accuracy on order-dependent questions
(ordered frames), and of the ordered-minus-shuffled gap of each. Nothing here tunes toward a winner: the
settings are the demo's (``--quick`` for its quick schedule), only the seed changes.

    python perf/tgrpo_vs_grpo.py --seeds 0 1 2 [--quick] [--out runs/tgrpo_vs_grpo] [--rl-steps N]

Each seed takes about as long as one demo run minus the base-model evaluation. Results also go to
``OUT/results.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path


def one_seed(out: Path, settings, seed: int) -> dict:
    from videor1.tools import demo
    from videor1.tools.demo_report import model_row

    data = demo.make_data(out, settings, seed)
    base = demo.make_model(out, settings, seed)
    sft = demo.run_sft_stage(out, settings, seed, base, data)
    models = {"GRPO": demo.run_rl_stage(out, settings, seed, sft, data, "grpo"),
              "T-GRPO": demo.run_rl_stage(out, settings, seed, sft, data, "tgrpo")}
    summaries = demo.run_eval_stage(out, settings, seed, {"SFT": sft, **models}, data, echo=lambda _: None)
    return {name: model_row(s) for name, s in summaries.items()}


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "n/a"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):+.3f} ± {sd:.3f} (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="the demo's quick schedule")
    parser.add_argument("--rl-steps", type=int, default=None, help="override the RL steps of both runs")
    parser.add_argument("--out", type=Path, default=Path("runs/tgrpo_vs_grpo"))
    args = parser.parse_args()

    import torch

    from videor1.tools.demo import DEFAULT, QUICK

    settings = QUICK if args.quick else DEFAULT
    if args.rl_steps is not None:
        settings = replace(settings, rl_steps=args.rl_steps)
    torch.set_num_threads(settings.torch_threads)
    results = {}
    for seed in args.seeds:
        t0 = time.perf_counter()
        rows = one_seed(args.out / f"seed{seed}", settings, seed)
        results[seed] = rows
        g, t = rows["GRPO"], rows["T-GRPO"]
        print(f"seed {seed} ({time.perf_counter() - t0:.0f} s): order-dependent accuracy SFT "
              f"{rows['SFT']['order-dep.']:.3f}, GRPO {g['order-dep.']:.3f} (shuffled "
              f"{g['order-dep. (shuffled)']:.3f}), T-GRPO {t['order-dep.']:.3f} (shuffled "
              f"{t['order-dep. (shuffled)']:.3f}); order-independent SFT {rows['SFT']['order-indep.']:.3f}, "
              f"GRPO {g['order-indep.']:.3f}, T-GRPO {t['order-indep.']:.3f}", flush=True)
    diffs = [r["T-GRPO"]["order-dep."] - r["GRPO"]["order-dep."] for r in results.values()]
    gaps = {name: [r[name]["order-dep."] - r[name]["order-dep. (shuffled)"] for r in results.values()]
            for name in ("GRPO", "T-GRPO")}
    print(f"T-GRPO - GRPO, order-dependent accuracy: {_mean_sd(diffs)}")
    for name, values in gaps.items():
        print(f"{name} ordered - shuffled gap on order-dependent questions: {_mean_sd(values)}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"settings": str(settings), "per_seed": results,
                                                       "tgrpo_minus_grpo": diffs, "gaps": gaps}, indent=1))


if __name__ == "__main__":
    main()
