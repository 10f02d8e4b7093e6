"""The rollout server (`videor1 serve-rollouts`): one engine behind HTTP, on FastAPI + uvicorn.

Routes, wire format and weight sync are described in `videor1.generation.remote` (the client side);
batching of concurrent requests into one engine call in `videor1.generation.batching`.

What every request meets, in this order: the ``Host`` header must name this server (no DNS rebinding from a
browser; any name when listening on every interface), ``Authorization: Bearer <token>`` must carry the token
(random per start unless given; written to `token_file` for the trainer), a POST must be
``application/json`` with a ``Content-Length`` within `ServerLimits.max_body_bytes`, read within
`request_timeout_s`. Every answer is a JSON object; errors are ``{"error": "..."}`` with 4xx for what the
client sent and 500 for an engine failure. A header uvicorn's HTTP parser (h11) itself refuses (e.g. a
Content-Length that is not a number) gets its plain 400 before any of this runs.

The engine is only touched from one worker thread (generation batches and weight loads alike). SIGTERM /
SIGINT (main thread, `serve_forever`) end serving gracefully; `shutdown()` then stops the engine.
"""

from __future__ import annotations

import asyncio
import binascii
import dataclasses
import hmac
import json
import os
import secrets
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from safetensors import safe_open
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from videor1.generation.batching import Batcher, Batching
from videor1.generation.engines import HFEngine, SamplingParams, ServableEngine, VLLMEngine
from videor1.generation.remote import TOKEN_FILE, completion_to_wire, sample_from_wire
from videor1.generation.weight_group_server import GroupReceiver, add_group_routes
from videor1.model.inputs import Sample
from videor1.model.load import load_model, load_processor

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServerLimits:
    """What one request may ask of the server (every breach is a 400/413 naming the limit); `serve-rollouts`
    sets each from its flag (--max-body-bytes, ...). Validated on construction (every limit > 0).

    Generation time: a /generate call is not cut off by a clock. Neither engine can stop a running generate
    call cleanly (vLLM's offline `generate` has no deadline; stopping HF's generate mid-batch would leave
    the batch half done while it holds the engine), so the *work* of one request is bounded instead:
    samples x n x max_new_tokens <= `max_total_tokens`, which bounds its generation time on a given
    machine (a batch holds up to one such request per waiting client). `request_timeout_s` bounds the
    reading of a request body.
    """

    max_body_bytes: int = 2 << 30        # request body (Content-Length)
    max_array_bytes: int = 1 << 30       # one decoded frames / image array
    max_samples: int = 1024              # samples of one /generate
    max_n: int = 64                      # completions per sample
    max_new_tokens: int = 32768          # tokens per completion
    max_total_tokens: int = 1 << 22      # samples x n x max_new_tokens of one /generate (bounds its work)
    request_timeout_s: float = 600.0     # the longest a request body may take to arrive

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"server limit {name} must be > 0, got {value!r}")


class RequestError(ValueError):
    """A malformed or refused request: answered with `code` (400 unless set) and the message."""

    def __init__(self, message: str, code: int = 400) -> None:
        super().__init__(message)
        self.code = code


