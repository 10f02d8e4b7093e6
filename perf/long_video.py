"""One RL group's loss work at 64 / 128 / 256 frames, sequence parallelism 1 vs 2 (DeepSpeed Ulysses,
`videor1.parallel.sequence`), side by side on this CPU: tokens per second of a policy forward + backward over
the shared-prefix group (one video prompt + G completions of C tokens) and each rank's peak memory during it.

Scaled model: a tiny Qwen2.5-VL (`videor1.model.tiny.build_tiny`, --hidden / --layers, 4 heads of hidden/4
dims, 2 KV heads, vision tower 128 wide, 2 blocks), random weights, fp32, sdpa, gradient checkpointing off.
Frames of --side x --side pixels (112: 16 merged vision tokens per temporal patch of 2 frames, so 256 frames
are 2,048 vision tokens). Each variant runs in its own processes (1 for SP 1, 2 on gloo for SP 2), one warm-up
pass, then the median of --repeats timed passes. Peak memory: the largest resident set size a sampling thread
(every 2 ms) saw during the timed passes, minus the resident size before them (per rank; the largest rank's).
glibc keeps large tensors in their own mappings (MALLOC_MMAP_THRESHOLD_ fixed at 64 KiB), so the resident size
falls when they are freed. Threads: --threads torch threads per process (default 1: with 2 shared cores, 2
OpenMP threads in one process ran ~8x slower here than 1), so SP 2 uses twice the cores of SP 1: its tokens/s
ratio is a parallel speed-up on 2 cores, not a per-core gain.

Under SP the language model's activations are split by sequence and the vision tower's work by temporal patches
(`videor1.model.vision_shard`); the full-sequence embedding runs on every rank. At the end, the projection for
Qwen2.5-VL-7B on 8 x 80 GB (perf/long_video_memory.py; --no-projection skips it).

    .venv/bin/python perf/long_video.py [--frames 64,128,256 --side 112 --hidden 256 --layers 4 --G 4 --C 32]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PeakRSS:
    """The largest resident set size of this process seen every `period` seconds while active."""

    def __init__(self, period: float = 0.002) -> None:
        import psutil

        self._proc, self._period, self.peak, self._stop = psutil.Process(), period, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self._period)

    def __enter__(self) -> "PeakRSS":
        self.base = self._proc.memory_info().rss
        self.peak = self.base
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _group_inputs(model_dir: str, frames: int, side: int, g: int, c: int):
    """The packed shared-prefix inputs of one group: one synthetic video prompt of `frames` frames and g
    completions of c random tokens."""
    import numpy as np

    from videor1.data.media import Clip
    from videor1.model.inputs import Sample, encode, pad_token_id
    from videor1.model.load import load_processor
    from videor1.rl.step import loss_inputs

    processor = load_processor(model_dir)
    rng = np.random.default_rng(0)
    clip = Clip(frames=rng.integers(0, 256, (frames, side, side, 3), dtype=np.uint8), sample_fps=2.0,
                timestamps=[i / 2 for i in range(frames)], indices=list(range(frames)), total_frames=frames,
                native_fps=2.0, path="synthetic")
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens first?"}]}]
    batch = encode(processor, [Sample(record=None, media=clip, messages=messages)])
    tokens = [[int(x) for x in rng.integers(100, 1000, c)] for _ in range(g)]
    return loss_inputs(batch, tokens, g, pad_token_id(processor), shared=True)


def worker(args: argparse.Namespace) -> None:
    """One rank of one variant: prints a JSON line (rank 0) with tokens, seconds and peak bytes."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(args.threads)
    from videor1.model.load import load_model
    from videor1.parallel import sequence
    from videor1.rl.step import completion_logps

    if args.sp > 1:
        dist.init_process_group("gloo")
        sequence.start(args.sp)
    model = load_model(args.model, device="cpu", dtype=torch.float32).train()
    if args.sp > 1:
        sequence.install(model)
    inputs, ids, mask = _group_inputs(args.model, args.frame_count, args.side, args.G, args.C)

    def one_pass() -> float:
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        logp = completion_logps(model, inputs, ids, 1.0)
        (logp * mask).sum().backward()
        return time.perf_counter() - t0

    one_pass()
    with PeakRSS() as peak:
        seconds = [one_pass() for _ in range(args.repeats)]
    grow = torch.tensor([float(peak.peak - peak.base)], dtype=torch.float64)
    if args.sp > 1:
        dist.all_reduce(grow, op=dist.ReduceOp.MAX)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"tokens": int(inputs["input_ids"].numel()), "seconds": statistics.median(seconds),
                          "peak_bytes": float(grow)}), flush=True)
    if args.sp > 1:
        dist.destroy_process_group()


