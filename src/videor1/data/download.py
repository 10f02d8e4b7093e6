"""`videor1 data download NAME --out DIR`: Video-R1's training sets and the six benchmarks from the Hugging Face hub.

Each dataset is one entry of `DATASETS`: the hub repository, the revision, and the file patterns it needs
(`allow_patterns`), fetched with `huggingface_hub.snapshot_download` into `--out` (files already complete
there are not fetched again, so an interrupted download resumes). Zip archives are then unpacked in place:
a single `x.zip`, or an archive split into parts (`x.zip.001`, `x.zip.002`, ... or `x.zip.part_aa`, ...)
which are joined in name order first. An archive already unpacked (its `.x.zip.done` marker is there) is
skipped; members that would land outside their folder are refused. `download.json` in `--out` records
what was asked for.

Revisions: `DATASETS` names the branch each release is published on; pass `--revision <commit>` to pin one
exactly (the commit used is written to download.json). After a download, `videor1 data check FILE
--media-root DIR` lists missing media per data source.
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from huggingface_hub import snapshot_download


@dataclass(frozen=True)
class HubDataset:
    """Where one dataset lives on the hub and which of its files a user needs."""

    repo_id: str
    revision: str
    allow_patterns: tuple[str, ...]
    note: str = ""


_R1_MEDIA = ("*.zip", "*.zip.*", "**/*.zip", "**/*.zip.*")
DATASETS: dict[str, HubDataset] = {
    "video-r1-260k": HubDataset("Video-R1/Video-R1-data", "main", ("Video-R1-260k.json", *_R1_MEDIA),
                                "RL set; media as per-source zip parts, unpacked in place"),
    "video-r1-cot-165k": HubDataset("Video-R1/Video-R1-data", "main", ("Video-R1-COT-165k.json", *_R1_MEDIA),
                                    "SFT (CoT) set; same media as video-r1-260k"),
    "vsibench": HubDataset("nyu-visionx/VSI-Bench", "main", ("*.jsonl", "*.parquet", "*.zip"),
                           "test set + debiased / pruned subsets; arkitscenes / scannet / scannetpp videos"),
    "mvbench": HubDataset("OpenGVLab/MVBench", "main", ("json/*.json", "video/*.zip", "video/**/*.zip"),
                          "per-task JSONs; per-source video archives"),
    "videomme": HubDataset("lmms-lab/Video-MME", "main", ("videomme/*.parquet", "videos_chunked_*.zip"),
                           "questions parquet; video chunks"),
    "mmvu": HubDataset("yale-nlp/MMVU", "main", ("validation.json", "videos/**"),
                       "validation questions; videos by subject"),
    "videommmu": HubDataset("lmms-lab/VideoMMMU", "main",
                            ("Perception/*", "Comprehension/*", "Adaptation/*", "*.zip", "videos/**"),
                            "three tracks; per-discipline video archives"),
    "tempcompass": HubDataset("lmms-lab/TempCompass", "main", ("*/*.parquet", "*.zip"),
                              "four question formats; videos archive"),
}

_PART = re.compile(r"^(?P<base>.+\.zip)\.(?P<part>\d+|part_?\w+)$")

Downloader = Callable[..., str]


def dataset_names() -> list[str]:
    return sorted(DATASETS)


def zip_archives(root: Path) -> dict[Path, list[Path]]:
    """{archive path (the joined `x.zip`): its parts in order} for every zip or split zip under root."""
    archives: dict[Path, list[Path]] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(root).parts):
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


def safe_extract(zip_path: Path, dest: Path) -> int:
    """Extract every member into dest; ValueError naming the archive and member if one would escape."""
    dest = dest.resolve()
    with zipfile.ZipFile(zip_path) as archive:
        for member in archive.namelist():
            target = (dest / member).resolve()
            if not target.is_relative_to(dest):
                raise ValueError(f"{zip_path}: member {member!r} would be written outside {dest}; refused")
        archive.extractall(dest)
        return len(archive.namelist())


def unpack_all(root: Path, echo: Callable[[str], None] = print) -> list[Path]:
    """Unpack every (split) zip under root into its own folder, once; returns the archives unpacked now."""
    done: list[Path] = []
    for zip_path, parts in zip_archives(root).items():
        marker = zip_path.with_name(f".{zip_path.name}.done")
        if marker.is_file():
            continue
        if parts:
            join_parts(zip_path, parts)
        try:
            n = safe_extract(zip_path, zip_path.parent)
        except zipfile.BadZipFile as exc:
            raise ValueError(f"{zip_path}: not a readable zip archive ({exc}); delete it and download again") from None
        marker.write_text("unpacked\n", encoding="utf-8")
        echo(f"unpacked {zip_path.relative_to(root)}: {n} files")
        done.append(zip_path)
    return done


def download(name: str, out: Path, *, revision: str | None = None, unpack: bool = True,
             downloader: Downloader = snapshot_download, echo: Callable[[str], None] = print) -> Path:
    """Fetch dataset `name` into `out` (resumable), unpack its archives, write download.json; returns out."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(dataset_names())}")
    spec = DATASETS[name]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rev = revision or spec.revision
    echo(f"downloading {spec.repo_id}@{rev} ({', '.join(spec.allow_patterns)}) into {out}")
    downloader(repo_id=spec.repo_id, repo_type="dataset", revision=rev, allow_patterns=list(spec.allow_patterns),
               local_dir=str(out))
    unpacked = unpack_all(out, echo) if unpack else []
    manifest = {"name": name, **asdict(spec), "revision": rev, "unpacked": [str(p.relative_to(out)) for p in unpacked]}
    (out / "download.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return out
