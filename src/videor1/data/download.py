"""`videor1 data download NAME --out DIR`: Video-R1's training sets, its eval JSONs and the six benchmarks.

Each dataset is one `HubDataset` of `DATASETS`: the hub repositories it may live in (first that resolves
wins: lmms-lab's benchmarks moved to the `lmms-eval` org, and the hub redirects moved repos), the revision
(a commit where public material pins or shows one, else a branch, with the reason it is unpinned), the file
patterns it needs (`allow_patterns`, matched by huggingface_hub as `fnmatch`, where `*` crosses `/`) and
those it must skip (`ignore_patterns`), whether the repository is gated and how to get access, its size.

A download: (1) resolve the revision to a commit on the first repository that answers
(`HfApi.dataset_info`; a gated one is announced before anything is fetched); (2)
`huggingface_hub.snapshot_download` of that exact commit into `--out` (files already complete there are
not fetched again, so an interrupted download resumes), with the token from `HF_TOKEN` passed through;
(3) every zip archive unpacked in place, once; (4) `download.json` records the repository used, the
revision asked for, the commit actually fetched, whether that was a pin, and what was unpacked.

Unpacking (`unpack_all`): a single `x.zip`, or one archive split into parts (`x.zip.001`, `x.zip.002`, ...
or `x.zip.part_aa`, ...) joined in name order first. Independent archives such as Video-R1-data's
`CLEVRER/CLEVRER_part1.zip`, `CLEVRER/CLEVRER_part2.zip` are each unpacked on their own. An archive is
unpacked into its own folder (members are relative to it), except with `into_stem` (MVBench's `video/*.zip`,
whose members are relative to a folder named after the archive) where an archive whose members do not
already all start with `<stem>/` goes into `<folder>/<stem>/`. macOS metadata (`__MACOSX/`, `._*`) is
never extracted; members that would land outside their folder are refused. An archive already unpacked (its
`.x.zip.done` marker is there) is skipped. After a download, `videor1 data check FILE --media-root DIR`
lists missing media per data source.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from videor1.atomic import atomic_write_json


@dataclass(frozen=True)
class HubDataset:
    """Where one dataset lives on the hub, which of its files a user needs, and what to know first."""

    repo_ids: tuple[str, ...]           # candidates in order; the first that resolves is used
    revision: str                       # a pinned commit, or a branch when no commit is known
    allow_patterns: tuple[str, ...]
    ignore_patterns: tuple[str, ...] = ()
    unpinned: str = ""                  # why `revision` is a branch (empty: it is a pinned commit)
    gated: str = ""                     # how to get access (empty: public)
    size: str = ""                      # download size as published
    note: str = ""
    into_stem: bool = False             # unpack `x.zip` into `x/` unless its members already start with `x/`


_MAC = ("__MACOSX/*", "*/__MACOSX/*")
R1_FOLDERS = ("CLEVRER", "LLaVA-Video-178K", "NeXT-QA", "PerceptionTest", "STAR", "Chart", "General", "Knowledge",
              "Math", "OCR", "Spatial")
_R1_MEDIA = tuple(f"{folder}/{folder}_part*.zip" for folder in R1_FOLDERS)
_R1_REV = "9ecf5eff38945e9ae4958058b83c9337f54aadd4"   # earlier upload: 967e80d3d41249b4147676a6c6099057d715b652
_R1_SIZE = "~309 GB of zips (about twice that on disk while the zips are kept after unpacking)"
_MVB_GATED = ("gated: log in at https://huggingface.co/datasets/OpenGVLab/MVBench, accept its terms, then set "
              "HF_TOKEN to a token of that account")
_MMMU_GATED = ("gated: accept the terms at https://huggingface.co/datasets/lmms-lab/VideoMMMU with your account, "
               "then set HF_TOKEN")
_VIDEOMMMU_ZIPS = tuple(f"{d}.zip" for d in ("Art", "Business", "Science", "Humanities", "Engineering", "Medicine"))

DATASETS: dict[str, HubDataset] = {
    "video-r1-260k": HubDataset(
        ("Video-R1/Video-R1-data",), _R1_REV, ("Video-R1-260k.json", *_R1_MEDIA), _MAC, size=_R1_SIZE,
        note="RL set; media in 11 folders of <Folder>_partN.zip, record paths ./<Folder>/..."),
    "video-r1-cot-165k": HubDataset(
        ("Video-R1/Video-R1-data",), _R1_REV, ("Video-R1-COT-165k.json", *_R1_MEDIA), _MAC, size=_R1_SIZE,
        note="SFT (CoT) set; same media as video-r1-260k"),
    "video-r1-eval": HubDataset(
        ("Video-R1/Video-R1-eval",), "8d690077856fe9174975fc4ff7daadfcc5628c2b", ("eval_*.json",), size="a few MB",
        note="the six eval_*.json of the reference's eval_bench.py; paths ./Evaluation/<Bench>/...: the videos "
             "come from each benchmark's own download, laid out under Evaluation/"),
    "vsibench": HubDataset(
        ("nyu-visionx/VSI-Bench",), "668dd47863a49c6ee50946df1bf085a039fc95cd", ("*.parquet", "*.jsonl", "*.zip"),
        _MAC, size="~6 GB of videos",
        note="full test set (parquet) + arkitscenes / scannet / scannetpp video zips"),
    "vsibench-debiased": HubDataset(
        ("nyu-visionx/VSI-Bench",), "main", ("*.parquet", "*.jsonl", "*.zip"), _MAC,
        unpinned="the debiased upload's full commit hash is not in public material; download.json records the "
                 "commit fetched", size="~6 GB of videos",
        note="main: the full set (test.jsonl and test-*.parquet; one is read) beside test_debiased / test_pruned"),
    "mvbench": HubDataset(
        ("OpenGVLab/MVBench",), "230a2d4fac8900333c61754641c7a13e069ac9c6",
        ("json/*.json", "video/*.zip", "video/MVBench_videos_ntu.txt"), _MAC, gated=_MVB_GATED, size="~16 GB",
        into_stem=True,
        note="main: full videos clipped by start/end; data0613.zip holds the June-2024 replacement videos; the "
             "NTU RGB+D videos (Fine-grained Pose) were removed upstream, see video/MVBench_videos_ntu.txt"),
    "mvbench-video": HubDataset(
        ("OpenGVLab/MVBench",), "a776e554280b99b70f00cc3eacd69a65e0727efc",
        ("json/*.json", "video/*.zip", "video/MVBench_videos_ntu.txt"), _MAC, gated=_MVB_GATED, size="~16 GB",
        into_stem=True, note="branch `video` (what lmms-eval reads): clips already cut to each question's window"),
    "videomme": HubDataset(
        ("lmms-lab/Video-MME", "lmms-eval/Video-MME"), "ead1408f75b618502df9a1d8e0950166bf0a2a0b",
        ("videomme/*.parquet", "videos_chunked_*.zip"), _MAC, size="~100 GB", note="questions parquet; video chunks"),
    "mmvu": HubDataset(
        ("yale-nlp/MMVU",), "main", ("validation.json", "videos/**"), _MAC,
        unpinned="no commit of this repository is pinned in public material", size="~1 GB",
        note="validation questions (625 multiple choice, the rest open-ended: those need --judge); videos by subject"),
    "videommmu": HubDataset(
        ("lmms-lab/VideoMMMU", "lmms-eval/VideoMMMU"), "main",
        ("Perception/*", "Comprehension/*", "Adaptation/*", *_VIDEOMMMU_ZIPS),
        (*_MAC, "question_only_videos.zip"), unpinned="no commit of this repository is pinned in public material",
        gated=_MMMU_GATED, size="~30 GB", note="three tracks; per-discipline video zips (with __MACOSX/ entries)"),
    "tempcompass": HubDataset(
        ("lmms-lab/TempCompass", "lmms-eval/TempCompass"), "c8a67d88a3bc6fd4b2f9ae2f9e112668fbe05722",
        ("*/*.parquet", "*.zip"), _MAC, size="~1 GB",
        note="four question formats (captioning needs --judge); videos archive"),
}

_PART = re.compile(r"^(?P<base>.+\.zip)\.(?P<part>\d+|part_?\w+)$")

Downloader = Callable[..., Any]
Resolver = Callable[[str, str, "str | None"], "tuple[str, Any]"]   # (repo, revision, token) -> (commit, gated)


class RepoNotFound(LookupError):
    """The repository (or revision) does not resolve on the hub."""


def is_commit(revision: str) -> bool:
    """A full 40-hex commit hash (a pin), as opposed to a branch or tag name."""
    return re.fullmatch(r"[0-9a-f]{40}", revision) is not None


def dataset_names() -> list[str]:
    return sorted(DATASETS)


# ------------------------------------------------------------------------------------------ unpacking
def zip_archives(root: Path) -> dict[Path, list[Path]]:
    """{archive path (the joined `x.zip`): its parts in order} for every zip or split zip under root."""
    archives: dict[Path, list[Path]] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).parts
        if not path.is_file() or any(part.startswith(".") or part == "__MACOSX" for part in rel):
            continue
        m = _PART.match(path.name)
        if m:
            archives.setdefault(path.with_name(m.group("base")), []).append(path)
        elif path.suffix.lower() == ".zip" and path not in archives:
            archives.setdefault(path, [])
    return {zip_path: sorted(parts) for zip_path, parts in archives.items()}


def join_parts(zip_path: Path, parts: list[Path]) -> Path:
    """`parts` concatenated in order into `zip_path` (written to a temporary name first)."""
    tmp = zip_path.with_name(f".{zip_path.name}.joining")
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                shutil.copyfileobj(src, out)
    tmp.replace(zip_path)
    return zip_path


def is_mac_metadata(member: str) -> bool:
    """macOS archive metadata (`__MACOSX/...`, AppleDouble `._name`): never media."""
    parts = PurePosixPath(member).parts
    return "__MACOSX" in parts or (bool(parts) and parts[-1].startswith("._"))


def extract_dir(zip_path: Path, members: list[str], into_stem: bool) -> Path:
    """Where an archive's members go: its folder, or `<folder>/<stem>/` (see the module doc)."""
    stem = zip_path.name[: -len(".zip")]
    files = [m for m in members if not m.endswith("/")]
    if into_stem and files and not all(m.startswith(f"{stem}/") for m in files):
        return zip_path.parent / stem
    return zip_path.parent


