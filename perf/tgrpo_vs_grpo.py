"""SFT, GRPO, T-GRPO (bonus in the reward) and T-GRPO (bonus in the advantage) over several seeds, with the
demo's pipeline (tiny model, synthetic data, CPU).

For each seed: make the synthetic dataset and a tiny Qwen2.5-VL, SFT cold start, then three RL runs from the
same SFT checkpoint with the same seed, data and budget (``videor1.tools.demo.RL_RUNS``), then evaluate SFT
and the three RL models on the test set with ordered and with shuffled frames. It prints one line per seed,
then per model the mean and standard deviation over seeds of order-dependent and order-independent accuracy
(ordered and shuffled frames) and of the mean ``temporal_advantage_shift`` of its run, and for each RL
variant the paired difference against GRPO and against SFT (same seed, same SFT model) with a paired test:
the t statistic and the exact two-sided sign-flip (permutation) p-value over the 2^n sign patterns (with 5
seeds the smallest possible p is 2/32 = 0.0625). Nothing here tunes toward a winner: the settings are the
demo's (``--quick`` for its quick schedule), only the seed changes.

    python perf/tgrpo_vs_grpo.py --seeds 0 1 2 3 4 [--jobs 2] [--quick] [--rl-parallel N] [--out runs/tgrpo_vs_grpo]

``--jobs 2`` runs two seeds at once (each with one torch thread, as the demo; each seed's three RL runs are
side by side as in the demo, ``--rl-parallel``). Results also go to ``OUT/results.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch

from videor1.tools import demo
from videor1.tools.demo_report import model_row

COLUMNS = ("order-dep.", "order-dep. (shuffled)", "order-indep.", "order-indep. (shuffled)")


def mean_shift(metrics: Path) -> float | None:
    """Mean of `temporal_advantage_shift` over the steps of a run's metrics.jsonl (None if never logged)."""
    if not metrics.is_file():
        return None
    values = [json.loads(line).get("temporal_advantage_shift") for line in metrics.read_text().splitlines()
              if line.strip()]
    values = [v for v in values if isinstance(v, (int, float))]
    return statistics.mean(values) if values else None


def one_seed(out: Path, settings: demo.DemoSettings, seed: int) -> dict:
    """{model: {column: accuracy, "shift": mean shift, "seconds": ...}} for one seed."""
    torch.set_num_threads(settings.torch_threads)
    t0 = time.perf_counter()
    data = demo.make_data(out, settings, seed)
    base = demo.make_model(out, settings, seed)
    sft = demo.run_sft_stage(out, settings, seed, base, data)
    rl_models, _ = demo.run_rl_runs(out, settings, seed, sft, data, echo=lambda _: None)
    models = {"SFT": sft, **rl_models}
    summaries = demo.run_eval_stage(out, settings, seed, models, data, echo=lambda _: None)
    rows = {name: {c: model_row(s)[c] for c in COLUMNS} for name, s in summaries.items()}
    for name, (_, _, folder) in demo.RL_RUNS.items():
        rows[name]["shift"] = mean_shift(out / folder / "metrics.jsonl")
    rows["seconds"] = time.perf_counter() - t0
    return rows


def sign_flip_p(diffs: Sequence[float]) -> float:
    """Exact two-sided p-value of the paired sign-flip (permutation) test of mean(diffs) == 0."""
    observed = abs(sum(diffs))
    flips = list(itertools.product((1, -1), repeat=len(diffs)))
    hits = sum(1 for signs in flips if abs(sum(s * d for s, d in zip(signs, diffs))) >= observed - 1e-12)
    return hits / len(flips)


def paired_t(diffs: Sequence[float]) -> float | None:
    """Paired t statistic mean / (sd / sqrt(n)) (None for n < 2; inf when every difference is equal)."""
    if len(diffs) < 2:
        return None
    sd = statistics.stdev(diffs)
    mean = statistics.mean(diffs)
    return math.copysign(math.inf, mean) if sd == 0 and mean != 0 else (0.0 if sd == 0 else
                                                                        mean / (sd / math.sqrt(len(diffs))))