class RolloutServer:
    """Serves one rollout engine (see the module doc). `serve_forever()` blocks (main thread: SIGTERM and
    SIGINT stop it); `start()` serves from a daemon thread (tests), `close()` stops that."""

    def __init__(self, engine: ServableEngine, *, weights_dir: str | os.PathLike | None, model_name: str = "",
                 host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
                 token_file: str | os.PathLike | None = None, limits: ServerLimits = ServerLimits(),
                 batching: Batching = Batching()) -> None:
        self.engine = engine
        self.weights_dir = Path(weights_dir).resolve() if weights_dir is not None else None
        self.model_name = model_name
        self.run: str | None = None
        self.version: int | None = None
        self.limits = limits
        self.token = token or secrets.token_urlsafe(32)
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="rollout-engine")  # the only thread using the engine
        self.batcher = Batcher(engine, self.worker, batching, weights=lambda: (self.run, self.version))
        self.ranks_flag = batching.ranks   # --ranks (0: unset; the trainer's POST /trainer sets it)
        self.weight_group: GroupReceiver | None = None   # set by build_app (`videor1.generation.weight_group_server`)
        self.sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.port = self.sock.getsockname()[1]
        self.host = host
        self.address = f"http://{host}:{self.port}"
        config = uvicorn.Config(build_app(self), http="h11", loop="asyncio", lifespan="off", log_level="warning",
                                access_log=False, timeout_graceful_shutdown=5)
        self.uvicorn = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self.token_file = Path(token_file) if token_file is not None else (
            self.weights_dir / TOKEN_FILE if self.weights_dir is not None else None)
        if self.token_file is not None:
            write_token(self.token_file, self.token)
        if host not in LOOPBACK:
            print(f"WARNING: the rollout server listens on {host}, not on loopback: anyone who can reach "
                  f"port {self.port} and knows the token can drive generation and weight loading",
                  file=sys.stderr, flush=True)

    def check_host(self, value: str | None) -> None:
        """The Host header must name this server (any name when it listens on every interface)."""
        if self.host in ("0.0.0.0", "::", ""):
            return
        allowed = {f"{h}:{self.port}" for h in (self.host, *LOOPBACK)} | {f"[::1]:{self.port}"}
        if value not in allowed:
            raise RequestError(f"Host {value!r} is not this server", 421)

    def check_token(self, header: str | None) -> None:
        if not header or not hmac.compare_digest(header.encode(), f"Bearer {self.token}".encode()):
            raise RequestError("missing or wrong token (Authorization: Bearer <token>; see the token file "
                               "or the line printed at start)", 401)

    def health(self) -> dict[str, Any]:
        return {"ok": True, "model": self.model_name, "run": self.run, "version": self.version,
                "requests": self.batcher.requests, "engine_calls": self.batcher.engine_calls,
                "behaviour_logprobs": getattr(self.engine, "behaviour_logprobs", None)}

    async def generate(self, body: dict[str, Any]) -> dict[str, Any]:
        samples, params = await run_in_threadpool(self.parse_generate, body)
        groups, (run, version) = await self.batcher.generate(samples, params)
        return {"completions": [[completion_to_wire(c) for c in group] for group in groups], "run": run,
                "version": version}

    def parse_generate(self, body: dict[str, Any]) -> tuple[list[Sample], SamplingParams]:
        lim = self.limits
        wire = body.get("samples")
        if not isinstance(wire, list) or not all(isinstance(x, dict) for x in wire):
            raise RequestError("samples must be a list of objects")
        if len(wire) > lim.max_samples:
            raise RequestError(f"{len(wire)} samples, more than max_samples={lim.max_samples}")
        raw = body.get("params", {})
        if not isinstance(raw, dict) or set(raw) - set(SamplingParams.__dataclass_fields__):
            raise RequestError(f"params must be an object with keys among {sorted(SamplingParams.__dataclass_fields__)}")
        params = SamplingParams(**raw)
        for key, most in (("n", lim.max_n), ("max_new_tokens", lim.max_new_tokens)):
            value = getattr(params, key)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= most:
                raise RequestError(f"params.{key} must be an integer in [1, {most}], got {value!r}")
        total = len(wire) * params.n * params.max_new_tokens
        if total > lim.max_total_tokens:
            raise RequestError(f"{len(wire)} samples x n={params.n} x max_new_tokens={params.max_new_tokens} = "
                               f"{total} tokens, more than max_total_tokens={lim.max_total_tokens}")
        try:
            samples = [sample_from_wire(x, lim.max_array_bytes) for x in wire]
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise RequestError(f"bad sample: {type(exc).__name__}: {exc}") from None
        return samples, params

    def load_weights(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.weights_dir is None:
            raise PermissionError("this server was started without --weights-dir: weight loading is off")
        name = body.get("file")
        if not isinstance(name, str) or not name:
            raise RequestError("file must be a non-empty string")
        path = (self.weights_dir / name).resolve()
        if self.weights_dir not in path.parents:
            raise PermissionError(f"weights file {name!r} is outside the weights directory")
        try:   # the header, checked against the file's size: a missing or partial file leaves the model as it was
            handle = safe_open(str(path), framework="pt")
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
        except Exception as exc:
            raise RequestError(f"weights file {name!r} cannot be read: {type(exc).__name__}: {exc}") from None
        _check_weights(self.engine, shapes, f"file {name!r}")

        def swap() -> None:   # in the engine's worker thread, never during a generation: one tensor at a time
            self.engine.load_weights((key, handle.get_tensor(key)) for key in shapes)
            self.run, self.version = body.get("run"), body.get("version")

        self.worker.submit(swap).result()
        return {"loaded": len(shapes), **self.health()}

    def set_trainer(self, body: dict[str, Any]) -> dict[str, Any]:
        """The trainer's process count (``POST /trainer {"ranks": N}``): the batcher waits for N requests.
        An explicit, different `--ranks` is refused (409), naming both."""
        ranks = body.get("ranks")
        if not isinstance(ranks, int) or isinstance(ranks, bool) or ranks < 1:
            raise RequestError(f"ranks must be an integer >= 1, got {ranks!r}")
        if self.ranks_flag and ranks != self.ranks_flag:
            raise RequestError(f"this server was started with --ranks {self.ranks_flag} but the trainer runs {ranks} "
                               f"processes: restart it with --ranks {ranks} (or 0: the trainer says)", 409)
        self.batcher.batching = dataclasses.replace(self.batcher.batching, ranks=ranks)
        return {"ranks": ranks}

    def serve_forever(self) -> None:
        self.uvicorn.run(sockets=[self.sock])

    def start(self) -> "RolloutServer":
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        while not self.uvicorn.started and self._thread.is_alive():
            self._thread.join(0.01)
        return self

    def close(self) -> None:
        """Stop serving HTTP (the engine stays up: `shutdown` also stops it)."""
        self.uvicorn.should_exit = True
        if self.weight_group is not None:
            self.weight_group.close()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.sock.close()

    def shutdown(self) -> None:
        """Stop serving, then shut the engine down (a vLLM engine's EngineCore and worker processes exit)."""
        self.close()
        self.worker.shutdown(wait=True)
        close_engine = getattr(self.engine, "close", None)
        if close_engine is not None:
            close_engine()


def _check_weights(engine: ServableEngine, shapes: dict[str, tuple[int, ...]], name: str) -> None:
    """Every tensor name and shape must match the served model's (when the engine exposes its model), so a
    mismatched file is refused before any weight is replaced."""
    model = getattr(engine, "model", None) or getattr(getattr(engine, "engine", None), "model", None)
    if not isinstance(model, torch.nn.Module):
        return
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(want) - set(shapes))
    unexpected = sorted(set(shapes) - set(want))
    wrong = sorted(k for k in set(want) & set(shapes) if tuple(shapes[k]) != want[k])
    if missing or unexpected or wrong:
        raise RequestError(f"weights {name} do not match the served model: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}, wrong shape {wrong[:3]}")