def safe_extract(zip_path: Path, dest: Path | None = None, *, into_stem: bool = False) -> int:
    """Extract every member but macOS metadata; ValueError naming the archive and member if one would escape.
    Returns the number of members extracted."""
    with zipfile.ZipFile(zip_path) as archive:
        members = [m for m in archive.namelist() if not is_mac_metadata(m)]
        dest = (dest or extract_dir(zip_path, members, into_stem)).resolve()
        for member in members:
            if not (dest / member).resolve().is_relative_to(dest):
                raise ValueError(f"{zip_path}: member {member!r} would be written outside {dest}; refused")
        dest.mkdir(parents=True, exist_ok=True)
        archive.extractall(dest, members=members)
        return len(members)


def unpack_all(root: Path, echo: Callable[[str], None] = print, *, into_stem: bool = False) -> list[Path]:
    """Unpack every (split) zip under root, once; returns the archives unpacked now."""
    done: list[Path] = []
    for zip_path, parts in zip_archives(root).items():
        marker = zip_path.with_name(f".{zip_path.name}.done")
        if marker.is_file():
            continue
        if parts:
            join_parts(zip_path, parts)
        try:
            n = safe_extract(zip_path, into_stem=into_stem)
        except zipfile.BadZipFile as exc:
            raise ValueError(f"{zip_path}: not a readable zip archive ({exc}); delete it and download again") from None
        marker.write_text("unpacked\n", encoding="utf-8")
        echo(f"unpacked {zip_path.relative_to(root)}: {n} files")
        done.append(zip_path)
    return done


