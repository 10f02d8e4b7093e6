"""Rollout engines: sample completions for a batch of samples (RL rollouts, evaluation, annotation).

`HFEngine` runs transformers' `generate` (CPU or GPU). `VLLMEngine` adapts vLLM's offline `LLM`
(optional extra `videor1[vllm]`, imported lazily).

Conventions shared by both engines (where we depart from the reference, it is said here):

* A `Completion`'s `token_ids` are the generated ids up to and including the first end-of-sequence id
  (`<|im_end|>` or `<|endoftext|>`), nothing after it and no padding; `finished` is False when the
  generation hit `max_new_tokens` before any end id. `text` is the decode with special tokens skipped;
  `<think>`, `</think>`, `<answer>`, `</answer>` are ordinary added tokens and stay in the text. When the
  chat template's generation prompt ends inside `<think>` (Qwen3.5's), `text` starts with that opening
  (`videor1.model.inputs.think_opening`), so it is the whole response the rewards and reports read.
* Vision special tokens (`videor1.model.inputs.vision_token_ids`) are suppressed during sampling: a sampled
  `<|video_pad|>` would break the loss forward that follows (the reference did not guard this).
* Greedy when `do_sample` is False (temperature / top-p ignored). `top_k` is off unless set, so RL
  sampling is plain temperature + nucleus sampling (transformers' default top-k 50 is not applied, and a
  checkpoint's own generation_config, e.g. Qwen's temperature 0.1 / top-k 1 / repetition penalty, is
  never used implicitly).
* Seeds: with `SamplingParams.seed` set, `HFEngine` seeds a forked torch RNG before each generation
  chunk (seed + chunk index), so a call is reproducible and the caller's global RNG stream is left as it
  was; `VLLMEngine` gives every completion of a call its own vLLM seed (request i gets seed + i * n and
  vLLM seeds its j-th child seed + i * n + j, `vllm/v1/engine/parallel_sampling.py`), so repeated and
  shuffled copies of a prompt in one call never share a seed. Without a seed, sampling
  draws from the global RNG (HF) or vLLM's own. `HFEngine.generate_many` (the rollout server's batching of
  several requests into one call) draws each completion from its own generator seeded like vLLM's
  (seed + i * n + j), so a request's completions do not depend on the requests batched with it.
* For T-GRPO the caller passes samples whose clip is already permuted (`Clip.permuted`); both engines
  send exactly the frames of the sample, so shuffled rollouts really see shuffled frames.
* Behaviour log-probs (`Completion.logprobs`, one float per token of `token_ids`; what one-step off-policy
  training corrects with, `videor1.rl.async_rollouts`): `HFEngine` records log_softmax(logits / temperature)
  of each sampled token over the vocabulary with the vision special tokens suppressed, before top-k / top-p
  (`BehaviourLogprobs`; temperature 1 when greedy): the trainer's own log-probs (logits / temperature, full
  vocabulary) of the same weights differ only by the suppressed tokens' tiny mass and fp rounding.
  `VLLMEngine` asks vLLM for logprobs=0 (the sampled token's) in vLLM's default `raw_logprobs` mode:
  log_softmax of the logits before temperature and logit_bias, i.e. the same distribution at temperature 1
  (the default) only; `async_rollouts` refuses a vLLM server at another temperature (each engine's
  `behaviour_logprobs`, reported by the server's /health). A token the engine reports no log-prob for is NaN
  (the correction then weighs it 1).
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Callable, ContextManager, Iterable, Protocol, Sequence

import torch
from transformers import BatchFeature, GenerationConfig, PreTrainedModel, ProcessorMixin
from transformers.cache_utils import Cache
from transformers.generation.logits_process import (LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper,
                                                    TopKLogitsWarper, TopPLogitsWarper)

from videor1.model.families import check_prefix_sharing, shares_prefix_exactly
from videor1.model.inputs import Sample, encode, move_batch, repeat_rows, select_rows, think_opening, vision_token_ids
from videor1.model.positions import _backbones, install_mrope

END_TOKENS = ("<|im_end|>", "<|endoftext|>")
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. n completions per sample; greedy when do_sample is False.

    top_k 0 means off. seed None means unseeded (see the module doc for what a seed fixes).
    """

    n: int = 1
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    do_sample: bool = True
    top_k: int = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"SamplingParams.n must be >= 1, got {self.n}")
        if self.max_new_tokens < 1:
            raise ValueError(f"SamplingParams.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.do_sample and not self.temperature > 0:
            raise ValueError(f"SamplingParams.temperature must be > 0 when sampling, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"SamplingParams.top_k must be >= 0, got {self.top_k}")


@dataclass
class Completion:
    """One generated answer: decoded text and the generated token ids (see the module doc). The text starts
    with what the generation prompt left open (`videor1.model.inputs.think_opening`, e.g. "<think>\\n"), so
    it is the whole response; token_ids are the generated tokens only."""

    text: str
    token_ids: list[int]
    finished: bool = field(default=True)
    prompt_len: int | None = None  # tokens of the prompt the engine sampled from, vision tokens included (None:
    #                                 not reported; HFEngine samples from the loss's own encoded batch)
    logprobs: list[float] | None = None  # behaviour log-prob of each token of token_ids (module doc; None: not
    #                                      reported)


class RequestRejected(ValueError):
    """The engine refused a call because of what was asked (vLLM: a prompt longer than its `max_model_len`),
    not because it failed: the caller may retry the samples one by one to find the one refused."""


class RolloutEngine(Protocol):
    def generate(self, samples: list[Sample], params: SamplingParams) -> list[list[Completion]]:
        """For each sample, `params.n` completions (outer list: samples, in order). May raise `RequestRejected`."""
        ...


class ServableEngine(RolloutEngine, Protocol):
    """An engine a rollout server can serve: it also takes new weights as (name, tensor) pairs."""

    def load_weights(self, pairs: Iterable[tuple[str, torch.Tensor]]) -> None: ...


def end_token_ids(processor: ProcessorMixin, model: PreTrainedModel | None = None) -> list[int]:
    """<|im_end|> and <|endoftext|> ids, plus any eos id of the model's generation_config."""
    tokenizer = processor.tokenizer
    ids = [int(tokenizer.convert_tokens_to_ids(t)) for t in END_TOKENS]
    extra = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for tid in ([extra] if isinstance(extra, int) else list(extra or [])):
        if int(tid) not in ids:
            ids.append(int(tid))
    return ids


def check_prompt_lengths(samples: Sequence[Sample], groups: Sequence[Sequence[Completion]],
                        lengths: Sequence[int]) -> None:
    """Every completion's `prompt_len` (when the engine reports one) equals `lengths[i]`, the loss's prompt
    length of sample i with its vision tokens; else a RuntimeError naming the record: the engine saw other
    pixels (or another prompt) than the loss will score, i.e. off-policy rollouts."""
    for sample, group, length in zip(samples, groups, lengths):
        for completion in group:
            if completion.prompt_len is not None and completion.prompt_len != int(length):
                rid = getattr(sample.record, "problem_id", None)
                raise RuntimeError(
                    f"record {rid!r}: the rollout engine's prompt has {completion.prompt_len} tokens and the loss's "
                    f"{int(length)} (vision tokens included): the engine resized the media (or templated the "
                    "prompt) differently, so its completions were sampled from other inputs than the loss scores")


def trim_completion(ids: Sequence[int], end_ids: Iterable[int], pad_id: int | None = None) -> tuple[list[int], bool]:
    """Generated ids up to and including the first end id; (ids, finished). Padding after it is dropped."""
    ends = set(int(e) for e in end_ids)
    out: list[int] = []
    for tid in ids:
        tid = int(tid)
        out.append(tid)
        if tid in ends:
            return out, True
    if pad_id is not None:
        while out and out[-1] == pad_id and pad_id not in ends:
            out.pop()
    return out, False


class HFEngine:
    """Batched `model.generate` over samples (left padding), `batch_size` prompt rows per call.

    With n > 1 each prompt is prefilled once (vision tower included) and its KV cache repeated n times
    (`_prefill_once`), rather than relying on `num_return_sequences` (which repeats the prompt before the
    prefill); the row layout is explicit: completions of sample i are rows i*n..i*n+n-1. A family whose
    prefix sharing is not yet known exact (`videor1.model.families.check_prefix_sharing`: a hybrid decoder
    without a tested route) generates from the n repeated prompt rows instead.
    The model is put in eval mode for generation and returned to its previous mode afterwards. Pass the
    unwrapped model (`accelerator.unwrap_model(model)`), not a DDP / DeepSpeed wrapper. `autocast` (e.g.
    `accelerator.autocast`) wraps generation: RL rollouts then run in the numerics of the training forward
    (bf16 autocast over fp32 master weights), not in fp32.
    """

    # the temperatures at which `Completion.logprobs` are log_softmax(logits / temperature) (module doc)
    behaviour_logprobs = "any temperature"

    def __init__(self, model: PreTrainedModel, processor: ProcessorMixin, *, batch_size: int = 8,
                 autocast: Callable[[], ContextManager] | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = install_mrope(model)  # idempotent: models from `load_model` already have it
        self.processor = processor
        self.batch_size = batch_size
        self.end_ids = end_token_ids(processor, model)
        self.suppress_ids = vision_token_ids(processor)
        self.pad_id = int(processor.tokenizer.pad_token_id)
        self.opening = think_opening(processor)   # a text prefix the prompt already opened ("<think>\n")
        self.autocast = autocast or nullcontext

    def generate(self, samples: list[Sample], params: SamplingParams) -> list[list[Completion]]:
        """For each sample, `params.n` completions."""
        return self.generate_with_inputs(samples, params)[0]

    def generate_many(self, calls: Sequence[tuple[list[Sample], SamplingParams]]) -> list[list[list[Completion]]]:
        """Several requests in one batch (the rollout server's batching): their params must be equal but for
        the seed. Sampled rows draw from their own generators (`RowSampler`: request seed + i * n + j), so a
        request's completions do not depend on the requests batched with it, except through the fp rounding
        that a different left padding brings; they differ from `generate`'s draws (one seeded RNG per chunk).
        Greedy rows are `generate`'s."""
        params = calls[0][1] if calls else None
        if any(replace(p, seed=None) != replace(params, seed=None) for _, p in calls):
            raise ValueError("generate_many: the requests' SamplingParams must be equal except for the seed")
        samples = [s for group, _ in calls for s in group]
        if not samples:
            return [[] for _ in calls]
        seeds = [None if p.seed is None else int(p.seed) + k for group, p in calls for k in range(len(group) * p.n)]
        groups = self.generate_with_inputs(samples, params, row_seeds=seeds if params.do_sample else None)[0]
        out, start = [], 0
        for group, _ in calls:
            out.append(groups[start:start + len(group)])
            start += len(group)
        return out

    def generate_with_inputs(self, samples: list[Sample], params: SamplingParams, *,
                             row_seeds: Sequence[int | None] | None = None
                             ) -> tuple[list[list[Completion]], BatchFeature | None]:
        """Completions plus the encoded prompt batch they were generated from.

        The batch is `encode(processor, samples)` (left padded, B = len(samples) rows, on CPU), i.e. the
        exact input_ids and vision tensors (pixel_values*, *_grid_thw, second_per_grid_ts,
        mm_token_type_ids) the completions were sampled from. The RL trainer builds its loss input from
        it with `videor1.model.inputs.repeat_rows(batch, n)` and `videor1.model.inputs.append_tokens(...,
        [c.token_ids for group in completions for c in group], pad_id=...)`, so the loss forward sees
        the same frames (ordered or shuffled) and the same second_per_grid_ts as the rollout. With
        `row_seeds` (one per completion row, sample-major), rows sample through `RowSampler` instead of the
        chunk's seeded RNG.
        """
        if not samples:
            return [], None
        batch = encode(self.processor, samples, padding_side="left")
        warn_past_context(self.model, int(batch["input_ids"].shape[1]) + params.max_new_tokens)
        results: list[list[Completion]] = []
        for chunk_index, start in enumerate(range(0, len(samples), self.batch_size)):
            rows = list(range(start, min(start + self.batch_size, len(samples))))
            sub = select_rows(batch, rows)
            seeds = None if row_seeds is None else row_seeds[rows[0] * params.n:(rows[-1] + 1) * params.n]
            results.extend(self._generate_chunk(sub, params, chunk_index, seeds))
        return results, batch

    def _generate_kwargs(self, params: SamplingParams) -> dict[str, GenerationConfig]:
        config = GenerationConfig(
            max_new_tokens=params.max_new_tokens, do_sample=params.do_sample,
            temperature=params.temperature if params.do_sample else None,
            top_p=params.top_p if params.do_sample else None,
            top_k=params.top_k if params.do_sample else None,
            repetition_penalty=1.0, num_return_sequences=1,
            eos_token_id=self.end_ids, pad_token_id=self.pad_id, suppress_tokens=self.suppress_ids,
        )
        return {"generation_config": config}

    def _generate_chunk(self, sub: BatchFeature, params: SamplingParams, chunk_index: int,
                        row_seeds: Sequence[int | None] | None = None) -> list[list[Completion]]:
        n_rows = sub["input_ids"].shape[0]
        device = next(self.model.parameters()).device
        dtype = next(self.model.parameters()).dtype
        prompt_len = sub["input_ids"].shape[1]
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), _seeded(params.seed, chunk_index, device), self.autocast():
                if params.n > 1 and shares_prefix_exactly(self.model.config):
                    inputs = self._prefill_once(sub, params.n, device, dtype)
                elif params.n > 1:
                    inputs = move_batch(repeat_rows(sub, params.n), device, dtype)
                else:
                    inputs = move_batch(sub, device, dtype)
                # synced_gpus off: every process generates on its own (under ZeRO-3 the trainer gathers the
                # parameters first), and one with no prompt never calls generate
                recorder = BehaviourLogprobs(params.temperature if params.do_sample else 1.0)
                kwargs = {**self._generate_kwargs(params), "logits_processor": LogitsProcessorList([recorder])}
                if row_seeds is not None:   # the sampler picks each row's token; greedy then takes it
                    kwargs = {**self._generate_kwargs(replace(params, do_sample=False)), "logits_processor":
                              LogitsProcessorList([recorder, RowSampler(params, row_seeds, device)])}
                out = self.model.generate(**inputs, **kwargs, synced_gpus=False)
                logprobs = recorder.finish(out).tolist()
        finally:
            self.model.train(was_training)
        new_tokens = out[:, prompt_len:].tolist()
        completions = [self._completion(ids, lp) for ids, lp in zip(new_tokens, logprobs)]
        return [completions[i * params.n:(i + 1) * params.n] for i in range(n_rows)]

    def _prefill_once(self, sub: BatchFeature, n: int, device: torch.device, dtype: torch.dtype) -> dict:
        """Prefill each prompt once for its n samples: one forward over the B prompt rows minus their last
        token (vision tower included) fills the cache (keys and values; a hybrid decoder's conv and recurrent
        states too), which is repeated n times per row (`repeat_cache`); `generate` then
        starts from it on the B n rows (token tensors and grids repeated, no pixels) and computes only the
        last prompt token before sampling. The same logits as prefilling B n repeated rows up to fp
        rounding, and the same RNG draws (tests: identical seeded samples). Departs from
        `num_return_sequences`, which expands the inputs before the prefill."""
        check_prefix_sharing(self.model.config, "HF rollouts' prefill-once", "generate from repeated rows")
        inputs = move_batch(sub, device, dtype)
        if bool(inputs["mm_token_type_ids"][:, -1].any()):
            raise ValueError("prefill-once needs prompts ending in text (the generation prompt), not vision")
        head = dict(inputs)
        for key in ("input_ids", "attention_mask", "mm_token_type_ids"):
            head[key] = inputs[key][:, :-1]
        cache = self.model(**head, use_cache=True, logits_to_keep=1).past_key_values
        repeat_cache(cache, n)
        for backbone in _backbones(self.model):   # the M-RoPE offsets the prefill stored, one per row
            if getattr(backbone, "rope_deltas", None) is not None:
                backbone.rope_deltas = backbone.rope_deltas.repeat_interleave(n, dim=0)
        keys = ("input_ids", "attention_mask", "mm_token_type_ids", "image_grid_thw", "video_grid_thw",
                "second_per_grid_ts")   # each row holds one media item, so grids repeat like rows
        out = {key: inputs[key].repeat_interleave(n, dim=0) for key in keys if key in inputs}
        out["past_key_values"] = cache
        return out

    def load_weights(self, pairs: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy (name, tensor) pairs of a full HF state dict into the model one at a time, as they come (a
        stream holds no second copy of the model); every name and shape must match."""
        state, unexpected = self.model.state_dict(), []
        missing = set(state)
        with torch.no_grad():
            for name, tensor in pairs:
                if name not in state:
                    unexpected.append(name)
                    continue
                if tuple(tensor.shape) != tuple(state[name].shape):
                    raise ValueError(f"weight {name!r}: shape {list(tensor.shape)}, the served model's "
                                     f"{list(state[name].shape)}")
                state[name].copy_(tensor)
                missing.discard(name)
        if missing or unexpected:
            raise ValueError(f"weights do not match the served model: missing {sorted(missing)[:5]}, "
                             f"unexpected {sorted(unexpected)[:5]}")

    def _completion(self, ids: list[int], logprobs: list[float] | None = None) -> Completion:
        token_ids, finished = trim_completion(ids, self.end_ids, self.pad_id)
        text = self.opening + self.processor.tokenizer.decode(token_ids, skip_special_tokens=True)
        kept = logprobs[:len(token_ids)] if logprobs is not None else None
        return Completion(text=text, token_ids=token_ids, finished=finished, logprobs=kept)


def warn_past_context(model: PreTrainedModel, length: int) -> None:
    """Warns (once per model) when prompt + completion run past the model's max_position_embeddings: HF
    generates there anyway (vLLM refuses, `RequestRejected`), with positions the model was not trained on."""
    config = getattr(model.config, "text_config", None) or model.config
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and length > limit and id(model) not in _WARNED:
        _WARNED.add(id(model))
        _log.warning("prompt + max_new_tokens = %d tokens, more than the model's max_position_embeddings %d: "
                     "positions past it were not trained (fewer frames or pixels keep inside it)", length, limit)


_WARNED: set[int] = set()   # id() of the models warned about


def repeat_cache(cache: Cache, n: int) -> None:
    """Repeat every row of a prefilled cache n times in place (row i -> rows i n .. i n + n - 1): attention
    layers' keys and values (`batch_repeat_interleave`), and linear-attention layers' conv and recurrent
    states (Qwen3.5's Gated DeltaNet; transformers' `batch_repeat_interleave` has no such layer method).
    ValueError for a layer holding neither."""
    for index, layer in enumerate(cache.layers):
        states = [getattr(layer, name) for name in ("conv_states", "recurrent_states") if hasattr(layer, name)]
        for per_state in states:    # {state index: tensor [B, ...] or None before first use}
            for key, value in per_state.items():
                if value is not None:
                    per_state[key] = value.repeat_interleave(n, dim=0)
        if hasattr(layer, "batch_repeat_interleave"):
            layer.batch_repeat_interleave(n)
        elif not states:
            raise ValueError(f"cannot repeat cache layer {index} ({type(layer).__name__}) for prefill-once")


class RowSampler(LogitsProcessor):
    """Samples every row's next token from its own `torch.Generator` (seeded; None: the global RNG) after
    transformers' own temperature / top-k / top-p warpers with the settings `HFEngine` gives `generate`, and
    returns scores that are 0 at the chosen token and -inf elsewhere, for a greedy `generate` to pick.
    Each row's draws depend only on its seed and its own distributions, not on the other rows."""

    def __init__(self, params: SamplingParams, seeds: Sequence[int | None], device: torch.device) -> None:
        self.warpers = LogitsProcessorList()
        if params.temperature != 1.0:
            self.warpers.append(TemperatureLogitsWarper(params.temperature))
        if params.top_k > 0:
            self.warpers.append(TopKLogitsWarper(top_k=params.top_k))
        if params.top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p=params.top_p))
        self.generators = [None if seed is None else torch.Generator(device).manual_seed(int(seed) % (1 << 63))
                           for seed in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[0] != len(self.generators):
            raise ValueError(f"RowSampler holds {len(self.generators)} generators for {scores.shape[0]} rows")
        probs = torch.softmax(self.warpers(input_ids, scores).float(), dim=-1)
        picks = torch.cat([torch.multinomial(probs[r], 1, generator=g) for r, g in enumerate(self.generators)])
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(len(picks), device=scores.device), picks] = 0.0
        return out


class BehaviourLogprobs(LogitsProcessor):
    """Records the behaviour log-prob of every sampled token and leaves the scores as they are. transformers
    runs a caller's processors after its own suppress-tokens processor and before the temperature / top-k /
    top-p warpers (`GenerationMixin._get_logits_processor`; `RowSampler` comes after this one), so it sees
    the logits with the vision tokens suppressed; it keeps log_softmax(scores / temperature) of the last step only (one [B, V]
    tensor) and takes each sampled token's entry at the next call, when the token is in `input_ids`."""

    def __init__(self, temperature: float) -> None:
        self.temperature = float(temperature)
        self.last: torch.Tensor | None = None
        self.taken: list[torch.Tensor] = []

    def _take(self, tokens: torch.Tensor) -> None:
        if self.last is not None:
            self.taken.append(self.last.gather(1, tokens.view(-1, 1).to(self.last.device)).squeeze(1).cpu())

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self._take(input_ids[:, -1])
        self.last = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        """[B, T] log-probs of the T generated tokens, `sequences` being generate's output."""
        self._take(sequences[:, -1])
        self.last = None
        return torch.stack(self.taken, dim=1) if self.taken else torch.zeros(sequences.shape[0], 0)


class _seeded:
    """Context: fork the torch RNG (CPU + the device's) and seed it; no-op when seed is None."""

    def __init__(self, seed: int | None, offset: int, device: torch.device) -> None:
        self.seed, self.offset, self.device = seed, offset, device
        self._fork = None

    def __enter__(self) -> None:
        if self.seed is None:
            return
        devices = [self.device] if self.device.type == "cuda" else []
        self._fork = torch.random.fork_rng(devices=devices)
        self._fork.__enter__()
        torch.manual_seed(int(self.seed) + int(self.offset))

    def __exit__(self, *exc: object) -> None:
        if self._fork is not None:
            self._fork.__exit__(*exc)


_VLLM_NAMES = ("VLLMEngine", "in_process", "llm_constructor_kwargs")


def __getattr__(name: str) -> object:
    """vLLM's engine lives in `videor1.generation.vllm_engine` (which imports this module); its names are
    served from here too, lazily, so `from videor1.generation.engines import VLLMEngine` keeps working."""
    if name in _VLLM_NAMES:
        from videor1.generation import vllm_engine

        return getattr(vllm_engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
