"""Rollout engines: sample completions for a batch of samples (RL rollouts, evaluation, annotation).

`HFEngine` runs transformers' `generate` (CPU or GPU). `VLLMEngine` adapts vLLM's offline `LLM`
(optional extra `videor1[vllm]`, imported lazily).

Conventions shared by both engines (where we depart from the reference, it is said here):

* A `Completion`'s `token_ids` are the generated ids up to and including the first end-of-sequence id
  (`<|im_end|>` or `<|endoftext|>`), nothing after it and no padding; `finished` is False when the
  generation hit `max_new_tokens` before any end id. `text` is the decode with special tokens skipped;
  `<think>`, `</think>`, `<answer>`, `</answer>` are ordinary added tokens and stay in the text.
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
  draws from the global RNG (HF) or vLLM's own.
* For T-GRPO the caller passes samples whose clip is already permuted (`Clip.permuted`); both engines
  send exactly the frames of the sample, so shuffled rollouts really see shuffled frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Iterable, Protocol, Sequence

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature, GenerationConfig, PreTrainedModel, ProcessorMixin

from videor1.generation.vllm_worker import RPC_METHOD, WORKER_EXTENSION
from videor1.generation.weights import full_state_items
from videor1.model.families import family_of_processor
from videor1.model.inputs import Sample, encode, move_batch, repeat_rows, select_rows, vision_token_ids
from videor1.model.positions import install_mrope

END_TOKENS = ("<|im_end|>", "<|endoftext|>")


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
    """One generated answer: decoded text and the generated token ids (see the module doc)."""

    text: str
    token_ids: list[int]
    finished: bool = field(default=True)


class RolloutEngine(Protocol):
    def generate(self, samples: list[Sample], params: SamplingParams) -> list[list[Completion]]:
        """For each sample, `params.n` completions (outer list: samples, in order)."""
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

    Each sample's prompt row is repeated n times (vision tensors included) rather than relying on
    `num_return_sequences`, so the row layout is explicit: completions of sample i are rows i*n..i*n+n-1.
    The model is put in eval mode for generation and returned to its previous mode afterwards. Pass the
    unwrapped model (`accelerator.unwrap_model(model)`), not a DDP / DeepSpeed wrapper.
    """

    def __init__(self, model: PreTrainedModel, processor: ProcessorMixin, *, batch_size: int = 8) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = install_mrope(model)  # idempotent: models from `load_model` already have it
        self.processor = processor
        self.batch_size = batch_size
        self.end_ids = end_token_ids(processor, model)
        self.suppress_ids = vision_token_ids(processor)
        self.pad_id = int(processor.tokenizer.pad_token_id)

    def generate(self, samples: list[Sample], params: SamplingParams) -> list[list[Completion]]:
        """For each sample, `params.n` completions."""
        return self.generate_with_inputs(samples, params)[0]

    def generate_with_inputs(self, samples: list[Sample], params: SamplingParams
                             ) -> tuple[list[list[Completion]], BatchFeature | None]:
        """Completions plus the encoded prompt batch they were generated from.

        The batch is `encode(processor, samples)` (left padded, B = len(samples) rows, on CPU), i.e. the
        exact input_ids and vision tensors (pixel_values*, *_grid_thw, second_per_grid_ts,
        mm_token_type_ids) the completions were sampled from. The RL trainer builds its loss input from
        it with `videor1.model.inputs.repeat_rows(batch, n)` and `videor1.model.inputs.append_tokens(...,
        [c.token_ids for group in completions for c in group], pad_id=...)`, so the loss forward sees
        the same frames (ordered or shuffled) and the same second_per_grid_ts as the rollout.
        """
        if not samples:
            return [], None
        batch = encode(self.processor, samples, padding_side="left")
        results: list[list[Completion]] = []
        for chunk_index, start in enumerate(range(0, len(samples), self.batch_size)):
            rows = list(range(start, min(start + self.batch_size, len(samples))))
            sub = select_rows(batch, rows)
            results.extend(self._generate_chunk(sub, params, chunk_index))
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

    def _generate_chunk(self, sub: BatchFeature, params: SamplingParams, chunk_index: int) -> list[list[Completion]]:
        n_rows = sub["input_ids"].shape[0]
        inputs = repeat_rows(sub, params.n) if params.n > 1 else sub
        device = next(self.model.parameters()).device
        dtype = next(self.model.parameters()).dtype
        inputs = move_batch(inputs, device, dtype)
        prompt_len = inputs["input_ids"].shape[1]
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), _seeded(params.seed, chunk_index, device):
                # synced_gpus off: every process generates on its own (under ZeRO-3 the trainer gathers the
                # parameters first), and one with no prompt never calls generate
                out = self.model.generate(**inputs, **self._generate_kwargs(params), synced_gpus=False)
        finally:
            self.model.train(was_training)
        new_tokens = out[:, prompt_len:].tolist()
        completions = [self._completion(ids) for ids in new_tokens]
        return [completions[i * params.n:(i + 1) * params.n] for i in range(n_rows)]

    def load_weights(self, pairs: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy (name, tensor) pairs of a full HF state dict into the model (every name must match)."""
        missing, unexpected = self.model.load_state_dict(dict(pairs), strict=False)
        if missing or unexpected:
            raise ValueError(f"weights do not match the served model: missing {sorted(missing)[:5]}, "
                             f"unexpected {sorted(unexpected)[:5]}")

    def _completion(self, ids: list[int]) -> Completion:
        token_ids, finished = trim_completion(ids, self.end_ids, self.pad_id)
        text = self.processor.tokenizer.decode(token_ids, skip_special_tokens=True)
        return Completion(text=text, token_ids=token_ids, finished=finished)


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


# ----------------------------------------------------------------------------------------------- vLLM
class VLLMEngine:
    """Rollouts with vLLM's offline engine. NOT RUN ON A GPU YET: written against vLLM's public API and
    tested only with a stand-in `llm` object that records the calls (vLLM needs CUDA; this project's CI
    has none).

    What it sends, per sample, to `llm.generate(requests, sampling_params=[...], use_tqdm=False)`:

    * `{"prompt": chat-template text with one <|vision_start|><|video_pad|><|vision_end|> (or image)
      placeholder, "multi_modal_data": {"video": (frames uint8 [T, H, W, 3], metadata)} or
      {"image": PIL image}, "mm_processor_kwargs": {"fps": sample_fps, "do_sample_frames": False}}`.
      `metadata` = the family's `video_metadata(clip)` + "duration" (total_num_frames / fps) and
      "video_backend": "videor1". Qwen2.5-VL: {"fps": sample_fps, "total_num_frames": T,
      "frames_indices": range(T), "duration": T / sample_fps, ...}; Qwen3-VL: the source fps, frame
      indices and frame count (its prompt timestamps come from them). Recent vLLM reads the sampled fps of
      Qwen2.5-VL videos from it (second_per_grid_ts = 2 / fps); older vLLM + transformers read the
      `fps` processor kwarg instead. Metadata is always sent: vLLM 0.33's Qwen2.5-VL processor sets
      `video_needs_metadata=True` and its parser refuses bare frames (`vllm/multimodal/parse.py`).
      Frames are never resampled or resized by vLLM (`do_sample_frames` False; our frames are already
      multiples of 28 within the budget, provided the checkpoint's processor pixel limits admit them:
      `mm_processor_kwargs` given to the constructor are added to every request, e.g. the pixel limits
      your vLLM version accepts). T-GRPO's shuffled clips are sent as given.
    * one `vllm.SamplingParams` per request: n, temperature (0 when greedy), top_p (1 when greedy),
      top_k (only when > 0), max_tokens, seed (params.seed + sample index * n, when set: one seed per
      completion, see the module doc),
      stop_token_ids = the end ids, logit_bias -100 on the vision special tokens, skip_special_tokens.

    Weight sync for RL (`sync_weights(model)` / `load_weights(pairs)`): always
    `llm.collective_rpc(rpc_method, args=(pairs,))`, which reaches every worker (tensor parallel included)
    whatever the executor; the method is `videor1.generation.vllm_worker`'s extension (the engine is built
    with `worker_extension_cls` = it; an `llm` you build yourself needs it too, or pass your own
    `rpc_method`). Tensors stay where they are for an in-process engine (`external_launcher`, or
    `VLLM_ENABLE_V1_MULTIPROCESSING=0`) and go as CPU tensors through a multi-process one (its msgpack
    encoder takes no CUDA tensor). vLLM's Qwen2.5-VL maps HF names itself. Then `llm.reset_prefix_cache()`
    so no cached prefix computed with the old weights is reused. `sync_weights` gathers ZeRO-3 / FSDP2
    parameters first (`videor1.generation.weights.full_state_items`; collective: every rank calls it).

    Server mode (not wrapped here): run `vllm serve MODEL_DIR --limit-mm-per-prompt '{"video": 1}'` and
    POST OpenAI chat requests to `/v1/chat/completions` with a `video_url` content item (a file or
    base64 data URL) plus `extra_body={"mm_processor_kwargs": {"fps": ..., "do_sample_frames": False}}`
    and `n`, `temperature`, `top_p`, `max_tokens`, `seed`; that path re-decodes the video on the server,
    so pre-sampled and shuffled frames (T-GRPO) need the offline engine above.
    """

    def __init__(self, processor: ProcessorMixin, *, llm: Any = None, model_path: str | None = None,
                 sampling_params_cls: Callable[..., Any] | None = None, video_metadata: bool = True,
                 rpc_method: str | None = None, llm_kwargs: dict | None = None,
                 mm_processor_kwargs: dict | None = None) -> None:
        if not video_metadata:
            raise ValueError("video_metadata must be true: vLLM 0.33's Qwen2.5-VL parser refuses frames without "
                             "metadata (video_needs_metadata)")
        if llm is None:
            if model_path is None:
                raise ValueError("VLLMEngine needs an `llm` object or a `model_path`")
            vllm = _import_vllm()
            llm = vllm.LLM(model=str(model_path), **llm_constructor_kwargs(llm_kwargs))
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

    def request(self, sample: Sample) -> dict[str, Any]:
        """The vLLM prompt dict of one sample (see the class doc)."""
        text = self.processor.apply_chat_template(sample.messages, tokenize=False, add_generation_prompt=True)
        media = sample.media
        frames = getattr(media, "frames", None)
        if frames is not None:
            fps = float(media.sample_fps)
            if not fps > 0:
                raise ValueError(f"record {getattr(sample.record, 'problem_id', None)!r}: sample_fps must be > 0")
            meta = dict(self.family.video_metadata(media))
            meta.update(duration=meta["total_num_frames"] / meta["fps"], video_backend="videor1")
            return {"prompt": text, "multi_modal_data": {"video": (frames, meta)},
                    "mm_processor_kwargs": {"fps": fps, "do_sample_frames": False, **self.extra_mm_kwargs}}
        if isinstance(media, np.ndarray) and media.ndim == 3:
            request = {"prompt": text, "multi_modal_data": {"image": Image.fromarray(media)}}
            if self.extra_mm_kwargs:
                request["mm_processor_kwargs"] = dict(self.extra_mm_kwargs)
            return request
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
        }
        if params.do_sample and params.top_k > 0:
            kwargs["top_k"] = params.top_k
        if params.seed is not None:
            kwargs["seed"] = int(params.seed) + index * params.n
        return self.sampling_params_cls(**kwargs)

    def generate(self, samples: list[Sample], params: SamplingParams) -> list[list[Completion]]:
        """For each sample, `params.n` completions, in sample order."""
        if not samples:
            return []
        requests = [self.request(s) for s in samples]
        sampling = [self.sampling_params(params, i) for i in range(len(samples))]
        outputs = self.llm.generate(requests, sampling_params=sampling, use_tqdm=False)
        if len(outputs) != len(samples):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(samples)} requests")
        return [[self._completion(o) for o in out.outputs] for out in outputs]

    def _completion(self, output: Any) -> Completion:
        ids, finished = trim_completion(list(output.token_ids), self.end_ids)
        if not finished and getattr(output, "finish_reason", None) == "stop":
            stop = getattr(output, "stop_reason", None)
            if isinstance(stop, int) and stop in self.end_ids:  # vLLM may leave the stop id out
                ids, finished = ids + [stop], True
        return Completion(text=output.text, token_ids=ids, finished=finished)

    def sync_weights(self, model: torch.nn.Module, accelerator: Any = None, *, chunk_bytes: int = 1 << 30) -> None:
        """Copy the policy's current weights into the vLLM engine, in chunks of about `chunk_bytes` (see the
        class doc). With sharded parameters (ZeRO-3 / FSDP2) every rank must call this."""
        chunk: list[tuple[str, torch.Tensor]] = []
        size = 0
        for name, tensor in full_state_items(model, accelerator):
            chunk.append((name, tensor))
            size += tensor.numel() * tensor.element_size()
            if size >= chunk_bytes:
                self._send(chunk)
                chunk, size = [], 0
        if chunk:
            self._send(chunk)
        self.llm.reset_prefix_cache()

    def load_weights(self, pairs: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load (name, tensor) pairs of an HF state dict into the engine's model (see the class doc)."""
        self._send(list(pairs))
        self.llm.reset_prefix_cache()

    def _send(self, pairs: list[tuple[str, torch.Tensor]]) -> None:
        if not in_process(self.llm):
            pairs = [(name, t.detach().to("cpu").contiguous()) for name, t in pairs]
        self.llm.collective_rpc(self.rpc_method, args=(pairs,))


def llm_constructor_kwargs(llm_kwargs: dict | None = None) -> dict[str, Any]:
    """Keyword arguments for `vllm.LLM(model=...)`: one image or video per prompt, remote code off, the weight
    sync extension (`videor1.generation.vllm_worker`), then `llm_kwargs` (which win)."""
    return {"limit_mm_per_prompt": {"image": 1, "video": 1}, "trust_remote_code": False,
            "worker_extension_cls": WORKER_EXTENSION, **(llm_kwargs or {})}


def in_process(llm: Any) -> bool:
    """Whether the engine's workers live in this process (vLLM V1 without multiprocessing, e.g. the
    `external_launcher` executor): then RPC arguments are not serialised and CUDA tensors may be passed."""
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
        raise ImportError("VLLMEngine needs vLLM (pip install 'videor1[vllm]', CUDA only)") from err
    return vllm
