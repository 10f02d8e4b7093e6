"""The synthetic tasks: a registry (`TASKS`) of small generator functions, each drawing one question with
its media.

A task function takes a ``numpy.random.Generator`` and returns an :class:`Item`: the frames (a clip, or one
image), the question, the answer and a one-sentence reasoning that names the evidence (used as the CoT
``process``). Multiple-choice tasks return the correct option text, the distractors, and the task's full
option list in a fixed order (``choices``); the dataset builder (:mod:`videor1.data.synth.build`) either shuffles
answer + distractors with the correct option at a balanced letter (the default) or lists ``choices`` in
their fixed order (``shuffle_options=False``, an easier variant the demo uses).

Tasks whose answer depends on frame order (``temporal=True``): ``direction`` (which way a square moves;
its variants ``direction_short``, a short move, and ``direction_distractor``, a still second shape beside it),
``first_shape`` (two shapes shown one after the other: the colour of the first) and ``colour_change`` (a
square that changes colour once: its colour at the end). Order-independent: ``colour``, ``count``,
``describe`` (a shape and its *axis* of motion, which shuffling does not change), ``distance`` (how far
the square travels), ``ocr``, and the image tasks ``image_colour``, ``image_count`` and ``image_ocr``.

Videos are :data:`CLIP_FRAMES` frames at :data:`CLIP_FPS` fps (2 s), so sampling at 2 fps yields 4 frames;
56x56 pixels (84x84 for text), the pixel budgets' lower bound, so the loader does not rescale them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from videor1.data.synth import render as R
from videor1.registry import Registry

CLIP_FRAMES = 8
CLIP_FPS = 4
SIZE = 56
TEXT_SIZE = 84
WORDS = ("CAT", "DOG", "SUN", "RED", "BOX", "CAR", "MAP", "KEY", "HAT", "PEN", "CUP", "BUS",
         "FISH", "BIRD", "TREE", "STAR", "MOON", "BOOK", "LAMP", "SHIP")
DIRECTIONS = ("left", "right", "up", "down")
_AXIS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
_EDGE = {"left": "left", "right": "right", "up": "top", "down": "bottom"}
_OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


@dataclass(frozen=True)
class Item:
    """One generated question. ``frames`` is uint8 [T, H, W, 3]; T == 1 for an image."""

    frames: np.ndarray
    data_type: str            # "video" | "image"
    problem: str
    problem_type: str
    answer: str               # the correct option text (multiple choice) or the answer itself
    reasoning: str            # one sentence naming the evidence
    temporal: bool
    distractors: tuple[str, ...] = ()      # multiple choice: wrong options (shuffled with the answer)
    choices: tuple[str, ...] = ()          # multiple choice: the task's full option list in a fixed order
    facts: dict = field(default_factory=dict)   # ground-truth scene parameters, kept in the record's extra


TaskFn = Callable[[np.random.Generator], Item]
#: The tasks by name (a `videor1.registry.Registry`): add one with ``@TASKS.register("name")``; an unknown
#: name raises KeyError listing the known ones.  Iteration follows registration order (this file's order).
TASKS: Registry[TaskFn] = Registry("synthetic task")


# ------------------------------------------------------------------------------------------ helpers
def _even(rng: np.random.Generator, low: int, high: int) -> int:
    """A random even integer in [low, high] (both rounded inward to even)."""
    lo, hi = low + (low % 2), high - (high % 2)
    return int(rng.integers(lo // 2, hi // 2 + 1)) * 2


def _pick(rng: np.random.Generator, pool, k: int, exclude=()) -> list:
    choices = [p for p in pool if p not in exclude]
    idx = rng.choice(len(choices), size=k, replace=False)
    return [choices[i] for i in idx]


def _colour_distractors(rng: np.random.Generator, answer: str, k: int = 3) -> tuple[str, ...]:
    return tuple(_pick(rng, list(R.PALETTE), k, exclude=(answer,)))


def _still(frame: np.ndarray, n: int = CLIP_FRAMES) -> np.ndarray:
    return np.repeat(frame[None], n, axis=0)


def _motion_path(rng: np.random.Generator, direction: str, size: int, distance: int | None = None,
                 ) -> list[tuple[int, int]]:
    """Top-left corners, one a frame, of a box of ``size`` moving in ``direction`` by ``distance`` pixels
    (default: from near one edge to near the other)."""
    span = SIZE - size
    dx, dy = _AXIS[direction]
    if distance is None:
        start = _even(rng, 0, 6)
        distance = span - start - _even(rng, 0, 6)
    else:
        start = _even(rng, 0, span - distance)
    begin = start if (dx + dy) > 0 else span - start
    cross = _even(rng, 2, span - 2)
    path = []
    for i in range(CLIP_FRAMES):
        along = begin + (dx + dy) * int(round(distance * i / (CLIP_FRAMES - 1) / 2.0)) * 2
        path.append((along, cross) if dx else (cross, along))
    return path


def _moving_clip(path: list[tuple[int, int]], kind: str, size: int, colour: str) -> np.ndarray:
    frames = []
    for x, y in path:
        frame = R.canvas(SIZE)
        R.draw_shape(frame, kind, x, y, size, colour)
        frames.append(frame)
    return np.stack(frames)


def _scatter(rng: np.random.Generator, n: int, grid: int = 3, sizes: tuple[int, int] = (8, 12),
             ) -> list[tuple[int, int, int]]:
    """``n`` non-overlapping (x, y, size) boxes: one per distinct cell of a grid x grid layout."""
    cell = SIZE // grid
    cells = rng.choice(grid * grid, size=n, replace=False)
    boxes = []
    for c in cells:
        size = _even(rng, sizes[0], min(sizes[1], cell - 4))
        x0, y0 = (int(c) % grid) * cell, (int(c) // grid) * cell
        boxes.append((x0 + _even(rng, 0, cell - size), y0 + _even(rng, 0, cell - size), size))
    return boxes


def _count_frame(rng: np.random.Generator, n: int) -> np.ndarray:
    frame = R.canvas(SIZE)
    for x, y, size in _scatter(rng, n):
        R.draw_shape(frame, str(rng.choice(R.SHAPES)), x, y, size, str(rng.choice(list(R.PALETTE))))
    return frame


def _word_frame(rng: np.random.Generator, word: str) -> np.ndarray:
    font_size = 22
    w, h = R.text_box(word, font_size)
    x = int(rng.integers(2, max(3, TEXT_SIZE - w - 2)))
    y = int(rng.integers(2, max(3, TEXT_SIZE - h - 2)))
    return R.draw_text(R.canvas(TEXT_SIZE), word, x, y, font_size)


# --------------------------------------------------------------------------- order-dependent (video)
@TASKS.register("direction")
def direction(rng: np.random.Generator) -> Item:
    way = str(rng.choice(DIRECTIONS))
    colour = str(rng.choice(list(R.PALETTE)))
    size = _even(rng, 10, 14)
    frames = _moving_clip(_motion_path(rng, way, size), "square", size, colour)
    return Item(
        frames=frames, data_type="video", problem_type="multiple choice", temporal=True,
        problem=f"In which direction does the {colour} square move?",
        answer=way, distractors=tuple(d for d in DIRECTIONS if d != way), choices=DIRECTIONS,
        reasoning=(f"The square starts near the {_EDGE[_OPPOSITE[way]]} and ends near the "
                   f"{_EDGE[way]}, so it moves {way}."),
        facts={"direction": way, "colour": colour, "size": size},
    )


@TASKS.register("first_shape")
def first_shape(rng: np.random.Generator) -> Item:
    colours = _pick(rng, list(R.PALETTE), 2)
    kinds = _pick(rng, list(R.SHAPES), 2)
    boxes = _scatter(rng, 2, grid=2, sizes=(12, 16))
    frames = []
    for i in range(CLIP_FRAMES):
        j = 0 if i < CLIP_FRAMES // 2 else 1
        frame = R.canvas(SIZE)
        x, y, size = boxes[j]
        R.draw_shape(frame, kinds[j], x, y, size, colours[j])
        frames.append(frame)
    others = _pick(rng, list(R.PALETTE), 2, exclude=colours)
    return Item(
        frames=np.stack(frames), data_type="video", problem_type="multiple choice", temporal=True,
        problem="Two shapes are shown one after the other. What colour is the shape shown first?",
        answer=colours[0], distractors=(colours[1], *others), choices=tuple(R.PALETTE),
        reasoning=f"The {colours[0]} {kinds[0]} is in the early frames and the {colours[1]} {kinds[1]} "
                  "in the late ones.",
        facts={"first": f"{colours[0]} {kinds[0]}", "second": f"{colours[1]} {kinds[1]}"},
    )


@TASKS.register("last_shape")
def last_shape(rng: np.random.Generator) -> Item:
    """``first_shape``'s scene asked the other way round: the colour of the shape shown last."""
    first = first_shape(rng)
    colours = [first.answer, first.distractors[0]]
    return replace(
        first, problem="Two shapes are shown one after the other. What colour is the shape shown last?",
        answer=colours[1], distractors=(colours[0], *first.distractors[1:]),
        reasoning=f"The {first.facts['first']} is in the early frames and the {first.facts['second']} "
                  "in the late ones, so the last one is " + colours[1] + ".",
    )


