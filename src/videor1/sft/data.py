"""The data side of SFT: a seeded, resumable sample order, a dataset that decodes media per sample, a
collate that encodes a micro-batch with its labels, and the token loss.

- **Order.** Epoch `e` visits the records in `numpy.random.default_rng([seed, e]).permutation(n)`. One
  optimizer step consumes one *global batch* of `per_device_batch_size * gradient_accumulation_steps *
  num_processes` records; micro-batch `i` of rank `r` takes the slice starting at
  `(i * num_processes + r) * per_device_batch_size` of that global batch, so the records of a step do
  not depend on how they are split into micro-batches and processes. The incomplete global batch at the
  end of an epoch is dropped (every step sees a full batch). The data position is therefore just the
  optimizer step: resuming at step `k` replays exactly the batches an uninterrupted run would see.
- **Targets.** The assistant turn is `process + "\\n" + solution` (`<think>…</think>\\n<answer>…</answer>`);
  `videor1.model.inputs.encode` sets labels to -100 on every prompt, vision and padding token. Where we depart
  from the reference: it also trained on the prompt and vision pad tokens; we train on the response only.
- **Bad samples.** A record without `process`, media that will not decode, a sample the processor
  refuses, or a sample longer than `max_length` tokens (vision tokens are never cut: the sample is
  dropped whole) is reported as a `Skipped` and left out of its micro-batch, never replaced.
- **Loss.** `token_nll` returns the summed next-token negative log-likelihood and the number of target
  tokens, so the loop can normalise by the target tokens of the whole optimizer step (all micro-batches,
  all processes): batch 4 x accumulation 1 and batch 1 x accumulation 4 give the same gradient.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from transformers import ProcessorMixin

from videor1.data.media import ImageSpec, MediaError, VideoSpec
from videor1.data.records import Record, RecordError
from videor1.model.inputs import Sample, encode, make_sample
from videor1.train.logprobs import token_logprobs

IGNORE_INDEX = -100


# -------------------------------------------------------------------------------------------- order
@dataclass(frozen=True)
class DataPlan:
    """Which records every micro-batch of every optimizer step holds, for one rank."""

    n_records: int
    seed: int
    micro_batch: int  # per_device_batch_size
    accumulation: int  # gradient_accumulation_steps
    world: int = 1  # number of processes
    rank: int = 0

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.accumulation * self.world

    @property
    def steps_per_epoch(self) -> int:
        return self.n_records // self.global_batch

    def check(self) -> None:
        """Refuse a plan with no complete step per epoch (naming the sizes)."""
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"{self.n_records} usable records are fewer than one global batch of {self.global_batch} "
                f"(per_device_batch_size {self.micro_batch} x gradient_accumulation_steps {self.accumulation}"
                f" x {self.world} processes)")

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The permutation of record indices for `epoch` (0-based)."""
        return np.random.default_rng([self.seed, epoch]).permutation(self.n_records)

    def step_micro_batches(self, step: int) -> list[list[int]]:
        """The `accumulation` micro-batches (record indices) of this rank at optimizer step `step` (0-based)."""
        epoch, k = divmod(step, self.steps_per_epoch)
        order = self.epoch_order(epoch)
        start = k * self.global_batch
        out = []
        for i in range(self.accumulation):
            lo = start + (i * self.world + self.rank) * self.micro_batch
            out.append([int(j) for j in order[lo:lo + self.micro_batch]])
        return out

    def epoch_of(self, step: int) -> float:
        """Fractional epoch reached after `step` optimizer steps."""
        return step / self.steps_per_epoch


class StepBatchSampler:
    """A `batch_sampler` for DataLoader: the micro-batches of steps `start .. end-1`, in order."""

    def __init__(self, plan: DataPlan, start: int, end: int):
        self.plan, self.start, self.end = plan, start, end

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.end):
            yield from self.plan.step_micro_batches(step)

    def __len__(self) -> int:
        return max(0, self.end - self.start) * self.plan.accumulation


# ------------------------------------------------------------------------------------------ samples
@dataclass(frozen=True)
class Skipped:
    """A sample left out of training, with the reason (written to skipped.jsonl by the loop)."""

    record_id: str
    reason: str
    path: str | None = None


def response_text(record: Record) -> str:
    """The assistant turn SFT trains on: `process` + newline + `solution`."""
    if not record.process:
        raise RecordError("SFT needs a `process` (<think>...</think>) on every record", record_id=record.problem_id,
                          field="process")
    return record.process + "\n" + record.solution


class SFTDataset(torch.utils.data.Dataset):
    """Record `i` -> (Sample, response) with decoded media, or a `Skipped` when it cannot be used."""

    def __init__(self, records: Sequence[Record], media_root: str, video: VideoSpec, image: ImageSpec,
                 system_prompt: str | None):
        self.records = list(records)
        self.media_root, self.video, self.image = media_root, video, image
        self.system_prompt = system_prompt

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[Sample, str] | Skipped:
        record = self.records[i]
        try:
            response = response_text(record)
            sample = make_sample(record, self.media_root, self.video, self.image, system_prompt=self.system_prompt)
        except (MediaError, RecordError) as exc:
            return Skipped(record.problem_id, str(exc), record.path)
        return sample, response