def mean_sd(values: Sequence[float | None], *, signed: bool = False) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{'+' if signed else ''}.3f} ± {sd:.3f}"


def summary_lines(results: dict[int, dict]) -> list[str]:
    """The Markdown tables: accuracy per model (mean ± sd over seeds) and the paired differences."""
    names = ["SFT", *demo.RL_RUNS]
    lines = [f"Seeds {sorted(results)} (mean ± sd over seeds)", "",
             "| model | " + " | ".join(COLUMNS) + " | temporal_advantage_shift |",
             "| --- " * (len(COLUMNS) + 2) + "|"]
    for name in names:
        cells = [mean_sd([r[name][c] for r in results.values()]) for c in COLUMNS]
        shift = "—" if name == "SFT" else mean_sd([r[name].get("shift") for r in results.values()])
        shift = "— (no bonus)" if shift == "n/a" else shift
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {shift} |")
    lines += ["", "Paired differences on order-dependent accuracy (ordered frames), per seed and overall:", "",
              "| difference | per seed | mean ± sd | t | sign-flip p |", "| --- | --- | --- | --- | --- |"]
    pairs = [(rl, "SFT") for rl in demo.RL_RUNS] + [(rl, "GRPO") for rl in demo.RL_RUNS if rl != "GRPO"]
    for a, b in pairs:
        diffs = [r[a]["order-dep."] - r[b]["order-dep."] for r in results.values()]
        t = paired_t(diffs)
        per_seed = ", ".join(f"{d:+.3f}" for d in diffs)
        lines.append(f"| {a} − {b} | {per_seed} | {mean_sd(diffs, signed=True)} | "
                     f"{'—' if t is None else f'{t:+.2f}'} | {sign_flip_p(diffs):.3f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--quick", action="store_true", help="the demo's quick schedule")
    parser.add_argument("--rl-steps", type=int, default=None, help="override the RL steps of every run")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at once (one process each)")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="override the demo's data-loader workers (0 when --jobs already fills the cores); "
                             "the results do not depend on it")
    parser.add_argument("--rl-parallel", type=int, default=None,
                        help="override the demo's RL runs trained at once (the results do not depend on it)")
    parser.add_argument("--out", type=Path, default=Path("runs/tgrpo_vs_grpo"))
    args = parser.parse_args()

    settings = demo.QUICK if args.quick else demo.DEFAULT
    if args.rl_steps is not None:
        settings = replace(settings, rl_steps=args.rl_steps)
    if args.num_workers is not None:
        settings = replace(settings, num_workers=args.num_workers)
    if args.rl_parallel is not None:
        settings = replace(settings, rl_parallel=args.rl_parallel)
    results: dict[int, dict] = {}
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {seed: pool.submit(one_seed, args.out / f"seed{seed}", settings, seed) for seed in args.seeds}
        for seed, future in futures.items():
            rows = results[seed] = future.result()
            print(f"seed {seed} ({rows['seconds']:.0f} s): order-dependent "
                  + ", ".join(f"{n} {rows[n]['order-dep.']:.3f} (shuffled {rows[n]['order-dep. (shuffled)']:.3f})"
                              for n in ("SFT", *demo.RL_RUNS)), flush=True)
            write_results(args.out, settings, results)   # after every seed: a cut-short run keeps its seeds
    print("\n".join(summary_lines(results)))


def write_results(out: Path, settings: demo.DemoSettings, results: dict[int, dict]) -> None:
    """OUT/results.json (settings, per-seed rows) and OUT/summary.md (the tables of `summary_lines`)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"settings": str(settings), "per_seed": results}, indent=1))
    (out / "summary.md").write_text("\n".join(summary_lines(results)) + "\n")


if __name__ == "__main__":
    main()
