"""Batched, resumable evaluation of a model on any benchmark adapter, and re-scoring without a model.

Every setting of a run is one `videor1.evaluate.config.EvalConfig` (`run_eval(cfg)`). Outputs of `run_eval`
(all in `cfg.out`):

* `predictions.jsonl`: one line an item, appended and flushed as each batch finishes. Each line holds
  the item's scoring fields (`Item.row()`), the raw output, its token count, the scores of both
  protocols, `shuffled`, the frame permutation when shuffled, and `settings_id` (the hash of the
  settings in meta.json). A killed run resumes where it stopped: lines already present (by id and pass)
  are never generated or scored twice, and a half-written last line is cut off first.
* `meta.json`: every setting (model path, frames, fps, pixel budgets, decoding parameters, prompt
  templates, engine, batch size, seed, input limits), the package version and git commit. Resuming into a folder
  made with different result-relevant settings is refused. A folder made by an older version, before a
  setting existed, is resumed with that setting at its old default (`videor1.legacy`; a note is printed for
  each, and for a folder without a weight fingerprint, that the weights cannot be checked); its lines keep
  the settings id of the older shape, which the new meta.json lists in `earlier_settings_ids` (`videor1
  score` reads those lines as one run).
* `scores.json`, `report.md`, `scores.png` (see `videor1.evaluate.report`).
* `judge_verdicts.jsonl` with `--judge`: the cached LLM-judge verdicts (`videor1.evaluate.judge`).

Choices worth knowing:

* A video that fails to decode (or a media path that escapes the root) becomes an *error item*: its
  line records the reason, it scores 0 in both protocols, and the report counts errors. It is never
  dropped silently and no other video is substituted. So does an item the engine refuses (vLLM: a prompt
  longer than its max_model_len, e.g. many frames on a model with a short context): the batch is retried
  item by item and only the refused items become error items.
* `--shuffle-frames` adds a second pass over the same items with the frames of each video in a seeded
  random order (never the identity for 2+ frames); the report shows ordered accuracy, shuffled
  accuracy and the gap, overall and by order-dependence. The headline numbers come from the ordered pass.
* The summary is computed from the whole predictions file, so `videor1 score` on that file reproduces
  `videor1 eval`'s numbers exactly.
* Generation goes through `videor1.generation.engines` (HFEngine / VLLMEngine), shared with RL rollouts. The HF
  engine gets `batch_size` items a call; vLLM gets a process's whole pass in one call (its continuous batching
  schedules it), at most `vllm_max_batch_items` items and `vllm_max_batch_gib` of decoded frames
  (`generation_chunk`). With sampled decoding (`--decoding reference`) the seeds are per call, so sampled
  outputs depend on that chunking (greedy outputs do not).
* Under `accelerate launch --num_processes N` (or torchrun) each process evaluates its shard of the items with
  its own engine, and the main process merges the shards (`videor1.evaluate.shards`); meta.json records
  `num_processes`. predictions.jsonl and scores.json are those of a one-process run (greedy decoding).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import subprocess
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm
from transformers import PreTrainedModel, ProcessorMixin

from videor1 import __version__
from videor1.atomic import atomic_write_json, model_fingerprint
from videor1.config import config_to_dict, validate
from videor1.data.media import Clip, ImageSpec, MediaError, VideoSpec, load_media, load_video
from videor1.data.pipeline import Prefetcher, prefetch, take
from videor1.data.prompts import TEMPLATES, build_messages
from videor1.data.records import Record, RecordError, resolve_media_path
from videor1.evaluate.benchmarks import Benchmark, Item, get_benchmark
from videor1.evaluate.benchmarks.videor1_records import items_from_records
from videor1.evaluate.config import EvalConfig
from videor1.evaluate.judge import JudgeSpec, judge_rows
from videor1.evaluate.report import render_report, write_outputs
from videor1.evaluate.resume import RESULT_KEYS, check_resumable
from videor1.evaluate.shards import (PREDICTIONS, Processes, has_predictions, merge_shards, row_key, shard,
                                     shard_file, shard_files, visible_device)
from videor1.evaluate.summary import score_row, summarize
from videor1.generation.engines import (Completion, HFEngine, RequestRejected, RolloutEngine, SamplingParams,
                                       VLLMEngine)
from videor1.model.families import fit_media_specs
from videor1.limits import limits_in_force
from videor1.model.inputs import Sample
from videor1.model.load import frame_factor_of, load_model, load_processor
from videor1.trackers import RunInfo, report_eval

_log = logging.getLogger(__name__)

DECODING: dict[str, dict[str, Any]] = {
    "greedy": {"do_sample": False, "temperature": 1.0, "top_p": 1.0},
    "reference": {"do_sample": True, "temperature": 0.1, "top_p": 0.001},   # the reference's eval decoding
}
UNUSABLE = "unusable.json"   # the benchmark entries the adapter could not use, one line each, with the reason


# ----------------------------------------------------------------------------------------- settings
def git_commit() -> str | None:
    """The commit of the checkout this package runs from, or None outside a git checkout."""
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def sampling_params(decoding: str, max_new_tokens: int, seed: int = 0) -> SamplingParams:
    """One completion per item; greedy, or the reference's sampling seeded per batch by `seed`."""
    if decoding not in DECODING:
        raise ValueError(f"unknown decoding {decoding!r}; known: {', '.join(DECODING)}")
    return SamplingParams(n=1, max_new_tokens=max_new_tokens, seed=seed, **DECODING[decoding])


