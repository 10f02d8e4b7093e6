"""Issue 16: input limits are configuration (the `limits:` section of every config, `--config` of the other
commands), recorded in the outputs, and checked before anything is tokenised; a model path that is not a
usable model is one line naming it; the remaining probes of the issue, one test each."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from videor1.cli import app
from videor1.config import ConfigError, load_config
from videor1.data.media import MediaError, load_image
from videor1.data.records import read_records
from videor1.evaluate.benchmarks import get_benchmark
from videor1.evaluate.benchmarks.base import Benchmark, RowSource
from videor1.evaluate.benchmarks.videor1_records import items_from_records
from videor1.evaluate.config import EvalConfig
from videor1.evaluate.report import write_outputs
from videor1.evaluate.runner import score_row, summarize
from videor1.generation.engines import Completion
from videor1.limits import DEFAULT_LIMITS, InputLimits, current_limits, limits_in_force
from videor1.rl.config import RLConfig
from videor1.sft.config import SFTConfig

BIG = "x" * 2_000_000   # a 2 MB question: refused as a record (max_record_bytes), never parsed or tokenised
LONG = "x" * 200_000    # fits a record, but not max_prompt_chars: refused before it is tokenised
RECORD = {"problem_id": "ok", "problem": "What colour?", "data_type": "image", "problem_type": "free-form",
          "options": [], "solution": "<answer>red</answer>", "path": "x.png", "process": "<think>r</think>"}


def _cli(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in (result.output or ""), result.output
    return result


def _dataset(tmp_path: Path, *rows: dict) -> Path:
    Image.fromarray(np.full((56, 56, 3), 200, np.uint8)).save(tmp_path / "x.png")
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ----------------------------------------------------------------------------------- limits as config
@pytest.mark.parametrize("cls, required", [
    (SFTConfig, ["model=m", "train_data=t", "output_dir=o"]),
    (RLConfig, ["model=m", "train_data=t", "output_dir=o"]),
    (EvalConfig, ["model=m", "bench=videor1", "data=d", "media_root=r", "out=o"]),
])
def test_limits_section_in_every_config_validated_and_named(cls, required):
    cfg = load_config(cls, None, [*required, "limits.max_prompt_chars=500", "limits.max_aspect_ratio=50"])
    assert cfg.limits == InputLimits(max_prompt_chars=500, max_aspect_ratio=50.0)
    assert load_config(cls, None, required).limits == DEFAULT_LIMITS
    for bad, key in (("limits.max_depth=0", "limits.max_depth"), ("limits.max_aspect_ratio=300",
                                                                    "limits.max_aspect_ratio"),
                     ("limits.max_pixels=5", "limits.max_pixels")):
        with pytest.raises(ConfigError) as info:
            load_config(cls, None, [*required, bad])
        assert key in str(info.value)


def test_eval_default_yaml_documents_every_limit():
    text = Path(__file__).resolve().parents[1].joinpath("configs", "eval_default.yaml").read_text()
    for name in DEFAULT_LIMITS.as_dict():
        assert f"  {name}:" in text


# ------------------------------------------------------------------------------------ prompt length
class RecordingEngine:
    """Stands in for the model: records what would have been tokenised, answers "red"."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def generate(self, samples, params):
        self.problems += [s.record.problem for s in samples]
        return [[Completion(text="<think>r</think><answer>red</answer>", token_ids=[1], finished=True)]
                for _ in samples]


