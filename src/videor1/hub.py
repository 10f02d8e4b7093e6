"""`videor1 push DIR --repo ID [--private] [--evals FOLDER]` and the `push_to_hub:` key of the training configs: the model
directory of a run, with a generated model card (README.md), uploaded to the Hugging Face Hub.

It sits below the trainers (they call `push_at_end`, the configs `check_repo_id`) and the CLI (`push`), and
imports nothing of either.

`DIR` is a run folder (`<output_dir>`: its `final/` is uploaded) or a model directory (one holding
config.json). The card (`model_card`, a pure function of `CardInputs`) states the base model, the data, the
algorithm and its key settings, the eval scores found in the run folder and the `--evals` folders (`scores.json`
files of evaluations of this very model directory; others are named and left out), the exact videor1 version, and the resolved config (config.yaml of `train`,
sft_config.yaml of `sft`).

Where we depart from `transformers`' `push_to_hub`: the card is not written into the model directory (a file
added there would change its fingerprint, `videor1.atomic.model_fingerprint`, and an evaluation folder of that
model would then refuse to resume); the model's files and the card go up in one commit
(`HfApi.create_repo(exist_ok=True)`, then `HfApi.create_commit` with one `CommitOperationAdd` per file: what
`upload_folder` does internally, plus the card from memory). A README.md already in the model directory is
replaced by the generated card on the Hub. `--private` applies when the repo is created (the Hub ignores it for
an existing repo). The token is huggingface_hub's (`HF_TOKEN` or `huggingface-cli login`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from videor1 import __version__
from videor1.config import ConfigError

CONFIG_FILES = {"config.yaml": "train", "sft_config.yaml": "sft"}  # the resolved config each trainer writes
CARD_FILE = "README.md"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # "owner/name", the form of a Hub model id
_RL_KEYS = ("num_generations", "num_shuffled_generations", "shuffle_unit", "alpha", "mu", "temporal_comparison",
            "temporal_bonus_mode", "advantage", "scale_rewards", "beta", "epsilon", "epsilon_high", "loss_type",
            "num_iterations", "dynamic_sampling", "rewards", "reward_weights", "length_bonus", "learning_rate",
            "lr_scheduler", "max_steps", "prompts_per_step", "temperature", "top_p", "max_completion_length",
            "rollout_engine", "freeze_vision", "seed")
_SFT_KEYS = ("learning_rate", "lr_scheduler", "warmup_ratio", "num_epochs", "max_steps", "per_device_batch_size",
             "gradient_accumulation_steps", "max_length", "lora", "lora_rank", "lora_alpha", "freeze_vision", "seed")


def check_repo_id(repo_id: str | None) -> None:
    """ConfigError (key push_to_hub) unless `repo_id` is None or a valid Hub repo id ("user/name")."""
    if repo_id is None:
        return
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ConfigError(str(err).splitlines()[0], key="push_to_hub") from None


# -------------------------------------------------------------------------------------------- the card
@dataclass(frozen=True)
class CardInputs:
    """Everything the model card says; gathered from a run folder by `card_inputs`."""

    repo_id: str
    kind: str | None  # "train" (GRPO / T-GRPO), "sft", or None (no training config found)
    config: Mapping[str, Any] = field(default_factory=dict)  # the resolved config ({} when none)
    scores: Sequence[Mapping[str, Any]] = ()  # scores.json summaries of evaluations of this model
    engine: Mapping[str, Any] | None = None  # engine.yaml of the run (engine, number of processes)
    version: str = __version__
    base_model_on_hub: bool = False  # config["model"] is a Hub id (not a local path): named in the metadata


def algorithm_name(kind: str | None, config: Mapping[str, Any]) -> str:
    """A reader's name for what trained the model."""
    if kind == "sft":
        return "SFT with LoRA (merged)" if config.get("lora") else "SFT (full fine-tuning)"
    if kind == "train":
        return {"tgrpo": "T-GRPO", "grpo": "GRPO"}.get(str(config.get("algorithm")), str(config.get("algorithm")))
    return "unknown (no training config beside the model)"