def make_settings(cfg: EvalConfig) -> dict[str, Any]:
    """Every setting of a run, as recorded in meta.json and scores.json (paths resolved)."""
    if cfg.decoding not in DECODING:
        raise ValueError(f"unknown decoding {cfg.decoding!r}; known: {', '.join(DECODING)}")
    settings = {
        "model": str(cfg.model.resolve()), "bench": cfg.bench, "data": str(cfg.data.resolve()),
        "media_root": str(cfg.media_root.resolve()), "video": asdict(cfg.video), "image": asdict(cfg.image),
        "decoding": {"name": cfg.decoding, **DECODING[cfg.decoding]}, "max_new_tokens": cfg.max_new_tokens,
        "shuffle_frames": cfg.shuffle_frames, "seed": cfg.seed, "engine": cfg.engine, "batch_size": cfg.batch_size,
        "vllm_max_batch_items": cfg.vllm_max_batch_items, "vllm_max_batch_gib": cfg.vllm_max_batch_gib,
        "limit": cfg.limit, "prompt": {"templates": TEMPLATES, "system_prompt": None},
        "model_fingerprint": model_fingerprint(cfg.model) if cfg.model.is_dir() else None,
        "limits": cfg.limits.as_dict(),
        "judge": {"url": cfg.judge_url, "model": cfg.judge_model} if cfg.judge() else None,
        "version": __version__, "git_commit": git_commit(),
    }
    settings["settings_id"] = settings_id(settings)
    return settings


def settings_id(settings: Mapping[str, Any]) -> str:
    """A hash of the result-relevant settings (RESULT_KEYS), written on every prediction line."""
    relevant = {k: settings.get(k) for k in RESULT_KEYS}
    return hashlib.sha1(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:12]


