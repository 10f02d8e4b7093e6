"""The Qwen-VL vision tower sharded across the ranks of a sequence-parallel group by temporal patches.

Qwen2.5-VL and Qwen3-VL encode a video as independent temporal patches (2 frames each): their vision attention
runs within one temporal patch (`cu_seqlens` per patch, also in Qwen2.5-VL's "full" blocks), Qwen2.5-VL's window
permutation never crosses a temporal patch, and both position encodings (2-D rotary; Qwen3-VL's interpolated
learned table) depend on (h, w) only. So the tower's output for a video is the concatenation of its outputs for
consecutive runs of the video's temporal patches, and each rank of a group can encode a share of them.

`sharded_vision_embeds(visual, pixel_values, grid_thw, group)` returns what `visual(pixel_values,
grid_thw=grid_thw)` returns (same output class, same fields, rows in the same order: `pooler_output`,
`last_hidden_state`, and Qwen3-VL's `deepstack_features`), computed so:

- every item (an image, or a video) is cut into units, one per temporal patch (an image is one unit), weighted by
  its patch count; the units, in order, go to ranks in contiguous runs of about equal weight (`plan_shards`): a
  long video spreads over every rank, whole images are balanced by patch count, and several items in one batch
  are handled alike;
- each rank runs the tower once on its own runs; a rank with no unit runs it on the smallest zero input, so
  every rank issues the same calls (ZeRO-3 gathers parameters at every module call, in forward and backward);
- one all-gather (every field packed into one tensor) gives every rank the whole output.

Backward of the all-gather (`grad`), chosen by what the caller does with the gathered output:

- `"sum"` (default): each rank back-propagates its own part of a loss that the group's ranks add up (Ulysses
  sequence parallelism: a rank holds the gradient of only the rows of its sequence chunk). Each rank's slice
  receives the sum of the group's gradients for it (reduce-scatter); exact, as the engine sums the SP ranks'
  parameter gradients.
- `"own"`: every rank back-propagates the same whole loss through all of the gathered output (a replicated
  downstream). Each rank keeps its own slice of its gradient; summing instead would multiply the gradient by
  the group size.

Every rank of the group must pass the same `grid_thw` (the ranks of one SP group hold the same prompts);
`check=True` verifies it with one small all-gather.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist

GradMode = Literal["sum", "own"]


def dummy_pixels(visual: torch.nn.Module, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The smallest vision input (one merge window of patches, zeros) and its grid_thw."""
    cfg = visual.config
    merge = int(getattr(cfg, "spatial_merge_size", 2))
    t = int(getattr(cfg, "temporal_patch_size", 2))
    dim = int(getattr(cfg, "in_channels", getattr(cfg, "in_chans", 3))) * t * int(cfg.patch_size) ** 2
    grid = torch.tensor([[1, merge, merge]], dtype=torch.long, device=device)
    dtype = getattr(visual, "dtype", None) or next(p.dtype for p in visual.parameters())
    return torch.zeros(merge * merge, dim, dtype=dtype, device=device), grid


# ------------------------------------------------------------------------------------------------ the plan
@dataclass(frozen=True)
class Piece:
    """A run of consecutive temporal patches `[t_start, t_stop)` of item `item` (a row of grid_thw)."""

    item: int
    t_start: int
    t_stop: int


@dataclass(frozen=True)
class ShardPlan:
    """Which runs of temporal patches each rank encodes.

    pieces: per rank, its runs in the order of the items (rank r's runs all come after rank r-1's).
    rows: per rank, how many merged output rows (vision tokens) its runs give.
    """

    pieces: tuple[tuple[Piece, ...], ...]
    rows: tuple[int, ...]


