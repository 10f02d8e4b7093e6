"""Weights to the rollout server over a process group (`remote.weight_transport: group`), no file per step.

The trainer's main process and the server form a two-member torch.distributed process group of their own
(rank 0: the trainer, rank 1: the server), built directly on a dedicated `TCPStore` + `ProcessGroupGloo`
(`ProcessGroupNCCL` with `remote.group_backend: nccl`), so the trainer's default process group (accelerate's,
DeepSpeed's) is neither used nor disturbed. vLLM's `StatelessProcessGroup` is not used: its metadata path
pickles objects through the store, and its data path is NCCL only.

Joining (`POST /weight_group/join`, behind the server's token like every route): the trainer binds the store
and its gloo device to `remote.group_host` (loopback by default) and sends the store's port, the backend, the
timeout and a random nonce; the server checks them and answers at once (a refusal, e.g. a wrong token or nccl
without CUDA, is an HTTP error, not a wait), then connects to the store at the address its HTTP request came
from (never at an address the body names) and both build the group under a store prefix made of the nonce,
so only the client that was given the nonce over the authenticated HTTP can rendezvous. A server that cannot
reach the trainer leaves the trainer's end waiting `remote.timeout_s`, then a ConnectionError saying so. The
store and gloo's sockets themselves carry no authentication: keep `group_host` on loopback or a private network.

One sync (`GroupSender.send`, the main process):

1. ``POST /weight_group/load`` ``{"run", "version", "entries": [{"name", "shape", "dtype"}, ...],
   "buckets": [entries per bucket, ...]}``: every tensor's name, full shape and rollout dtype, known before
   anything is gathered (ZeRO-3: `ds_shape`; FSDP2: the DTensor's global shape). The server checks them
   against its model (as for a file: nothing is swapped on a mismatch), then its engine thread waits for
   the buckets.
2. One broadcast per bucket (`plan_buckets`: consecutive tensors up to `remote.bucket_bytes`, ~1 GB; a
   tensor larger than that is a bucket alone): a flat uint8 buffer holding the bucket's tensors at 8-byte
   aligned offsets (`bucket_offsets`); a one-tensor bucket is the tensor's own bytes, no copy. The server
   views each tensor out of the received buffer and hands the pairs to its engine's `load_weights` as one
   stream (HF: copied into the model tensor by tensor; vLLM: its reload path), while the next bucket
   arrives. Both ends double-buffer: the trainer gathers and packs bucket i+1 while bucket i travels
   (two buffers of one bucket each), the server receives bucket i+1 while it loads bucket i.
3. ``POST /weight_group/done`` ``{"version"}``: answers once the server has loaded that version (or with
   the load's error). The other processes wait until /health reports the version, as with the file.

Under ZeRO-3 / FSDP2 every process iterates `full_state_items` in step (the gathers are collectives of the
training group); only the main one sends. Failures: a server that dies mid-transfer breaks the connection
(gloo raises at once: a clean `ConnectionError` naming the version), a silent one is bounded by
`remote.timeout_s`; either way the group is torn down on both sides and the next sync joins afresh. A server
whose load failed half-way reports version null (its weights are then a mix) until the next full sync.

NCCL (`group_backend: nccl`) is for GPUs only: buffers on the current CUDA device of both sides. It has not
run anywhere (no GPU here); gloo has, on this CPU (tests/test_weight_group.py). This module is the wire format
and the trainer's end; the server's is `videor1.generation.weight_group_server`.
"""

from __future__ import annotations

import datetime
import math
import secrets
import socket
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.distributed as dist

from videor1.generation.weights import _is_zero3, _unwrap

DTYPES = {str(t).removeprefix("torch."): t for t in (torch.float64, torch.float32, torch.bfloat16, torch.float16,
                                                      torch.int64, torch.int32, torch.int16, torch.int8,
                                                      torch.uint8, torch.bool)}
ALIGN = 8   # bytes: every tensor of a bucket starts at a multiple of this (a dtype view needs it)
BACKENDS = ("gloo", "nccl")