def test_eval_skips_a_2mb_prompt_and_a_wide_image_without_tokenising_and_records_limits(tmp_path, monkeypatch):
    import videor1.evaluate.runner as runner

    data = _dataset(tmp_path, dict(RECORD, problem_id="huge", problem=BIG), RECORD,
                    dict(RECORD, problem_id="long", problem=LONG), dict(RECORD, problem_id="wide", path="wide.png"))
    Image.fromarray(np.zeros((2, 600, 3), np.uint8)).save(tmp_path / "wide.png")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    engine = RecordingEngine()
    monkeypatch.setattr(runner, "load_processor", lambda path: None)   # no processor: nothing is tokenised
    monkeypatch.setattr(runner, "fit_media_specs", lambda processor, video, image: (video, image))
    monkeypatch.setattr(runner, "make_engine", lambda *a, **k: engine)
    out = tmp_path / "out"
    result = _cli("eval", "--model", model, "--bench", "videor1", "--data", data, "--media-root", tmp_path,
                  "--out", out, "limits.max_aspect_ratio=100")
    assert result.exit_code == 0, result.output
    assert "max_record_bytes=1000000" in result.output and "record 'long'" in result.output
    assert engine.problems == [RECORD["problem"]]          # neither long prompt nor the wide image
    unusable = json.loads((out / "unusable.json").read_text())
    assert len(unusable) == 2 and "line 1" in unusable[0] and "max_record_bytes=1000000" in unusable[0]
    assert "record 'long'" in unusable[1] and "max_prompt_chars=100000" in unusable[1]
    scores = json.loads((out / "scores.json").read_text())
    assert scores["counts"] == {"items": 2, "answered": 1, "errors": 1, "shuffled_items": 0}
    assert "max_aspect_ratio=100" in scores["errors"][0]["reason"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["limits"] == InputLimits(max_aspect_ratio=100.0).as_dict()
    assert current_limits() == DEFAULT_LIMITS        # run_eval restores the limits that were in force


class _Rows(Benchmark):   # no `name`: not registered; exercises the shared load loop of every adapter
    def rows(self, file: Path):
        return json.loads(file.read_text())

    def row_to_item(self, row, source: RowSource):
        return self.item(source, problem=row["q"], problem_type="free-form", answer="a", path="v.mp4")


def test_benchmark_load_loop_checks_prompt_length_and_depth_per_row(tmp_path):
    data = tmp_path / "bench.json"
    data.write_text(json.dumps([{"id": "huge", "q": BIG}, {"id": "deep", "q": "ok", "x": [[[[[1]]]]]},
                                {"id": "fine", "q": "ok"}]))
    with limits_in_force(InputLimits(max_depth=4)):
        loaded = _Rows().load(data)
    assert [it.id for it in loaded.items] == ["fine"]
    text = " | ".join(loaded.problems)
    assert "'huge'" in text and "max_prompt_chars=100000" in text and "'deep'" in text and "max_depth=4" in text


def test_sft_skips_a_2mb_prompt_and_applies_its_config_limits(tmp_path):
    data = _dataset(tmp_path, dict(RECORD, problem_id="huge", problem=BIG), RECORD,
                    dict(RECORD, problem_id="long", problem=LONG))
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = tmp_path / "sft.yaml"
    cfg.write_text(f"model: {empty}\ntrain_data: {data}\noutput_dir: {tmp_path / 'run'}\nmax_skipped_fraction: 1.0\n")
    result = _cli("sft", "--config", cfg)   # the records are skipped and logged before the model is loaded
    assert result.exit_code == 2 and "is empty" in result.output
    skipped = (tmp_path / "run" / "skipped.jsonl").read_text()
    assert "max_record_bytes=1000000" in skipped and "'long'" in skipped and "max_prompt_chars=100000" in skipped
    assert "'ok'" not in skipped
    result = _cli("sft", "--config", cfg, "limits.max_prompt_chars=5", "overwrite=true")
    assert result.exit_code == 2 and "3 of 3 records are unusable" in result.output
    assert "max_prompt_chars=5" in result.output


def test_annotate_skips_a_2mb_prompt_before_the_model(tmp_path):
    data = _dataset(tmp_path, dict(RECORD, problem_id="huge", problem=BIG), RECORD,
                    dict(RECORD, problem_id="long", problem=LONG))
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _cli("annotate", "--model", empty, "--data", data, "--media-root", tmp_path,
                  "--out", tmp_path / "cot.jsonl")
    assert "skipped invalid record" in result.output and "max_record_bytes=1000000" in result.output
    assert "record 'long'" in result.output and "max_prompt_chars=100000" in result.output
    assert result.exit_code == 2 and "is empty" in result.output   # then the unusable model, one line


def test_infer_refuses_a_2mb_question_before_loading_anything(tmp_path):
    Image.fromarray(np.zeros((56, 56, 3), np.uint8)).save(tmp_path / "x.png")
    result = _cli("infer", "--model", tmp_path / "nowhere", "--video", tmp_path / "x.png", "--question", BIG[:200_001])
    assert result.exit_code == 2 and "--question" in result.output and "max_prompt_chars=100000" in result.output
    cfg = tmp_path / "limits.yaml"
    cfg.write_text("limits:\n  max_prompt_chars: 3\n")
    result = _cli("infer", "--model", tmp_path / "nowhere", "--video", tmp_path / "x.png", "--question", "why?",
                  "--config", cfg)
    assert result.exit_code == 2 and "max_prompt_chars=3" in result.output


def test_data_check_reads_limits_from_config(tmp_path):
    data = _dataset(tmp_path, RECORD)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("limits:\n  max_prompt_chars: 4\n")
    assert _cli("data", "check", data, "--media-root", tmp_path).exit_code == 0
    result = _cli("data", "check", data, "--media-root", tmp_path, "--config", cfg)
    assert result.exit_code == 1 and "max_prompt_chars=4" in result.output
    cfg.write_text("limits:\n  max_depth: -1\n")
    result = _cli("data", "check", data, "--media-root", tmp_path, "--config", cfg)
    assert result.exit_code == 2 and "limits.max_depth" in result.output
    assert current_limits() == InputLimits(max_prompt_chars=4)   # what the last good call put in force


# --------------------------------------------------------------------------------------- model dirs
@pytest.mark.parametrize("kind", ["missing", "empty", "dataset", "architecture", "broken_config", "list_config"])
@pytest.mark.parametrize("command", ["sft", "train", "eval"])
def test_unusable_model_dir_is_one_line_naming_the_path(tmp_path, kind, command):
    data = _dataset(tmp_path, RECORD)
    model = tmp_path / "model"
    if kind != "missing":
        model.mkdir()
    named = model
    if kind == "dataset":
        (model / "train.jsonl").write_text(json.dumps(RECORD) + "\n")
    elif kind in ("architecture", "broken_config", "list_config"):
        named = model / "config.json"
        named.write_text({"architecture": '{"model_type": "bert"}', "broken_config": "{broken",
                          "list_config": "[1]"}[kind])
    if command == "eval":
        result = _cli("eval", "--model", model, "--bench", "videor1", "--data", data, "--media-root", tmp_path,
                      "--out", tmp_path / "out")
    else:
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"model: {model}\ntrain_data: {data}\noutput_dir: {tmp_path / 'run'}\n")
        result = _cli(command, "--config", cfg)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and str(named) in lines[0]