@TASKS.register("direction_short")
def direction_short(rng: np.random.Generator) -> Item:
    """``direction`` with a short move (16-24 pixels instead of most of the frame): a new distance."""
    way = str(rng.choice(DIRECTIONS))
    colour = str(rng.choice(list(R.PALETTE)))
    size = _even(rng, 10, 14)
    dist = _even(rng, 16, 24)
    frames = _moving_clip(_motion_path(rng, way, size, distance=dist), "square", size, colour)
    return Item(
        frames=frames, data_type="video", problem_type="multiple choice", temporal=True,
        problem=f"In which direction does the {colour} square move?",
        answer=way, distractors=tuple(d for d in DIRECTIONS if d != way), choices=DIRECTIONS,
        reasoning=f"The square moves a short way {way}, from the early frames to the late ones.",
        facts={"direction": way, "colour": colour, "size": size, "distance": dist},
    )


@TASKS.register("direction_distractor")
def direction_distractor(rng: np.random.Generator) -> Item:
    """``direction`` with a second, still shape of another colour and kind in the frame: a distractor."""
    way = str(rng.choice(DIRECTIONS))
    colour, other = _pick(rng, list(R.PALETTE), 2)
    kind = str(rng.choice([k for k in R.SHAPES if k != "square"]))
    size, still = _even(rng, 10, 14), _even(rng, 10, 12)
    path = _motion_path(rng, way, size)
    horizontal = _AXIS[way][0] != 0
    cross = path[0][1] if horizontal else path[0][0]      # the moving square's band across its motion
    far = 2 if cross > SIZE // 2 else SIZE - still - 2    # the still shape sits on the other side of the frame
    along = _even(rng, 2, SIZE - still - 2)
    x, y = (along, far) if horizontal else (far, along)
    frames = []
    for px, py in path:
        frame = R.canvas(SIZE)
        R.draw_shape(frame, kind, x, y, still, other)
        R.draw_shape(frame, "square", px, py, size, colour)
        frames.append(frame)
    return Item(
        frames=np.stack(frames), data_type="video", problem_type="multiple choice", temporal=True,
        problem=f"In which direction does the {colour} square move?",
        answer=way, distractors=tuple(d for d in DIRECTIONS if d != way), choices=DIRECTIONS,
        reasoning=f"The {other} {kind} stays still; the {colour} square moves {way}.",
        facts={"direction": way, "colour": colour, "size": size, "distractor": f"{other} {kind}"},
    )


