"""`--judge` against a real OpenAI-compatible server: vLLM's own `vllm.entrypoints.openai.api_server` serving the
tiny random Qwen2.5-VL on the CPU. No mock: every verdict is a real `/v1/chat/completions` reply.

The tiny model's replies are random text, so what is asserted is the machinery: the request our code sends
is accepted (a reply comes back for every item), whatever comes back is read by the benchmark's own rule
(random text: "unparseable", recorded with the reply), verdicts are cached and a rerun asks nothing again,
an interrupted judging resumes where it stopped, a judge that gives no reply is listed and asked again
next time, and scores.json / report.md name the judge.

The server's Python: `$VIDEOR1_VLLM_PYTHON`, else `.venv-vllm/bin/python` in the checkout (what
`make setup-vllm` builds); skipped when none imports vLLM. Or point
`$VIDEOR1_TEST_JUDGE_URL` (+ `$VIDEOR1_TEST_JUDGE_MODEL`) at a server already running.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from videor1.evaluate import judge as judge_mod
from videor1.evaluate.benchmarks import get_benchmark
from videor1.evaluate.judge import CACHE, JudgeSpec, endpoint, judge_rows, request_body
from videor1.evaluate.runner import PREDICTIONS, append_rows, rescore, score_row

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def vllm_python() -> str | None:
    candidates = [os.environ.get("VIDEOR1_VLLM_PYTHON"), str(REPO / ".venv-vllm/bin/python")]
    for py in filter(None, candidates):
        if Path(py).is_file() and subprocess.run([py, "-c", "import vllm.entrypoints.openai.api_server"],
                                                 capture_output=True, timeout=300).returncode == 0:
            return py
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"vLLM server exited ({proc.returncode}): {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/v1/models", timeout=5):
                return
        except OSError:
            time.sleep(2)
    pytest.fail(f"vLLM server not up after {timeout_s}s: {log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def judge_server(tiny_model_dir, tmp_path_factory):
    """(url, model name) of a real OpenAI-compatible server."""
    if os.environ.get("VIDEOR1_TEST_JUDGE_URL"):
        yield os.environ["VIDEOR1_TEST_JUDGE_URL"], os.environ.get("VIDEOR1_TEST_JUDGE_MODEL", "tiny-judge")
        return
    py = vllm_python()
    if py is None:
        why = "no Python with vLLM (set VIDEOR1_VLLM_PYTHON, or `make setup-vllm`)"
        if os.environ.get("VIDEOR1_REQUIRE_VLLM") == "1":   # make test-vllm: CI must run it
            pytest.fail(why)
        pytest.skip(why)
    port, log = free_port(), tmp_path_factory.mktemp("judge") / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
    env.pop("PYTHONPATH", None)
    with log.open("w") as fh:
        proc = subprocess.Popen([py, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model_dir),
                                 "--served-model-name", "tiny-judge", "--host", "127.0.0.1", "--port", str(port),
                                 "--max-model-len", "2048", "--enforce-eager"],
                                stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(url, proc, log)
        yield url, "tiny-judge"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def judged_rows(tmp_path: Path) -> tuple[object, list[dict]]:
    """Prediction rows of MMVU open-ended questions (as `videor1 eval` writes them), with model outputs."""
    bench = get_benchmark("mmvu")
    rows = [{"id": f"o{i}", "question": f"Which law is shown in clip {i}?", "answer": "Newton's first law",
             "question_type": "open-ended", "video": f"videos/Mechanics/{i}.mp4", "metadata": {"subject": "Mechanics"}}
            for i in range(4)]
    (tmp_path / "validation.json").write_text(json.dumps(rows))
    items = bench.load(tmp_path / "validation.json", judge=True).items
    out = []
    for i, item in enumerate(items):
        row = {**item.row(), "shuffled": False, "perm": None, "error": None, "n_tokens": 3,
               "output": f"<think>hm</think><answer>answer {i}</answer>"}
        out.append(score_row(bench, row))
    return bench, out


def test_judge_scores_through_a_real_server_cache_resume_and_scores_json(judge_server, tmp_path, monkeypatch):
    url, model = judge_server
    spec = JudgeSpec(url, model, max_tokens=24)
    bench, rows = judged_rows(tmp_path)
    sent: list[dict] = []
    real_ask = judge_mod.ask

    def recording_ask(s, messages):   # the real request to the real server, recorded on the way
        sent.append(request_body(s, messages))
        return real_ask(s, messages)

    monkeypatch.setattr(judge_mod, "ask", recording_ask)
    run = tmp_path / "run"
    run.mkdir()
    # an interrupted first pass: two answers judged
    _, problems, info = judge_rows(bench, [dict(r) for r in rows[:2]], spec, run)
    assert len(sent) == 2 and not problems and info["model"] == model
    body = sent[0]
    assert body["model"] == model and body["temperature"] == 0.0 and body["max_tokens"] == 24
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "Reference answer: Newton's first law" in body["messages"][1]["content"]
    assert "Model answer: answer 0" in body["messages"][1]["content"]   # the answer span, not the reasoning
    # resume: only the two not yet judged are asked
    scored, problems, info = judge_rows(bench, [dict(r) for r in rows], spec, run)
    assert len(sent) == 4 and not problems and info["items"] == 4
    cache = [json.loads(line) for line in (run / CACHE).read_text().splitlines()]
    assert [c["id"] for c in cache] == ["o0", "o1", "o2", "o3"] and all(c["model"] == model for c in cache)
    for c, row in zip(cache, scored):   # whatever came back is read by the benchmark's rule, and recorded
        assert isinstance(c["reply"], str)
        score, read = bench.judge_verdict(row, c["reply"])
        assert (c["score"], c["read"]) == (score, read)
        assert c["status"] == ("ok" if score is not None else "unparseable")
        assert row["official"] == (score or 0.0) and row["judge"]["status"] == c["status"]
    assert sum(info["verdicts"].values()) == 4
    # a rerun asks nothing
    judge_rows(bench, [dict(r) for r in rows], spec, run)
    assert len(sent) == 4
    # scores.json names the judge (through `videor1 score` on a run folder)
    append_rows(run / PREDICTIONS, rows)
    report = rescore("mmvu", run / PREDICTIONS, out=run, judge=spec)
    summary = json.loads((run / "scores.json").read_text())
    assert summary["judge"]["model"] == model and summary["judge"]["url"] == url
    assert summary["judge"]["endpoint"] == endpoint(url) and summary["counts"]["items"] == 4
    assert model in report and "LLM judge" in report and len(sent) == 4   # all from the cache


def test_a_judge_that_does_not_answer_is_listed_and_asked_again(judge_server, tmp_path):
    url, model = judge_server
    bench, rows = judged_rows(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    dead = JudgeSpec(f"http://127.0.0.1:{free_port()}", model, max_tokens=8, timeout_s=5)
    scored, problems, info = judge_rows(bench, [dict(r) for r in rows[:1]], dead, run)
    assert scored[0]["official"] == 0.0 and scored[0]["judge"]["status"] == "no reply"
    assert len(problems) == 1 and "asked again" in problems[0] and info["verdicts"] == {"no reply": 1}
    assert not (run / CACHE).exists() or not (run / CACHE).read_text()
    scored, problems, _ = judge_rows(bench, [dict(r) for r in rows[:1]], JudgeSpec(url, model, max_tokens=8), run)
    assert not problems and scored[0]["judge"]["status"] in ("ok", "unparseable")


def test_tempcompass_captioning_is_judged_by_the_server(judge_server, tmp_path):
    url, model = judge_server
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "captioning").mkdir()
    pq.write_table(pa.Table.from_pylist([{"video_id": "1025", "question": "Describe the speed of the video.",
                                          "answer": "", "dim": "speed", "mc_question": "How fast?\nA. slowly\nB. fast",
                                          "mc_answer": "B. fast"}]), tmp_path / "captioning/test-00000-of-00001.parquet")
    bench = get_benchmark("tempcompass")
    (item,) = bench.load(tmp_path, judge=True).items
    row = score_row(bench, {**item.row(), "shuffled": False, "error": None, "output": "A car moves fast."})
    run = tmp_path / "run"
    run.mkdir()
    (scored,), problems, info = judge_rows(bench, [row], JudgeSpec(url, model, max_tokens=24), run)
    assert not problems and info["items"] == 1
    (entry,) = [json.loads(line) for line in (run / CACHE).read_text().splitlines()]
    assert (entry["score"], entry["read"]) == bench.judge_verdict(scored, entry["reply"])
    assert scored["official"] == (entry["score"] or 0.0)


def test_videor1_eval_with_judge_end_to_end(judge_server, tiny_model_dir, bikes_mp4, tmp_path):
    """`run_eval` (what `videor1 eval --judge URL --judge-model NAME` runs): the tiny model captions a real
    video, the real server judges it, scores.json names the judge; a rerun resumes without asking again."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from videor1.evaluate.config import EvalConfig
    from videor1.evaluate.runner import run_eval

    url, model = judge_server
    data = tmp_path / "tc"
    for fmt, row in (("captioning", {"video_id": "1025", "question": "Describe the speed of the video.", "answer": "",
                                     "dim": "speed", "mc_question": "How fast?\nA. slowly\nB. fast",
                                     "mc_answer": "B. fast"}),
                     ("yes_no", {"video_id": "1025", "question": "Is it fast?", "answer": "yes", "dim": "speed"})):
        (data / fmt).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist([row]), data / fmt / "test-00000-of-00001.parquet")
    (tmp_path / "videos").mkdir()
    shutil.copy(bikes_mp4, tmp_path / "videos/1025.mp4")
    cfg = EvalConfig(model=Path(tiny_model_dir), bench="tempcompass", data=data, media_root=tmp_path / "videos",
                     out=tmp_path / "run", max_new_tokens=8, batch_size=2, judge_url=url, judge_model=model)
    summary = run_eval(cfg, echo=lambda s: None)
    assert summary["counts"]["items"] == 2 and not summary["unusable"]
    assert summary["judge"]["model"] == model and summary["judge"]["items"] == 1
    assert summary["settings"]["judge"] == {"url": url, "model": model}
    (entry,) = [json.loads(line) for line in (tmp_path / "run" / CACHE).read_text().splitlines()]
    assert entry["id"].startswith("captioning/") and entry["status"] in ("ok", "unparseable")
    run_eval(cfg, echo=lambda s: None)                       # resumed: nothing generated or asked again
    assert len((tmp_path / "run" / CACHE).read_text().splitlines()) == 1
    plain = run_eval(EvalConfig(model=Path(tiny_model_dir), bench="tempcompass", data=data,
                                media_root=tmp_path / "videos", out=tmp_path / "run2", max_new_tokens=8),
                     echo=lambda s: None)
    assert plain["counts"]["items"] == 1 and plain["judge"] is None
    assert len(plain["unusable"]) == 1 and "--judge" in plain["unusable"][0]
