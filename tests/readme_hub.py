"""A local hub holding every dataset the README's "Reproduce Video-R1-7B" downloads, laid out as published
(tests/test_hub_layouts.py checks each layout in detail), with real, decodable media: a small copy of each
repository, so `data download`, `data check` and `eval` run on it as on the real files."""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image

from test_hub_layouts import VSI_ROWS, FakeHub, vsi_hub, write, write_parquet, zip_bytes
from videor1.data.download import R1_FOLDERS

IMAGE_FOLDERS = ("Chart", "General", "Knowledge", "Math", "OCR", "Spatial")


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 120, 200)).save(buf, format="PNG")
    return buf.getvalue()


def r1_repo(hub: FakeHub, mp4: bytes) -> None:
    """Video-R1-data: `<Folder>/<Folder>_part1.zip` per folder, members relative to the folder."""
    repo, records = hub.repo("Video-R1/Video-R1-data"), []
    for i, folder in enumerate(R1_FOLDERS):
        image = folder in IMAGE_FOLDERS
        name = f"sub/{i}.{'png' if image else 'mp4'}"
        write(repo / folder / f"{folder}_part1.zip", zip_bytes({name: png() if image else mp4}))
        records.append({"problem_id": i, "problem": "How many objects are there?",
                        "data_type": "image" if image else "video", "problem_type": "numerical", "options": [],
                        "process": "", "solution": "<answer>3</answer>", "path": f"./{folder}/{name}",
                        "data_source": folder})
    write(repo / "Video-R1-260k.json", json.dumps(records))
    write(repo / "Video-R1-COT-165k.json", json.dumps(records[:2]))


def benchmark_repos(hub: FakeHub, mp4: bytes) -> None:
    """The six benchmarks, one or two questions each, their videos being `mp4`."""
    assert VSI_ROWS
    vsi_hub(hub, mp4)
    q = {"question": "What happened?", "candidates": ["sat", "stood"], "answer": "stood"}
    mvb = hub.repo("OpenGVLab/MVBench")
    write(mvb / "json/action_sequence.json", json.dumps([{**q, "video": "A.mp4", "start": 1.0, "end": 3.0}]))
    write(mvb / "video/star.zip", zip_bytes({"Charades_v1_480/A.mp4": mp4}))
    write(mvb / "video/MVBench_videos_ntu.txt", "S001_rgb.avi\n")
    vmme = hub.repo("lmms-lab/Video-MME")
    write_parquet(vmme / "videomme/test-00000-of-00001.parquet", [
        {"video_id": "001", "duration": "short", "domain": "d", "sub_category": "s", "videoID": "v1",
         "question_id": "001-1", "task_type": "t", "question": "Q?", "options": ["A. a", "B. b", "C. c", "D. d"],
         "answer": "A"}])
    write(vmme / "videos_chunked_01.zip", zip_bytes({"data/v1.mp4": mp4}))
    mmvu = hub.repo("yale-nlp/MMVU")
    write(mmvu / "validation.json", json.dumps([
        {"id": "a", "question": "Q?", "choices": {"A": "x", "B": "y"}, "answer": "A",
         "question_type": "multiple-choice", "metadata": {"subject": "Art"},
         "video": "https://huggingface.co/datasets/yale-nlp/MMVU/resolve/main/videos/Art/1.mp4"}]))
    write(mmvu / "videos/Art/1.mp4", mp4)
    mmmu = hub.repo("lmms-lab/VideoMMMU")
    write_parquet(mmmu / "Perception/test-00000-of-00001.parquet", [
        {"id": "perception_Art_1", "question": "Q?", "options": ["x", "y"], "answer": "A",
         "question_type": "multiple-choice"}])
    write(mmmu / "Art.zip", zip_bytes({"Art/perception_Art_1.mp4": mp4}))
    tc = hub.repo("lmms-lab/TempCompass")
    write_parquet(tc / "multi-choice/test-00000-of-00001.parquet", [
        {"video_id": "1025", "question": "How fast?\nA. slowly\nB. fast", "answer": "B. fast", "dim": "speed"}])
    write(tc / "tempcompass_videos.zip", zip_bytes({"videos/1025.mp4": mp4}))


def published_hub(root: Path, mp4: bytes) -> FakeHub:
    """The hub (gated: MVBench, VideoMMMU, as published)."""
    hub = FakeHub(root, gated={"OpenGVLab/MVBench": "manual", "lmms-lab/VideoMMMU": "auto"})
    r1_repo(hub, mp4)
    benchmark_repos(hub, mp4)
    return hub