def run_variant(args: argparse.Namespace, model_dir: str, frames: int, sp: int) -> dict:
    port = _free_port()
    # the venv by its real path: DeepSpeed's JIT-built comm op is rebuilt whenever the include paths differ
    python = Path(sys.prefix).resolve() / "bin" / "python"
    cmd = [str(python), __file__, "--worker", "--model", model_dir, "--frame-count", str(frames), "--sp", str(sp),
           "--side", str(args.side), "--G", str(args.G), "--C", str(args.C), "--repeats", str(args.repeats),
           "--threads", str(args.threads)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(sp), DS_ACCELERATOR="cpu",
               OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false",
               MALLOC_MMAP_THRESHOLD_="65536")   # large tensors are unmapped when freed: RSS follows them
    with tempfile.TemporaryDirectory() as tmp:   # files, not pipes: a rank blocked on a full pipe would stall all
        logs = [Path(tmp) / f"rank{r}.log" for r in range(sp)]
        procs = []
        for r, log in enumerate(logs):
            with log.open("w") as fh:
                procs.append(subprocess.Popen(cmd, env=dict(env, RANK=str(r), LOCAL_RANK=str(r)), stdout=fh,
                                              stderr=subprocess.STDOUT))
        for p, log in zip(procs, logs):
            if p.wait(timeout=1800) != 0:
                raise RuntimeError(f"frames {frames} SP {sp}: exit {p.returncode}\n{log.read_text()[-3000:]}")
        line = [x for x in logs[0].read_text().splitlines() if x.startswith("{")][-1]
    return json.loads(line)


def print_projection() -> None:
    """The projection for Qwen2.5-VL-7B on 8 x 80 GB (which frame count fits at SP 1, 2, 4), from
    perf/long_video_memory.py (the shape model of perf/gpu_memory.py): PROJECTED, not measured."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from long_video_memory import print_table

    print_table()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", default="64,128,256")
    parser.add_argument("--side", type=int, default=112)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--G", type=int, default=4)
    parser.add_argument("--C", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--no-projection", action="store_true", help="skip the 7B projection (about a minute)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--frame-count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sp", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    from videor1.model.tiny import build_tiny

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(build_tiny(Path(tmp) / "model", hidden_size=args.hidden, num_layers=args.layers,
                                   num_heads=4, num_kv_heads=2, vision_hidden=128, vision_depth=2))
        print(f"scaled Qwen2.5-VL: hidden {args.hidden}, {args.layers} layers, 4 heads / 2 KV heads; frames of "
              f"{args.side}x{args.side} px; G {args.G}, C {args.C}; fp32 on CPU, {args.threads} thread(s) per process; "
              f"load average before: {os.getloadavg()[0]:.2f}")
        print(f"{'frames':>6} {'tokens':>7} | {'SP1 tok/s':>9} {'SP2 tok/s':>9} {'ratio':>6} | "
              f"{'SP1 peak MiB':>12} {'SP2 peak MiB/rank':>17} {'ratio':>6}")
        for frames in [int(x) for x in args.frames.split(",")]:
            one = run_variant(args, model_dir, frames, 1)
            two = run_variant(args, model_dir, frames, 2)
            t1, t2 = one["tokens"] / one["seconds"], two["tokens"] / two["seconds"]
            m1, m2 = one["peak_bytes"] / 2**20, two["peak_bytes"] / 2**20
            print(f"{frames:>6} {one['tokens']:>7} | {t1:>9.0f} {t2:>9.0f} {t2 / t1:>6.2f} | "
                  f"{m1:>12.0f} {m2:>17.0f} {m2 / max(m1, 1e-9):>6.2f}", flush=True)
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    if not args.no_projection:
        print_projection()


if __name__ == "__main__":
    main()
