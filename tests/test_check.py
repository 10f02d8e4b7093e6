"""`videor1 data check` on real media: good, truncated, missing and escaping files, bad fields, bad JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from videor1.cli import app
from videor1.data.check import check_dataset


def _rec(pid, path, data_type="video", **kw) -> dict:
    rec = {"problem_id": pid, "problem": "What happens?", "data_type": data_type,
           "problem_type": "multiple choice", "options": ["A. yes", "B. no"],
           "solution": "<answer>A</answer>", "path": path}
    rec.update(kw)
    return rec


@pytest.fixture()
def media_root(tmp_path, bikes_mp4) -> Path:
    root = tmp_path / "root"
    (root / "videos").mkdir(parents=True)
    (root / "images").mkdir()
    shutil.copy(bikes_mp4, root / "videos" / "bikes.mp4")
    data = bikes_mp4.read_bytes()
    (root / "videos" / "trunc.mp4").write_bytes(data[: len(data) // 2])
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(root / "images" / "x.png")
    (tmp_path / "outside.mp4").write_bytes(data)
    return root


def _write_mixed(tmp_path: Path) -> Path:
    lines = [
        json.dumps(_rec(1, "./videos/bikes.mp4")),
        json.dumps(_rec(2, "images/x.png", data_type="image", problem_type="OCR", options=[],
                        solution="<answer>hello</answer>")),
        json.dumps(_rec(3, "videos/trunc.mp4")),
        json.dumps(_rec(4, "videos/nope.mp4")),
        json.dumps(_rec(5, "../outside.mp4")),
        json.dumps(_rec(6, "videos/bikes.mp4", problem_type="yes/no")),
        '{"problem_id": 7, "problem": ',
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_check_dataset_lists_each_bad_record(tmp_path, media_root):
    path = _write_mixed(tmp_path)
    lines: list[str] = []
    n_bad = check_dataset(path, media_root, echo=lines.append)
    assert n_bad == 5
    bad = {line.split("\t")[0]: line.split("\t")[1] for line in lines if "\t" in line}
    assert set(bad) == {"3", "4", "5", "6", "#6"}
    assert bad["3"].startswith("media:")
    assert "not found" in bad["4"] and "escapes" in bad["5"] and bad["6"].startswith("problem_type")
    assert "invalid JSON" in bad["#6"] and "line 7" in bad["#6"]
    summary = lines[-1]
    assert "7 records, 2 good, 5 bad" in summary
    for part in ("missing media: 1", "media path: 1", "undecodable media: 1", "problem_type: 1",
                 "invalid JSON: 1"):
        assert part in summary


def test_without_decoding_the_truncated_file_passes(tmp_path, media_root):
    lines: list[str] = []
    assert check_dataset(_write_mixed(tmp_path), media_root, decode=False, echo=lines.append) == 4
    assert not any(line.startswith("3\t") for line in lines)
    assert "media not decoded" in lines[-1]


def test_cli_exit_codes(tmp_path, media_root):
    runner = CliRunner()
    mixed = _write_mixed(tmp_path)
    result = runner.invoke(app, ["data", "check", str(mixed), "--media-root", str(media_root)])
    assert result.exit_code == 1, result.output
    assert "2 good, 5 bad" in result.output

    clean = tmp_path / "clean.json"
    clean.write_text(json.dumps([_rec(1, "videos/bikes.mp4"), _rec("b", "images/x.png", data_type="image")]))
    result = runner.invoke(app, ["data", "check", str(clean), "--media-root", str(media_root)])
    assert result.exit_code == 0, result.output
    assert "2 records, 2 good, 0 bad" in result.output

    dupes = tmp_path / "dupes.json"
    dupes.write_text(json.dumps([_rec(1, "videos/bikes.mp4"), _rec(1, "images/x.png", data_type="image")]))
    result = runner.invoke(app, ["data", "check", str(dupes), "--media-root", str(media_root), "--no-decode"])
    assert result.exit_code == 0 and "warning: 1 problem_id" in result.output

    broken = tmp_path / "broken.json"
    broken.write_text("[{]")
    for args in ([str(tmp_path / "missing.json"), "--media-root", str(media_root)],
                 [str(clean), "--media-root", str(tmp_path / "no_root")],
                 [str(broken), "--media-root", str(media_root)]):
        result = runner.invoke(app, ["data", "check", *args])
        assert result.exit_code == 2, (args, result.output)
        assert "error:" in result.output