# ---------------------------------------------------------------------------------- server from CLI
def test_serve_rollouts_limit_flags_are_checked(tmp_path):
    for flag in ("--max-n", "--max-new-tokens", "--max-total-tokens", "--max-body-bytes", "--request-timeout"):
        result = _cli("serve-rollouts", "--model", tmp_path, "--port", "0", flag, "0")
        assert result.exit_code == 2 and flag in result.output and "> 0" in result.output


# -------------------------------------------------------------------------------------- atomic chart
def test_scores_png_is_written_atomically(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    adapter = get_benchmark("videor1")
    item = items_from_records(read_records(_dataset(tmp_path, RECORD))[0])[0]
    row = {**item.row(), "output": "<answer>red</answer>", "shuffled": False, "error": None, "n_tokens": 1}
    summary = summarize(adapter, [score_row(adapter, row)])
    write_outputs(tmp_path, summary)
    before = (tmp_path / "scores.png").read_bytes()
    assert before.startswith(b"\x89PNG")

    def dies(self, target, **kwargs):
        target.write(b"\x89PNG half")
        raise KeyboardInterrupt   # killed mid-render

    monkeypatch.setattr(Figure, "savefig", dies)
    with pytest.raises(KeyboardInterrupt):
        write_outputs(tmp_path, summary)
    assert (tmp_path / "scores.png").read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


# ------------------------------------------------------------------------ the other probes
def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (no pixel data): what a decompression bomb looks like."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_225_megapixel_png_is_refused_from_its_header(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(15000, 15000))
    with pytest.raises(MediaError, match="bomb.png.*225000000 pixels"):   # one line naming the file
        load_image(bomb)


def test_non_utf8_line_in_train_is_one_line_naming_the_file(tmp_path):
    path = _dataset(tmp_path, RECORD)
    path.write_bytes(path.read_bytes() + b'{"problem": "\xff\xfe"}\n')
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {tmp_path}\ntrain_data: {path}\noutput_dir: {tmp_path / 'run'}\n")
    for command in ("train", "sft"):
        result = _cli(command, "--config", cfg)
        assert result.exit_code == 2 and str(path) in result.output and "utf-8" in result.output


@pytest.mark.parametrize("text", ["model: !!python/object:os.system {}\n", "model: [unclosed\n",
                                  b"\x00\x01\xff\xfe binary"])
def test_unsafe_broken_or_binary_yaml_is_one_line(tmp_path, text):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(text if isinstance(text, bytes) else text.encode())
    for command in ("train", "sft"):
        result = _cli(command, "--config", cfg)
        assert result.exit_code == 2 and result.output.count("error:") == 1 and "c.yaml" in result.output


@pytest.mark.parametrize("what", ["missing", "directory"])
def test_train_data_missing_or_a_directory_is_one_line(tmp_path, what):
    data = tmp_path / "data.jsonl"
    if what == "directory":
        data.mkdir()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {tmp_path}\ntrain_data: {data}\noutput_dir: {tmp_path / 'run'}\n")
    for command in ("train", "sft"):
        result = _cli(command, "--config", cfg)
        assert result.exit_code == 2 and "train_data" in result.output and str(data) in result.output


def test_output_path_that_is_a_file_is_one_line(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("x")
    data = _dataset(tmp_path, RECORD)
    assert _cli("model", "tiny", "--out", taken).exit_code == 2
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {tmp_path}\ntrain_data: {data}\noutput_dir: {taken}\n")
    for command in ("train", "sft"):
        result = _cli(command, "--config", cfg)
        assert result.exit_code == 2 and str(taken) in result.output
    model = tmp_path / "model"
    model.mkdir()
    result = _cli("eval", "--model", model, "--bench", "videor1", "--data", data, "--media-root", tmp_path,
                  "--out", taken)
    assert result.exit_code == 2 and str(taken) in result.output


def test_synth_negative_count_and_demo_on_a_foreign_folder_are_one_line(tmp_path):
    result = _cli("synth", "--out", tmp_path / "s", "--n-train", "-1")
    assert result.exit_code == 2 and "n" in result.output.lower()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    result = _cli("demo", "--out", foreign, "--quick")
    assert result.exit_code == 2 and str(foreign) in result.output
    assert (foreign / "precious.txt").read_text() == "keep me"
