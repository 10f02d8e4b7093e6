"""`SFTConfig`: every key of an SFT cold-start run (loaded by `videor1.config.load_config`; see configs/sft_*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal, Union

from videor1.config import ConfigError
from videor1.data.media import ImageSpec, VideoSpec
from videor1.data.prompts import TEMPLATES
from videor1.hub import check_repo_id
from videor1.limits import InputLimits
from videor1.sft.lora import LORA_DEFAULT_TARGETS
from videor1.trackers import REPORT_TO_DEFAULT, check_report_to

__all__ = ["LORA_DEFAULT_TARGETS", "SFTConfig"]


@dataclass(frozen=True)
class SFTConfig:
    """Every key of an SFT run (YAML + key=value overrides; see configs/sft_*.yaml)."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"tensorboard": "report_to: [tensorboard] (or [] for none)"}

    model: str  # HF directory of the starting model (e.g. Qwen2.5-VL-7B-Instruct, or a tiny model)
    train_data: str  # CoT records (JSON list or JSONL); every record needs `process`
    output_dir: str  # checkpoints, metrics.jsonl, tensorboard/, skipped.jsonl, curves.png, final/
    media_root: str | None = None  # directory the records' `path` is relative to (default: train_data's dir)
    seed: int = 0  # data order, LoRA init, dropout
    num_epochs: float = 1.0  # passes over the data (used when max_steps is not set; may be fractional)
    max_steps: int | None = None  # optimizer steps; overrides num_epochs (the data order wraps into new epochs)
    per_device_batch_size: int = 1  # samples per micro-batch on each process
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step
    learning_rate: float = 1e-6  # peak learning rate (reference: 1e-6)
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = "cosine"
    warmup_ratio: float = 0.0  # fraction of the steps with linear warm-up
    weight_decay: float = 0.0  # AdamW decoupled weight decay (not on biases and norm weights)
    adam_betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas
    max_grad_norm: float = 1.0  # clip the global grad norm to this (0: no clipping, norm still logged)
    video: VideoSpec = field(default_factory=VideoSpec)  # frame sampling and pixel budget of videos
    image: ImageSpec = field(default_factory=ImageSpec)  # pixel budget of images
    max_length: int = 16384  # most tokens in one sample (prompt + vision + response); longer ones are skipped
    limits: InputLimits = field(default_factory=InputLimits)  # input limits checked before decoding / tokenising
    #                 (videor1.limits: record size, depth, options, aspect ratio, pixels, max_prompt_chars)
    system_prompt: str | None = field(default_factory=lambda: TEMPLATES["sft_system_prompt"])  # None: template default
    lora: bool = False  # train LoRA adapters instead of all weights (merged into the final directory)
    lora_rank: int = 64  # LoRA rank r
    lora_alpha: float = 128.0  # LoRA scaling numerator (scale = alpha / r)
    lora_dropout: float = 0.05  # dropout on the LoRA branch input
    lora_target_modules: tuple[str, ...] = ()  # module names that get adapters; empty: the model family's
    #                 LORA_TARGETS (Qwen2.5-VL's: LORA_DEFAULT_TARGETS; Qwen3.5 adds its Gated DeltaNet projections)
    lora_include_vision: bool = False  # also adapt matching modules of the vision tower (vLLM cannot serve these)
    freeze_vision: bool = False  # full fine-tuning only: keep the vision tower frozen
    model_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: fp32; bf16 base for LoRA+bf16
    bf16: Union[bool, Literal["auto"]] = "auto"  # bf16 mixed precision: true, false, or auto (where supported)
    gradient_checkpointing: bool = False  # recompute activations in backward (saves memory)
    save_steps: int = 500  # write checkpoint-<step> every this many optimizer steps (0: only the final model)
    save_total_limit: int | None = 2  # keep only the newest N checkpoints (None: keep all)
    logging_steps: int = 1  # write a metrics line every this many steps (loss: token mean over the interval)
    resume: Union[bool, str] = False  # true: continue from the newest checkpoint in output_dir (fresh if none);
    #                 false: start fresh (refused if output_dir holds checkpoints); a path: continue from it
    overwrite: bool = False  # a fresh run into an output_dir holding an earlier run (final/, metrics, checkpoints)
    #                 replaces it; false: refused, never silently overwritten
    num_workers: int = 0  # DataLoader worker processes decoding media
    num_threads: int | None = None  # torch CPU threads (None: torch's default; 1 is fastest for tiny models)
    max_skipped_fraction: float = 0.5  # stop when more than this fraction of the samples seen were skipped
    report_to: tuple[str, ...] = REPORT_TO_DEFAULT  # trackers mirroring metrics.jsonl: tensorboard, wandb (the
    #                 optional extra videor1[wandb]; project $WANDB_PROJECT); [] for none (videor1.trackers)
    push_to_hub: str | None = None  # Hub repo id ("user/name") the final model and a generated model card are
    #                 uploaded to at the end of the run (main process; `videor1 push`); None: not uploaded
    progress: bool = True  # tqdm progress bar on the main process
    # --- sequence parallelism (videor1.parallel.sequence: DeepSpeed Ulysses, DeepSpeed engine only)
    sequence_parallel_size: int = 1  # processes sharing each forward's sequence (1: off); they form one
    #                 data-parallel rank (same samples); must divide the process count and the model's heads and
    #                 KV heads; sdpa text attention. Tested on CPU / gloo only (float32 / float64)

    def validate(self) -> None:
        positive = {"per_device_batch_size": self.per_device_batch_size,
                    "gradient_accumulation_steps": self.gradient_accumulation_steps,
                    "logging_steps": self.logging_steps, "max_length": self.max_length,
                    "learning_rate": self.learning_rate, "num_epochs": self.num_epochs, "lora_rank": self.lora_rank}
        for key, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{key} must be > 0, got {value}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1 or unset, got {self.max_steps}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ConfigError(f"num_threads must be >= 1 or unset, got {self.num_threads}")
        if min(self.weight_decay, self.max_grad_norm, self.num_workers, self.save_steps) < 0:
            raise ConfigError("weight_decay, max_grad_norm, num_workers and save_steps must be >= 0")
        if not 0.0 <= self.lora_dropout < 1.0 or not 0.0 <= self.max_skipped_fraction <= 1.0:
            raise ConfigError("lora_dropout must be in [0, 1) and max_skipped_fraction in [0, 1]")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise ConfigError(f"save_total_limit must be >= 1 or unset, got {self.save_total_limit}")
        if self.sequence_parallel_size < 1:
            raise ConfigError(f"sequence_parallel_size must be >= 1, got {self.sequence_parallel_size}")
        check_report_to(self.report_to)
        check_repo_id(self.push_to_hub)
