"""Evaluation on several processes, the parts that need no launcher: which process evaluates which item, the
merge of shard files into one predictions file, resuming a multi-process folder with another number of
processes, the store barrier, and vLLM's call size. The 2-process runs under `accelerate launch` are in
tests/engines/test_engines_eval.py."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch.distributed as dist

from test_eval_runner import FAST, eval_config, small_set  # noqa: F401  (small_set: a fixture)
from videor1.data.media import ImageSpec, VideoSpec
from videor1.evaluate import runner, shards
from videor1.evaluate.runner import append_rows, generation_chunk, read_predictions, run_eval
from videor1.evaluate.shards import (PREDICTIONS, Processes, merge_rows, merge_shards, shard, shard_file,
                                     shard_files, shard_of, visible_device)


def test_items_are_dealt_in_batch_blocks_each_to_exactly_one_process():
    items = list(range(23))
    for world in (1, 2, 3, 8):
        for block in (1, 4, 8):
            parts = [shard(items, r, world, block) for r in range(world)]
            assert sorted(i for p in parts for i in p) == items
            for r, part in enumerate(parts):   # a process's batches are the one-process run's batches
                batches = [items[s: s + block] for s in range(0, len(items), block)]
                assert part == [i for b in batches[r::world] for i in b]
    assert shard(items[:3], 1, 2, 4) == []          # fewer items than a block: the second process has none
    assert [shard_of(i, 2, 3) for i in range(8)] == [0, 0, 1, 1, 2, 2, 0, 0]


def rows_of(ids, shuffled=False, **extra):
    return [{"id": i, "shuffled": shuffled, "output": f"out {i}", **extra} for i in ids]


def test_merge_orders_rows_as_a_one_process_run_and_keeps_one_row_per_item_and_pass():
    ids = ["a", "b", "c", "d"]
    rows = [*rows_of(["c", "a"], True), *rows_of(["d", "b"]), *rows_of(["a", "c"]), *rows_of(["zz"]),
            *rows_of(["a"], source="again"), *rows_of(["b", "d"], True)]
    merged = merge_rows(rows, ids)
    assert [(r["id"], r["shuffled"]) for r in merged] == [
        ("a", False), ("b", False), ("c", False), ("d", False),
        ("a", True), ("b", True), ("c", True), ("d", True), ("zz", False)]   # an item no longer evaluated: last
    assert all("source" not in r for r in merged)   # the first row of an (item, pass) wins


def test_merge_shards_reads_every_shard_file_and_cuts_half_lines(tmp_path):
    out = tmp_path
    append_rows(out / PREDICTIONS, rows_of(["a"]))
    for rank, world, ids in ((0, 2, ["b"]), (1, 2, ["d"]), (2, 3, ["c"])):   # a 3-process run resumed by 2
        shard_file(out, rank, world).parent.mkdir(exist_ok=True)
        append_rows(shard_file(out, rank, world), rows_of(ids))
    with shard_file(out, 1, 2).open("a") as fh:
        fh.write('{"id": "e", "shuff')                                         # killed mid-line
    assert len(shard_files(out)) == 3
    assert merge_shards(out, ["a", "b", "c", "d", "e"], read_predictions) == 3
    assert [r["id"] for r in read_predictions(out / PREDICTIONS)] == ["a", "b", "c", "d"]
    assert shard_files(out) == [] and not list(out.glob(".predictions*"))
    before = (out / PREDICTIONS).read_bytes()
    assert merge_shards(out, ["d", "c", "b", "a"], read_predictions) == 0   # nothing to merge: file untouched
    assert (out / PREDICTIONS).read_bytes() == before


def test_vllm_takes_the_whole_pass_bounded_by_items_and_memory():
    video, image = VideoSpec(max_frames=16, max_pixels=256 * 28 * 28), ImageSpec(max_pixels=256 * 28 * 28)
    assert generation_chunk("hf", 8, 500, video, image, 1024, 4.0) == 8
    assert generation_chunk("vllm", 8, 500, video, image, 1024, 4.0) == 445     # 4 GiB / 9.63 MB per item
    assert generation_chunk("vllm", 8, 100, video, image, 1024, 4.0) == 100     # the whole pass
    assert generation_chunk("vllm", 8, 500, video, image, 64, 4.0) == 64
    assert generation_chunk("vllm", 8, 500, video, image, 1024, 0.001) == 1     # never below one item


def test_each_process_takes_its_own_visible_gpu():
    assert visible_device(1, None) == "1"
    assert visible_device(1, "4,5,6,7") == "5"
    assert visible_device(3, "2, 3") == "3"


def test_store_barrier_waits_for_every_process_and_times_out_without_progress(monkeypatch):
    monkeypatch.setenv(shards.TIMEOUT_ENV, "0.5")
    store = dist.HashStore()
    a, b = (Processes(rank=r, num_processes=2, store=store) for r in (0, 1))
    passed = []

    def late() -> None:
        with b.working():       # works 3 timeouts long: the heartbeat keeps the other one waiting
            time.sleep(1.5)
        b.barrier("x")
        passed.append("b")

    thread = threading.Thread(target=late)
    thread.start()
    a.barrier("x", poll_s=0.05)
    thread.join(5)
    assert passed == ["b"]
    with pytest.raises(TimeoutError, match=r"1 of 2 processes reached 'y' and none sent a heartbeat for 0 s"):
        a.barrier("y", poll_s=0.05)   # the other one never comes and sends no heartbeat


def killed_two_process_folder(full: Path, out: Path, item_ids: list[str], batch_size: int) -> str:
    """`out` as a 2-process run leaves it when killed: meta.json, shard 0 with its first row (output replaced by
    a sentinel, to see that it is not generated again) and half a line, shard 1 with nothing."""
    out.mkdir()
    meta = json.loads((full / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps({**meta, "num_processes": 2}))
    rows = {r["id"]: r for r in read_predictions(full / PREDICTIONS)}
    first = shard(item_ids, 0, 2, batch_size)[0]
    shard_file(out, 0, 2).parent.mkdir()
    append_rows(shard_file(out, 0, 2), [{**rows[first], "output": "SENTINEL"}])
    with shard_file(out, 0, 2).open("a") as fh:
        fh.write('{"id": "q1", "out')
    shard_file(out, 1, 2).write_text("")
    return first


def test_a_killed_two_process_folder_resumes_with_one_process(tiny_model_dir, small_set, tmp_path,  # noqa: F811
                                                              monkeypatch):
    args = {**FAST, "batch_size": 2, "report_to": ()}
    cfg = lambda out: eval_config(tiny_model_dir, small_set / "test.jsonl", small_set, out, **args)  # noqa: E731
    run_eval(cfg(tmp_path / "full"), echo=lambda *_: None)
    ids = [r["id"] for r in read_predictions(tmp_path / "full" / PREDICTIONS)]
    first = killed_two_process_folder(tmp_path / "full", tmp_path / "resumed", ids, 2)

    generated: list[str] = []
    real_make_engine = runner.make_engine

    def counting_engine(*a, **kw):
        engine = real_make_engine(*a, **kw)
        real_generate = engine.generate
        engine.generate = lambda samples, params: (generated.extend(s.record.problem_id for s in samples),
                                                   real_generate(samples, params))[1]
        return engine

    monkeypatch.setattr(runner, "make_engine", counting_engine)
    run_eval(cfg(tmp_path / "resumed"), echo=lambda *_: None)
    assert sorted(generated) == sorted(i for i in ids if i not in (first, "missing", "broken"))
    assert shard_files(tmp_path / "resumed") == []
    got = read_predictions(tmp_path / "resumed" / PREDICTIONS)
    want = read_predictions(tmp_path / "full" / PREDICTIONS)
    assert [r["id"] for r in got] == ids                          # a one-process run's order
    assert [r for r in got if r["id"] != first] == [r for r in want if r["id"] != first]
    assert next(r for r in got if r["id"] == first)["output"] == "SENTINEL"   # kept, not generated again
    assert json.loads((tmp_path / "resumed" / "meta.json").read_text())["num_processes"] == 1


def test_shard_files_alone_make_a_folder_resumable_only_with_the_same_settings(tiny_model_dir, small_set,  # noqa: F811
                                                                                tmp_path):
    args = {**FAST, "batch_size": 2, "report_to": (), "limit": 2}
    run_eval(eval_config(tiny_model_dir, small_set / "test.jsonl", small_set, tmp_path / "full", **args),
             echo=lambda *_: None)
    ids = [r["id"] for r in read_predictions(tmp_path / "full" / PREDICTIONS)]
    killed_two_process_folder(tmp_path / "full", tmp_path / "killed", ids, 2)
    other = eval_config(tiny_model_dir, small_set / "test.jsonl", small_set, tmp_path / "killed",
                        **{**args, "max_new_tokens": 7})
    with pytest.raises(ValueError, match="max_new_tokens differ"):
        run_eval(other, echo=lambda *_: None)