def write_token(path: Path, token: str) -> None:
    """Write the token readable by this user only (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------- HTTP
async def read_json(request: Request, limits: ServerLimits) -> dict[str, Any]:
    """The request's JSON object: JSON content type, Content-Length within the limit, the body read within
    `request_timeout_s`, parsed (depth-safe) off the event loop."""
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise RequestError(f"Content-Type must be application/json, got {ctype or 'none'!r}", 415)
    raw = request.headers.get("content-length")
    try:
        length = int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise RequestError(f"Content-Length must be an integer, got {raw!r}", 411) from None
    if not 0 <= length <= limits.max_body_bytes:
        raise RequestError(f"Content-Length {length} is outside [0, max_body_bytes={limits.max_body_bytes}]", 413)
    try:   # h11 delivers exactly Content-Length bytes, or the client is gone
        data = await asyncio.wait_for(request.body(), limits.request_timeout_s)
    except asyncio.TimeoutError:  # not yet the builtin TimeoutError on Python 3.10
        raise RequestError(f"the body did not arrive within {limits.request_timeout_s:g} s", 408) from None
    except ClientDisconnect:
        raise RequestError("the client went away while sending the body") from None
    return await run_in_threadpool(_parse_json, data)


def _parse_json(data: bytes) -> dict[str, Any]:
    try:
        body = json.loads(data or b"{}")
    except RecursionError:
        raise RequestError("the JSON body is nested too deep") from None
    except ValueError as exc:
        raise RequestError(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    return body


def _error(code: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=code, headers={"Connection": "close"})


def build_app(server: RolloutServer) -> FastAPI:
    """The routes (/health, /generate, /load_weights, /trainer, /weight_group/*) behind the Host and token checks."""

    async def guard(request: Request) -> None:
        server.check_host(request.headers.get("host"))
        server.check_token(request.headers.get("authorization"))

    app = FastAPI(dependencies=[Depends(guard)], openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse(server.health())

    @app.post("/generate")
    async def generate(request: Request) -> JSONResponse:
        return JSONResponse(await server.generate(await read_json(request, server.limits)))

    @app.post("/load_weights")
    async def load_weights(request: Request) -> JSONResponse:
        body = await read_json(request, server.limits)
        return JSONResponse(await run_in_threadpool(server.load_weights, body))

    @app.post("/trainer")
    async def trainer(request: Request) -> JSONResponse:
        return JSONResponse(server.set_trainer(await read_json(request, server.limits)))

    server.weight_group = add_group_routes(app, server, read_json,
                                           lambda shapes, label: _check_weights(server.engine, shapes, label))

    @app.exception_handler(RequestError)
    async def refused(_: Request, exc: RequestError) -> JSONResponse:
        return _error(exc.code, str(exc))

    @app.exception_handler(PermissionError)
    async def forbidden(_: Request, exc: PermissionError) -> JSONResponse:
        return _error(403, str(exc))

    @app.exception_handler(HTTPException)
    async def no_route(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}")

    async def bad_input(_: Request, exc: Exception) -> JSONResponse:
        return _error(400, f"{type(exc).__name__}: {exc}")

    for kind in (KeyError, TypeError, ValueError, RecursionError):
        app.add_exception_handler(kind, bad_input)

    @app.exception_handler(Exception)
    async def failed(_: Request, exc: Exception) -> JSONResponse:  # logged by uvicorn; the server keeps serving
        return _error(500, f"{type(exc).__name__}: {exc}")

    return app


def make_server(model: str | os.PathLike, *, engine: str = "vllm", weights_dir: str | os.PathLike | None = None,
                host: str = "127.0.0.1", port: int = 8000, batch_size: int = 8,
                llm_kwargs: dict[str, Any] | None = None, token_file: str | os.PathLike | None = None,
                limits: ServerLimits = ServerLimits(), batching: Batching = Batching()) -> RolloutServer:
    """A `RolloutServer` for the checkpoint at `model`: vLLM's offline engine, or transformers' generate."""
    processor = load_processor(model)
    if engine == "hf":
        served: ServableEngine = HFEngine(load_model(model).eval(), processor, batch_size=batch_size)
    elif engine == "vllm":
        served = VLLMEngine(processor, model_path=str(model), llm_kwargs=llm_kwargs)
    else:
        raise ValueError(f"unknown engine {engine!r}; known: hf, vllm")
    return RolloutServer(served, weights_dir=weights_dir, model_name=str(model), host=host, port=port,
                         token_file=token_file, limits=limits, batching=batching)
