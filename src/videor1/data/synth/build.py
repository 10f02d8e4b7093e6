"""The synthetic video-reasoning dataset: the embedded default that the demo and the tests train on.

:func:`make_dataset` writes three record files under ``out`` (JSONL, Video-R1 records, SPEC §2) and their
media under ``out/media/`` (real H.264 mp4 clips and PNG images):

* ``rl.jsonl``   — the RL set (no ``process``);
* ``cot.jsonl``  — the CoT set for the SFT cold start: other clips from the same tasks, each with a
  one-sentence ``"<think>…</think>"`` reasoning that names the evidence;
* ``test.jsonl`` — held-out questions for evaluation.

Every record carries ``data_source = "synth/<task>"``, a boolean ``temporal`` (the answer depends on frame
order) and the scene's ground truth in an extra field ``synth_facts``. The tasks live in
:mod:`videor1.data.synth.tasks`; drawing and encoding in :mod:`videor1.data.synth.render`.

Design choices (this dataset has no counterpart in the paper, which trains on Video-R1-260k):

* Deterministic: the same ``seed`` gives byte-identical record files and (libx264 being deterministic)
  byte-identical media. Each record draws from its own generator seeded by (seed, split, index), so a
  larger ``n_train`` extends a dataset without changing its first records' media.
* Balanced: the task mix is allocated exactly (largest remainder), and within each multiple-choice task the
  correct option's letter cycles through shuffled blocks of all letters, so every letter is (near-)equally
  likely and a letter prior earns chance, not more.
* ``shuffle_options=False`` (the demo's choice) gives the easier variant: each multiple-choice task lists
  its full option set in a fixed order (4 directions, 6 colours), so the letter follows from the answer
  without reading the options; letters are then balanced only in expectation (answers are uniform).
* ``tasks`` picks a subset: a list of names (equal weights) or a mapping name -> weight. ``cot_tasks`` may
  differ from it (e.g. to leave a temporal task out of the CoT set, so RL has something left to teach), and
  so may ``rl_tasks`` (e.g. an RL set weighted toward the tasks the reward can teach); the test set follows
  ``tasks``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from videor1.data.synth import render as R
from videor1.data.records import write_records
from videor1.data.synth.tasks import CLIP_FPS, TASKS, Item

#: The demo's default mix: mostly learnable multiple choice (order-dependent and not), a few of each type.
DEFAULT_MIX: dict[str, float] = {
    "direction": 0.30,
    "colour": 0.16,
    "colour_change": 0.08,
    "first_shape": 0.08,
    "image_colour": 0.08,
    "count": 0.05,
    "image_count": 0.05,
    "describe": 0.05,
    "distance": 0.05,
    "ocr": 0.05,
    "image_ocr": 0.05,
}
SPLITS = {"rl": 0, "cot": 1, "test": 2, "val": 3}
TaskSpec = Mapping[str, float] | Sequence[str] | None


def resolve_mix(tasks: TaskSpec) -> dict[str, float]:
    """Normalised task weights from ``None`` (:data:`DEFAULT_MIX`), a list of names or a name -> weight map."""
    if tasks is None:
        mix = dict(DEFAULT_MIX)
    elif isinstance(tasks, Mapping):
        mix = {str(k): float(v) for k, v in tasks.items()}
    elif isinstance(tasks, str):
        raise ValueError(f"tasks must be a list of task names or a mapping, not the string {tasks!r}")
    else:
        mix = {str(name): 1.0 for name in tasks}
    unknown = [name for name in mix if name not in TASKS]
    if unknown:
        raise ValueError(f"unknown synthetic task(s) {unknown}; known: {TASKS.names()}")
    bad = {k: v for k, v in mix.items() if not np.isfinite(v) or v < 0}
    if bad or not mix or sum(mix.values()) <= 0:
        raise ValueError(f"task weights must be non-negative with a positive sum, got {mix}")
    total = sum(mix.values())
    return {name: w / total for name, w in mix.items() if w > 0}


def allocate(n: int, mix: Mapping[str, float]) -> dict[str, int]:
    """Split ``n`` items over tasks in proportion to ``mix`` (largest remainder; ties in mix order)."""
    exact = {name: n * w for name, w in mix.items()}
    counts = {name: int(np.floor(x)) for name, x in exact.items()}
    order = sorted(mix, key=lambda name: -(exact[name] - counts[name]))
    for name in order[: n - sum(counts.values())]:
        counts[name] += 1
    return counts


def balanced_slots(rng: np.random.Generator, n: int, k: int) -> list[int]:
    """``n`` answer positions in ``range(k)``: concatenated random permutations, so each is ~n/k times."""
    slots: list[int] = []
    while len(slots) < n:
        slots.extend(int(i) for i in rng.permutation(k))
    return slots[:n]


def _options(item: Item, slot: int | None, rng: np.random.Generator) -> tuple[list[str], str]:
    """Option strings and the correct letter: the correct one at ``slot`` among the shuffled distractors,
    or (``slot`` None) the task's fixed ``choices`` in order."""
    if slot is None:
        texts = list(item.choices)
        if item.answer not in texts:
            raise ValueError(f"answer {item.answer!r} is not among the fixed choices {texts}")
        slot = texts.index(item.answer)
    else:
        distractors = [item.distractors[i] for i in rng.permutation(len(item.distractors))]
        texts = distractors[:slot] + [item.answer] + distractors[slot:]
    if len(set(texts)) != len(texts):
        raise ValueError(f"duplicate options {texts}")
    return [f"{chr(ord('A') + i)}. {t}" for i, t in enumerate(texts)], chr(ord("A") + slot)


