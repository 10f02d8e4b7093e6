"""The README's "Reproduce Video-R1-7B" and "Your own data" sections, run: the README cannot drift from the CLI.

Each fenced `bash` block of those sections is run by bash itself (loops, variables and `$((...))` expand as
for a user) with `videor1`, `accelerate`, `pip` and `hf` on PATH replaced by shims that record their argv.
Every recorded command is then checked against the real parsers: `videor1 ...` through the CLI's click
command tree (unknown options, missing required ones and bad values fail), `accelerate launch ...` through
accelerate's own `launch_command_parser` with its `--config_file` loaded by accelerate, the `key=value`
overrides through the RL / SFT config classes (unknown keys and bad values fail), `pip install -e '.[X]'`
against pyproject's extras and `hf download` against the installed `hf --help`; every `configs/...` path and
every `docs/...` link named must exist.

The slow tests then run the commands in order, in a scratch folder with `configs/` linked in, with these
substitutions (nothing else changes):

| README | in the test |
| --- | --- |
| `hf download Qwen/Qwen2.5-VL-7B-Instruct --local-dir D` | the tiny random Qwen2.5-VL built in D |
| `pip install ...` | not run (checked only) |
| `videor1 data download NAME --out D` | the real command, hub calls answered by local repositories laid out as published (`FakeHub`, tests/test_hub_layouts.py; media: real mp4 / png files) |
| `accelerate launch ... -m videor1.cli CMD ...` | `videor1 CMD ...` in-process, one process |
| `sft` (Reproduce) | + `train_data=<synthetic>/cot.jsonl media_root=<synthetic>` (the fake Video-R1 records have no CoT) |
| `train` (Reproduce) | + `train_data=<synthetic>/rl.jsonl media_root=<synthetic>` |
| `sft` | + `max_steps=2 num_workers=0` |
| `train` | + `max_steps=1 num_generations=4 num_shuffled_generations=2 max_completion_length=16`; `rollout_engine=vllm` -> `hf` when vLLM does not import (tests/vllm_real runs T-GRPO with vLLM rollouts) |
| `train ... rollout_engine=remote`, `serve-rollouts` | checked only (server mode runs end to end in tests/test_remote.py) |
| `videor1 push` | the real command; the upload (`videor1.hub._upload`, its one call into the Hub) recorded instead of sent |
| `eval` | + `--limit 2 --batch-size 2 --max-new-tokens 8 --max-pixels 12544` |
| "Your own data" records | the README's JSON example, media `videos/clip-1.mp4` = bikes.mp4, `images/chart-1.png` a PNG |
| `my_rewards.py` | the README's Python block, written to the scratch folder (`PYTHONPATH=.`) |
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.main import get_command
from typer.testing import CliRunner

from videor1.cli import app
from videor1.config import load_config
from videor1.rl.config import RLConfig
from videor1.sft.config import SFTConfig

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
REPRODUCE, OWN_DATA = "Reproduce Video-R1-7B", "Your own data"
SHIMS = ("videor1", "accelerate", "pip", "hf")
BENCHES = ("vsibench", "mvbench", "videomme", "mmvu", "videommmu", "tempcompass")
VLLM = importlib.util.find_spec("vllm") is not None


# ------------------------------------------------------------------------------------ the README's text
def section(title: str) -> str:
    """The text of README section `## title` (up to the next `## `)."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, f"README has no section '## {title}'"
    return match.group(1)


def fenced(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.S | re.M)


def record_commands(block: str, work: Path, env_extra: dict | None = None) -> list[list[str]]:
    """Run `block` with bash, the shims first on PATH; the argv of every shimmed command, in order."""
    shims, log = work.parent / "shims", work.parent / "commands.jsonl"
    shims.mkdir(exist_ok=True)
    log.unlink(missing_ok=True)
    for name in SHIMS:
        shim = shims / name
        shim.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                        f"with open(os.environ['README_LOG'], 'a') as f:\n"
                        f"    f.write(json.dumps([{name!r}, *sys.argv[1:]]) + '\\n')\n")
        shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}", "README_LOG": str(log),
           **(env_extra or {})}
    subprocess.run(["bash", "-euo", "pipefail", "-c", block + "\nwait\n"], cwd=work, env=env, check=True,
                   timeout=120)
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def section_commands(title: str, tmp_path: Path) -> list[list[str]]:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    commands = []
    for block in fenced(section(title), "bash"):
        commands += record_commands(block, work)
    return commands


