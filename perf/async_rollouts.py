"""One-step off-policy rollouts on this CPU: T-GRPO steps/s with `async_rollouts` off vs on, side by side.

The rollout server (`videor1 serve-rollouts --engine hf --ranks 1`, one torch thread) is pinned to one core
and this process, which trains in-process (one torch thread), to the other (`os.sched_setaffinity`), as the
7 + 1 GPU layout gives the server its own device. The server also runs in its own session: Linux's
autogroup scheduling (/proc/sys/kernel/sched_autogroup_enabled) shares the CPUs fairly between sessions, so
on a machine other jobs load, two busy processes of one session get no more CPU than one; in its own
session the server gets its own share, as a rollout GPU would be its own device. The model is a random tiny Qwen2.5-VL sized (hidden size,
layers, completion length) so that a step's generation and its update take comparable time. Each mode runs
`--steps` steps `--repeats` times, alternating; the first `--warmup` steps of a run are not timed (model
load, first weight sync, and the async run's first, on-the-spot generation).

Printed per mode (medians over repeats): steps/s, completion tokens generated per second (every
completion the server returned in the timed window, shuffled ones included), each side's idle fraction,
1 - CPU time / wall time over the window (the trainer's from `time.process_time`, the server's from
/proc/<pid>/stat), and each side's CPU seconds a step. Then the async / sync ratio, the bound the sync run's
CPU seconds give it ((trainer + server) / max(trainer, server): what overlapping the two sides can reach when
each owns its core), and the load average: on a shared machine other processes' load stretches wall times
and makes both sides look idle, while CPU seconds stay what the work costs.

    python perf/async_rollouts.py [--steps 7] [--warmup 2] [--repeats 2] [--hidden 256] [--layers 4]
        [--max-new-tokens 32] [--g 4] [--g-shuffled 2] [--prompts 2] [--cores 0 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))


def start_server(model: Path, weights: Path, core: int, log: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    sink = open(log, "w")
    proc = subprocess.Popen([sys.executable, "-m", "videor1.cli", "serve-rollouts", "--model", str(model),
                             "--engine", "hf", "--port", "0", "--weights-dir", str(weights), "--ranks", "1",
                             "--batch-size", "256"], stdout=sink, stderr=subprocess.STDOUT, env=env,
                            preexec_fn=lambda: os.sched_setaffinity(0, {core}), start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("serving rollouts on "):
                return proc, line.split()[-1]
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"the server did not start:\n{log.read_text()[-3000:]}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Probe:
    """Snapshots (wall, own CPU, server CPU, tokens received) at every logged step, and counts the tokens of
    every completion the server returns."""

    def __init__(self, server_pid: int) -> None:
        from videor1.generation.remote import RemoteEngine
        from videor1.train.metrics import MetricsLogger

        self.server_pid, self.tokens, self.lock, self.rows = server_pid, 0, threading.Lock(), {}
        real_generate, real_log, probe = RemoteEngine.generate_versioned, MetricsLogger.log, self

        def generate_versioned(engine, samples, params):
            groups, weights = real_generate(engine, samples, params)
            with probe.lock:
                probe.tokens += sum(len(c.token_ids) for g in groups for c in g)
            return groups, weights

        def log(logger, step, metrics):
            real_log(logger, step, metrics)
            probe.rows[step] = (time.perf_counter(), time.process_time(), cpu_seconds(probe.server_pid), probe.tokens)

        RemoteEngine.generate_versioned, MetricsLogger.log = generate_versioned, log


def config(args, model: Path, data: Path, out: Path, url: str, weights: Path, async_rollouts: bool):
    from videor1.config import config_from_dict
    from videor1.rl.config import RLConfig

    return config_from_dict(RLConfig, dict(
        model=str(model), train_data=str(data / "rl.jsonl"), media_root=str(data), output_dir=str(out),
        overwrite=True, algorithm="tgrpo", num_generations=args.g, num_shuffled_generations=args.g_shuffled,
        prompts_per_step=args.prompts, max_completion_length=args.max_new_tokens, beta=0.04,
        learning_rate=1e-5, lr_scheduler="constant", top_p=1.0, rewards=["perf_async_variety", "accuracy"],
        save_steps=0, report_to=(), progress=False, max_steps=args.steps, seed=1, num_threads=1,
        video={"min_frames": 4, "max_frames": 4, "min_pixels": 3136, "max_pixels": 3136},
        image={"min_pixels": 3136, "max_pixels": 3136}, rollout_engine="remote",
        remote={"url": url, "weights_dir": str(weights)}, async_rollouts=async_rollouts))


def window(probe: Probe, first: int, last: int) -> dict[str, float]:
    (w0, c0, s0, t0), (w1, c1, s1, t1) = probe.rows[first], probe.rows[last]
    wall = w1 - w0
    steps = last - first
    return {"steps/s": steps / wall, "tokens/s": (t1 - t0) / wall, "trainer idle": 1 - (c1 - c0) / wall,
            "server idle": 1 - (s1 - s0) / wall, "trainer cpu": (c1 - c0) / steps, "server cpu": (s1 - s0) / steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2, help="steps of each run not timed")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--g", type=int, default=4, help="ordered completions per prompt")
    parser.add_argument("--g-shuffled", type=int, default=2, help="shuffled-frame completions per prompt")
    parser.add_argument("--prompts", type=int, default=2, help="prompts per step")
    parser.add_argument("--cores", type=int, nargs=2, default=None, help="server core, trainer core")
    args = parser.parse_args()
    server_core, trainer_core = args.cores or sorted(os.sched_getaffinity(0))[:2]

    import torch

    from videor1.data.synth.build import make_dataset
    from videor1.model.tiny import build_tiny
    from videor1.rewards import register
    from videor1.rl.trainer import train

    @register("perf_async_variety", overwrite=True)
    def variety(completions, **columns):   # differs between random completions: non-zero advantages
        return [len(set(c)) / (1.0 + len(c)) for c in completions]

    os.sched_setaffinity(0, {trainer_core})
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        model = build_tiny(tmp / "model", hidden_size=args.hidden, num_layers=args.layers,
                           num_heads=max(4, args.hidden // 64), num_kv_heads=2)
        data = tmp / "data"
        make_dataset(data, n_train=max(24, args.steps * args.prompts), n_test=1, seed=0)
        weights = tmp / "shm"
        server, url = start_server(model, weights, server_core, tmp / "server.log")
        try:
            probe = Probe(server.pid)
            results: dict[str, list[dict[str, float]]] = {"sync": [], "async": []}
            for repeat in range(args.repeats):
                for mode in ("sync", "async"):
                    probe.rows = {}
                    train(config(args, model, data, tmp / f"{mode}{repeat}", url, weights, mode == "async"))
                    results[mode].append(window(probe, args.warmup, args.steps))
                    print(f"  {mode} run {repeat + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in
                                                                  results[mode][-1].items()), flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
    med = {mode: {k: statistics.median(r[k] for r in rows) for k in rows[0]} for mode, rows in results.items()}
    print(f"\nT-GRPO through serve-rollouts (HF engine), server on core {server_core}, trainer on core "
          f"{trainer_core}; hidden {args.hidden}, {args.layers} layers, {args.prompts} prompts x ({args.g} + "
          f"{args.g_shuffled} shuffled) completions of up to {args.max_new_tokens} tokens; steps "
          f"{args.warmup + 1}-{args.steps} of each run, median of {args.repeats}")
    print(f"{'':8}{'steps/s':>9}{'tokens/s':>10}{'trainer idle':>14}{'server idle':>13}"
          f"{'trainer CPU s/step':>20}{'server CPU s/step':>19}")
    for mode in ("sync", "async"):
        m = med[mode]
        print(f"{mode:8}{m['steps/s']:9.3f}{m['tokens/s']:10.1f}{m['trainer idle']:14.2f}{m['server idle']:13.2f}"
              f"{m['trainer cpu']:20.2f}{m['server cpu']:19.2f}")
    trainer, server = med["sync"]["trainer cpu"], med["sync"]["server cpu"]
    print(f"async / sync steps/s: {med['async']['steps/s'] / med['sync']['steps/s']:.2f}x measured; "
          f"{(trainer + server) / max(trainer, server):.2f}x is the bound from the sync run's CPU seconds "
          f"(trainer + server) / max(trainer, server), i.e. with each side owning its core")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores "
          "(other processes' load stretches wall times and idle fractions, not CPU seconds)")


if __name__ == "__main__":
    main()