def _write_media(out: Path, rel: str, item: Item) -> None:
    if item.data_type == "image":
        R.write_png(out / rel, item.frames[0])
    else:
        R.write_mp4(out / rel, item.frames, CLIP_FPS)


def _record(out: Path, split: str, index: int, name: str, item: Item, slot: int | None,
            rng: np.random.Generator, with_process: bool) -> dict:
    pid = f"synth-{split}-{index:05d}"
    rel = f"media/{split}/{pid}.{'png' if item.data_type == 'image' else 'mp4'}"
    if item.problem_type == "multiple choice":
        options, answer = _options(item, slot, rng)
    else:
        options, answer = [], item.answer
    _write_media(out, rel, item)
    rec = {"problem_id": pid, "problem": item.problem, "data_type": item.data_type,
           "problem_type": item.problem_type, "options": options, "solution": f"<answer>{answer}</answer>",
           "path": rel, "data_source": f"synth/{name}", "temporal": item.temporal}
    if with_process:
        rec["process"] = f"<think>{item.reasoning}</think>"
    rec["synth_facts"] = item.facts
    return rec


def build_split(out: Path, split: str, n: int, mix: Mapping[str, float], seed: int, *,
                shuffle_options: bool = True) -> list[dict]:
    """Generate ``n`` records (and their media) of one split; CoT records get a ``process``."""
    split_rng = np.random.default_rng([seed, SPLITS[split], 0])
    names = [name for name, c in allocate(n, mix).items() for _ in range(c)]
    names = [names[i] for i in split_rng.permutation(len(names))]
    slots: dict[str, list[int]] = {}
    seen: dict[str, int] = {}
    records = []
    for index, name in enumerate(names):
        rng = np.random.default_rng([seed, SPLITS[split], index + 1])
        item = TASKS[name](rng)
        slot = None
        if item.problem_type == "multiple choice" and shuffle_options:
            k = len(item.distractors) + 1
            if name not in slots:
                slots[name] = balanced_slots(split_rng, names.count(name), k)
            slot = slots[name][seen.get(name, 0)]
            seen[name] = seen.get(name, 0) + 1
        try:
            records.append(_record(out, split, index, name, item, slot, rng, split == "cot"))
        except ValueError as exc:
            raise ValueError(f"synthetic task {name!r}, {split} record {index}: {exc}") from exc
    return records


def make_dataset(out: str | os.PathLike, *, n_train: int = 256, n_test: int = 96, seed: int = 0,
                 tasks: TaskSpec = None, cot_tasks: TaskSpec = None, rl_tasks: TaskSpec = None,
                 n_cot: int | None = None, shuffle_options: bool = True, n_val: int = 0,
                 val_tasks: TaskSpec = None) -> dict[str, Path]:
    """Write the RL, CoT and test sets and their media under ``out``; return their paths.

    ``n_cot`` defaults to ``n_train``; ``cot_tasks`` and ``rl_tasks`` default to ``tasks``. ``n_val > 0`` adds
    a validation set (``val.jsonl``, mix ``val_tasks``, default ``cot_tasks``), drawn apart from the others:
    what the demo checks its cold start against.
    ``shuffle_options=False`` lists each multiple-choice task's options in one fixed order (every direction,
    every colour), so an answer's letter is the same in every question. Returns
    ``{"rl": out/"rl.jsonl", "cot": out/"cot.jsonl", "test": out/"test.jsonl", "media_root": out}`` (and
    ``"val"`` with ``n_val``).
    """
    out = Path(out)
    sizes = {"rl": n_train, "cot": n_train if n_cot is None else n_cot, "test": n_test, "val": n_val}
    for split, n in sizes.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"the {split} set size must be a non-negative integer, got {n!r}")
    mixes = {"rl": resolve_mix(tasks if rl_tasks is None else rl_tasks),
             "cot": resolve_mix(tasks if cot_tasks is None else cot_tasks), "test": resolve_mix(tasks)}
    mixes["val"] = mixes["cot"] if val_tasks is None else resolve_mix(val_tasks)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for split, n in sizes.items():
        if split == "val" and n == 0:
            continue
        records = build_split(out, split, n, mixes[split], seed, shuffle_options=shuffle_options)
        paths[split] = write_records(out / f"{split}.jsonl", records)
    paths["media_root"] = out
    return paths