# -------------------------------------------------------------------------------------- the manifest
@dataclass(frozen=True)
class Entry:
    """One tensor of a sync: its HF name, full shape and the dtype it travels (and is loaded) in."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * torch.empty((), dtype=DTYPES[self.dtype]).element_size()

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @staticmethod
    def from_wire(obj: Any) -> "Entry":
        """An entry of the JSON manifest; ValueError naming what is wrong."""
        if not isinstance(obj, dict) or set(obj) != {"name", "shape", "dtype"}:
            raise ValueError(f"a weight entry must be an object with name, shape and dtype, got {obj!r:.200}")
        name, shape, dtype = obj["name"], obj["shape"], obj["dtype"]
        if not isinstance(name, str) or not name:
            raise ValueError(f"weight entry name must be a non-empty string, got {name!r:.100}")
        if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                  for s in shape):
            raise ValueError(f"weight entry {name!r}: shape must be a list of integers >= 0, got {shape!r:.100}")
        if dtype not in DTYPES:
            raise ValueError(f"weight entry {name!r}: dtype must be one of {sorted(DTYPES)}, got {dtype!r:.50}")
        return Entry(name, tuple(shape), dtype)


def state_manifest(model: torch.nn.Module, accelerator: Any = None, dtype: torch.dtype | None = None) -> list[Entry]:
    """The entries `full_state_items(model, accelerator, dtype=dtype)` will yield, in its order, from shapes
    alone (nothing gathered): ZeRO-3 placeholders by `ds_shape`, FSDP2 DTensors by their global shape."""
    module = _unwrap(model, accelerator)
    params = dict(module.named_parameters(remove_duplicate=False))
    buffers = dict(module.named_buffers(remove_duplicate=False))
    zero3 = any(_is_zero3(p) for p in params.values())
    entries = []
    for name, tensor in module.state_dict().items():
        if zero3 and name not in params and name not in buffers:
            continue   # full_state_items yields parameters and buffers only under ZeRO-3
        source = params.get(name, tensor)
        shape = tuple(source.ds_shape) if _is_zero3(source) else tuple(tensor.shape)
        out = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
        entries.append(Entry(name, tuple(int(s) for s in shape), str(out).removeprefix("torch.")))
    return entries


def plan_buckets(entries: list[Entry], bucket_bytes: int) -> list[int]:
    """How many consecutive entries each bucket holds: a bucket closes before the entry that would take it
    past `bucket_bytes` (aligned sizes); an entry larger than `bucket_bytes` is a bucket by itself."""
    if bucket_bytes < 1:
        raise ValueError(f"bucket_bytes must be >= 1, got {bucket_bytes}")
    counts: list[int] = []
    size = 0
    for entry in entries:
        step = _aligned(entry.nbytes)
        if counts and counts[-1] and size + step <= bucket_bytes:
            counts[-1] += 1
            size += step
        else:
            counts.append(1)
            size = step
    return counts


def split_buckets(entries: list[Entry], counts: list[int]) -> list[list[Entry]]:
    """The entries of each bucket; ValueError unless `counts` (each >= 1) covers `entries` exactly."""
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in counts) \
            or sum(counts) != len(entries):
        raise ValueError(f"buckets must be counts >= 1 adding up to the {len(entries)} entries")
    starts = [sum(counts[:i]) for i in range(len(counts))]
    return [entries[s:s + c] for s, c in zip(starts, counts)]


def _aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


def bucket_offsets(bucket: list[Entry]) -> tuple[list[int], int]:
    """Each entry's byte offset in the bucket's flat buffer (aligned to ALIGN) and the buffer's size."""
    offsets, size = [], 0
    for entry in bucket:
        offsets.append(size)
        size += _aligned(entry.nbytes)
    return offsets, (bucket[0].nbytes if len(bucket) == 1 else size)


