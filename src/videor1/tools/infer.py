"""One video (or image) and one question in; the model's reasoning and answer out.

The question goes through the same record -> prompt -> media path as training and evaluation
(`videor1.data.prompts`, `videor1.data.media`, `videor1.generation.engines.HFEngine`), so what `videor1 infer`
shows is what the evaluator scores. Decoding is greedy. Departure from the reference's inference script:
frames, fps and pixel budgets are a `VideoSpec` / `ImageSpec` (flags, or the `video` / `image` sections of
a config file; recorded in the JSON output), not constants.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from videor1.data.media import ImageSpec, VideoSpec, load_media
from videor1.model.families import fit_media_specs
from videor1.data.prompts import build_messages
from videor1.data.records import PROBLEM_TYPES, Record
from videor1.evaluate.benchmarks.base import lettered
from videor1.generation.engines import HFEngine, SamplingParams
from videor1.limits import current_limits, prompt_chars_problem
from videor1.model.inputs import Sample
from videor1.model.load import load_model, load_processor
from videor1.rewards import extract_answer, format_reward

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
_THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def make_question_record(media: Path, question: str, problem_type: str, options: Sequence[str]) -> Record:
    """An in-memory record for one question (no ground truth: the solution is empty)."""
    if problem_type not in PROBLEM_TYPES:
        raise ValueError(f"unknown --type {problem_type!r}; known: {', '.join(PROBLEM_TYPES)}")
    if problem_type == "multiple choice" and len(options) < 2:
        raise ValueError("multiple choice needs at least two --options")
    if problem_type != "multiple choice" and options:
        raise ValueError(f"--options are only for multiple choice, not {problem_type!r}")
    if not question.strip():
        raise ValueError("the question is empty")
    too_long = prompt_chars_problem(question, options)   # before the media are decoded or anything tokenised
    if too_long:
        raise ValueError(f"--question: {too_long} (limits.max_prompt_chars of --config)")
    data_type = "image" if media.suffix.lower() in IMAGE_SUFFIXES else "video"
    return Record(problem_id="infer", problem=question.strip(), data_type=data_type, problem_type=problem_type,
                  options=tuple(lettered(options)) if options else (), solution="", path=media.name)


def split_output(text: str) -> dict[str, Any]:
    """Reasoning (first <think> span), answer (first <answer> span) and whether the format is right."""
    think = _THINK_RE.search(text or "")
    return {"reasoning": think.group(1).strip() if think else "", "answer": extract_answer(text),
            "format_ok": bool(format_reward(text))}


def render(result: dict[str, Any]) -> str:
    """Human-readable reasoning and answer."""
    lines = ["Reasoning:", result["reasoning"] or "(no <think> section)", ""]
    if result["answer"]:
        lines.append(f"Answer: {result['answer']}")
    else:
        lines += ["Answer: (no <answer> section; raw output below)", result["output"]]
    return "\n".join(lines)


INFER_MAX_PIXELS = 256 * 28 * 28  # infer's default pixel budget per frame and per image (as `videor1 eval`)
DEFAULT_VIDEO = VideoSpec(max_pixels=INFER_MAX_PIXELS)
DEFAULT_IMAGE = ImageSpec(max_pixels=INFER_MAX_PIXELS)


def run_infer(*, model: str | Path, video: str | Path, question: str, problem_type: str = "free-form",
              options: Sequence[str] = (), video_spec: VideoSpec = DEFAULT_VIDEO,
              image_spec: ImageSpec = DEFAULT_IMAGE, max_new_tokens: int = 1024, as_json: bool = False) -> str:
    """Answer `question` about `video` (a video or image file) with the model in `model`; text, or one JSON
    object with as_json. `video_spec` / `image_spec` say how the media become model inputs."""
    media_path = Path(video)
    if not media_path.is_file():
        raise FileNotFoundError(f"no such video or image file: {media_path}")
    record = make_question_record(media_path, question, problem_type, list(options))
    processor = load_processor(model)
    video_spec, image_spec = fit_media_specs(processor, video_spec, image_spec)  # the family's frame factor
    media = load_media(record, media_path.parent, video_spec, image_spec)
    engine = HFEngine(load_model(model), processor, batch_size=1)
    params = SamplingParams(n=1, max_new_tokens=max_new_tokens, do_sample=False)
    completion = engine.generate([Sample(record=record, media=media, messages=build_messages(record))], params)[0][0]
    result = {
        "model": str(model), "video": str(media_path), "question": record.problem,
        "problem_type": problem_type, "options": list(record.options), **split_output(completion.text),
        "output": completion.text, "n_tokens": len(completion.token_ids), "finished": completion.finished,
        "frames": int(media.frames.shape[0]) if hasattr(media, "frames") else None,
        "sample_fps": getattr(media, "sample_fps", None), "max_frames": video_spec.max_frames,
        "fps": video_spec.fps, "max_pixels": video_spec.max_pixels if record.data_type == "video"
        else image_spec.max_pixels, "video_spec": asdict(video_spec), "image_spec": asdict(image_spec),
        "max_new_tokens": max_new_tokens, "decoding": "greedy", "limits": current_limits().as_dict(),
    }
    return json.dumps(result, ensure_ascii=False) if as_json else render(result)
