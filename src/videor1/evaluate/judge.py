"""LLM-judge scoring (`--judge URL --judge-model NAME`) for the formats benchmarks score by a model reading
the answer: TempCompass `captioning` and MMVU's open-ended questions.

The judge is any OpenAI-compatible chat endpoint (`POST <URL>/v1/chat/completions`; a local
`vllm serve MODEL` is the expected one). `URL` may be the server root, `.../v1`, or the full
`.../v1/chat/completions`. Each request is one chat (system + user message, built by the adapter's
`judge_messages` from the official judge prompt, transcribed in our words), `temperature` 0 and
`max_tokens` `JudgeSpec.max_tokens`; the reply's `choices[0].message.content` is read by the adapter's
`judge_verdict` into a score, or None when it cannot be read (the item then scores 0 and is recorded as
"unparseable", with the reply).

Verdicts are cached in the run folder (`judge_verdicts.jsonl`, one line per judged answer, appended and
flushed as each arrives), keyed by the judge model and a hash of the exact request, so a rerun (or
`videor1 score`) asks only what is not cached yet; a reply that never came (connection or HTTP error) is
not cached, is listed with its reason, and is asked again next time. `scores.json` names the judge (URL,
model) and counts its verdicts. Without a judge these items are never generated: each is listed as not
evaluated, with the reason (`Benchmark.load(judge=False)`).

Departures: the official scripts sample their judge (TempCompass: gpt-3.5-turbo at temperature 1.0; MMVU:
GPT-4o); we ask at temperature 0 so a verdict is reproducible for a given judge model, and any model can be
the judge: the judge used is part of the result and is reported beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CACHE = "judge_verdicts.jsonl"
JudgedRows = tuple[list[dict[str, Any]], list[str], "dict[str, Any] | None"]   # rows, unusable lines, judge info


@dataclass(frozen=True)
class JudgeSpec:
    """Which judge: an OpenAI-compatible endpoint and the model name it serves."""

    url: str
    model: str
    max_tokens: int = 256
    timeout_s: float = 300.0


class JudgeError(RuntimeError):
    """The judge gave no reply (connection refused, HTTP error, a body that is not a chat completion)."""


def endpoint(url: str) -> str:
    """The chat-completions URL for a server root, a `/v1` base, or the full endpoint."""
    base = url.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"


def request_body(spec: JudgeSpec, messages: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    return {"model": spec.model, "messages": [dict(m) for m in messages], "temperature": 0.0,
            "max_tokens": spec.max_tokens}


def request_key(spec: JudgeSpec, messages: Sequence[Mapping[str, str]]) -> str:
    """What a cached verdict is keyed by: the judge model and the exact request."""
    raw = json.dumps(request_body(spec, messages), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


def ask(spec: JudgeSpec, messages: Sequence[Mapping[str, str]]) -> str:
    """The judge's reply text to one chat; JudgeError naming the endpoint when there is none."""
    url = endpoint(spec.url)
    data = json.dumps(request_body(spec, messages)).encode("utf-8")
    headers = {"Content-Type": "application/json"}
    if os.environ.get("VIDEOR1_JUDGE_API_KEY"):
        headers["Authorization"] = f"Bearer {os.environ['VIDEOR1_JUDGE_API_KEY']}"
    req = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=spec.timeout_s) as resp:
            body = json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:300]
        raise JudgeError(f"{url}: HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise JudgeError(f"{url}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise JudgeError(f"{url}: reply is not JSON ({exc})") from None
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise JudgeError(f"{url}: reply has no choices[0].message.content: {str(body)[:200]}") from None
    return content if isinstance(content, str) else ""


# ------------------------------------------------------------------------------------------ cache
def read_cache(path: Path) -> dict[str, dict[str, Any]]:
    """{request key: cached verdict line}; a half-written last line (a killed run) is ignored."""
    if not path.is_file():
        return {}
    raw = path.read_bytes()
    complete = raw[: raw.rfind(b"\n") + 1]
    if len(complete) != len(raw):
        with path.open("r+b") as fh:
            fh.truncate(len(complete))
    cache = {}
    for n, line in enumerate(complete.decode("utf-8").splitlines(), 1):
        if line.strip():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: line {n} is not JSON ({exc}); delete the file to judge again") from None
            cache[entry["key"]] = entry
    return cache


def append_cache(path: Path, entry: Mapping[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


# ------------------------------------------------------------------------------------------ scoring
def needs_judge(row: Mapping[str, Any]) -> str | None:
    """The judge-scored format a prediction row belongs to, or None."""
    return (row.get("meta") or {}).get("judge") or None


def unjudged_line(row: Mapping[str, Any]) -> str:
    return (f"{row['id']}: {needs_judge(row)} is scored by an LLM judge; not evaluated without --judge URL "
            "--judge-model NAME")


def judge_one(adapter: Any, row: dict[str, Any], spec: JudgeSpec, cache: dict[str, dict[str, Any]],
              cache_path: Path) -> str:
    """Score one judge-scored row in place (`official`, `judge`); returns its status."""
    if row.get("error"):
        row["judge"] = {"status": "error item", "model": spec.model}
        return "error item"
    messages = adapter.judge_messages(row, row.get("output") or "")
    key = request_key(spec, messages)
    entry = cache.get(key)
    if entry is None:
        try:
            reply = ask(spec, messages)
        except JudgeError as exc:
            row["official"] = 0.0
            row["judge"] = {"status": "no reply", "reason": str(exc), "model": spec.model}
            return "no reply"
        score, read = adapter.judge_verdict(row, reply)
        entry = {"key": key, "id": row["id"], "shuffled": bool(row.get("shuffled")), "url": spec.url,
                 "model": spec.model, "reply": reply, "read": read, "score": score,
                 "status": "ok" if score is not None else "unparseable"}
        append_cache(cache_path, entry)
        cache[key] = entry
    row["official"] = float(entry["score"] or 0.0)
    row["judge"] = {k: entry[k] for k in ("status", "read", "reply", "model")}
    return str(entry["status"])


def judge_rows(adapter: Any, rows: Sequence[dict[str, Any]], spec: JudgeSpec | None, run_dir: Path | None,
               echo: Callable[[str], None] | None = None) -> JudgedRows:
    """(rows to summarise, unusable lines, the judge's summary for scores.json).

    Without a judge, judge-scored rows are dropped and listed as not evaluated. With one, each is scored
    through the cache in `run_dir` (asked only when not cached)."""
    judged = [r for r in rows if needs_judge(r)]
    if not judged:
        return list(rows), [], (None if spec is None else {**asdict(spec), "items": 0})
    if spec is None:
        kept = [r for r in rows if not needs_judge(r)]
        return kept, [unjudged_line(r) for r in judged if not r.get("shuffled")], None
    if run_dir is None:
        raise ValueError("judge-scored items need a run folder for the verdict cache")
    cache_path = Path(run_dir) / CACHE
    cache = read_cache(cache_path)
    before = len(cache)
    statuses: Counter[str] = Counter()
    for row in judged:
        statuses[judge_one(adapter, row, spec, cache, cache_path)] += 1
    if echo is not None:
        echo(f"judge {spec.model} at {spec.url}: {len(judged)} answers, {len(cache) - before} asked now, "
             f"{dict(statuses)}")
    problems = [f"{r['id']}: judge gave no reply ({r['judge']['reason']}); scored 0, asked again on the next run"
                for r in judged if r["judge"]["status"] == "no reply"]
    info = {"url": spec.url, "model": spec.model, "endpoint": endpoint(spec.url), "max_tokens": spec.max_tokens,
            "temperature": 0.0, "items": len(judged), "verdicts": dict(statuses), "cache": CACHE}
    return list(rows), problems, info


# --------------------------------------------------------------------------- the official judge prompts
# TempCompass `eval_captioning.py` / `prompt_templates.caption_evaluation_prompt` and MMVU's open-ended judge
# prompt, restated in our own words (same task, same reply format, same reading of the reply).
CAPTION_JUDGE_SYSTEM = "You are an assistant that answers questions."
CAPTION_JUDGE_TASK = (
    "You are given a description of a video and a multiple-choice question about that video. Using only the "
    "description, pick the right choice and say briefly why. If no choice is right, or the description does not "
    "say enough to tell, answer \"None of the choices are correct\". Reply in exactly this form:\n"
    "Reasoning: <why you chose it>\n"
    "Answer: <the choice, written as its letter, a period and its text, e.g. \"B. slowly\">\n\n"
    "Example. Video description: A dog runs to the left.\nMulti-choice question:\nWhich way does the dog run?\n"
    "A. right\nB. left\nC. up\nReasoning: The description says the dog runs to the left.\nAnswer: B. left")

OPEN_JUDGE_SYSTEM = (
    "You grade answers strictly. Output 1 when the model's answer is fully correct and 0 in every other case.")
OPEN_JUDGE_TASK = (
    "Grading rules for an open-ended question:\n"
    "- The model's answer may contain reasoning; judge its final answer.\n"
    "- 1 when the final answer means the same as the reference answer, even if written differently.\n"
    "- Equivalent mathematical notation counts as the same (n² and n^2).\n"
    "- 0 when the answer is only partly right or adds wrong information.\n"
    "- Differences of capitalisation, spacing or formatting do not matter.\n"
    "- A number is right when it matches to reasonable precision; where a unit is asked for, the unit must be "
    "right too.\n"
    "Reply with the single character 1 or 0 and nothing else.")


def tempcompass_caption_messages(caption: str, mc_question: str) -> list[dict[str, str]]:
    user = f"{CAPTION_JUDGE_TASK}\n\nVideo description: {caption}\nMulti-choice question:\n{mc_question}\n"
    return [{"role": "system", "content": CAPTION_JUDGE_SYSTEM}, {"role": "user", "content": user}]


def tempcompass_caption_verdict(reply: str, mc_answer: str) -> tuple[float | None, str]:
    """TempCompass's reading of the judge's reply: the text after "Answer:" on the line that has it (else the
    whole reply) is right when exactly one of "A." ... "D." occurs in it and its part before the first ". "
    is the truth's letter. None (unparseable) when the reply is empty or names no option at all."""
    text = (reply or "").strip()
    if not text:
        return None, ""
    answer = text
    for line in text.split("\n"):
        if "Answer" in line:
            answer = line.strip().replace("Answer:", "").strip()
    named = sum(answer.count(f"{c}.") for c in "ABCD")
    if named == 0:
        return None, answer
    return (1.0 if named == 1 and answer.split(". ")[0] == mc_answer.split(". ")[0] else 0.0), answer


def mmvu_open_messages(question: str, answer: str, prediction: str) -> list[dict[str, str]]:
    user = (f"{OPEN_JUDGE_TASK}\n\nQuestion: {question}\nReference answer: {answer}\n"
            f"Model answer: {prediction}\n")
    return [{"role": "system", "content": OPEN_JUDGE_SYSTEM}, {"role": "user", "content": user}]


def mmvu_open_verdict(reply: str) -> tuple[float | None, str]:
    """1 / 0 as the judge wrote it (quotes, spaces and a final period ignored); None for anything else
    (officially anything but "1" counts as wrong: here it also scores 0, recorded as unparseable)."""
    read = re.sub(r"^[\s\"'`]+|[\s\"'`.]+$", "", reply or "")
    if read in ("1", "0"):
        return float(read), read
    return None, read[:200]