# ------------------------------------------------------------------------------------------ checks
def parse_videor1(args: list[str]) -> Any:
    """The context of the command `videor1 args` names, parsed by the CLI's real click tree (typer's own
    click; raises on a bad option or value); its `params` are the options, its `args` the key=value
    overrides."""
    cmd = get_command(app)
    ctx = cmd.make_context("videor1", list(args))
    while hasattr(cmd, "commands"):         # a group
        attr = "_protected_args" if hasattr(ctx, "_protected_args") else "protected_args"
        rest = [*getattr(ctx, attr), *ctx.args]
        if not rest or rest[0] not in cmd.commands:
            return ctx                                  # a group that runs itself (eval with overrides)
        cmd = cmd.commands[rest[0]]
        ctx = cmd.make_context(rest[0], rest[1:], parent=ctx)
    return ctx


def check_videor1(args: list[str]) -> Any:
    ctx = parse_videor1(args)
    for value in [*args, *(str(v) for v in ctx.params.values())]:
        for path in re.findall(r"(?:^|=)(configs/\S+)", str(value)):
            assert (ROOT / path).is_file(), f"videor1 {' '.join(args)}: no such file {path}"
    if ctx.info_name in ("sft", "train"):
        cls = SFTConfig if ctx.info_name == "sft" else RLConfig
        load_config(cls, ROOT / ctx.params["config"], list(ctx.args))    # unknown keys / bad values fail here
    if ctx.info_name in ("sft", "train", "eval"):
        for arg in ctx.args:                      # what is left after the options: key=value overrides only
            assert re.fullmatch(r"[A-Za-z_][\w.]*=.*", arg), f"videor1 {' '.join(args)}: stray argument {arg!r}"
    if ctx.info_name == "eval" and ctx.params.get("bench"):
        from videor1.evaluate.benchmarks import benchmark_names
        from videor1.evaluate.config import EvalConfig

        assert ctx.params["bench"] in benchmark_names()
        p = ctx.params
        load_config(EvalConfig, p["config"], list(ctx.args), values={
            "model": p["model"], "bench": p["bench"], "data": p["data"], "media_root": p["media_root"],
            "out": p["out"], "video.max_frames": p["frames"], "decoding": p["decoding"]})
    if ctx.info_name == "download":
        from videor1.data.download import DATASETS
        assert args[2] in DATASETS
    return ctx