# -------------------------------------------------------------------------------------- predictions
def read_predictions(path: Path, *, repair: bool = False) -> list[dict[str, Any]]:
    """The lines of a predictions file. A half-written last line (a killed run) is ignored, and with
    `repair=True` cut off the file so that appending continues cleanly."""
    path = Path(path)
    if not path.is_file():
        return []
    raw = path.read_bytes()
    complete = raw[: raw.rfind(b"\n") + 1]
    if repair and len(complete) != len(raw):
        with path.open("r+b") as fh:
            fh.truncate(len(complete))
    rows = []
    for n, line in enumerate(complete.decode("utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: line {n} is not JSON ({exc})") from None
    return rows


def append_rows(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    with path.open("a", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


# --------------------------------------------------------------------------------------- generation
def frame_permutation(n: int, seed: int, item_id: str) -> list[int]:
    """A seeded permutation of n frames, fixed per (seed, item); never the identity when n >= 2."""
    rng = np.random.default_rng([seed, zlib.crc32(item_id.encode("utf-8"))])
    perm = list(range(n))
    while n >= 2 and perm == list(range(n)):
        perm = [int(i) for i in rng.permutation(n)]
    return perm


def load_item_media(item: Item, media_root: Path, video: VideoSpec, image: ImageSpec) -> Clip | np.ndarray:
    """Decoded media of an item (clipped to start/end where given); MediaError / RecordError if unusable."""
    if item.start is None and item.end is None:
        return load_media(item.record, media_root, video, image)
    path = resolve_media_path(media_root, item.record.path, record_id=item.id)
    return load_video(path, video, start=item.start, end=item.end)


def prepare(item: Item, media_root: Path, video: VideoSpec, image: ImageSpec, *, shuffled: bool,
            seed: int) -> tuple[Sample | None, list[int] | None, str | None]:
    """(sample, permutation, None) or (None, None, error reason) for one item."""
    try:
        media = load_item_media(item, media_root, video, image)
    except (MediaError, RecordError, OSError) as exc:
        return None, None, f"{type(exc).__name__}: {exc}"
    perm = None
    if shuffled and hasattr(media, "permuted"):
        perm = frame_permutation(len(media.frames), seed, item.id)
        media = media.permuted(perm)
    return Sample(record=item.record, media=media, messages=build_messages(item.record)), perm, None


def generate_rows(engine: RolloutEngine, adapter: Benchmark, items: Sequence[Item], *, media_root: Path,
                  video: VideoSpec, image: ImageSpec, params: SamplingParams, batch_size: int, shuffled: bool,
                  seed: int, sink: Callable[[list[dict[str, Any]]], None], progress: tqdm | None = None,
                  num_workers: int = 0, ahead: int | None = None) -> Prefetcher:
    """Generate and score `items` batch by batch (`batch_size` items an engine call), handing each batch's rows
    to `sink` as soon as done.

    The items are decoded `num_workers` processes ahead (`videor1.data.pipeline.prefetch`, `ahead` items in
    flight, default two batches); rows, order and errors are the same for any worker count. Returns the
    prefetcher (its `wait_s`).
    """
    prepared = prefetch(functools.partial(prepare, media_root=media_root, video=video, image=image,
                                          shuffled=shuffled, seed=seed), items, num_workers=num_workers,
                        ahead=ahead or 2 * batch_size)
    for start in range(0, len(items), batch_size):
        batch = items[start: start + batch_size]
        rows, samples, pending = [], [], []
        for item, (sample, perm, error) in zip(batch, take(prepared, len(batch))):
            row = {**item.row(), "shuffled": shuffled, "perm": perm, "error": error, "output": "", "n_tokens": 0}
            rows.append(row)
            if sample is not None:
                samples.append(sample)
                pending.append(row)
        for row, completions in zip(pending, generate_or_refuse(engine, samples, params)):
            if isinstance(completions, str):
                row["error"] = completions
            else:
                row["output"] = completions[0].text
                row["n_tokens"] = len(completions[0].token_ids)
        sink([score_row(adapter, r) for r in rows])
        if progress is not None:
            progress.update(len(batch))
    return prepared


def generate_or_refuse(engine: RolloutEngine, samples: list[Sample], params: SamplingParams
                       ) -> list[list[Completion] | str]:
    """`engine.generate(samples, params)`, except that when the engine refuses the call (`RequestRejected`:
    vLLM's prompt longer than its max_model_len) the samples are tried one by one and each refused one gets
    the reason instead of completions (its row becomes an error item: reported, scored 0, never dropped)."""
    if not samples:
        return []
    try:
        return list(engine.generate(samples, params))
    except RequestRejected as exc:
        if len(samples) == 1:
            _log.warning("item %s: %s", getattr(samples[0].record, "problem_id", "?"), exc)
            return [f"engine refused the item: {exc}"]
    return [out for s in samples for out in generate_or_refuse(engine, [s], params)]


def make_engine(kind: str, model_dir: str | Path | None, processor: ProcessorMixin, *, batch_size: int = 8,
                model: PreTrainedModel | None = None, vllm_memory: float = 0.9,
                device: torch.device | None = None) -> RolloutEngine:
    """The generation engine: "hf" (batched HF generate, CPU/GPU; loads the model onto `device`, default
    `pick_device()`, unless given) or "vllm" (optional extra; vLLM loads the weights itself, in the dtype
    `load_model` would use here, so that both engines evaluate the same numeric model)."""
    if kind == "hf":
        if model is None:
            model = load_model(model_dir, device=device)
        return HFEngine(model, processor, batch_size=batch_size)
    if kind == "vllm":
        return VLLMEngine(processor, model_path=str(model_dir), llm_kwargs={"gpu_memory_utilization": vllm_memory})
    raise ValueError(f"unknown engine {kind!r}; known: hf, vllm")


def passes(shuffle_frames: bool) -> list[bool]:
    """The passes of a run, as their `shuffled` flag: ordered, then shuffled with `shuffle_frames`."""
    return [False, True] if shuffle_frames else [False]


def generation_chunk(engine: str, batch_size: int, n_items: int, video: VideoSpec, image: ImageSpec,
                     max_items: int, max_gib: float) -> int:
    """Items per engine call: `batch_size` for HF; for vLLM all `n_items`, at most `max_items` and as many as
    fit `max_gib` of decoded media at the spec's largest item (max_frames x max_pixels x 3 bytes of video;
    vLLM's processed inputs take a few times that again)."""
    if engine != "vllm":
        return batch_size
    item_bytes = 3 * max(video.max_frames * video.max_pixels, image.max_pixels)
    return max(1, min(n_items, max_items, int(max_gib * 2**30 // item_bytes)))


def run_passes(engine: RolloutEngine, adapter: Benchmark, items: Sequence[Item], *, done: set[tuple[str, bool]],
               media_root: Path, video: VideoSpec, image: ImageSpec, params: SamplingParams, batch_size: int,
               shuffle_frames: bool, seed: int, sink: Callable[[list[dict[str, Any]]], None],
               echo: Callable[[str], None] | None = None, num_workers: int = 0,
               chunk: Callable[[int], int] | None = None) -> float:
    """The ordered pass, then (with shuffle_frames) the shuffled pass, skipping items already done; `chunk(n)`:
    the items per engine call for a pass of n items (default `batch_size`). Returns the seconds spent waiting
    for decoded items (`num_workers` processes decode ahead)."""
    wait_s = 0.0
    for shuffled in passes(shuffle_frames):
        todo = [it for it in items if (it.id, shuffled) not in done]
        if echo is not None and len(todo) < len(items):
            echo(f"{'shuffled' if shuffled else 'ordered'} pass: {len(items) - len(todo)} of {len(items)} "
                 "items already done, resuming")
        if not todo:
            continue
        with tqdm(total=len(todo), desc="shuffled" if shuffled else "ordered", unit="item",
                  disable=echo is None) as bar:
            prepared = generate_rows(engine, adapter, todo, media_root=media_root, video=video, image=image,
                                     params=params, batch_size=chunk(len(todo)) if chunk else batch_size,
                                     shuffled=shuffled, seed=seed, sink=sink, progress=bar,
                                     num_workers=num_workers, ahead=2 * batch_size)
            wait_s += prepared.wait_s
    return wait_s


def load_items(adapter: Benchmark, data: Path, media_root: Path, limit: int | None,
               echo: Callable[[str], None], unusable: list[str] | None = None, *, judge: bool = False) -> list[Item]:
    """The items to evaluate; every entry the adapter could not use goes to `unusable` (then to
    unusable.json, scores.json and report.md) as well as to the console. Judge-scored items are kept only
    with `judge`."""
    loaded = adapter.load(Path(data), Path(media_root), judge=judge)
    if unusable is not None:
        unusable.extend(loaded.problems)
    for line in loaded.problems[:20]:
        echo(f"skipped: {line}")
    if len(loaded.problems) > 20:
        echo(f"... and {len(loaded.problems) - 20} more skipped entries")
    items = loaded.items[:limit] if limit is not None else loaded.items
    if not items:
        raise ValueError(f"{data}: no usable {adapter.name} items")
    return items


def run_eval(cfg: EvalConfig, *, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Evaluate `cfg.model` on `cfg.bench`; resumable. Returns the summary (scores.json). The config's input
    limits (recorded in meta.json) are in force while items are read and decoded, and restored afterwards."""
    validate(cfg)
    cfg.check_inputs()
    with limits_in_force(cfg.limits):
        return _run_eval(cfg, echo)


def _run_eval(cfg: EvalConfig, echo: Callable[[str], None]) -> dict[str, Any]:
    procs = Processes.from_env()
    say = echo if procs.is_main else (lambda line: None)   # one console voice: the main process's
    adapter = get_benchmark(cfg.bench)
    out = cfg.out
    settings = {**make_settings(cfg), "num_processes": procs.num_processes}   # not result-relevant
    unusable: list[str] = []
    items = load_items(adapter, cfg.data, cfg.media_root, cfg.limit, say, unusable, judge=cfg.judge() is not None)
    out.mkdir(parents=True, exist_ok=True)
    resume = check_resumable(out, settings, frame_factor=frame_factor_of(cfg.model))
    for note in resume.notes:
        say(note)
    if resume.earlier_settings_ids:
        settings["earlier_settings_ids"] = resume.earlier_settings_ids
    resumed = has_predictions(out)  # an eval folder evaluated further continues its tracker run
    procs.barrier("checked")        # every process compared the old meta.json before the main one replaces it
    if procs.is_main:
        atomic_write_json(out / "meta.json", settings, indent=2, default=str)
    with procs.working():
        evaluate_shard(cfg, adapter, items, settings["settings_id"], procs, say)
    procs.barrier("generated")
    if procs.is_main:
        with procs.working():   # the judge may take long: the others wait while the main process lives
            summary = finish(cfg, adapter, items, settings, unusable, resumed, echo)
    procs.barrier("merged")
    return summary if procs.is_main else json.loads((out / "scores.json").read_text(encoding="utf-8"))


def done_keys(out: Path, own: Path) -> set[tuple[str, bool]]:
    """(id, shuffled) of every row in the folder: predictions.jsonl and every shard file. `own` (the file this
    process appends to) has a half-written last line cut off; the others are read up to their last full line."""
    files = dict.fromkeys([out / PREDICTIONS, *shard_files(out), own])
    return {row_key(r) for f in files for r in read_predictions(f, repair=f == own)}


def engine_device(procs: Processes, engine: str) -> torch.device | None:
    """Each process of a multi-process run on its own GPU: the HF model on cuda:LOCAL_RANK; vLLM (which takes
    the first visible GPU) sees only that one (CUDA_VISIBLE_DEVICES, set before it starts)."""
    if procs.num_processes == 1:
        return None
    if engine == "vllm":
        os.environ["CUDA_VISIBLE_DEVICES"] = visible_device(procs.local_rank, os.environ.get("CUDA_VISIBLE_DEVICES"))
        return None
    return torch.device("cuda", procs.local_rank % torch.cuda.device_count()) if torch.cuda.is_available() else None


def evaluate_shard(cfg: EvalConfig, adapter: Benchmark, items: Sequence[Item], sid: str, procs: Processes,
                   say: Callable[[str], None]) -> None:
    """Generate and score this process's shard of the items not yet done, appending rows to its own file
    (predictions.jsonl itself with one process)."""
    out = cfg.out
    own = out / PREDICTIONS if procs.num_processes == 1 else shard_file(out, procs.rank, procs.num_processes)
    own.parent.mkdir(parents=True, exist_ok=True)
    done = done_keys(out, own)
    mine = shard(items, procs.rank, procs.num_processes, cfg.batch_size)
    if not {(it.id, s) for it in mine for s in passes(cfg.shuffle_frames)} - done:
        return   # nothing left here (or no items at all): the process still joins the barriers
    device = engine_device(procs, cfg.engine)
    processor = load_processor(cfg.model)
    gen = make_engine(cfg.engine, cfg.model, processor, batch_size=cfg.batch_size, vllm_memory=cfg.vllm_memory,
                      device=device)
    video, image = fit_media_specs(processor, cfg.video, cfg.image)  # the family's frame factor

    try:
        run_passes(gen, adapter, mine, done=done, media_root=cfg.media_root, video=video, image=image,
                   params=sampling_params(cfg.decoding, cfg.max_new_tokens, cfg.seed), batch_size=cfg.batch_size,
                   shuffle_frames=cfg.shuffle_frames, seed=cfg.seed, echo=say if procs.is_main else None,
                   num_workers=cfg.num_workers,
                   sink=lambda rows: append_rows(own, [{**r, "settings_id": sid} for r in rows]),
                   chunk=lambda n: generation_chunk(cfg.engine, cfg.batch_size, n, video, image,
                                                    cfg.vllm_max_batch_items, cfg.vllm_max_batch_gib))
    finally:
        if hasattr(gen, "close"):  # vLLM: its engine core and processes
            gen.close()


def finish(cfg: EvalConfig, adapter: Benchmark, items: Sequence[Item], settings: dict[str, Any],
           unusable: list[str], resumed: bool, echo: Callable[[str], None]) -> dict[str, Any]:
    """The main process's end of a run: shards merged into predictions.jsonl, judged, scored, reported."""
    out = cfg.out
    merge_shards(out, [it.id for it in items], read_predictions)
    atomic_write_json(out / UNUSABLE, unusable, indent=1, ensure_ascii=False)
    rows, judge_problems, judge_info = judge_rows(adapter, read_predictions(out / PREDICTIONS), cfg.judge(), out,
                                                  echo)
    summary = summarize(adapter, rows, settings, [*unusable, *judge_problems], judge_info)
    write_outputs(out, summary)
    report_eval(cfg.report_to, RunInfo(out, "eval", config_to_dict(cfg), resume=resumed), summary,
                {"scores": out / "scores.png"})
    echo(headline_line(summary, out))
    return summary


def headline_line(summary: Mapping[str, Any], out: Path | None = None) -> str:
    off, ref, counts = summary["official"], summary["reference"], summary["counts"]
    pct = lambda x: "n/a" if x is None else f"{100 * x:.1f}"  # noqa: E731
    where = f"; report: {out / 'report.md'}" if out is not None else ""
    return (f"{summary['bench']}: official {pct(off['overall'])} ({summary['headline']}), reference "
            f"{pct(ref['overall'])}; {counts['items']} items, {counts['errors']} errors{where}")


def evaluate_records(model: PreTrainedModel, processor: ProcessorMixin, records: Sequence[Record],
                     media_root: str | Path, *, video: VideoSpec = VideoSpec(), image: ImageSpec = ImageSpec(),
                     batch_size: int = 8, max_new_tokens: int = 256, decoding: str = "greedy",
                     shuffle_frames: bool = False, seed: int = 0, engine: RolloutEngine | None = None,
                     out: str | Path | None = None, num_workers: int = 0,
                     timing: dict[str, float] | None = None) -> dict[str, Any]:
    """In-process evaluation of Video-R1 records with a model already loaded (what the demo calls).

    Same rows, scores and summary as `run_eval` with the `videor1` adapter; with `out`, also writes
    predictions.jsonl, scores.json, report.md and the chart there (predictions are overwritten).
    """
    video, image = fit_media_specs(processor, video, image)  # the family's frame factor
    adapter = get_benchmark("videor1")
    items = items_from_records(records)
    rows: list[dict[str, Any]] = []
    gen = engine if engine is not None else make_engine("hf", None, processor, batch_size=batch_size, model=model)
    wait_s = run_passes(gen, adapter, items, done=set(), media_root=Path(media_root), video=video, image=image,
                        params=sampling_params(decoding, max_new_tokens, seed), batch_size=batch_size,
                        shuffle_frames=shuffle_frames, seed=seed, sink=rows.extend, num_workers=num_workers)
    if timing is not None:
        timing["data_wait_s"] = wait_s
    settings = {"video": asdict(video), "image": asdict(image), "decoding": {"name": decoding, **DECODING[decoding]},
                "max_new_tokens": max_new_tokens, "shuffle_frames": shuffle_frames, "seed": seed,
                "batch_size": batch_size}
    summary = summarize(adapter, rows, settings)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / PREDICTIONS).unlink(missing_ok=True)
        append_rows(out / PREDICTIONS, rows)
        write_outputs(out, summary)
    return summary


def rescore(bench: str, predictions: str | Path, out: str | Path | None = None,
            judge: JudgeSpec | None = None) -> str:
    """Re-score a predictions file without a model; returns the Markdown report (and writes it to `out`).

    The settings come from the meta.json beside the predictions file when there is one. Judge-scored
    answers are scored with `judge` through the verdict cache beside the predictions file (asked only when
    not cached), or listed as not evaluated without one.
    """
    adapter = get_benchmark(bench)
    predictions = Path(predictions)
    rows = [score_row(adapter, dict(r)) for r in read_predictions(predictions)]
    if not rows:
        raise ValueError(f"{predictions}: no predictions to score")
    meta_path = predictions.parent / "meta.json"
    settings = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    same = set(settings.get("earlier_settings_ids", []))   # an older version's id of the same settings
    ids = {settings["settings_id"] if r.get("settings_id") in same else r.get("settings_id") for r in rows}
    if len(ids) > 1:
        raise ValueError(f"{predictions}: lines from runs with different settings ({sorted(map(str, ids))})")
    unusable_path = predictions.parent / UNUSABLE
    unusable = json.loads(unusable_path.read_text(encoding="utf-8")) if unusable_path.is_file() else []
    rows, judge_problems, judge_info = judge_rows(adapter, rows, judge, predictions.parent)
    summary = summarize(adapter, rows, settings, [*unusable, *judge_problems], judge_info)
    if out is not None:
        write_outputs(Path(out), summary)
    return render_report(summary)
