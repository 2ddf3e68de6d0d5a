"""Which output channels of a model can be removed together: a channel tracer of detopt's own.

The model is traced with ``torch.fx`` (every ``torch.nn`` layer a leaf) and each tensor's channels
are followed as ids through the graph. A convolution makes one new id per output channel; batch
norm, activations, pooling and upsampling keep them; ``torch.cat`` concatenates and slicing,
``chunk`` and ``split`` cut the lists; an elementwise ``+`` of two tensors unites their ids
position by position (a residual couples channels of several convolutions). The classes of united
ids are the *units* of structured pruning: removing a unit removes its output channel from every
member convolution, the matching features of every batch norm and the matching input channel of
every consumer, whatever concatenations and splits lie between. Channels that reach the model's
outputs (the prediction convolutions) or come from its input are never removed.

Units made by the same convolutions and read by the same convolutions form a *family* (one
layer's free channels, one part of a C2f split, or one C2f chain coupled by its residuals): the
uniform pruning ratio and the rounding of widths apply per family, so every tensor a convolution
reads keeps a multiple of ``round_to`` channels (the two halves of a split as well, not only
their sum: a 39-channel half costs a 16-wide SIMD kernel as much as 48).

An operation the tracer does not know is refused with its name rather than guessed.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from detopt.errors import DetoptInputError

_PASS_MODULES = (nn.SiLU, nn.ReLU, nn.LeakyReLU, nn.Hardswish, nn.Sigmoid, nn.Identity, nn.Upsample,
                 nn.MaxPool2d, nn.AvgPool2d, nn.Dropout)
_PASS_METHODS = {"contiguous", "float", "to", "clone", "sigmoid", "relu"}
_PASS_FUNCTIONS = {torch.sigmoid, torch.relu, torch.nn.functional.silu, torch.nn.functional.relu,
                   torch.nn.functional.interpolate, torch.nn.functional.max_pool2d}


@dataclass
class ConvSite:
    """One ``nn.Conv2d`` of the traced model: the ids of its input and output channels and the
    multiply-adds per (input, output) channel pair (``k_h·k_w·H_out·W_out``)."""

    path: str
    in_ids: np.ndarray
    out_ids: np.ndarray
    macs_per_pair: float


@dataclass
class ChannelGraph:
    """The traced channel structure of a model (see the module docstring).

    Attributes:
        convs: every convolution, in graph order.
        norms: batch-norm path -> ids of its channels.
        unit_of: id -> its unit (class of united ids), ``-1`` for ids that are never removed.
        units: unit -> its ids.
        families: family -> its units; units of a family are made and read by the same convolutions.
        owner: id -> ``(conv path, output channel)``.
    """

    convs: list[ConvSite]
    norms: dict[str, np.ndarray]
    unit_of: np.ndarray
    units: list[np.ndarray]
    families: list[list[int]]
    owner: list[tuple[str, int]] = field(default_factory=list)

    def conv(self, path: str) -> ConvSite:
        return next(c for c in self.convs if c.path == path)

    def macs(self, removed_units: np.ndarray | None = None) -> float:
        """Multiply-adds of the convolutions with ``removed_units`` (a boolean mask over units) gone."""
        gone = np.zeros(len(self.unit_of), bool)
        if removed_units is not None and removed_units.any():
            ids = np.concatenate([self.units[u] for u in np.flatnonzero(removed_units)])
            gone[ids] = True
        total = 0.0
        for c in self.convs:
            n_in = len(c.in_ids) - int(gone[c.in_ids].sum()) if len(c.in_ids) else 0
            n_out = len(c.out_ids) - int(gone[c.out_ids].sum())
            total += c.macs_per_pair * n_in * n_out
        return total


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        leaf = isinstance(m, (nn.Conv2d, nn.BatchNorm2d, *_PASS_MODULES))
        return leaf or super().is_leaf_module(m, qualname)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def add(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n)

    def find(self, a: int) -> int:
        p = self.parent
        while p[a] != a:
            p[a] = p[p[a]]
            a = p[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _channel_slice(idx: object) -> slice | int | None:
    """The channel part of a ``tensor[idx]`` index (dim 1 of NCHW), or None when idx leaves
    channels whole; refuses indexing that drops or reorders the batch dimension."""
    if not isinstance(idx, tuple):
        idx = (idx,)
    if idx and idx[0] is not Ellipsis and idx[0] != slice(None):
        raise DetoptInputError(f"pruning tracer: indexing the batch dimension ({idx!r}) is not supported")
    return idx[1] if len(idx) > 1 and idx[1] != slice(None) else None


def trace_channels(model: nn.Module, imgsz: int = 320) -> ChannelGraph:
    """Trace ``model`` (images ``[1, 3, imgsz, imgsz]`` in) into its :class:`ChannelGraph`.

    Raises:
        DetoptInputError: an operation on channels the tracer does not know (named), a grouped
            convolution, or a layer called twice.
    """
    try:
        gm = torch.fx.GraphModule(model, _Tracer().trace(model))
    except Exception as e:  # fx refuses data-dependent control flow
        raise DetoptInputError(f"pruning tracer: cannot trace {type(model).__name__}: {e}") from None
    p = next(model.parameters())
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros(1, 3, imgsz, imgsz, dtype=p.dtype, device=p.device))
    finally:
        model.train(was)

    uf = _UnionFind()
    fixed: list[np.ndarray] = []
    owner: list[tuple[str, int]] = []
    value: dict[torch.fx.Node, object] = {}
    convs: list[ConvSite] = []
    norms: dict[str, np.ndarray] = {}
    seen_modules: set[str] = set()

    def ids_of(a: object) -> object:
        if isinstance(a, torch.fx.Node):
            return value[a]
        if isinstance(a, tuple):
            return tuple(ids_of(x) for x in a)
        if isinstance(a, list):
            return [ids_of(x) for x in a]
        return a

    for node in gm.graph.nodes:
        args = [ids_of(a) for a in node.args]
        kwargs = {k: ids_of(v) for k, v in node.kwargs.items()}
        if node.op == "placeholder":
            c = int(node.meta["tensor_meta"].shape[1])
            ids = uf.add(c)
            owner.extend(("<input>", k) for k in range(c))
            fixed.append(ids)
            value[node] = ids
        elif node.op == "call_module":
            m = gm.get_submodule(node.target)
            if node.target in seen_modules and isinstance(m, (nn.Conv2d, nn.BatchNorm2d)):
                raise DetoptInputError(f"pruning tracer: {node.target} is called twice")
            seen_modules.add(node.target)
            if isinstance(m, nn.Conv2d):
                if m.groups != 1:
                    raise DetoptInputError(f"pruning tracer: {node.target} is a grouped convolution")
                out = uf.add(m.out_channels)
                owner.extend((node.target, k) for k in range(m.out_channels))
                h, w = node.meta["tensor_meta"].shape[-2:]
                kh, kw = m.kernel_size
                convs.append(ConvSite(node.target, np.asarray(args[0]), out, float(kh * kw * h * w)))
                value[node] = out
            elif isinstance(m, nn.BatchNorm2d):
                norms[node.target] = np.asarray(args[0])
                value[node] = args[0]
            elif isinstance(m, _PASS_MODULES):
                value[node] = args[0]
            else:
                raise DetoptInputError(
                    f"pruning tracer: unsupported layer {node.target} ({type(m).__name__})")
        elif node.op in ("call_function", "call_method"):
            value[node] = _apply(node, args, kwargs, uf)
        elif node.op == "output":
            def mark(v: object) -> None:
                if isinstance(v, np.ndarray):
                    fixed.append(v)
                elif isinstance(v, (list, tuple)):
                    for x in v:
                        mark(x)
            mark(args[0])
        elif node.op == "get_attr":
            raise DetoptInputError(f"pruning tracer: a tensor attribute ({node.target}) in forward")

    n = len(uf.parent)
    roots = np.array([uf.find(i) for i in range(n)])
    never = np.zeros(n, bool)
    for ids in fixed:
        never[np.isin(roots, roots[ids])] = True
    unit_of = np.full(n, -1, np.int64)
    units: list[np.ndarray] = []
    by_root: dict[int, int] = {}
    for i in range(n):
        if never[i]:
            continue
        r = roots[i]
        if r not in by_root:
            by_root[r] = len(units)
            units.append([])
        unit_of[i] = by_root[r]
        units[by_root[r]].append(i)
    unit_arrays = [np.asarray(u) for u in units]
    readers: dict[int, set[str]] = {}
    for c in convs:
        for i in c.in_ids.tolist():
            readers.setdefault(i, set()).add(c.path)
    fam: dict[tuple[tuple[str, ...], tuple[str, ...]], list[int]] = {}
    for u, ids in enumerate(unit_arrays):
        made_by = tuple(sorted({owner[i][0] for i in ids}))
        read_by = tuple(sorted(set().union(*(readers.get(i, set()) for i in ids.tolist()))))
        fam.setdefault((made_by, read_by), []).append(u)
    return ChannelGraph(convs, norms, unit_of, unit_arrays, list(fam.values()), owner)


def _apply(node: torch.fx.Node, args: list, kwargs: dict, uf: _UnionFind) -> object:
    """Channel ids of a function or method node's result."""
    t = node.target
    name = t if isinstance(t, str) else getattr(t, "__name__", str(t))
    if t is torch.cat or name == "cat":
        dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
        if dim not in (1, -3):
            raise DetoptInputError(f"pruning tracer: torch.cat over dim {dim} ({node.name})")
        return np.concatenate(args[0])
    if t in (operator.add, torch.add) or name in ("add", "add_"):
        a, b = args[0], args[1]
        if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
            if len(a) != len(b):
                raise DetoptInputError(f"pruning tracer: adding {len(a)} and {len(b)} channels ({node.name})")
            for x, y in zip(a.tolist(), b.tolist(), strict=True):
                uf.union(x, y)
            return a
        return a if isinstance(a, np.ndarray) else b
    if t is operator.getitem:
        base, idx = args
        if isinstance(base, (list, tuple)):  # an element of chunk / split / a list
            return base[idx]
        ch = _channel_slice(idx)
        return base if ch is None else np.atleast_1d(base[ch])
    if name in ("chunk", "split"):
        base = args[0]
        size = args[1]
        dim = kwargs.get("dim", args[2] if len(args) > 2 else 0)
        if dim not in (1, -3):
            raise DetoptInputError(f"pruning tracer: {name} over dim {dim} ({node.name})")
        if name == "chunk":
            return list(np.array_split(base, size))
        sizes = [size] * (len(base) // size) if isinstance(size, int) else list(size)
        return list(np.split(base, np.cumsum(sizes)[:-1]))
    if (callable(t) and t in _PASS_FUNCTIONS) or name in _PASS_METHODS or name == "check_images":
        return args[0]
    raise DetoptInputError(f"pruning tracer: unsupported operation {name} ({node.name})")
