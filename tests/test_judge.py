"""The judge's reply readers and the no-judge path (no server needed; the real-server test is test_judge_server)."""

from __future__ import annotations

from videor1.evaluate.judge import (endpoint, judge_rows, mmvu_open_verdict, request_key, JudgeSpec,
                                    tempcompass_caption_verdict)


def test_caption_verdict_reads_the_answer_line_as_tempcompass_does():
    truth = "B. fast"
    assert tempcompass_caption_verdict("Reasoning: it says fast.\nAnswer: B. fast", truth) == (1.0, "B. fast")
    assert tempcompass_caption_verdict("Reasoning: slow.\nAnswer: A. slowly", truth) == (0.0, "A. slowly")
    assert tempcompass_caption_verdict("Answer: A. slowly or B. fast", truth)[0] == 0.0   # two options named
    assert tempcompass_caption_verdict("B. fast", truth) == (1.0, "B. fast")              # no Answer line
    assert tempcompass_caption_verdict("Answer: None of the choices are correct", truth)[0] is None
    assert tempcompass_caption_verdict("", truth) == (None, "")


def test_open_verdict_is_one_or_zero_else_unparseable():
    assert mmvu_open_verdict(" 1\n") == (1.0, "1") and mmvu_open_verdict('"0".') == (0.0, "0")
    assert mmvu_open_verdict("Yes, 1") == (None, "Yes, 1") and mmvu_open_verdict("")[0] is None


def test_endpoint_and_request_key():
    assert endpoint("http://h:8000") == endpoint("http://h:8000/v1/") == "http://h:8000/v1/chat/completions"
    assert endpoint("http://h/v1/chat/completions") == "http://h/v1/chat/completions"
    msgs = [{"role": "user", "content": "x"}]
    assert request_key(JudgeSpec("u", "m"), msgs) == request_key(JudgeSpec("other-url", "m"), msgs)
    assert request_key(JudgeSpec("u", "m"), msgs) != request_key(JudgeSpec("u", "m2"), msgs)


def test_without_a_judge_judge_scored_rows_are_listed_not_scored():
    rows = [{"id": "a", "meta": {"judge": "MMVU open-ended"}, "official": 0.0},
            {"id": "b", "meta": {}, "official": 1.0}]
    kept, lines, info = judge_rows(None, rows, None, None)
    assert [r["id"] for r in kept] == ["b"] and info is None
    assert len(lines) == 1 and lines[0].startswith("a: MMVU open-ended") and "--judge" in lines[0]


def test_cli_judge_needs_both_options(tmp_path):
    from typer.testing import CliRunner

    from videor1.cli import app

    preds = tmp_path / "predictions.jsonl"
    preds.write_text("")
    res = CliRunner().invoke(app, ["score", "--bench", "mmvu", "--predictions", str(preds), "--judge", "http://x"])
    assert res.exit_code != 0 and "--judge URL and --judge-model NAME go together" in res.output
