"""`videor1 data stats`: counts match a count done here; media facts match the files' own headers."""

from __future__ import annotations

import json
import random
import shutil
import statistics

import av
import numpy as np
from PIL import Image
from typer.testing import CliRunner

from videor1.cli import app
from videor1.data.records import PROBLEM_TYPES
from videor1.data.stats import dataset_stats


def _random_records(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ptype = rng.choice(PROBLEM_TYPES)
        data_type = rng.choice(["video", "image"])
        rec = {"problem_id": i, "problem": f"q{i}", "data_type": data_type, "problem_type": ptype,
               "options": ["A. a", "B. b"] if ptype == "multiple choice" else [],
               "solution": "<answer>A</answer>" if ptype == "multiple choice" else "<answer>1.5</answer>",
               "path": "v/bikes.mp4" if data_type == "video" else "i/small.png"}
        source = rng.choice(["synth", "chart", None])
        if source is not None:
            rec["data_source"] = source
        if rng.random() < 0.5:
            rec["temporal"] = rng.random() < 0.5
        out.append(rec)
    return out


def test_counts_match(tmp_path):
    records = _random_records(60, seed=3)
    path = tmp_path / "d.json"
    path.write_text(json.dumps(records + [{"problem_id": "bad", "problem": "x"}]))
    lines: list[str] = []
    stats = dataset_stats(path, out=tmp_path / "out", echo=lines.append)
    assert stats["records"] == 60 and stats["bad_records"] == 1
    for name in ("data_type", "problem_type"):
        expected = {}
        for r in records:
            expected[r[name]] = expected.get(r[name], 0) + 1
        assert stats["counts"][name] == expected
    n_none = sum(1 for r in records if "data_source" not in r)
    assert stats["counts"]["data_source"].get("(none)", 0) == n_none
    assert stats["counts"]["data_source"].get("synth", 0) == sum(r.get("data_source") == "synth" for r in records)
    n_true = sum(1 for r in records if r.get("temporal") is True)
    n_false = sum(1 for r in records if r.get("temporal") is False)
    assert stats["counts"]["temporal"] == {k: v for k, v in (("true", n_true), ("false", n_false)) if v}
    md = (tmp_path / "out" / "stats.md").read_text()
    assert f"| video | {stats['counts']['data_type']['video']} |" in md
    assert md.strip() in "\n".join(lines)
    png = tmp_path / "out" / "stats.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["counts"] == stats["counts"]


def test_media_summary_from_headers(tmp_path, bikes_mp4, bunny_mp4):
    root = tmp_path / "root"
    (root / "v").mkdir(parents=True)
    (root / "i").mkdir()
    shutil.copy(bikes_mp4, root / "v" / "bikes.mp4")
    shutil.copy(bunny_mp4, root / "v" / "bunny.mp4")
    Image.fromarray(np.zeros((30, 50, 3), dtype=np.uint8)).save(root / "i" / "small.png")
    base = {"problem": "q", "problem_type": "free-form", "options": [], "solution": "<answer>x</answer>"}
    recs = [dict(base, problem_id=1, data_type="video", path="v/bikes.mp4"),
            dict(base, problem_id=2, data_type="video", path="v/bunny.mp4"),
            dict(base, problem_id=3, data_type="video", path="v/bunny.mp4"),
            dict(base, problem_id=4, data_type="image", path="i/small.png"),
            dict(base, problem_id=5, data_type="video", path="v/missing.mp4")]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))

    def duration(p):
        with av.open(str(p)) as c:
            s = c.streams.video[0]
            return float(s.duration * s.time_base), f"{s.codec_context.width}x{s.codec_context.height}"

    (d_bikes, res_bikes), (d_bunny, res_bunny) = duration(bikes_mp4), duration(bunny_mp4)
    lines: list[str] = []
    media = dataset_stats(path, media_root=root, echo=lines.append)["media"]
    assert media["errors"] == 1 and any(line.startswith("5\tmedia:") for line in lines)
    video = media["video"]
    assert video["count"] == 3
    assert video["resolution"] == {res_bunny: 2, res_bikes: 1}
    durations = [d_bikes, d_bunny, d_bunny]
    assert abs(video["duration_s"]["max"] - max(durations)) < 1e-6
    assert abs(video["duration_s"]["median"] - statistics.median(durations)) < 1e-6
    assert media["image"] == {"count": 1, "resolution": {"50x30": 1},
                              "pixels": {"min": 1500.0, "median": 1500.0, "mean": 1500.0, "max": 1500.0}}


def test_cli_stats(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _random_records(10, seed=1)))
    runner = CliRunner()
    result = runner.invoke(app, ["data", "stats", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "10 valid records, 0 bad records" in result.output and (tmp_path / "o" / "stats.png").is_file()
    result = runner.invoke(app, ["data", "stats", str(tmp_path / "nope.json")])
    assert result.exit_code == 2 and "error:" in result.output