# ------------------------------------------------------------------------------------------ the hub
def hub_resolve(repo_id: str, revision: str, token: str | None) -> tuple[str, Any]:
    """(commit, gated) of `repo_id` at `revision` on the hub; RepoNotFound when it does not resolve."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = HfApi().dataset_info(repo_id, revision=revision, token=token)
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise RepoNotFound(f"{repo_id}@{revision}: {type(exc).__name__}") from None
    return str(info.sha), info.gated


def hub_snapshot(**kwargs: Any) -> Any:
    from huggingface_hub import snapshot_download

    return snapshot_download(**kwargs)


def resolve(spec: HubDataset, revision: str, token: str | None, resolver: Resolver) -> tuple[str, str, Any]:
    """(repo used, commit, gated) on the first of the spec's repositories that resolves."""
    tried = []
    for repo_id in spec.repo_ids:
        try:
            commit, gated = resolver(repo_id, revision, token)
            return repo_id, commit, gated
        except RepoNotFound as exc:
            tried.append(str(exc))
    raise ValueError(f"none of {', '.join(spec.repo_ids)} resolves at {revision!r} ({'; '.join(tried)})")


def announce(name: str, spec: HubDataset, repo_id: str, rev: str, commit: str, gated: Any, token: str | None,
             echo: Callable[[str], None]) -> None:
    """What the user should know before the transfer starts: gating, pinning, size."""
    if spec.gated or gated:
        how = spec.gated or f"gated: accept the terms at https://huggingface.co/datasets/{repo_id}, then set HF_TOKEN"
        echo(f"{name}: {how}" + ("" if token else " (HF_TOKEN is not set: the download will be refused)"))
    if is_commit(rev):
        echo(f"{name}: pinned at commit {commit}")
    else:
        echo(f"{name}: unpinned ({spec.unpinned}); branch {rev} is at commit {commit} now")
    if spec.size:
        echo(f"{name}: size {spec.size}")


