"""Evaluation throughput: batched generation vs one item at a time, tiny model, synthetic test set.

Runs the same evaluation (`videor1.evaluate.runner.evaluate_records`: decode, prompt, HF generate,
score) twice in one process, with batch size 1 and with batch size B, and prints items/s for each and
the ratio. Both runs produce the same scores (greedy decoding); the script checks that too.

    python perf/eval_throughput.py [--items 24] [--batch-size 8] [--max-new-tokens 32]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def timed_eval(model, processor, records, media_root, batch_size: int, args) -> tuple[float, dict]:
    from videor1.data.media import VideoSpec
    from videor1.evaluate.runner import evaluate_records

    video = VideoSpec(max_frames=args.frames, max_pixels=args.max_pixels)
    start = time.perf_counter()
    summary = evaluate_records(model, processor, records, media_root, video=video, batch_size=batch_size,
                               max_new_tokens=args.max_new_tokens)
    return time.perf_counter() - start, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--max-pixels", type=int, default=32 * 28 * 28)
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