def unit_ranks(weights: list[int], world: int) -> list[int]:
    """The rank of each unit: unit k goes to the rank whose equal share of the total weight holds the midpoint
    of k's weight, a midpoint on a boundary going to the lower rank (contiguous runs; each rank's load is within
    one unit's weight of total / world)."""
    total = sum(weights)
    ranks, before = [], 0
    for w in weights:
        ranks.append(min(world - 1, ((2 * before + w) * world - 1) // (2 * total)))
        before += w
    return ranks


def plan_shards(grid_thw: list[list[int]], world: int, merge_unit: int) -> ShardPlan:
    """The plan for items of grid `grid_thw` ([t, h, w] in patches) over `world` ranks; `merge_unit` is the
    number of patches merged into one output row (spatial_merge_size ** 2)."""
    units = [(i, t) for i, (n_t, _, _) in enumerate(grid_thw) for t in range(n_t)]
    ranks = unit_ranks([grid_thw[i][1] * grid_thw[i][2] for i, _ in units], world)
    pieces: list[list[Piece]] = [[] for _ in range(world)]
    for (item, t), rank in zip(units, ranks):
        runs = pieces[rank]
        if runs and runs[-1].item == item and runs[-1].t_stop == t:
            runs[-1] = Piece(item, runs[-1].t_start, t + 1)
        else:
            runs.append(Piece(item, t, t + 1))
    rows = tuple(sum((p.t_stop - p.t_start) * grid_thw[p.item][1] * grid_thw[p.item][2] for p in runs) // merge_unit
                 for runs in pieces)
    return ShardPlan(tuple(tuple(runs) for runs in pieces), rows)


def local_inputs(pixel_values: torch.Tensor, grid_thw: list[list[int]],
                 pieces: tuple[Piece, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's pixel rows and grid for its runs (`pieces` non-empty)."""
    starts = [0]
    for t, h, w in grid_thw:
        starts.append(starts[-1] + t * h * w)
    rows, grid = [], []
    for p in pieces:
        _, h, w = grid_thw[p.item]
        rows.append(pixel_values[starts[p.item] + p.t_start * h * w: starts[p.item] + p.t_stop * h * w])
        grid.append([p.t_stop - p.t_start, h, w])
    return torch.cat(rows), torch.tensor(grid, dtype=torch.long, device=pixel_values.device)


# ------------------------------------------------------------------------------------------- the gather
class _GatherRows(torch.autograd.Function):
    """Forward: every rank's rows (rank r has rows[r]), concatenated in rank order, on every rank.
    Backward: this rank's slice of the gradient, summed over the group ("sum") or its own ("own")."""

    @staticmethod
    def forward(ctx: Any, local: torch.Tensor, rows: tuple[int, ...], group: Any, grad: str) -> torch.Tensor:
        rank, width = dist.get_rank(group), max(rows)
        ctx.rows, ctx.group, ctx.grad, ctx.rank = rows, group, grad, rank
        padded = local.new_zeros((width, local.shape[1]))
        padded[: rows[rank]] = local
        gathered = local.new_empty((len(rows) * width, local.shape[1]))
        dist.all_gather_into_tensor(gathered, padded.contiguous(), group=group)
        return torch.cat([gathered[r * width: r * width + n] for r, n in enumerate(rows)])

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        rows, rank = ctx.rows, ctx.rank
        start = sum(rows[:rank])
        if ctx.grad == "own":
            return grad_out[start: start + rows[rank]].contiguous(), None, None, None
        width = max(rows)
        padded = grad_out.new_zeros((len(rows) * width, grad_out.shape[1]))
        offset = 0
        for r, n in enumerate(rows):
            padded[r * width: r * width + n] = grad_out[offset: offset + n]
            offset += n
        mine = grad_out.new_empty((width, grad_out.shape[1]))
        dist.reduce_scatter_tensor(mine, padded, group=ctx.group)
        return mine[: rows[rank]], None, None, None


def gather_rows(local: torch.Tensor, rows: tuple[int, ...], group: Any = None, grad: GradMode = "sum") -> torch.Tensor:
    """All-gather 2-D `local` (rank r holds rows[r] rows) into one tensor in rank order; see the module doc for
    `grad`. A collective: every rank of `group` calls it with the same `rows`."""
    if grad not in ("sum", "own"):
        raise ValueError(f"gather_rows: grad must be 'sum' or 'own', not {grad!r}")
    return _GatherRows.apply(local, tuple(rows), group, grad)


# ------------------------------------------------------------------------------------------ the tower
def _pack(out: Any, merge_unit: int, with_last_hidden_state: bool) -> tuple[torch.Tensor, list[tuple[str, int]]]:
    """The output's row-aligned fields as one (rows, sum of widths) tensor: pooler_output, each deepstack feature,
    then last_hidden_state with its `merge_unit` patch rows per output row side by side."""
    rows = out.pooler_output.shape[0]
    parts = [("pooler_output", out.pooler_output)]
    parts += [(f"deepstack_features.{k}", f) for k, f in enumerate(getattr(out, "deepstack_features", None) or [])]
    if with_last_hidden_state:
        hidden = out.last_hidden_state
        parts.append(("last_hidden_state", hidden.reshape(rows, merge_unit * hidden.shape[-1])))
    return torch.cat([t for _, t in parts], dim=-1), [(name, t.shape[-1]) for name, t in parts]


def _unpack(packed: torch.Tensor, layout: list[tuple[str, int]], like: Any, merge_unit: int) -> Any:
    fields: dict[str, Any] = {"last_hidden_state": None}
    deepstack: list[torch.Tensor] = []
    for (name, width), value in zip(layout, packed.split([w for _, w in layout], dim=-1)):
        if name.startswith("deepstack_features."):
            deepstack.append(value)
        elif name == "last_hidden_state":
            fields[name] = value.reshape(packed.shape[0] * merge_unit, width // merge_unit)
        else:
            fields[name] = value
    if getattr(like, "deepstack_features", None) is not None:
        fields["deepstack_features"] = deepstack
    return type(like)(**fields)


def _grid_list(grid_thw: torch.Tensor) -> list[list[int]]:
    grid = [[int(v) for v in row] for row in grid_thw.tolist()]
    if not grid or any(len(row) != 3 or min(row) < 1 for row in grid):
        raise ValueError(f"sharded_vision_embeds: grid_thw must be rows of 3 positive counts, got {grid}")
    return grid


def _check_same_grid(grid: list[list[int]], device: torch.device, group: Any) -> None:
    """One all-gather of a fingerprint of `grid`: every rank of the group must encode the same items."""
    flat = torch.tensor([v for row in grid for v in row], dtype=torch.float64)
    mine = torch.stack([torch.tensor(float(len(grid))), flat.sum(),
                        (flat * torch.arange(1, flat.numel() + 1, dtype=torch.float64)).sum()]).to(device)
    every = mine.new_empty((dist.get_world_size(group), 3))
    dist.all_gather_into_tensor(every, mine[None], group=group)
    if not bool((every == mine).all()):
        raise ValueError(f"sharded_vision_embeds: the ranks of the group hold different grid_thw (rank "
                         f"{dist.get_rank(group)} has {grid}); every rank must pass the same media")


def sharded_vision_embeds(visual: torch.nn.Module, pixel_values: torch.Tensor, grid_thw: torch.Tensor,
                          group: Any = None, *, grad: GradMode = "sum", with_last_hidden_state: bool = True,
                          check: bool = True) -> Any:
    """What `visual(pixel_values, grid_thw=grid_thw)` returns, each rank of `group` encoding its share of the
    temporal patches (see the module doc). `with_last_hidden_state=False` leaves `last_hidden_state` None and
    out of the gather (the language model uses only `pooler_output` and `deepstack_features`). Without an
    initialised process group, or with a group of one rank, the plain call."""
    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size(group) == 1:
        return visual(pixel_values, grid_thw=grid_thw, return_dict=True)
    grid = _grid_list(grid_thw)
    if check:
        _check_same_grid(grid, pixel_values.device, group)
    merge_unit = int(visual.spatial_merge_size) ** 2
    plan = plan_shards(grid, dist.get_world_size(group), merge_unit)
    mine = plan.pieces[dist.get_rank(group)]
    if mine:
        pixels, local_grid = local_inputs(pixel_values, grid, mine)
        out = visual(pixels, grid_thw=local_grid, return_dict=True)
        packed, layout = _pack(out, merge_unit, with_last_hidden_state)
    else:   # nothing to encode: the smallest zero input, so that this rank still makes the tower's calls
        pixels, local_grid = dummy_pixels(visual, pixel_values.device)
        out = visual(pixels.to(pixel_values.dtype), grid_thw=local_grid, return_dict=True)
        packed, layout = _pack(out, merge_unit, with_last_hidden_state)
        packed = packed[:0]   # still in the graph: its (empty) gradient runs the tower's backward too
    return _unpack(gather_rows(packed, plan.rows, group, grad), layout, out, merge_unit)


def split_per_item(out: Any, grid_thw: torch.Tensor, merge_unit: int) -> Any:
    """`out` as `get_image_features` / `get_video_features` return it: `pooler_output` (and each deepstack
    feature) split into one tensor per item, so that it can be passed to the model as
    `mm_encoder_outputs={"video": ...}`."""
    sizes = (grid_thw.prod(-1) // merge_unit).tolist()
    out.pooler_output = torch.split(out.pooler_output, sizes)
    if getattr(out, "deepstack_features", None) is not None:
        out.deepstack_features = [torch.split(f, sizes) for f in out.deepstack_features]
    return out
