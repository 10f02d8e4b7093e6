"""The rollout server's end of the weight group (protocol: `videor1.generation.weight_group`): the routes
/weight_group/join, /load and /done, and the receive that streams the buckets into the engine's `load_weights`
in the engine's worker thread."""

from __future__ import annotations

import datetime
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from videor1.generation.weight_group import (Entry, _view, bucket_offsets, close_group, group_device, open_group,
                                             split_buckets)


class GroupReceiver:
    """The server's end (routes in `add_group_routes`): one group at a time, loads run in the engine's
    worker thread. `check(shapes, label)` refuses entries that do not match the served model."""

    def __init__(self, server: Any, check: Callable[[dict[str, tuple[int, ...]], str], None]) -> None:
        self.server, self.check = server, check
        self.joining: Future | None = None   # the group being built / built
        self.backend = "gloo"
        self.timeout_s = 600.0
        self.pending: Future | None = None
        self.lock = threading.Lock()

    def join(self, body: dict[str, Any], peer: str, local: str) -> dict[str, Any]:
        """Check the request, then connect to the trainer's store at `peer` (the HTTP client's address) and
        build the group in a thread of its own (answering at once), this end's gloo device bound to `local`
        (the address the trainer reached this server at)."""
        port, backend, nonce, timeout_s = (body.get(k) for k in ("port", "backend", "nonce", "timeout_s"))
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise ValueError(f"port must be an integer in 1-65535, got {port!r}")
        if not isinstance(nonce, str) or not 16 <= len(nonce) <= 128:
            raise ValueError("nonce must be a string of 16-128 characters")
        if not isinstance(timeout_s, (int, float)) or isinstance(timeout_s, bool) or not 0 < timeout_s <= 86400:
            raise ValueError(f"timeout_s must be a number in (0, 86400], got {timeout_s!r}")
        group_device(str(backend))   # ValueError: unknown backend, or nccl without CUDA here
        with self.lock:
            if self.pending is not None and not self.pending.done():
                raise PermissionError("a weight load over the current group is in progress")
            self.close()
            self.backend, self.timeout_s = str(backend), float(timeout_s)
            joining: Future = Future()
            self.joining = joining

        def build() -> None:
            try:
                store = dist.TCPStore(peer, port, 2, False, datetime.timedelta(seconds=float(timeout_s)))
                group = open_group(dist.PrefixStore(f"videor1/{nonce}", store), 1, str(backend), local,
                                   float(timeout_s))
            except Exception as exc:  # noqa: BLE001 - reported by the next /weight_group/load
                joining.set_exception(exc)
                return
            joining.set_result(group)
            with self.lock:
                if self.joining is not joining:   # replaced or closed meanwhile
                    close_group(group)

        threading.Thread(target=build, daemon=True, name="weight-group-join").start()
        return {"joining": True, "backend": self.backend}

    def current(self) -> Any:
        """The joined group (waiting for the join to end); PermissionError when there is none."""
        joining = self.joining
        if joining is None:
            raise PermissionError("no weight group: POST /weight_group/join first")
        try:
            return joining.result(timeout=self.timeout_s + 10)
        except Exception as exc:  # noqa: BLE001 - the join's own error
            raise PermissionError(f"the weight group join failed: {str(exc).splitlines()[0][:300]}") from None

    def load(self, body: dict[str, Any]) -> dict[str, Any]:
        """Check the announced entries, then start receiving them in the engine thread (answers at once)."""
        entries_wire, counts = body.get("entries"), body.get("buckets")
        if not isinstance(entries_wire, list) or not entries_wire or not isinstance(counts, list):
            raise ValueError("entries must be a non-empty list and buckets a list of counts")
        entries = [Entry.from_wire(e) for e in entries_wire]
        buckets = split_buckets(entries, counts)
        self.check({e.name: e.shape for e in entries}, f"sent over the weight group (version {body.get('version')})")
        group = self.current()
        with self.lock:
            if self.pending is not None and not self.pending.done():
                raise PermissionError("a weight load over the group is already in progress")
            run, version = body.get("run"), body.get("version")
            self.pending = self.server.worker.submit(self._receive, group, buckets, run, version)
        return {"receiving": len(entries), "buckets": len(buckets)}

    def _receive(self, group: Any, buckets: list[list[Entry]], run: Any, version: Any) -> int:
        """In the engine thread: the buckets streamed into the engine's load_weights."""
        device = group_device(self.backend)
        timeout = datetime.timedelta(seconds=self.timeout_s)

        def post(bucket: list[Entry]) -> tuple[torch.Tensor, Any]:
            """The receive of a bucket, started (fresh buffer: the loader may keep views of the last one)."""
            flat = torch.empty(bucket_offsets(bucket)[1], dtype=torch.uint8, device=device)
            return flat, (group.broadcast(flat, 0, timeout) if flat.numel() else None)

        def pairs() -> Iterator[tuple[str, torch.Tensor]]:
            following = post(buckets[0])
            for index, bucket in enumerate(buckets):   # the next bucket arrives while this one loads
                flat, work = following
                if work is not None:
                    work.wait()
                following = post(buckets[index + 1]) if index + 1 < len(buckets) else (None, None)
                for entry, offset in zip(bucket, bucket_offsets(bucket)[0]):
                    yield entry.name, _view(flat, entry, offset)

        try:
            self.server.engine.load_weights(pairs())
        except BaseException:
            self.server.run, self.server.version = None, None   # some tensors may be loaded: a mix
            with self.lock:
                if self.joining is not None and self.joining.done() and not self.joining.exception() \
                        and self.joining.result() is group:
                    self.close()
            raise
        self.server.run, self.server.version = run, version
        return sum(map(len, buckets))

    def done(self, body: dict[str, Any]) -> dict[str, Any]:
        """Wait for the pending load; its error, if it failed."""
        pending = self.pending
        if pending is None:
            raise PermissionError("no weight load over the group was started")
        try:
            loaded = pending.result(timeout=self.timeout_s + 60)
        except FutureTimeout:
            raise RuntimeError(f"the weight load did not end within {self.timeout_s:g} s") from None
        except Exception as exc:  # noqa: BLE001 - the load's own error, reported to the trainer
            raise RuntimeError(f"the weight load over the group failed: {type(exc).__name__}: "
                               f"{str(exc).splitlines()[0][:300] if str(exc) else ''}") from None
        if body.get("version") != self.server.version:
            raise ValueError(f"loaded version {self.server.version!r}, not {body.get('version')!r}")
        return {"loaded": loaded}

    def close(self) -> None:
        """Tear the group down (a join still under way closes its group when it ends)."""
        joining, self.joining = self.joining, None
        if joining is not None and joining.done() and joining.exception() is None:
            close_group(joining.result())


def add_group_routes(app: Any, server: Any, read_json: Callable, check: Callable) -> GroupReceiver:
    """/weight_group/join, /load and /done on the server's app (behind its Host and token checks)."""
    receiver = GroupReceiver(server, check)

    @app.post("/weight_group/join")
    async def join(request: Request) -> JSONResponse:
        body = await read_json(request, server.limits)
        peer = request.client.host if request.client else "127.0.0.1"
        local = request.scope.get("server", ("127.0.0.1",))[0]
        return JSONResponse(await run_in_threadpool(receiver.join, body, peer, local))

    @app.post("/weight_group/load")
    async def load(request: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(receiver.load, await read_json(request, server.limits)))

    @app.post("/weight_group/done")
    async def done(request: Request) -> JSONResponse:
        body = await read_json(request, server.limits)
        return JSONResponse({**await run_in_threadpool(receiver.done, body), **server.health()})

    return receiver