def download(name: str, out: Path, *, revision: str | None = None, unpack: bool = True,
             downloader: Downloader = hub_snapshot, resolver: Resolver = hub_resolve,
             echo: Callable[[str], None] = print) -> Path:
    """Fetch dataset `name` into `out` (resumable), unpack its archives, write download.json; returns out."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(dataset_names())}")
    spec = DATASETS[name]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rev = revision or spec.revision
    token = os.environ.get("HF_TOKEN") or None
    repo_id, commit, gated = resolve(spec, rev, token, resolver)
    announce(name, spec, repo_id, rev, commit, gated, token, echo)
    echo(f"downloading {repo_id}@{commit} ({', '.join(spec.allow_patterns)}) into {out}")
    try:
        downloader(repo_id=repo_id, repo_type="dataset", revision=commit, allow_patterns=list(spec.allow_patterns),
                   ignore_patterns=list(spec.ignore_patterns) or None, local_dir=str(out), token=token)
    except Exception as exc:
        if type(exc).__name__ == "GatedRepoError":
            raise ValueError(f"{repo_id} is gated and this account has no access: {spec.gated or 'accept its terms'}"
                             ) from None
        raise
    unpacked = unpack_all(out, echo, into_stem=spec.into_stem) if unpack else []
    manifest = {"name": name, "repo_id": repo_id, "repo_ids": list(spec.repo_ids), "revision": rev,
                "commit": commit, "pinned": is_commit(rev),
                "unpinned_reason": "" if is_commit(rev) else (spec.unpinned or f"revision {rev!r} is a branch"),
                "gated": spec.gated or bool(gated), "allow_patterns": list(spec.allow_patterns),
                "ignore_patterns": list(spec.ignore_patterns), "size": spec.size, "note": spec.note,
                "unpacked": [str(p.relative_to(out)) for p in unpacked]}
    atomic_write_json(out / "download.json", manifest, indent=2)
    return out