def _view(flat: torch.Tensor, entry: Entry, offset: int) -> torch.Tensor:
    """The entry's tensor inside a flat uint8 buffer."""
    piece = flat[offset:offset + entry.nbytes]
    return piece.view(DTYPES[entry.dtype]).view(entry.shape)


# ------------------------------------------------------------------------------------------ the group
def group_device(backend: str) -> torch.device:
    """Where the bucket buffers live: the current CUDA device for NCCL, else the CPU."""
    if backend not in BACKENDS:
        raise ValueError(f"weight group backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise ValueError("weight group backend nccl needs CUDA on both sides (GPU only): use gloo here")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def open_group(store: dist.Store, rank: int, backend: str, host: str, timeout_s: float) -> dist.ProcessGroup:
    """A two-member process group on `store` (gloo: its device bound to `host`), outside torch.distributed's
    global state (the default group is not touched)."""
    timeout = datetime.timedelta(seconds=timeout_s)
    group_device(backend)   # refuses nccl without CUDA
    if backend == "nccl":   # GPU only, unrun (see the module doc)
        options = dist.ProcessGroupNCCL.Options()
        options._timeout = timeout
        return dist.ProcessGroupNCCL(store, rank, 2, options)
    options = dist.ProcessGroupGloo._Options()
    options._devices = [dist.ProcessGroupGloo.create_device(hostname=host)]
    options._timeout = timeout
    return dist.ProcessGroupGloo(store, rank, 2, options)


def close_group(group: Any) -> None:
    """Tear a group down (its sockets closed: a peer blocked on it gets an error); never raises."""
    for method in ("abort", "shutdown"):
        try:
            getattr(group, method)()
            return
        except Exception:  # noqa: BLE001 - best effort: the group is dropped either way
            continue


# ------------------------------------------------------------------------------------ trainer's side
class GroupSender:
    """The trainer's (main process's) end: joins the server into a group, then sends syncs (module doc).
    `call(method, route, body)` is the server's authenticated HTTP (`RemoteEngine._call`)."""

    def __init__(self, call: Callable[..., dict[str, Any]], *, backend: str = "gloo", host: str = "127.0.0.1",
                 bucket_bytes: int = 1 << 30, timeout_s: float = 600.0) -> None:
        self.call, self.backend, self.host = call, backend, host
        self.bucket_bytes, self.timeout_s = bucket_bytes, timeout_s
        self.device = group_device(backend)
        self.group: Any = None
        self.store: Any = None

    def join(self) -> None:
        """Build the group with the server: the join is posted (answered at once: refused, or the server
        starts joining), then this end is built, which waits for the server's."""
        self.close()
        listener = socket.create_server((self.host, 0), family=socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        port, nonce = listener.getsockname()[1], secrets.token_hex(16)
        timeout = datetime.timedelta(seconds=self.timeout_s)
        self.store = dist.TCPStore(self.host, port, 2, True, timeout, wait_for_workers=False,
                                   master_listen_fd=listener.detach(), use_libuv=False)
        try:
            self.call("POST", "/weight_group/join", {"port": port, "backend": self.backend, "nonce": nonce,
                                                     "timeout_s": self.timeout_s})
            self.group = open_group(dist.PrefixStore(f"videor1/{nonce}", self.store), 0, self.backend, self.host,
                                    self.timeout_s)
        except (RuntimeError, ValueError) as exc:
            self.close()
            if "HTTP 404" in str(exc):
                raise RuntimeError(f"{exc}: this server has no weight group; set remote.weight_transport: "
                                   "file") from None
            if "HTTP" in str(exc):   # refused by the server (token, backend, ...)
                raise
            raise ConnectionError(f"the rollout server did not join the weight group at {self.host}:{port} within "
                                  f"{self.timeout_s:g} s ({str(exc).splitlines()[0][:200]}): it must reach "
                                  "remote.group_host, or set remote.weight_transport: file") from None

    def send(self, pairs: Iterable[tuple[str, torch.Tensor]], entries: list[Entry], *, run: str,
             version: int) -> dict[str, Any]:
        """Send one version: announce the entries, broadcast the buckets, wait for the server's load. `pairs`
        (full_state_items) is always iterated to its end, also on an error, so that the other processes'
        gathers stay in step."""
        if self.group is None:
            self.join()
        counts = plan_buckets(entries, self.bucket_bytes)
        pairs = iter(pairs)
        try:
            self.call("POST", "/weight_group/load", {"run": run, "version": version, "buckets": counts,
                                                     "entries": [e.to_wire() for e in entries]})
            self._broadcast_all(pairs, split_buckets(entries, counts), version)
            return self.call("POST", "/weight_group/done", {"version": version})
        except Exception:
            self.close()   # the server's receive (if any) fails at once; the next sync joins afresh
            raise
        finally:
            for _ in pairs:   # keep the collective sequence of ZeRO-3 / FSDP2 gathers
                pass

    def _broadcast_all(self, pairs: Iterator[tuple[str, torch.Tensor]], buckets: list[list[Entry]],
                       version: int) -> None:
        """Each bucket packed into one of two reused buffers (each tensor copied in as it comes; a one-tensor
        bucket is its own bytes) and broadcast asynchronously, so the next bucket is gathered and packed
        while this one travels."""
        largest = max((bucket_offsets(b)[1] for b in buckets if len(b) > 1), default=0)
        buffers = [torch.empty(largest, dtype=torch.uint8, device=self.device) for _ in range(2 if largest else 0)]
        sending: list[tuple[Any, torch.Tensor] | None] = [None, None]
        timeout = datetime.timedelta(seconds=self.timeout_s)
        try:
            for index, bucket in enumerate(buckets):
                slot = index % 2
                self._wait(sending[slot], version, index - 2, len(buckets))
                offsets, size = bucket_offsets(bucket)
                if len(bucket) == 1:
                    tensor = _checked(next(pairs, None), bucket[0]).to(self.device)
                    flat = tensor.contiguous().reshape(-1).view(torch.uint8)
                else:
                    flat = buffers[slot][:size]
                    for entry, offset in zip(bucket, offsets):
                        _view(flat, entry, offset).copy_(_checked(next(pairs, None), entry))
                sending[slot] = (self.group.broadcast(flat, 0, timeout), flat) if flat.numel() else None
            for back in (2, 1):
                self._wait(sending[(len(buckets) - back) % 2], version, len(buckets) - back, len(buckets))
        except RuntimeError as exc:   # gloo refusing a broadcast at once
            raise ConnectionError(f"weight sync of version {version} failed: the rollout server left the group "
                                  f"or timed out ({str(exc).splitlines()[0][:300]})") from None
        extra = next(pairs, None)
        if extra is not None:
            raise ValueError(f"the policy yielded {extra[0]!r} beyond its manifest of the weight sync")

    @staticmethod
    def _wait(sending: tuple[Any, torch.Tensor] | None, version: int, index: int, total: int) -> None:
        """Wait for one bucket's broadcast (the buffer is then free again)."""
        if sending is None:
            return
        try:
            sending[0].wait()
        except RuntimeError as exc:
            raise ConnectionError(f"weight sync of version {version} failed at bucket {index + 1} of {total}: the "
                                  f"rollout server left the group or timed out "
                                  f"({str(exc).splitlines()[0][:300]})") from None

    def close(self) -> None:
        if self.group is not None:
            close_group(self.group)
        self.group = self.store = None


def _checked(pair: tuple[str, torch.Tensor] | None, entry: Entry) -> torch.Tensor:
    """The pair's tensor in the entry's dtype, after checking its name and shape against the entry."""
    if pair is None:
        raise ValueError(f"the policy's weights ended before {entry.name!r} of the weight sync manifest")
    name, tensor = pair
    if name != entry.name or tuple(tensor.shape) != entry.shape:
        raise ValueError(f"weight sync: got {name!r} {list(tensor.shape)} where the manifest has "
                         f"{entry.name!r} {list(entry.shape)}")
    return tensor.detach().to(DTYPES[entry.dtype])