@TASKS.register("colour_change")
def colour_change(rng: np.random.Generator) -> Item:
    start, end = _pick(rng, list(R.PALETTE), 2)
    size = _even(rng, 12, 18)
    x, y = _even(rng, 4, SIZE - size - 4), _even(rng, 4, SIZE - size - 4)
    frames = []
    for i in range(CLIP_FRAMES):
        frame = R.canvas(SIZE)
        R.draw_shape(frame, "square", x, y, size, start if i < CLIP_FRAMES // 2 else end)
        frames.append(frame)
    return Item(
        frames=np.stack(frames), data_type="video", problem_type="multiple choice", temporal=True,
        problem="The square changes colour once. What colour is it at the end?",
        answer=end, distractors=(start, *_pick(rng, list(R.PALETTE), 2, exclude=(start, end))),
        choices=tuple(R.PALETTE),
        reasoning=f"The square is {start} in the early frames and {end} in the late ones.",
        facts={"start": start, "end": end},
    )


# ------------------------------------------------------------------------- order-independent (video)
@TASKS.register("colour")
def colour(rng: np.random.Generator) -> Item:
    hue = str(rng.choice(list(R.PALETTE)))
    size = _even(rng, 10, 14)
    frames = _moving_clip(_motion_path(rng, str(rng.choice(DIRECTIONS)), size), "square", size, hue)
    return Item(
        frames=frames, data_type="video", problem_type="multiple choice", temporal=False,
        problem="What colour is the moving square?", answer=hue,
        distractors=_colour_distractors(rng, hue), choices=tuple(R.PALETTE),
        reasoning=f"The square is {hue} in every frame.",
        facts={"colour": hue},
    )


@TASKS.register("count")
def count(rng: np.random.Generator) -> Item:
    n = int(rng.integers(1, 6))
    return Item(
        frames=_still(_count_frame(rng, n)), data_type="video", problem_type="numerical", temporal=False,
        problem="How many shapes are in the video?", answer=str(n),
        reasoning=f"I count {n} shape{'s' if n > 1 else ''} in the frames.", facts={"count": n},
    )


@TASKS.register("describe")
def describe(rng: np.random.Generator) -> Item:
    hue, kind = str(rng.choice(list(R.PALETTE))), str(rng.choice(R.SHAPES))
    motion = str(rng.choice(("horizontally", "vertically", "still")))
    size = _even(rng, 12, 16)
    if motion == "still":
        x, y = _even(rng, 4, SIZE - size - 4), _even(rng, 4, SIZE - size - 4)
        path = [(x, y)] * CLIP_FRAMES
    else:
        way = str(rng.choice(("left", "right") if motion == "horizontally" else ("up", "down")))
        path = _motion_path(rng, way, size)
    answer = f"a {hue} {kind} " + ("standing still" if motion == "still" else f"moving {motion}")
    return Item(
        frames=_moving_clip(path, kind, size, hue), data_type="video", problem_type="free-form",
        temporal=False, problem="Describe the shape and how it moves, in a few words.", answer=answer,
        reasoning=f"There is one {hue} {kind} and it is " + (
            "in the same place in every frame." if motion == "still" else f"moving {motion}."),
        facts={"colour": hue, "shape": kind, "motion": motion},
    )


@TASKS.register("distance")
def distance(rng: np.random.Generator) -> Item:
    size = _even(rng, 10, 12)
    dist = _even(rng, 10, SIZE - size - 4)
    path = _motion_path(rng, str(rng.choice(DIRECTIONS)), size, distance=dist)
    moved = abs(path[-1][0] - path[0][0]) + abs(path[-1][1] - path[0][1])
    return Item(
        frames=_moving_clip(path, "square", size, str(rng.choice(list(R.PALETTE)))), data_type="video",
        problem_type="regression", temporal=False,
        problem=(f"The frame is {SIZE} pixels wide. How many pixels does the square travel between the "
                 "first and the last frame?"),
        answer=str(moved), reasoning=f"The square moves about {moved} pixels in a straight line.",
        facts={"distance": moved},
    )


@TASKS.register("ocr")
def ocr(rng: np.random.Generator) -> Item:
    word = str(rng.choice(WORDS))
    return Item(
        frames=_still(_word_frame(rng, word)), data_type="video", problem_type="OCR", temporal=False,
        problem="What word is written in the video?", answer=word,
        reasoning=f"The frames show the word {word}.", facts={"word": word},
    )


# ------------------------------------------------------------------------------------------- images
@TASKS.register("image_colour")
def image_colour(rng: np.random.Generator) -> Item:
    hue, kind = str(rng.choice(list(R.PALETTE))), str(rng.choice(R.SHAPES))
    size = _even(rng, 12, 20)
    frame = R.canvas(SIZE)
    R.draw_shape(frame, kind, _even(rng, 2, SIZE - size - 2), _even(rng, 2, SIZE - size - 2), size, hue)
    return Item(
        frames=frame[None], data_type="image", problem_type="multiple choice", temporal=False,
        problem=f"What colour is the {kind}?", answer=hue, distractors=_colour_distractors(rng, hue),
        choices=tuple(R.PALETTE),
        reasoning=f"The {kind} in the image is {hue}.", facts={"colour": hue, "shape": kind},
    )


@TASKS.register("image_count")
def image_count(rng: np.random.Generator) -> Item:
    n = int(rng.integers(1, 6))
    return Item(
        frames=_count_frame(rng, n)[None], data_type="image", problem_type="numerical", temporal=False,
        problem="How many shapes are in the image?", answer=str(n),
        reasoning=f"I count {n} shape{'s' if n > 1 else ''} in the image.", facts={"count": n},
    )


@TASKS.register("image_ocr")
def image_ocr(rng: np.random.Generator) -> Item:
    word = str(rng.choice(WORDS))
    return Item(
        frames=_word_frame(rng, word)[None], data_type="image", problem_type="OCR", temporal=False,
        problem="What word is written in the image?", answer=word,
        reasoning=f"The image shows the word {word}.", facts={"word": word},
    )
