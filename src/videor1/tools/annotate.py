"""`videor1 annotate`: make chain-of-thought (CoT) records by rejection sampling.

For every record, K completions are sampled (temperature 1, top-p 0.95 by default) from a model with
:class:`videor1.generation.engines.HFEngine` (or any ``RolloutEngine``), each is scored with the training accuracy
reward (:func:`videor1.rewards.score`) and the format reward (:func:`videor1.rewards.format_reward`), and the
best passing sample becomes the record's ``process``; ``solution`` stays the ground truth.

Acceptance rule (documented choice). A sample *passes* when ``accuracy >= threshold`` and, with
``require_format`` (the default), its format reward is 1. The reference kept ``reward > 0.6``; the two
differ only for an accuracy of exactly the threshold (never for the 0/1 rewards of multiple choice and
numbers). The kept sample is the passing one with the highest accuracy (the first such on ties).
Consequences: ``threshold=0`` with ``require_format=False`` accepts every record; a threshold above 1
accepts nothing (accuracy never exceeds 1).

Where we depart from the reference:

* The reference annotated with a larger model (Qwen2.5-VL-72B) and filtered with its accuracy reward only;
  here the format must also be right by default, so every CoT record has a well-formed ``<think>`` span.
  With ``require_format=False`` a sample without a ``<think>`` span gets its text before ``<answer>``
  wrapped in ``<think></think>`` so the output is still a valid CoT record.
* Output is appended one record at a time (flushed), and a rerun resumes: records whose ``problem_id`` is
  already in the output or in ``<out stem>.rejects.jsonl`` are skipped. Batches are fixed slices of the
  whole input (``batch_size`` records each, before ``limit``); a batch with any record left to do is
  generated whole, with the sampling seed (``SamplingParams.seed``) ``seed`` combined with the batch index,
  and only its records still to do are written. So an interrupted run continued later, or a ``limit`` run
  extended later, writes the same lines as one uninterrupted run (on a deterministic device), at the cost
  of regenerating at most one batch. A partly written last line (a kill mid-write) is cut off on resume.
  ``limit`` means the first ``limit`` valid records of the input.
* Bad media are never replaced: the record is reported, counted and listed in the rejects file with the
  reason. Invalid input records are reported and counted (they have no trustworthy id to list).
* The settings are written to ``<out stem>.annotate.json``; resuming with different settings (other than
  ``limit``) is refused rather than mixing two configurations in one file. A settings file written by an
  older version, before a setting existed (``video.seek``, the frame ``factor``), is resumed with that
  setting at what the old code did (`videor1.legacy`), with a note each; a real difference is still refused.

Each accepted record gets an ``annotation`` field (accuracy, format reward, sample index, K) kept as an extra
field, so it round-trips through :mod:`videor1.data.records`.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, Any, Callable, Sequence

from tqdm import tqdm

from videor1.atomic import atomic_write_json
from videor1.data.media import FACTOR, ImageSpec, MediaError, VideoSpec
from videor1.data.pipeline import prefetch
from videor1.data.records import Record, RecordError, read_records
from videor1.generation.engines import HFEngine, RolloutEngine, SamplingParams
from videor1.limits import current_limits
from videor1.legacy import fill_missing, media_defaults, notes, unrecorded_clause
from videor1.model.families import family_of_processor, fit_media_specs
from videor1.model.inputs import Sample, make_sample
from videor1.model.load import frame_factor_of, load_model, load_processor
from videor1.rewards import format_reward, score

_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL)
_SEED_STRIDE = 1_000_003


class AnnotateError(ValueError):
    """Unusable arguments or output files (bad --out, settings that differ from the run being resumed)."""


@dataclass
class Verdict:
    """The outcome for one record: the kept sample (or None) and the best scores seen."""

    accepted: bool
    process: str | None
    accuracy: float
    format: float
    index: int


def rejects_path(out: Path) -> Path:
    """``<out stem>.rejects.jsonl`` next to ``out``."""
    return out.with_name(out.stem + ".rejects.jsonl")


def settings_path(out: Path) -> Path:
    """``<out stem>.annotate.json`` next to ``out``."""
    return out.with_name(out.stem + ".annotate.json")


def _id_key(problem_id: Any) -> str:
    return json.dumps(problem_id)  # keeps 1 and "1" apart


def think_part(completion: str) -> str:
    """The first ``<think>...</think>`` span; without one, the text before ``<answer>`` wrapped in tags."""
    match = _THINK_RE.search(completion)
    if match:
        return match.group(0)
    body = completion.split("<answer>", 1)[0].strip()
    return f"<think>{body}</think>"


def judge(record: Record, completions: Sequence[str], *, threshold: float,
          require_format: bool = True) -> Verdict:
    """Score each completion and apply the acceptance rule (module docstring)."""

    scored = [(score(record.problem_type, text, record.solution), format_reward(text)) for text in completions]
    best: tuple[float, float, int] | None = None  # best passing (accuracy, format, index)
    seen = (-1.0, -1.0, -1)  # best overall, for the rejects file
    for i, (acc, fmt) in enumerate(scored):
        if (acc, fmt) > seen[:2]:
            seen = (acc, fmt, i)
        passes = acc >= threshold and (fmt == 1.0 or not require_format)
        if passes and (best is None or acc > best[0]):
            best = (acc, fmt, i)
    if best is None:
        return Verdict(False, None, max(seen[0], 0.0), max(seen[1], 0.0), seen[2])
    return Verdict(True, think_part(completions[best[2]]), best[0], best[1], best[2])


def _done_ids(path: Path, echo: Callable[[str], None]) -> set[str]:
    """problem_ids already written to ``path``; cut off a partly written last line."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    keep = len(data)
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        echo(f"{path}: cutting off a partly written last line (an interrupted run)")
        with open(path, "r+b") as handle:
            handle.truncate(keep)
    ids = set()
    for number, line in enumerate(data[:keep].decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            ids.add(_id_key(json.loads(line)["problem_id"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise AnnotateError(f"{path} line {number}: not a record written by `videor1 annotate`") from None
    return ids


def _check_settings(out: Path, settings: dict[str, Any], frame_factor: int | None,
                    echo: Callable[[str], None]) -> None:
    """Refuse to resume `out` with other settings; a settings file made by an older version has its missing
    keys taken at their old defaults (`videor1.legacy`; `frame_factor`: what ``factor: None`` means in this
    run), with a note each. Then write the complete new settings."""
    path = settings_path(out)
    if path.exists() and (out.exists() or rejects_path(out).exists()):
        old, assumed = fill_missing(json.loads(path.read_text()), media_defaults(frame_factor))
        differ = sorted(k for k in set(old) | set(settings)   # limit(s): which records, not how they are done
                        if k not in ("limit", "limits") and old.get(k) != settings.get(k))
        if differ:
            raise AnnotateError(f"{out} was started with other settings ({', '.join(differ)} differ: "
                                f"{ {k: old.get(k) for k in differ} }{unrecorded_clause(assumed, settings)}); "
                                "use a new --out or the same settings")
        for line in notes(str(path), assumed):
            echo(line)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, settings, indent=2)


def _frame_factor(model: str | os.PathLike, engine: RolloutEngine | None) -> int | None:
    """What ``factor: None`` resolves to in this run: the family of the engine's processor, 28 for an engine
    without one (the specs are then not fitted), else the family of the model directory; None if unknown."""
    processor = getattr(engine, "processor", None) if engine is not None else None
    if processor is None:
        return FACTOR if engine is not None else frame_factor_of(model)
    try:
        return int(family_of_processor(processor).FRAME_FACTOR)
    except ValueError:   # not a family's processor: fit_media_specs says so when the engine is used
        return None


def _append(handle: IO[str], row: dict[str, Any]) -> None:
    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    handle.flush()


def _accepted_row(record: Record, verdict: Verdict, samples: int) -> dict[str, Any]:
    note = {"accuracy": verdict.accuracy, "format": verdict.format, "sample": verdict.index, "of": samples}
    return replace(record, process=verdict.process, extra={**record.extra, "annotation": note}).to_dict()


def _reject_row(record: Record, reason: str, verdict: Verdict | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"problem_id": record.problem_id, "problem_type": record.problem_type,
                           "data_type": record.data_type, "path": record.path, "reason": reason}
    if verdict is not None:
        row.update(best_accuracy=verdict.accuracy, best_format=verdict.format)
    return row


# ------------------------------------------------------------------------------------------ the loop
@dataclass
class _Run:
    """What one batch needs: settings, open output files, the done set and running counts."""

    engine: RolloutEngine
    params: SamplingParams
    media_root: Path
    video: VideoSpec
    image: ImageSpec
    threshold: float
    require_format: bool
    seed: int
    samples: int
    accepted_file: IO[str]
    rejects_file: IO[str]
    todo: set[str]
    counts: Counter


def decode_batch(batch: list[Record], *, media_root: Path, video: VideoSpec, image: ImageSpec) -> list[Sample | str]:
    """Each record's Sample, or the reason its media cannot be used (run in prefetch workers)."""
    out: list[Sample | str] = []
    for record in batch:
        try:
            out.append(make_sample(record, media_root, video, image))
        except (MediaError, RecordError) as exc:
            out.append(f"media: {getattr(exc, 'reason', exc)}")
    return out


def _run_batch(run: _Run, batch_index: int, batch: list[Record], decoded: list[Sample | str],
               progress: tqdm) -> None:
    """Sample, judge and write one batch (`decoded`: `decode_batch` of it). Records not to do (already done, or
    beyond ``limit``) stay in the batch, so its composition and seed are those of an uninterrupted run, but are
    not written."""
    samples = []
    for record, sample in zip(batch, decoded):
        is_new = _id_key(record.problem_id) in run.todo
        if isinstance(sample, Sample):
            samples.append(sample)
        else:
            if is_new:
                reason = sample
                progress.write(f"{record.problem_id}\t{reason}")
                _append(run.rejects_file, _reject_row(record, reason))
                run.counts["bad media"] += 1
                progress.update(1)
    if not samples:
        return
    params = replace(run.params, seed=run.seed * _SEED_STRIDE + batch_index)
    outputs = run.engine.generate(samples, params)
    for sample, completions in zip(samples, outputs):
        record = sample.record
        if _id_key(record.problem_id) not in run.todo:
            continue
        verdict = judge(record, [c.text for c in completions], threshold=run.threshold,
                        require_format=run.require_format)
        if verdict.accepted:
            _append(run.accepted_file, _accepted_row(record, verdict, run.samples))
            run.counts["accepted"] += 1
        else:
            _append(run.rejects_file, _reject_row(record, "no sample passed", verdict))
            run.counts["rejected"] += 1
        judged = run.counts["accepted"] + run.counts["rejected"]
        progress.set_postfix(accept=f"{run.counts['accepted'] / judged:.0%}")
        progress.update(1)


def _load_engine(model: str | os.PathLike, batch_size: int) -> HFEngine:
    loaded = load_model(model)
    loaded.eval()
    return HFEngine(loaded, load_processor(model), batch_size=batch_size)


def summarize_files(out: Path) -> dict[str, Any]:
    """Accepted / rejected counts by problem type and data type over the output and rejects files."""
    table: dict[str, dict[str, Counter]] = {"problem_type": {}, "data_type": {}}
    for path, outcome in ((out, "accepted"), (rejects_path(out), "rejected")):
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            for key in table:
                table[key].setdefault(str(row.get(key)), Counter())[outcome] += 1
    return {key: {name: {"accepted": c["accepted"], "rejected": c["rejected"]} for name, c in sorted(groups.items())}
            for key, groups in table.items()}


def _echo_summary(summary: dict[str, Any], echo: Callable[[str], None]) -> None:
    for key in ("problem_type", "data_type"):
        echo(f"| {key} | accepted | rejected |")
        echo("| --- | ---: | ---: |")
        for name, c in summary[key].items():
            echo(f"| {name} | {c['accepted']} | {c['rejected']} |")


def annotate(*, model: str | os.PathLike, data: str | os.PathLike, media_root: str | os.PathLike,
             out: str | os.PathLike, samples: int = 4, threshold: float = 0.6,
             video: VideoSpec = VideoSpec(), image: ImageSpec = ImageSpec(), batch_size: int = 4,
             limit: int | None = None, max_new_tokens: int = 768, seed: int = 0,
             echo: Callable[[str], None] = print, require_format: bool = True, temperature: float = 1.0,
             top_p: float = 0.95, engine: RolloutEngine | None = None, num_workers: int = 0) -> dict[str, Any]:
    """Annotate ``data`` into CoT records appended to ``out`` (JSONL); returns the summary.

    ``video`` / ``image`` say how media become model inputs (recorded in the settings file).
    ``engine`` (optional) is an already built ``RolloutEngine``; by default an ``HFEngine`` is built from
    ``model``. ``num_workers`` processes decode the next batches while the model samples (same results).
    See the module docstring for the acceptance rule and the resume guarantees.
    """
    if samples < 1 or batch_size < 1:
        raise AnnotateError(f"samples ({samples}) and batch_size ({batch_size}) must be at least 1")
    out = Path(out)
    if out.suffix != ".jsonl":
        raise AnnotateError(f"--out must be a .jsonl file (it is appended to), got {out}")
    records, errors = read_records(data)
    for error in errors:
        echo(f"skipped invalid record: {error}")
    settings = {"model": str(model), "data": str(data), "samples": samples, "threshold": threshold,
                "require_format": require_format, "temperature": temperature, "top_p": top_p,
                "max_new_tokens": max_new_tokens, "seed": seed, "batch_size": batch_size, "limit": limit,
                "video": asdict(video), "image": asdict(image), "limits": current_limits().as_dict()}
    _check_settings(out, settings, _frame_factor(model, engine), echo)
    done = _done_ids(out, echo) | _done_ids(rejects_path(out), echo)
    selected = records[:limit] if limit is not None else records
    todo = {_id_key(r.problem_id) for r in selected} - done
    batches = [(i // batch_size, records[i:i + batch_size]) for i in range(0, len(records), batch_size)]
    pending = [(b, batch) for b, batch in batches if any(_id_key(r.problem_id) in todo for r in batch)]
    echo(f"{len(selected)} records, {len(selected) - len(todo)} already done, {len(todo)} to annotate")
    counts: Counter = Counter(invalid=len(errors))
    if pending:
        engine = engine if engine is not None else _load_engine(model, batch_size)
        if getattr(engine, "processor", None) is not None:  # HF / vLLM engines: the family's frame factor
            video, image = fit_media_specs(engine.processor, video, image)
        params = SamplingParams(n=samples, max_new_tokens=max_new_tokens, temperature=temperature,
                                top_p=top_p, do_sample=True)
        with open(out, "a", encoding="utf-8") as acc_f, \
                open(rejects_path(out), "a", encoding="utf-8") as rej_f, \
                tqdm(total=len(todo), desc="annotating", unit="record", disable=None) as progress:
            run = _Run(engine, params, Path(media_root), video, image, threshold, require_format, seed,
                       samples, acc_f, rej_f, todo, counts)
            decoded = prefetch(functools.partial(decode_batch, media_root=Path(media_root), video=video, image=image),
                               [batch for _, batch in pending], num_workers=num_workers)
            for (batch_index, batch), batch_samples in zip(pending, decoded):
                _run_batch(run, batch_index, batch, batch_samples, progress)
    summary = {"this_run": {k: counts[k] for k in ("accepted", "rejected", "bad media", "invalid")},
               **summarize_files(out), "out": str(out), "rejects": str(rejects_path(out))}
    echo("this run: " + ", ".join(f"{k} {v}" for k, v in summary["this_run"].items()))
    _echo_summary(summary, echo)
    return summary
