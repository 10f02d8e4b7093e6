"""Evaluation throughput: batched generation vs one item at a time, tiny model, synthetic test set.

Runs the same evaluation (`videor1.evaluate.runner.evaluate_records`: decode, prompt, HF generate,
score) twice in one process, with batch size 1 and with batch size B, and prints items/s for each and
the ratio. Both runs produce the same scores (greedy decoding); the script checks that too.

Then it measures the input pipeline on a decode-heavy setting: the video items point at one long generated
clip (`--long-seconds`, 320x180, written with PyAV), 64 frames each, and the same evaluation runs with 0 and
with 2 worker processes (`num_workers`); it prints the fraction of wall time the model waited for data
(`data_wait_s / wall`) for each, and checks the predictions are the same.

    python perf/eval_throughput.py [--items 24] [--batch-size 8] [--max-new-tokens 32] [--long-seconds 600]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def long_clip(cache: Path, seconds: int) -> Path:
    """A generated 320x180 H.264 clip of `seconds`, written once into `cache` (perf/media_decode.py's writer)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from media_decode import write_clip

    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"generated_{seconds}s_320x180.mp4"
    if not path.exists():
        write_clip(path, seconds, (320, 180))
    return path


def timed_eval(model, processor, records, media_root, batch_size: int, args) -> tuple[float, dict]:
    from videor1.data.media import VideoSpec
    from videor1.evaluate.runner import evaluate_records

    video = VideoSpec(max_frames=args.frames, max_pixels=args.max_pixels)
    start = time.perf_counter()
    summary = evaluate_records(model, processor, records, media_root, video=video, batch_size=batch_size,
                               max_new_tokens=args.max_new_tokens)
    return time.perf_counter() - start, summary


def long_records(records, clip: Path, media_root: Path):
    """The records with every video pointing at `clip` (copied under the media root)."""
    import dataclasses
    import shutil

    target = media_root / "long_clip.mp4"
    if not target.exists():
        shutil.copy(clip, target)
    return [dataclasses.replace(r, path=target.name) if r.data_type == "video" else r for r in records]


def wait_fractions(model, processor, records, media_root: Path, args) -> None:
    from videor1.data.media import VideoSpec
    from videor1.evaluate.runner import evaluate_records

    video = VideoSpec(min_frames=64, max_frames=64, max_pixels=16 * 28 * 28)
    results = {}
    for workers in (0, 2):
        timing: dict[str, float] = {}
        start = time.perf_counter()
        summary = evaluate_records(model, processor, records, media_root, video=video, batch_size=args.batch_size,
                                   max_new_tokens=args.max_new_tokens, num_workers=workers, timing=timing)
        wall = time.perf_counter() - start
        results[workers] = (wall, timing["data_wait_s"], summary["official"]["overall"])
        print(f"num_workers {workers}: {wall:6.1f} s wall, model waited {timing['data_wait_s']:6.1f} s for data "
              f"= {timing['data_wait_s'] / wall:6.1%} of wall time")
    print(f"same scores   : {results[0][2] == results[2][2]}; speed-up with 2 workers "
          f"{results[0][0] / results[2][0]:.2f}x")
    print_wait_bound(records, media_root, video, results, len(records))


def print_wait_bound(records, media_root: Path, video, results: dict, n: int) -> None:
    """What the hardware allows: data alone (2 worker processes, no model) takes `data_s` for the items, so no
    pipeline finishes sooner; the model alone (0-worker wall minus its wait) takes `model_s`. The model can
    wait under 10% only if it works at least 90% of the wall time, i.e. `model_s` >= 0.9 * `data_s`: the
    printed factor is how much more work per item the model would need here. (The measured 2-worker fraction
    counts as work the time the model runs slower because the workers share its cores.)"""
    import functools

    from videor1.data.media import ImageSpec, load_media
    from videor1.data.pipeline import prefetch

    start = time.perf_counter()
    done = sum(1 for _ in prefetch(functools.partial(load_media, media_root=media_root, video=video,
                                                     image=ImageSpec()), records, num_workers=2, ahead=16))
    data_s = (time.perf_counter() - start) * n / max(done, 1)
    model_s = results[0][0] - results[0][1]
    print(f"bound         : data alone with 2 workers {data_s:.1f} s for {n} items (the pipeline took "
          f"{results[2][0]:.1f} s); model alone {model_s:.2f} s; under 10% waiting needs model work >= "
          f"{0.9 * data_s:.1f} s, {0.9 * data_s / max(model_s, 1e-9):.0f}x this model's, on {os.cpu_count()} cores")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--max-pixels", type=int, default=32 * 28 * 28)
    parser.add_argument("--long-seconds", type=int, default=600, help="length of the decode-heavy clip (0: skip)")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "videor1" / "perf")
    args = parser.parse_args()

    import torch

    from videor1.data.records import load_records
    from videor1.data.synth.build import make_dataset
    from videor1.model.load import load_model, load_processor
    from videor1.model.tiny import build_tiny

    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = make_dataset(tmp / "data", n_train=4, n_test=args.items, seed=0)
        records = load_records(paths["test"])[: args.items]
        model_dir = build_tiny(tmp / "tiny", seed=0)
        model, processor = load_model(model_dir, device="cpu"), load_processor(model_dir)
        timed_eval(model, processor, records[:2], paths["media_root"], 2, args)   # warm-up
        t1, s1 = timed_eval(model, processor, records, paths["media_root"], 1, args)
        tb, sb = timed_eval(model, processor, records, paths["media_root"], args.batch_size, args)
        if args.long_seconds > 0:
            print(f"decode-heavy: {len(records)} items, video items = 64 frames of a {args.long_seconds} s clip, "
                  f"batch {args.batch_size}, load avg {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
            clip = long_clip(args.cache_dir, args.long_seconds)
            wait_fractions(model, processor, long_records(records, clip, Path(paths["media_root"])),
                           Path(paths["media_root"]), args)
    n = len(records)
    print(f"device: cpu, threads {torch.get_num_threads()}; {n} items, {args.frames} frames, "
          f"max_new_tokens {args.max_new_tokens}")
    print(f"one at a time : {n / t1:7.2f} items/s ({t1:.1f} s)")
    print(f"batch size {args.batch_size:<3}: {n / tb:7.2f} items/s ({tb:.1f} s)")
    print(f"speed-up      : {t1 / tb:7.2f}x")
    same = s1["official"]["overall"] == sb["official"]["overall"]
    print(f"same scores   : {same} (official {s1['official']['overall']:.3f} vs {sb['official']['overall']:.3f}; "
          f"mean tokens {s1['completion_tokens']:.1f} vs {sb['completion_tokens']:.1f})")


if __name__ == "__main__":
    main()