def check_accelerate(argv: list[str]) -> list[str]:
    """accelerate's own parser and config loader on the line; returns the videor1 argv it launches."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    assert argv[1] == "launch", argv
    ns = launch_command_parser().parse_args(argv[2:])
    assert (ROOT / ns.config_file).is_file(), ns.config_file
    load_config_from_file(str(ROOT / ns.config_file))
    assert ns.module and ns.training_script == "videor1.cli", argv
    assert ns.num_processes >= 1
    return list(ns.training_script_args)


def check_command(argv: list[str]) -> None:
    name, args = argv[0], argv[1:]
    if name == "videor1":
        check_videor1(args)
    elif name == "accelerate":
        check_videor1(check_accelerate(argv))
    elif name == "pip":
        assert args[:2] == ["install", "-e"] and args[2].startswith(".["), argv
        extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        for extra in args[2][2:-1].split(","):
            assert extra in extras, f"pyproject has no extra {extra!r}"
    elif name == "hf":
        assert args[0] == "download" and re.fullmatch(r"[\w.-]+/[\w.-]+", args[1]) and args[2] == "--local-dir"
        hf = shutil.which("hf", path=str(Path(sys.executable).parent)) or "hf"
        out = subprocess.run([hf, "download", "--help"], capture_output=True, text=True, timeout=60).stdout
        assert "--local-dir" in out


def test_reproduce_commands_parse_and_name_real_files(tmp_path):
    commands = section_commands(REPRODUCE, tmp_path)
    for argv in commands:
        check_command(argv)
    videor1 = [a[1:] for a in commands if a[0] == "videor1"]
    launched = [check_accelerate(a) for a in commands if a[0] == "accelerate"]
    downloads = [a[2] for a in videor1 if a[:2] == ["data", "download"]]
    assert downloads == ["video-r1-260k", "video-r1-cot-165k", *BENCHES]
    assert [a[0] for a in launched] == ["sft", "train", "train"]
    assert "rollout_engine=vllm" in launched[1] and "rollout_engine=remote" in launched[2]
    assert any(a[0] == "serve-rollouts" and "--engine" in a for a in videor1)
    evals = [parse_videor1(a).params for a in videor1 if a[0] == "eval" and a[1] != "report"]
    assert sorted((p["frames"], p["bench"]) for p in evals) == sorted((f, b) for f in (16, 32, 64) for b in BENCHES)
    assert all(p["decoding"] == "reference" for p in evals)
    pushes = [parse_videor1(a).params for a in videor1 if a[0] == "push"]
    assert len(pushes) == 1 and pushes[0]["evals"] and pushes[0]["repo"].count("/") == 1
    tracking = re.findall(r"`(report_to=\S+)`", section(REPRODUCE))  # the overrides the text tells users to add
    assert tracking == ["report_to=[tensorboard,wandb]"]
    for cls, name in ((SFTConfig, "sft_qwen25vl7b.yaml"), (RLConfig, "rl_qwen25vl7b_tgrpo.yaml")):
        assert list(load_config(cls, ROOT / "configs" / name, tracking).report_to) == ["tensorboard", "wandb"]
    for link in re.findall(r"\]\(((?:docs|scripts|configs)/[^)]+)\)", section(REPRODUCE)):
        assert (ROOT / link).is_file(), link


def test_own_data_commands_parse_and_the_example_records_validate(tmp_path, monkeypatch):
    from videor1.data.records import parse_record

    (records,) = [json.loads(b) for b in fenced(section(OWN_DATA), "json")]
    for i, obj in enumerate(records):
        parse_record(obj, file="README", index=i)
    monkeypatch.syspath_prepend(str(write_reward_module(tmp_path)))
    restore_rewards(monkeypatch)
    commands = section_commands(OWN_DATA, tmp_path)
    assert {tuple(a[1:3]) for a in commands} >= {("data", "check"), ("data", "stats"), ("sft", "--config"),
                                                ("train", "--config"), ("eval", "--model")}
    for argv in commands:
        check_command(argv)


def write_reward_module(folder: Path) -> Path:
    (code,) = fenced(section(OWN_DATA), "python")
    (folder / "my_rewards.py").write_text(code)
    return folder


def restore_rewards(monkeypatch) -> None:
    """The reward registry and the module cache as they were, after the test."""
    from videor1.rewards import REGISTRY

    monkeypatch.setattr(REGISTRY, "_items", dict(REGISTRY._items))
    monkeypatch.delitem(sys.modules, "my_rewards", raising=False)


def test_the_readme_reward_registers_and_scores(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(write_reward_module(tmp_path)))
    restore_rewards(monkeypatch)
    import my_rewards  # noqa: F401
    from videor1.rewards import get_reward

    fn = get_reward("short_answer")
    done = "<think>x</think><answer>B</answer>"
    long = "<think>x</think><answer>one two three four five six</answer>"
    assert fn([done, long, "no tags", [{"role": "assistant", "content": done}]], problem_type=["x"] * 4) == \
        [1.0, 0.0, 0.0, 1.0]


# ------------------------------------------------------------------------------------------ running
SIZE = {"sft": ["max_steps=2", "num_workers=0"],
        "train": ["max_steps=1", "num_generations=4", "num_shuffled_generations=2", "max_completion_length=16"],
        "eval": ["--limit", "2", "--batch-size", "2", "--max-new-tokens", "8", "--max-pixels", "12544"]}


def substituted(args: list[str], data: list[str]) -> list[str] | None:
    """The videor1 argv the test runs for README argv `args` (module docstring); None: checked only."""
    if args[0] == "serve-rollouts" or "rollout_engine=remote" in args:
        return None
    if args[0] == "train" and not VLLM:
        args = ["rollout_engine=hf" if a == "rollout_engine=vllm" else a for a in args]
    if args[0] in ("sft", "train"):
        return [*args, *data, *SIZE[args[0]]]
    if args[0] == "eval" and args[1] != "report":
        return [*args, *SIZE["eval"]]
    return args


def fresh_process() -> None:
    """Each README command is a process of its own; in one test process, accelerate's process-wide state
    (set once per process, e.g. SFT's bf16 then RL's fp32 on a CPU) is cleared between commands."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def run_commands(commands: list[list[str]], tmp_path: Path, data: dict[str, list[str]]) -> list[list[str]]:
    """Run the commands in order (substituted); the videor1 argv that ran."""
    from videor1.model.tiny import build_tiny

    ran = []
    for argv in commands:
        if argv[0] == "hf":
            build_tiny(Path(argv[argv.index("--local-dir") + 1]), seed=0)
            continue
        if argv[0] == "pip":
            continue
        args = check_accelerate(argv) if argv[0] == "accelerate" else argv[1:]
        args = substituted(args, data.get(args[0], []))
        if args is None:
            continue
        result = CliRunner().invoke(app, args)
        fresh_process()
        assert result.exit_code == 0, f"videor1 {' '.join(args)}:\n{result.output}\n{result.exception!r}"
        ran.append(args)
    return ran


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    (work / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(work)
    return work


@pytest.mark.slow
def test_reproduce_section_runs_on_the_tiny_model(tmp_path, work, synth_dir, bikes_mp4, monkeypatch):
    import functools

    import videor1.data.download as dl
    from readme_hub import published_hub

    hub = published_hub(tmp_path / "hub", Path(bikes_mp4).read_bytes())
    monkeypatch.setattr(dl, "download", functools.partial(dl.download, downloader=hub.snapshot,
                                                          resolver=hub.resolve))
    import videor1.hub as push_mod

    uploads = []
    monkeypatch.setattr(push_mod, "_upload", lambda repo, model_dir, files, card, private: uploads.append(
        (repo, Path(model_dir), card, private)) or f"https://huggingface.co/{repo}")
    commands = section_commands(REPRODUCE, tmp_path)
    data = {"sft": [f"train_data={synth_dir}/cot.jsonl", f"media_root={synth_dir}"],
            "train": [f"train_data={synth_dir}/rl.jsonl", f"media_root={synth_dir}"]}
    ran = run_commands(commands, tmp_path, data)
    for name in ("video-r1-260k", *BENCHES):
        out = work / ("data" if name.startswith("video-r1") else f"data/bench/{name}")
        assert json.loads((out / "download.json").read_text())["commit"]
    assert (work / "runs/sft_qwen25vl7b/final/config.json").is_file()
    assert (work / "runs/rl_qwen25vl7b_tgrpo/final/config.json").is_file()
    for f in (16, 32, 64):
        for bench in BENCHES:
            scores = json.loads((work / f"runs/eval/f{f}/{bench}/scores.json").read_text())
            assert scores["counts"]["answered"] >= 1, (f, bench, scores["counts"], scores["errors"])
    assert sum(a[0] == "eval" for a in ran) == 19
    [(repo, model_dir, card, private)] = uploads
    assert model_dir == Path("runs/rl_qwen25vl7b_tgrpo/final") and private and ": T-GRPO." in card
    table = card.split("## Evaluation", 1)[1].split("## Config", 1)[0]
    assert sorted(re.findall(r"^\| (\w+) \| (\d+) \|", table, re.M)) == sorted(
        (b, str(f)) for f in (16, 32, 64) for b in BENCHES)  # every evaluation of step 4, in the card


@pytest.mark.slow
def test_own_data_section_runs_on_the_tiny_model(tmp_path, work, bikes_mp4, monkeypatch):
    from PIL import Image

    from videor1.model.tiny import build_tiny

    (records,) = [json.loads(b) for b in fenced(section(OWN_DATA), "json")]
    mine = work / "data/mine"
    for rec in records:
        (mine / rec["path"]).parent.mkdir(parents=True, exist_ok=True)
        if rec["data_type"] == "video":
            shutil.copy(bikes_mp4, mine / rec["path"])
        else:
            Image.new("RGB", (96, 64), (200, 40, 40)).save(mine / rec["path"])
    (mine / "train.json").write_text(json.dumps(records))
    build_tiny(work / yaml.safe_load((ROOT / "configs/sft_qwen25vl7b.yaml").read_text())["model"], seed=0)
    write_reward_module(work)
    monkeypatch.syspath_prepend(str(work))
    restore_rewards(monkeypatch)
    ran = run_commands(section_commands(OWN_DATA, tmp_path), tmp_path, {})
    assert [a[0] for a in ran] == ["data", "data", "sft", "train", "eval"]
    metrics = [json.loads(line) for line in (work / "runs/rl_mine/metrics.jsonl").read_text().splitlines()]
    assert metrics and all("reward_short_answer" in row for row in metrics)
    assert json.loads((work / "runs/eval_mine/scores.json").read_text())["counts"]["items"] == 2