# ------------------------------------------------------------------------------------------ collate
@dataclass
class MicroBatch:
    """One encoded micro-batch. `inputs` is None when every sample in it was skipped."""

    inputs: dict[str, torch.Tensor] | None
    n_samples: int
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def n_targets(self) -> int:
        """Target tokens (labels other than -100 after the next-token shift)."""
        if self.inputs is None:
            return 0
        return int((self.inputs["labels"][:, 1:] != IGNORE_INDEX).sum())

    @property
    def n_tokens(self) -> int:
        """Non-padding tokens (prompt, vision and response)."""
        return 0 if self.inputs is None else int(self.inputs["attention_mask"].sum())


def _encode(processor: ProcessorMixin, pairs: Sequence[tuple[Sample, str]]) -> dict[str, torch.Tensor]:
    samples = [s for s, _ in pairs]
    responses = [r for _, r in pairs]
    batch = dict(encode(processor, samples, responses=responses, padding_side="right"))
    batch.pop("completion_mask", None)  # the labels say the same; the model takes no such input
    return batch


def _encode_each(processor: ProcessorMixin, pairs: list[tuple[Sample, str]], max_length: int
                 ) -> tuple[list[tuple[Sample, str]], list[Skipped]]:
    """Encode samples one by one; keep those the processor accepts and that fit in `max_length` tokens."""
    kept, skipped = [], []
    for sample, response in pairs:
        rid, path = sample.record.problem_id, sample.record.path
        try:
            n = int(_encode(processor, [(sample, response)])["attention_mask"].sum())
        except (ValueError, RuntimeError, MediaError) as exc:
            skipped.append(Skipped(rid, f"the processor refused the sample: {exc}", path))
            continue
        if n > max_length:
            skipped.append(Skipped(rid, f"{n} tokens (prompt + vision + response) exceed max_length "
                                        f"{max_length}; vision tokens are never cut", path))
            continue
        kept.append((sample, response))
    return kept, skipped


def collate(items: Sequence[tuple[Sample, str] | Skipped], *, processor: ProcessorMixin, max_length: int
            ) -> MicroBatch:
    """Encode the usable items of one micro-batch (right padding, labels on the response only)."""
    skipped = [x for x in items if isinstance(x, Skipped)]
    pairs = [x for x in items if not isinstance(x, Skipped)]
    inputs = None
    if pairs:
        try:
            inputs = _encode(processor, pairs)
            too_long = bool((inputs["attention_mask"].sum(dim=1) > max_length).any())
        except (ValueError, RuntimeError, MediaError):
            too_long = True  # find the culprit sample by sample
        if too_long:
            pairs, bad = _encode_each(processor, pairs, max_length)
            skipped.extend(bad)
            inputs = _encode(processor, pairs) if pairs else None
    return MicroBatch(inputs=inputs, n_samples=len(pairs), skipped=skipped)


def make_collate(processor: ProcessorMixin, max_length: int
                 ) -> Callable[[Sequence[tuple[Sample, str] | Skipped]], MicroBatch]:
    """`collate` bound to a processor (a picklable partial, so DataLoader workers can use it)."""
    return functools.partial(collate, processor=processor, max_length=max_length)


# -------------------------------------------------------------------------------------------- loss
def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of next-token NLL over target positions, number of target positions).

    `logits` [B, L, V] predict token t+1 at position t; `labels` [B, L] with -100 where no loss applies.
    Computed in float32 whatever the logits' dtype, without a float32 copy of the logits kept for backward
    (`videor1.train.logprobs.token_logprobs`). `logits` may cover only the last L positions of longer
    sequences (`logits_to_keep`): pass the labels of those positions.
    """
    shift_labels = labels[:, 1:].to(logits.device)
    target = shift_labels != IGNORE_INDEX
    logp = token_logprobs(logits[:, :-1, :], torch.where(target, shift_labels, 0))
    total = -torch.where(target, logp, torch.zeros((), dtype=logp.dtype, device=logp.device)).sum()
    return total, target.sum()


def first_target(labels: torch.Tensor) -> int:
    """The first column holding a target token in any row of `labels` [B, L] (L when there is none)."""
    columns = (labels != IGNORE_INDEX).any(dim=0).nonzero()
    return int(columns[0]) if len(columns) else labels.shape[1]


def dummy_micro_batch(processor: ProcessorMixin) -> MicroBatch:
    """A one-sample micro-batch (a black 56x56 image, a one-word response) that a process runs with loss weight
    0 in place of a micro-batch whose samples were all skipped: every process then makes the same number of
    forward/backward passes per step (DDP and ZeRO-2 reduce gradients at each, ZeRO-3 and FSDP2 gather
    parameters at each). n_samples 0: it counts for nothing."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "."}]}]
    sample = Sample(record=None, media=np.zeros((56, 56, 3), dtype=np.uint8), messages=messages)
    return MicroBatch(inputs=_encode(processor, [(sample, ".")]), n_samples=0)
