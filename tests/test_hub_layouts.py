"""`videor1 data download` against fake hub snapshots laid out as each dataset is published: folder names,
part names, member paths, `__MACOSX/` entries, VSI-Bench's two copies of the full set, MVBench's `data0613/`
and NTU list. The hub is a local folder per repository; the download call is patched (no network) but the
patterns are matched by huggingface_hub's own `filter_repo_objects`, as `snapshot_download` matches them.
After each download, `data check` (training / eval JSONs) or the benchmark adapter (`load` with the media
root) must find every media file, or list the missing ones with the reason."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub.utils import filter_repo_objects

from videor1.data.check import check_dataset
from videor1.data.download import DATASETS, R1_FOLDERS, RepoNotFound, download
from videor1.data.records import read_records
from videor1.evaluate.benchmarks import get_benchmark
from videor1.evaluate.runner import load_item_media
from videor1.data.media import ImageSpec, VideoSpec

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


class FakeHub:
    """Repositories as local folders (`root/<org>/<name>`); a resolver and a snapshot_download stand-in."""

    def __init__(self, root: Path, gated: dict[str, str] | None = None) -> None:
        self.root, self.gated, self.calls = root, gated or {}, []

    def repo(self, repo_id: str) -> Path:
        return self.root / repo_id

    def resolve(self, repo_id: str, revision: str, token: str | None) -> tuple[str, object]:
        if not self.repo(repo_id).is_dir():
            raise RepoNotFound(f"{repo_id}@{revision}: RepositoryNotFoundError")
        return (revision if len(revision) == 40 else COMMIT), self.gated.get(repo_id, False)

    def snapshot(self, *, repo_id, repo_type, revision, allow_patterns, ignore_patterns, local_dir, token):
        self.calls.append({"repo_id": repo_id, "repo_type": repo_type, "revision": revision, "token": token})
        src = self.repo(repo_id)
        files = [p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file()]
        for rel in filter_repo_objects(files, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns):
            dest = Path(local_dir) / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists():
                shutil.copy(src / rel, dest)
        return local_dir

    def download(self, name: str, out: Path, **kw) -> Path:
        return download(name, out, downloader=self.snapshot, resolver=self.resolve, echo=kw.pop("echo", lambda s: None),
                        **kw)


@pytest.fixture
def mp4(bikes_mp4) -> bytes:
    return Path(bikes_mp4).read_bytes()


def manifest(out: Path) -> dict:
    return json.loads((out / "download.json").read_text())


# --------------------------------------------------------------------------------------- Video-R1-data
def r1_hub(hub: FakeHub) -> list[dict]:
    """Video-R1-data: 11 folders of independent `<Folder>_partN.zip`, members relative to the folder."""
    repo = hub.repo("Video-R1/Video-R1-data")
    records = []
    for i, folder in enumerate(R1_FOLDERS):
        image = folder in ("Chart", "General", "Knowledge", "Math", "OCR", "Spatial")
        name = f"sub/{i}.{'png' if image else 'mp4'}"
        write(repo / folder / f"{folder}_part1.zip", zip_bytes({name: b"x", "__MACOSX/sub/._0.mp4": b"mac"}))
        write(repo / folder / f"{folder}_part2.zip", zip_bytes({f"sub/{i}b.{'png' if image else 'mp4'}": b"y"}))
        records.append({"problem_id": i, "problem": "How many?", "data_type": "image" if image else "video",
                        "problem_type": "numerical", "options": [], "process": "",
                        "solution": "<answer>1,200</answer>", "path": f"./{folder}/{name}", "data_source": folder})
    records[0].update(problem_type="multiple choice", options=["A) one", "B) two"], solution="<answer>B</answer>")
    write(repo / "Video-R1-260k.json", json.dumps(records))
    write(repo / "Video-R1-COT-165k.json", json.dumps(records[:2]))
    write(repo / "README.md", "not asked for")
    return records


def test_video_r1_data_folders_of_part_zips_unpack_where_the_records_point(tmp_path):
    hub = FakeHub(tmp_path / "hub")
    records = r1_hub(hub)
    out = hub.download("video-r1-260k", tmp_path / "r1")
    assert hub.calls[0]["revision"] == DATASETS["video-r1-260k"].revision == manifest(out)["commit"]
    assert manifest(out)["pinned"] and manifest(out)["repo_id"] == "Video-R1/Video-R1-data"
    assert not (out / "README.md").exists() and not (out / "Video-R1-COT-165k.json").exists()
    assert len(manifest(out)["unpacked"]) == 22 and not list(out.rglob("__MACOSX"))
    for folder in R1_FOLDERS:                     # each part unpacked into its own folder
        assert len([p for p in (out / folder / "sub").iterdir()]) == 2
    good, errors = read_records(out / "Video-R1-260k.json", out)   # "A) " options and "1,200" read as published
    assert len(good) == len(records) and not errors
    assert check_dataset(out / "Video-R1-260k.json", out, decode=False, echo=lambda s: None) == 0
    assert hub.download("video-r1-260k", out) and manifest(out)["unpacked"] == []   # resumes, nothing redone


def test_a_branch_revision_is_recorded_as_unpinned_with_the_commit_fetched(tmp_path):
    hub = FakeHub(tmp_path / "hub")
    r1_hub(hub)
    out = hub.download("video-r1-cot-165k", tmp_path / "r1", revision="main", unpack=False)
    m = manifest(out)
    assert (m["revision"], m["commit"], m["pinned"]) == ("main", COMMIT, False) and "branch" in m["unpinned_reason"]
    assert hub.calls[-1]["revision"] == COMMIT       # the snapshot is of the resolved commit, not of the branch


# --------------------------------------------------------------------------------------- Video-R1-eval
def test_video_r1_eval_jsons_list_their_media_as_missing_by_benchmark(tmp_path):
    hub = FakeHub(tmp_path / "hub")
    repo = hub.repo("Video-R1/Video-R1-eval")
    for bench, folder in (("mvbench", "MVBench"), ("vsibench", "VSI-Bench"), ("videomme", "Video-MME"),
                          ("mmvu", "MMVU"), ("videommmu", "VideoMMMU"), ("tempcompass", "TempCompass")):
        write(repo / f"eval_{bench}.json", json.dumps([{
            "problem_id": 1, "problem": "Q?", "data_type": "video", "problem_type": "multiple choice",
            "options": ["A. x", "B. y"], "process": "", "solution": "<answer>A</answer>",
            "path": f"./Evaluation/{folder}/v1.mp4", "data_source": folder}]))
    out = hub.download("video-r1-eval", tmp_path / "eval")
    assert sorted(p.name for p in out.glob("eval_*.json")) == [f"eval_{b}.json" for b in sorted(
        ("mvbench", "vsibench", "videomme", "mmvu", "videommmu", "tempcompass"))]
    lines: list[str] = []
    assert check_dataset(out / "eval_mvbench.json", out, decode=False, echo=lines.append) == 1
    assert any("Evaluation/MVBench/v1.mp4" in line and "not found" in line for line in lines)
    write(out / "Evaluation/MVBench/v1.mp4", b"x")   # laid out from the benchmark's own download: found
    assert check_dataset(out / "eval_mvbench.json", out, decode=False, echo=lambda s: None) == 0


# ------------------------------------------------------------------------------------------ VSI-Bench
VSI_ROWS = [{"id": i, "dataset": ds, "scene_name": f"s{i}", "question_type": "object_counting",
             "question": "How many chairs?", "options": None, "ground_truth": str(i + 1)}
            for i, ds in enumerate(("arkitscenes", "scannet", "scannetpp"))]


def vsi_hub(hub: FakeHub, mp4: bytes) -> Path:
    repo = hub.repo("nyu-visionx/VSI-Bench")
    write(repo / "test.jsonl", "\n".join(json.dumps(r) for r in VSI_ROWS))      # the full set, twice
    write_parquet(repo / "test-00000-of-00001.parquet", VSI_ROWS)
    write_parquet(repo / "test_debiased.parquet", VSI_ROWS[:2])
    for row in VSI_ROWS:
        ds = row["dataset"]
        write(repo / f"{ds}.zip", zip_bytes({f"{ds}/{row['scene_name']}.mp4": mp4,
                                             f"__MACOSX/{ds}/._{row['scene_name']}.mp4": b"mac"}))
    return repo


def test_vsibench_main_reads_one_full_set_and_finds_every_video(tmp_path, mp4):
    hub = FakeHub(tmp_path / "hub")
    vsi_hub(hub, mp4)
    out = hub.download("vsibench-debiased", tmp_path / "vsi")
    assert not manifest(out)["pinned"] and "debiased" in manifest(out)["unpinned_reason"]
    loaded = get_benchmark("vsibench").load(out, out)
    assert len(loaded.items) == len(VSI_ROWS)          # the count is the file's; no duplicate-id lines
    assert sorted(Path(p.split(":")[0].removeprefix("file ")).name for p in loaded.problems) == [
        "test.jsonl", "test_debiased.parquet"] and all("not read" in p for p in loaded.problems)
    assert not list(out.rglob("__MACOSX")) and not list(out.rglob("._*"))
    for item in loaded.items:
        assert (out / item.record.path).is_file()
    clip = load_item_media(loaded.items[0], out, VideoSpec(max_frames=4, max_pixels=64 * 28 * 28), ImageSpec())
    assert len(clip.frames) >= 2                        # the unpacked file is the real video


# -------------------------------------------------------------------------------------------- MVBench
def mvbench_hub(hub: FakeHub) -> Path:
    repo = hub.repo("OpenGVLab/MVBench")
    q = {"question": "What happened?", "candidates": ["sat", "stood"], "answer": "stood"}
    write(repo / "json/action_sequence.json", json.dumps([{**q, "video": "A.mp4", "start": 1.0, "end": 3.0},
                                                          {**q, "video": "NEW.mp4", "start": 0.0, "end": 2.0}]))
    write(repo / "json/object_existence.json", json.dumps([{**q, "video": "video_1.mp4"}]))
    write(repo / "json/fine_grained_pose.json", json.dumps([{**q, "video": "S001_rgb.avi"}]))
    write(repo / "video/star.zip", zip_bytes({"Charades_v1_480/A.mp4": b"x"}))          # relative to its stem
    write(repo / "video/clevrer.zip", zip_bytes({"clevrer/video_validation/video_1.mp4": b"x"}))   # prefixed
    write(repo / "video/data0613.zip", zip_bytes({"data0613/star/Charades_v1_480/NEW.mp4": b"x",
                                                  "__MACOSX/data0613/._NEW.mp4": b"mac"}))
    write(repo / "video/MVBench_videos_ntu.txt", "S001_rgb.avi\n")
    write(repo / "README.md", "card")
    return repo


def test_mvbench_gated_download_finds_data0613_and_lists_ntu(tmp_path, monkeypatch):
    hub = FakeHub(tmp_path / "hub", gated={"OpenGVLab/MVBench": "manual"})
    mvbench_hub(hub)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    said: list[str] = []
    out = hub.download("mvbench", tmp_path / "mvb", echo=said.append)
    assert any("gated" in s and "HF_TOKEN" in s for s in said[:2])      # announced before the transfer
    assert hub.calls[-1]["token"] == "hf_test_token" and manifest(out)["gated"]
    assert (out / "video/MVBench_videos_ntu.txt").is_file() and not (out / "README.md").exists()
    media = out / "video"
    assert (media / "star/Charades_v1_480/A.mp4").is_file() and (media / "clevrer/video_validation/video_1.mp4").is_file()
    loaded = get_benchmark("mvbench").load(out / "json", media)
    by_video = {it.meta["video"]: it for it in loaded.items}
    assert by_video["NEW.mp4"].record.path == "data0613/star/Charades_v1_480/NEW.mp4"
    assert by_video["NEW.mp4"].meta["layout"] == "data0613" and by_video["NEW.mp4"].start == 0.0
    for item in loaded.items:
        assert (media / item.record.path).is_file(), item.record.path
    (ntu,) = loaded.problems
    assert "fine_grained_pose" in ntu and "MVBench_videos_ntu.txt" in ntu


def test_mvbench_without_token_says_so(tmp_path, monkeypatch):
    hub = FakeHub(tmp_path / "hub", gated={"OpenGVLab/MVBench": "manual"})
    mvbench_hub(hub)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    said: list[str] = []
    hub.download("mvbench", tmp_path / "mvb", echo=said.append, unpack=False)
    assert any("HF_TOKEN is not set" in s for s in said) and hub.calls[-1]["token"] is None


# ------------------------------------------------------------------------------------------ Video-MME
def test_videomme_moved_org_is_followed_and_recorded(tmp_path, mp4):
    hub = FakeHub(tmp_path / "hub")
    repo = hub.repo("lmms-eval/Video-MME")           # only the new org answers
    write_parquet(repo / "videomme/test-00000-of-00001.parquet", [
        {"video_id": "001", "duration": "short", "domain": "d", "sub_category": "s", "videoID": "fFjv93ACGo8",
         "question_id": "001-1", "task_type": "t", "question": "Q?", "options": ["A. a", "B. b", "C. c", "D. d"],
         "answer": "A"}])
    write(repo / "videos_chunked_01.zip", zip_bytes({"data/fFjv93ACGo8.mp4": mp4}))
    write(repo / "subtitle.zip", zip_bytes({"subtitle/fFjv93ACGo8.srt": b"s"}))
    out = hub.download("videomme", tmp_path / "vmme")
    assert manifest(out)["repo_id"] == "lmms-eval/Video-MME" and not (out / "subtitle").exists()
    (item,) = get_benchmark("videomme").load(out / "videomme", out / "data").items
    assert (out / "data" / item.record.path).is_file()


def test_an_unknown_repository_in_every_org_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="none of lmms-lab/TempCompass, lmms-eval/TempCompass resolves"):
        FakeHub(tmp_path / "hub").download("tempcompass", tmp_path / "tc")


# ----------------------------------------------------------------------------------------------- MMVU
def test_mmvu_videos_by_subject_and_open_ended_listed(tmp_path):
    hub = FakeHub(tmp_path / "hub")
    repo = hub.repo("yale-nlp/MMVU")
    url = "https://huggingface.co/datasets/yale-nlp/MMVU/resolve/main/videos/Art/1.mp4"
    write(repo / "validation.json", json.dumps([
        {"id": "a", "question": "Q?", "choices": {"A": "x", "B": "y"}, "answer": "A",
         "question_type": "multiple-choice", "video": url, "metadata": {"subject": "Art"}},
        {"id": "b", "question": "Name it.", "answer": "x", "question_type": "open-ended", "video": url,
         "metadata": {"subject": "Art"}}]))
    write(repo / "videos/Art/1.mp4", b"x")
    out = hub.download("mmvu", tmp_path / "mmvu")
    loaded = get_benchmark("mmvu").load(out / "validation.json", out)
    assert [it.id for it in loaded.items] == ["a"] and (out / loaded.items[0].record.path).is_file()
    assert len(loaded.problems) == 1 and "LLM judge" in loaded.problems[0]


# ------------------------------------------------------------------------------------------ VideoMMMU
def test_videommmu_skips_question_only_videos_and_macosx(tmp_path):
    hub = FakeHub(tmp_path / "hub", gated={"lmms-lab/VideoMMMU": "auto"})
    repo = hub.repo("lmms-lab/VideoMMMU")
    for track in ("Perception", "Comprehension", "Adaptation"):
        write_parquet(repo / track / "test-00000-of-00001.parquet", [
            {"id": f"{track.lower()}_Art_1", "question": "Q?", "options": ["x", "y"], "answer": "A",
             "question_type": "multiple-choice"}])
    write(repo / "Art.zip", zip_bytes({f"Art/{t.lower()}_Art_1.mp4": b"x" for t in ("Perception", "Comprehension",
                                                                                   "Adaptation")}
                                      | {"__MACOSX/Art/._perception_Art_1.mp4": b"mac"}))
    write(repo / "question_only_videos.zip", zip_bytes({"q/1.mp4": b"x"}))
    out = hub.download("videommmu", tmp_path / "vmmmu")
    assert not (out / "question_only_videos.zip").exists() and not list(out.rglob("__MACOSX"))
    loaded = get_benchmark("videommmu").load(out, out)
    assert len(loaded.items) == 3 and not loaded.problems
    for item in loaded.items:
        assert (out / item.record.path).is_file()


# ---------------------------------------------------------------------------------------- TempCompass
def test_tempcompass_four_formats_and_videos(tmp_path):
    hub = FakeHub(tmp_path / "hub")
    repo = hub.repo("lmms-lab/TempCompass")
    write_parquet(repo / "multi-choice/test-00000-of-00001.parquet", [
        {"video_id": "1025", "question": "How fast?\nA. slowly\nB. fast", "answer": "B. fast", "dim": "speed"}])
    write_parquet(repo / "yes_no/test-00000-of-00001.parquet", [
        {"video_id": "1025", "question": "Is it fast?", "answer": "yes", "dim": "speed"}])
    write_parquet(repo / "captioning/test-00000-of-00001.parquet", [
        {"video_id": "1025", "question": "Describe the speed.", "answer": "", "dim": "speed",
         "mc_question": "How fast?\nA. slowly\nB. fast", "mc_answer": "B. fast"}])
    write(repo / "tempcompass_videos.zip", zip_bytes({"videos/1025.mp4": b"x"}))
    out = hub.download("tempcompass", tmp_path / "tc")
    bench = get_benchmark("tempcompass")
    plain, judged = bench.load(out, out / "videos"), bench.load(out, out / "videos", judge=True)
    assert len(plain.items) == 2 and len(plain.problems) == 1 and "captioning" in plain.problems[0]
    assert len(judged.items) == 3 and not judged.problems
    for item in judged.items:
        assert (out / "videos" / item.record.path).is_file()