def key_settings(kind: str | None, config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of `config` that define the algorithm (the whole config follows in the card)."""
    keys = _RL_KEYS if kind == "train" else _SFT_KEYS if kind == "sft" else ()
    settings = {k: config[k] for k in keys if k in config}
    if kind == "train" and config.get("algorithm") == "tgrpo" and settings.get("num_shuffled_generations") is None:
        settings["num_shuffled_generations"] = f"{int(config.get('num_generations', 0)) // 2} (G // 2)"
    if kind == "train" and config.get("algorithm") != "tgrpo":
        for key in ("num_shuffled_generations", "shuffle_unit", "alpha", "mu", "temporal_comparison",
                    "temporal_bonus_mode"):
            settings.pop(key, None)
    if kind == "sft" and not config.get("lora"):
        for key in ("lora_rank", "lora_alpha"):
            settings.pop(key, None)
    video = config.get("video") or {}
    if video:
        settings["video"] = (f"{video.get('min_frames')}-{video.get('max_frames')} frames at {video.get('fps')} fps, "
                             f"<= {video.get('max_pixels')} pixels per frame")
    return settings


def _cell(value: Any) -> str:
    text = ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _pct(value: Any) -> str:
    return f"{100 * value:.1f}" if isinstance(value, (int, float)) else "n/a"


def _scores_table(scores: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["| benchmark | frames | official (%) | reference protocol (%) | items | errors |",
             "| --- | --- | --- | --- | --- | --- |"]
    for s in scores:
        video = (s.get("settings") or {}).get("video") or {}
        counts = s.get("counts") or {}
        lines.append(f"| {_cell(s.get('bench'))} | {_cell(video.get('max_frames', 'n/a'))} | "
                     f"{_pct((s.get('official') or {}).get('overall'))} | {_pct((s.get('reference') or {}).get('overall'))} "
                     f"| {_cell(counts.get('items', 'n/a'))} | {_cell(counts.get('errors', 'n/a'))} |")
    return lines


def model_card(inputs: CardInputs) -> str:
    """The README.md of the Hub repo: YAML metadata, training summary, key settings, eval scores, the config."""
    cfg, kind = inputs.config, inputs.kind
    meta: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": "video-text-to-text",
                            "tags": ["videor1", "video-r1", *([algorithm_name(kind, cfg).split(" ")[0].lower()]
                                                                if kind else [])]}
    if inputs.base_model_on_hub and cfg.get("model"):
        meta["base_model"] = str(cfg["model"])
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "", f"# {inputs.repo_id.split('/')[-1]}", "",
             f"Trained with videor1 {inputs.version}: {algorithm_name(kind, cfg)}.", ""]
    lines += ["## Training", "", "| | |", "| --- | --- |",
              f"| base model | {_cell(cfg.get('model', 'n/a'))} |",
              f"| data | {_cell(cfg.get('train_data', 'n/a'))} (media root: {_cell(cfg.get('media_root') or 'its folder')}) |",
              f"| algorithm | {_cell(algorithm_name(kind, cfg))} |",
              f"| videor1 version | {_cell(inputs.version)} |"]
    if inputs.engine:
        lines.append(f"| engine | {_cell(inputs.engine.get('engine'))}, {_cell(inputs.engine.get('num_processes'))} "
                     "process(es) |")
    settings = key_settings(kind, cfg)
    if settings:
        lines += ["", "### Key settings", "", "| setting | value |", "| --- | --- |"]
        lines += [f"| {k} | {_cell(v)} |" for k, v in settings.items()]
    lines += ["", "## Evaluation", ""]
    lines += _scores_table(inputs.scores) if inputs.scores else ["No evaluation of this model was found in its run "
                                                                  "folder."]
    if cfg:
        lines += ["", "## Config", "", "The resolved config of the run:", "", "```yaml",
                  yaml.safe_dump(dict(cfg), sort_keys=False).strip(), "```"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- the run folder
def locate(path: Path) -> tuple[Path, Path]:
    """(model directory, run folder) of `path`: a run folder with final/, or a model directory (config.json)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no such directory: {path}")
    if (path / "final" / "config.json").is_file():
        return path / "final", path
    if (path / "config.json").is_file():
        return path, path.parent
    raise FileNotFoundError(f"{path}: neither a run folder (no final/config.json) nor a model directory "
                            "(no config.json)")


def _same_dir(a: Any, b: Path) -> bool:
    try:
        return a is not None and Path(a).resolve() == b.resolve()
    except (OSError, TypeError):
        return False


def find_scores(folders: Sequence[Path], model_dir: Path, echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """The scores.json summaries under `folders` of evaluations of `model_dir` (others are named and left out),
    ordered by benchmark, then frames."""
    found = []
    paths = sorted({p.resolve() for folder in folders for p in Path(folder).rglob("scores.json")})
    for path in paths:
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            echo(f"push: {path} is not JSON; left out of the model card")
            continue
        if _same_dir((summary.get("settings") or {}).get("model"), model_dir):
            found.append(summary)
        else:
            echo(f"push: {path} evaluates another model; left out of the model card")
    return sorted(found, key=lambda s: (str(s.get("bench")), int(((s.get("settings") or {}).get("video") or {})
                                                                 .get("max_frames") or 0)))


def card_inputs(path: Path, repo_id: str, echo: Callable[[str], None] = print,
                evals: Sequence[Path] = ()) -> tuple[Path, CardInputs]:
    """(the model directory to upload, what its card says), read from the run folder of `path`; the eval
    scores come from the run folder and the folders `evals`."""
    for folder in evals:
        if not Path(folder).is_dir():
            raise NotADirectoryError(f"--evals {folder}: not a directory")
    model_dir, run = locate(path)
    kind, config = None, {}
    for name, what in CONFIG_FILES.items():
        if (run / name).is_file():
            kind, config = what, yaml.safe_load((run / name).read_text(encoding="utf-8")) or {}
            break
    if kind is None:
        echo(f"push: no {' or '.join(CONFIG_FILES)} in {run}; the model card has no training details")
    engine_file = run / "engine.yaml"
    engine = yaml.safe_load(engine_file.read_text(encoding="utf-8")) if engine_file.is_file() else None
    base = str(config.get("model") or "")
    on_hub = bool(_HUB_ID.match(base)) and not Path(base).exists()
    return model_dir, CardInputs(repo_id, kind, config, find_scores([run, *evals], model_dir, echo), engine,
                                 base_model_on_hub=on_hub)


# ---------------------------------------------------------------------------------------- uploading
def push(path: str | Path, repo_id: str, *, private: bool = False, evals: Sequence[Path] = (),
         echo: Callable[[str], None] = print) -> str:
    """Upload the model directory of `path` with its generated card to `repo_id` (eval scores from the run
    folder and `evals`); returns the repo URL."""
    check_repo_id(repo_id)
    model_dir, inputs = card_inputs(Path(path), repo_id, echo, [Path(e) for e in evals])
    card = model_card(inputs)
    files = sorted(p for p in model_dir.rglob("*") if p.is_file() and p.relative_to(model_dir).as_posix() != CARD_FILE)
    try:
        url = _upload(repo_id, model_dir, files, card, private=private)
    except _network_errors() as err:  # no network, no / a wrong token, a refused repo: one line, nothing hidden
        raise ConnectionError(f"push to {repo_id} failed: {type(err).__name__}: {err}") from err
    echo(f"pushed {model_dir} ({len(files)} files + {CARD_FILE}) to {url}")
    return url


def _network_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a failed Hub request raises: OSError (HfHubHTTPError, requests) and the transport errors of
    the HTTP client huggingface_hub uses (httpx2 for huggingface_hub 2.x, httpx for 1.x)."""
    import importlib

    errors: list[type[BaseException]] = [OSError]
    for name in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(name).HTTPError)
        except ImportError:
            continue
    return tuple(errors)


def _upload(repo_id: str, model_dir: Path, files: Sequence[Path], card: str, *, private: bool) -> str:
    """The one place that talks to the Hub: create the repo (if needed), then one commit of files + card."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi()
    url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    operations = [CommitOperationAdd(path_in_repo=p.relative_to(model_dir).as_posix(), path_or_fileobj=str(p))
                  for p in files]
    operations.append(CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=card.encode("utf-8")))
    api.create_commit(repo_id, operations=operations, commit_message=f"videor1 {__version__}: {model_dir.name}",
                      repo_type="model")
    return str(url)


def push_at_end(repo_id: str | None, out: Path, is_main: bool) -> None:
    """The trainers' `push_to_hub:` step after the final save: `push(out, repo_id)` on the main process."""
    if repo_id and is_main:
        try:
            push(out, repo_id)
        except ConnectionError as err:  # the model is saved: say how to push it again
            raise ConnectionError(f"{err} (the model is saved in {out / 'final'}; upload it later with "
                                  f"`videor1 push {out} --repo {repo_id}`)") from err
