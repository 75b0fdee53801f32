"""A value -> id index for slice dimensions, stable across epochs and identical on every rank.

Categorical values get ids in the order they are first agreed on. Between two alignments a rank may
see values no other rank has seen yet; those get *provisional* ids after the agreed ones. At
:meth:`SliceIndex.align` every rank contributes its provisional values, all ranks append the union in one
canonical order, and each rank gets the mapping from its provisional ids to the agreed ones. Values
already agreed never change id, so a value unseen on some rank cannot shift the ids of others.

Counts are laid out densely: dimension ``d`` over attributes ``a_1..a_k`` owns a block of
``cap(a_1) * ... * cap(a_k) * num_cells`` counters, where ``cap`` is a power of two for categorical
attributes (so the layout changes rarely) and the number of bins for binned ones. One flat counter at the
end collects everything that is excluded (invalid rows, binned values out of range).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lightning_insight.slicing.spec import AttributeSpec, SliceSpec

OVERALL = "overall"
#: Above this many dense counters per dimension the layout is refused (memory, not correctness).
MAX_DENSE_CELLS = 1 << 24

Gather = Callable[[Any], list[Any]]

#: Rows per step of the CPU counting loop: a step's int32 codes and scratch stay in the L2 cache, which
#: halves the time of one bincount over the whole input at 1e7 rows.
_CHUNK_ROWS = 1 << 16
#: Integer dtypes whose values are read as raw codes on the device (bool goes through numpy).
_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
_NUMPY_INT_DTYPES = tuple(np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64, np.uint8))
_INT32_MAX = (1 << 31) - 1
#: Widest value range of an integer attribute mapped with a dense lookup table.
_DENSE_RANGE = 1 << 16


def _canonical_order(value: Hashable) -> tuple[str, Any]:
    return (type(value).__name__, value)


def _next_capacity(size: int) -> int:
    return max(4, 1 << max(size - 1, 0).bit_length())


@dataclass(frozen=True, slots=True)
class Layout:
    """Where each dimension's counters live in the flat counts vector."""

    capacities: dict[str, int]
    offsets: dict[str, int]
    sizes: dict[str, int]
    num_cells: int

    @property
    def num_slots(self) -> int:
        """Number of (slice, cell) counters, without the trailing exclusion counter."""
        return sum(self.sizes.values()) * self.num_cells


def _as_python_scalar(value: Any) -> Any:
    if isinstance(value, (np.generic, torch.Tensor)):
        return value.item()
    return value


def _raw_ints(values: Any, device: torch.device | None) -> torch.Tensor | None:
    """``values`` as a flat int tensor when they are integers read as they are, else ``None``."""
    if isinstance(values, np.ndarray):
        if (
            values.dtype not in _NUMPY_INT_DTYPES
            or not values.dtype.isnative
            or not values.flags.writeable
        ):
            return None
        values = torch.from_numpy(values)
    if not isinstance(values, torch.Tensor) or values.dtype not in _INT_DTYPES:
        return None
    return values.detach().reshape(-1).to(device)


def _within(values: torch.Tensor, low: int, size: int) -> bool:
    """Whether every value lies in ``[low, low + size)`` (``False`` may also mean "not sure")."""
    if not size:
        return False
    if low == 0 and values.dtype == torch.int64 and values.stride(-1) == 1:
        # int64 aminmax is slow on CPU; amax plus the sign of every 32-bit word (a negative int64 has
        # a negative high word) answers the same for a range starting at 0, at half the cost.
        return int(values.amax()) < size and int(values.view(torch.int32).amin()) >= 0
    bounds = torch.aminmax(values)
    return low <= int(bounds.min) and int(bounds.max) < low + size


@dataclass(slots=True)
class _Axis:
    """One attribute's axis of a joint count: ids, or raw integers whose ids come from the count."""

    key: str
    values: torch.Tensor
    raw: bool
    low: int = 0
    size: int = 0  # raw axes: 0 until the first rows are seen
    binned: bool = False  # the last index holds the values outside the bins


class _JointCounts:
    """Counts of every (attribute value, ..., confusion cell) combination, added a slab of rows at a time.

    One code per row and one histogram per slab, whatever the number of dimensions: each dimension and
    the overall counts are sums over this joint count. A raw axis spans the range of values seen so far
    and widens (moving the counts already made) when a slab holds values outside it.
    """

    def __init__(self, axes: Sequence[_Axis], num_cells: int, max_size: int) -> None:
        self.axes = list(axes)
        self.num_cells = num_cells
        self.max_size = max_size
        self.counts: torch.Tensor | None = None

    @property
    def shape(self) -> list[int]:
        """Axis sizes, then the number of cells."""
        return [a.size for a in self.axes] + [self.num_cells]

    def _widen(self, i: int, low: int, high: int) -> bool:
        axis = self.axes[i]
        if axis.size:
            low, high = min(low, axis.low), max(high, axis.low + axis.size - 1)
        if low < -_INT32_MAX or high > _INT32_MAX:
            return False
        if 0 < low <= high - low + 1:
            low = 0  # a small offset costs little room and keeps the cheaper check of _within
        old_low, old_size = axis.low, axis.size
        axis.low, axis.size = low, high - low + 1
        if math.prod(self.shape) > self.max_size:
            return False
        if self.counts is not None:
            shape = self.shape
            shape[i] = old_size
            before = self.counts.view(shape)
            widened = before.new_zeros(self.shape)
            widened.narrow(i, old_low - low, old_size).copy_(before)
            self.counts = widened.reshape(-1)
        return True

    def add(
        self, start: int, stop: int, cells: torch.Tensor, code: torch.Tensor, scratch: torch.Tensor
    ) -> bool:
        """Count rows ``start:stop`` whose int32 cells are ``cells``; ``False`` if the count grows too large.

        ``code`` and ``scratch`` are int32 buffers of ``stop - start`` rows. Each axis is checked, then
        encoded right away, while its slab is still in the cache.
        """
        for i, axis in enumerate(self.axes):
            slab = axis.values[start:stop]
            if axis.raw and not _within(slab, axis.low, axis.size):
                bounds = torch.aminmax(slab)
                if not self._widen(i, int(bounds.min), int(bounds.max)):
                    return False
            into = scratch if i else code
            into.copy_(slab)  # exact: raw values are within int32, ids are small
            if axis.low:
                into.sub_(axis.low)
            if i:
                torch.add(scratch, code, alpha=axis.size, out=code)
        if self.axes:
            torch.add(cells, code, alpha=self.num_cells, out=code)
        else:
            code = cells
        size = math.prod(self.shape)
        if self.counts is None:
            self.counts = torch.zeros(size, dtype=torch.int64, device=code.device)
        if code.device.type == "cpu" and size <= code.shape[0] // 4:
            self.counts.add_(torch.bincount(code, minlength=size))
        else:
            # No output sized by the max code (a sync on accelerators), no large zeroed histogram per slab.
            ones = torch.ones(1, dtype=torch.int64, device=code.device).expand(code.shape[0])
            self.counts.index_add_(0, code, ones)
        return True


class SliceIndex:
    """Maps attribute values to slice ids for a set of dimensions.

    Args:
        specs: the dimensions (parsed slice specs).
        max_slices: the most distinct values one categorical attribute may take.

    Example:
        >>> from lightning_insight.slicing.spec import parse_slice_specs
        >>> index = SliceIndex(parse_slice_specs(["weather", "weather&night"]))
        >>> ids = index.attribute_ids({"weather": ["rain", "sun", "rain"], "night": [True, False, True]}, 3)
        >>> _ = index.align(None)
        >>> index.values("weather")
        ['rain', 'sun']
    """

    def __init__(self, specs: Sequence[SliceSpec], *, max_slices: int = 1000) -> None:
        self.specs = tuple(specs)
        self.max_slices = max_slices
        self.attributes: dict[str, AttributeSpec] = {}
        for spec in self.specs:
            for attribute in spec.attributes:
                self.attributes.setdefault(attribute.key, attribute)
        self._vocabulary: dict[str, list[Hashable]] = {
            k: [] for k, a in self.attributes.items() if not a.is_binned
        }
        self._pending: dict[str, list[Hashable]] = {k: [] for k in self._vocabulary}
        self._lookup: dict[str, dict[Hashable, int]] = {k: {} for k in self._vocabulary}
        self._seen: dict[str, set[tuple[int, ...]]] = {s.name: set() for s in self.specs}
        self._last_layout: tuple[tuple[int, tuple[int, ...]], Layout] | None = None
        self._last_offsets: tuple[Layout, torch.Tensor] | None = None

    # ------------------------------------------------------------------ values -> ids
    def attribute_ids(
        self, attributes: Mapping[str, Any], num_samples: int, device: torch.device | None = None
    ) -> dict[str, torch.Tensor]:
        """Ids of every attribute the dimensions use, ``-1`` where a binned value is out of range.

        Args:
            attributes: attribute name -> values (list, tuple, numpy array or tensor) of length
                ``num_samples``.
            num_samples: the number of predictions the values belong to.
            device: where the ids go (the device of the counts).

        Raises:
            RuntimeError: if an attribute a dimension needs is missing.
            ValueError: if an attribute's length differs from ``num_samples`` or it takes more than
                ``max_slices`` distinct values.
            TypeError: if a categorical attribute holds floats or a binned one holds non-numbers.
        """
        ids: dict[str, torch.Tensor] = {}
        for key, attribute in self.attributes.items():
            if attribute.name not in attributes:
                raise RuntimeError(
                    f"Expected attribute {attribute.name!r} (needed by argument `slices`) in the batch, "
                    f"but the attributes found were {sorted(attributes)}."
                )
            values = attributes[attribute.name]
            length = len(values)
            if length != num_samples:
                raise ValueError(
                    f"Expected attribute {attribute.name!r} to have one value per prediction "
                    f"({num_samples}), but got {length} values."
                )
            if attribute.is_binned:
                ids[key] = self._binned_ids(attribute, values, device)
            else:
                found = self._categorical_ids(key, values)
                # `to` even when a no-op costs a dispatch; this runs for every attribute of every batch.
                ids[key] = (
                    found
                    if device is None or found.device == device
                    else found.to(device=device, non_blocking=True)
                )
        return ids

    def _binned_ids(
        self, attribute: AttributeSpec, values: Any, device: torch.device | None, fill: int = -1
    ) -> torch.Tensor:
        assert attribute.edges is not None
        if isinstance(values, torch.Tensor):
            numbers = values.to(device=device)
        else:
            try:
                numbers = torch.as_tensor(np.asarray(values, dtype=np.float64), device=device)
            except (TypeError, ValueError):
                raise TypeError(
                    f"Expected binned attribute {attribute.name!r} to hold numbers, "
                    f"but got values such as {list(values)[:3]!r}."
                ) from None
        numbers = numbers.reshape(-1).to(torch.float64)
        edges = attribute.edges
        inner = torch.tensor(edges[1:-1], dtype=torch.float64, device=numbers.device)
        ids = torch.bucketize(numbers, inner, right=True)
        upper_ok = numbers < edges[-1]
        if math.isfinite(edges[-1]):
            upper_ok = upper_ok | (numbers == edges[-1])
        valid = (numbers >= edges[0]) & upper_ok
        return ids.masked_fill_(~valid, fill)

    def _categorical_ids(self, key: str, values: Any) -> torch.Tensor:
        if isinstance(values, torch.Tensor):
            if values.dtype in _INT_DTYPES and values.numel():
                ids = self._tensor_ids(key, values.detach().reshape(-1).to(torch.int64))
                if ids is not None:
                    return ids
            values = values.detach().cpu().numpy()
        if isinstance(values, np.ndarray):
            return self._array_ids(key, values)
        lookup = self._lookup[key]
        get = lookup.get
        out = [get(v, -1) for v in values]
        if -1 in out:
            for i, v in enumerate(values):
                if out[i] == -1:
                    out[i] = self._add_value(key, v)
        return torch.from_numpy(np.array(out, dtype=np.int64))  # a third of torch.tensor's cost

    def _array_ids(self, key: str, array: np.ndarray) -> torch.Tensor:
        array = array.reshape(-1)
        if array.dtype.kind == "f":
            raise TypeError(
                f"Expected categorical attribute {self.attributes[key].name!r} to hold strings, ints or "
                f"bools, but got float values. HINT: bin numbers with a spec such as "
                f"'{self.attributes[key].name}:0,18,65,inf', or cast flags to int."
            )
        if array.size and array.dtype.kind in "iu":
            low, high = int(array.min()), int(array.max())
            if high - low < (1 << 16):
                shifted = array.astype(np.intp) - low
                present = np.flatnonzero(np.bincount(shifted))
                table = np.full(high - low + 1, -1, dtype=np.int64)
                table[present] = [self._id(key, int(v) + low) for v in present]
                return torch.from_numpy(table[shifted])
        uniques, inverse = np.unique(array, return_inverse=True)
        table = np.array([self._id(key, u) for u in uniques], dtype=np.int64)
        return torch.from_numpy(table[inverse.reshape(-1)] if table.size else np.zeros(0, np.int64))

    def _tensor_ids(self, key: str, values: torch.Tensor) -> torch.Tensor | None:
        """Ids of a small-range int64 tensor, computed where it lives (``None``: use numpy)."""
        low, high = int(values.amin()), int(values.amax())
        if high - low >= _DENSE_RANGE:
            return None
        shifted = values - low if low else values
        present = torch.bincount(shifted, minlength=high - low + 1).nonzero().reshape(-1).tolist()
        ids = self._int_ids(key, [value + low for value in present])
        if len(present) == high - low + 1 and ids == list(range(ids[0], ids[0] + len(ids))):
            # The usual case (every value of the range present, ids in value order): no lookup needed.
            return values - (low - ids[0])
        table = torch.full((high - low + 1,), -1, dtype=torch.int64, device=values.device)
        table[torch.tensor(present, device=values.device)] = torch.tensor(ids, device=values.device)
        return table[shifted]

    def _int_ids(self, key: str, values: Sequence[int]) -> list[int]:
        """``[self._id(key, v) for v in values]`` for Python ints, without the per-value checks."""
        known = self._lookup[key]
        pending = self._pending[key]
        size = len(self._vocabulary[key]) + len(pending)
        ids = []
        for value in values:
            found = known.get(value)
            if found is None:
                if size >= self.max_slices:
                    self._add_value(key, value)  # raises the error
                known[value] = found = size
                pending.append(value)
                size += 1
            ids.append(found)
        return ids

    def _id(self, key: str, value: Any) -> int:
        value = _as_python_scalar(value)
        found = self._lookup[key].get(value)
        return self._add_value(key, value) if found is None else found

    def _add_value(self, key: str, value: Any) -> int:
        value = _as_python_scalar(value)
        if isinstance(value, float) or not isinstance(value, Hashable):
            raise TypeError(
                f"Expected categorical attribute {self.attributes[key].name!r} to hold strings, ints or "
                f"bools, but got {value!r} ({type(value).__name__}). HINT: bin numbers with a spec "
                f"such as '{self.attributes[key].name}:0,18,65,inf'."
            )
        known = self._lookup[key]
        if value in known:
            return known[value]
        size = len(self._vocabulary[key]) + len(self._pending[key])
        if size >= self.max_slices:
            raise ValueError(
                f"Expected attribute {self.attributes[key].name!r} to take at most max_slices="
                f"{self.max_slices} distinct values, but got more (new value {value!r}). HINT: bin it "
                f"('{self.attributes[key].name}:...') or raise `max_slices`."
            )
        known[value] = size
        self._pending[key].append(value)
        return size

    # ------------------------------------------------------------------ one-shot joint counts
    def _joint_axes(
        self, attributes: Mapping[str, Any], num_samples: int, device: torch.device | None
    ) -> list[_Axis] | None:
        """Axes of a :class:`_JointCounts` over ``attributes``.

        ``None`` wherever :meth:`attribute_ids` would raise (missing attribute, wrong length, bad
        values), so that the caller's exact path raises the same error after the checks that come
        before it.
        """
        axes: list[_Axis] = []
        for key, attribute in self.attributes.items():
            if attribute.name not in attributes:
                return None
            values = attributes[attribute.name]
            try:
                if len(values) != num_samples:
                    return None
                if attribute.is_binned:
                    outside = len(attribute.bin_labels())
                    ids = self._binned_ids(attribute, values, device, fill=outside)
                    if ids.numel() != num_samples:
                        return None
                    axes.append(_Axis(key, ids, raw=False, size=outside + 1, binned=True))
                    continue
                raw = _raw_ints(values, device)
                if raw is not None and raw.numel() == num_samples:
                    axes.append(_Axis(key, raw, raw=True))
                    continue
                ids = self._categorical_ids(key, values).to(device)
            except (TypeError, ValueError, RuntimeError):
                return None
            if ids.numel() != num_samples:
                return None
            size = len(self._vocabulary[key]) + len(self._pending[key])
            axes.append(_Axis(key, ids, raw=False, size=size))
        if any(len({a.key for a in s.attributes}) < len(s.attributes) for s in self.specs):
            return None
        return axes

    def _joint_flat(
        self, joint: _JointCounts, num_samples: int
    ) -> tuple[torch.Tensor, Layout] | None:
        """Ids for the raw values, agreement (one process), and the flat counts in the dense layout.

        Returns ``None`` when a raw attribute takes more than ``max_slices`` values (the exact path
        raises). Raises like :meth:`layout`.
        """
        assert joint.counts is not None
        counts = joint.counts.view(joint.shape)
        device = counts.device
        tables: dict[int, torch.Tensor] = {}
        for i, axis in enumerate(joint.axes):
            if not axis.raw:
                continue
            others = [d for d in range(counts.ndim) if d != i]
            present = counts.sum(dim=others).nonzero().reshape(-1).tolist()
            known = self._lookup[axis.key]
            new = sum(1 for v in present if axis.low + v not in known)
            if (
                len(self._vocabulary[axis.key]) + len(self._pending[axis.key]) + new
                > self.max_slices
            ):
                return None
            table = torch.zeros(
                axis.size, dtype=torch.int64
            )  # absent values have no counts to move
            ids = self._int_ids(axis.key, [axis.low + v for v in present])
            table[present] = torch.tensor(ids, dtype=torch.int64)
            tables[i] = table
        remaps = self.align(None)
        layout = self.layout(joint.num_cells)
        for i, axis in enumerate(joint.axes):
            if axis.binned:
                continue  # bins need no ids; the capacity is the number of bins
            table = tables.get(i, torch.arange(axis.size))
            remap = remaps.get(axis.key)
            if remap is not None:
                table = remap[table]
            capacity = layout.capacities[axis.key]
            if capacity == axis.size and bool((table == torch.arange(axis.size)).all()):
                continue
            shape = list(counts.shape)
            shape[i] = capacity
            counts = counts.new_zeros(shape).index_add_(i, table.to(device), counts)
        k = joint.num_cells
        flat = counts.new_zeros(layout.num_slots + 1)
        dims = list(range(len(joint.axes)))
        flat[:k] = counts.sum(dim=dims) if dims else counts
        position = {a.key: i for i, a in enumerate(joint.axes)}
        for spec in self.specs:
            keep = [position[a.key] for a in spec.attributes]
            drop = [d for d in dims if d not in keep]
            block = counts.sum(dim=drop) if drop else counts
            ordered = sorted(keep)
            block = block.permute(*[ordered.index(d) for d in keep], len(keep))
            block = block[tuple(slice(0, layout.capacities[a.key]) for a in spec.attributes)]
            start = layout.offsets[spec.name] * k
            flat[start : start + layout.sizes[spec.name] * k] = block.reshape(-1)
        # Every row is counted once overall and once per dimension unless a bin leaves it out.
        flat[-1] = (1 + len(self.specs)) * num_samples - flat[:-1].sum()
        return flat, layout

    # ------------------------------------------------------------------ layout and bins
    def layout(self, num_cells: int) -> Layout:
        """The dense layout for the values known now.

        Raises:
            ValueError: if an intersection would need more than ``MAX_DENSE_CELLS`` counters.
        """
        known = tuple(
            len(self._vocabulary[key]) + len(self._pending[key]) for key in self._vocabulary
        )
        cached = self._last_layout
        if cached is not None and cached[0] == (num_cells, known):
            return cached[
                1
            ]  # the layout depends on nothing else; streaming updates ask every batch
        capacities: dict[str, int] = {}
        for key, attribute in self.attributes.items():
            if attribute.is_binned:
                capacities[key] = len(attribute.bin_labels())
            else:
                capacities[key] = _next_capacity(
                    len(self._vocabulary[key]) + len(self._pending[key])
                )
        offsets: dict[str, int] = {OVERALL: 0}
        sizes: dict[str, int] = {OVERALL: 1}
        offset = 1
        for spec in self.specs:
            size = math.prod(capacities[a.key] for a in spec.attributes)
            if size * num_cells > MAX_DENSE_CELLS:
                raise ValueError(
                    f"Expected dimension {spec.name!r} to need at most {MAX_DENSE_CELLS} counters, but its "
                    f"attributes' values give {size * num_cells}. HINT: intersect fewer or coarser attributes."
                )
            offsets[spec.name] = offset
            sizes[spec.name] = size
            offset += size
        layout = Layout(capacities=capacities, offsets=offsets, sizes=sizes, num_cells=num_cells)
        self._last_layout = ((num_cells, known), layout)
        return layout

    def bins(
        self,
        ids: Mapping[str, torch.Tensor],
        cells: torch.Tensor,
        valid: torch.Tensor,
        layout: Layout,
    ) -> torch.Tensor:
        """Flat counter index of every (dimension, sample), the exclusion counter where not counted.

        Returns:
            An int64 tensor of length ``(1 + len(specs)) * N``: overall first, then each dimension.
        """
        return self._flat_codes(ids, cells, ~valid, layout, categorical_ids_checked=False)

    def _flat_codes(
        self,
        ids: Mapping[str, torch.Tensor],
        cells: torch.Tensor,
        excluded: torch.Tensor,
        layout: Layout,
        *,
        categorical_ids_checked: bool,
    ) -> torch.Tensor:
        """:meth:`bins` from the mask of rows not counted, in few ops (it runs on every batch).

        ``categorical_ids_checked``: the categorical ids come from :meth:`attribute_ids`, so none is
        negative and they need no clamping.
        """
        k = layout.num_cells
        if cells.dtype != torch.int64:
            cells = cells.to(torch.int64)
        clamped = {
            key: ids[key] if categorical_ids_checked and not a.is_binned else ids[key].clamp_min(0)
            for key, a in self.attributes.items()
        }
        outside = {key: ids[key] < 0 for key, a in self.attributes.items() if a.is_binned}
        parts = [cells]
        drops = [excluded]
        for spec in self.specs:
            code: torch.Tensor | None = None
            drop = excluded
            for attribute in spec.attributes:
                values = clamped[attribute.key]
                capacity = layout.capacities[attribute.key]
                code = values if code is None else torch.add(values, code, alpha=capacity)
                if attribute.is_binned:
                    drop = drop | outside[attribute.key]
            assert code is not None
            parts.append(torch.add(cells, code, alpha=k))
            drops.append(drop)
        flat = torch.cat(parts).add_(self._offsets(layout, cells.shape[0], cells.device))
        drop_all = excluded.repeat(len(parts)) if not outside else torch.cat(drops)
        return flat.masked_fill_(drop_all, layout.num_slots)

    def _offsets(self, layout: Layout, rows: int, device: torch.device) -> torch.Tensor:
        """Each dimension's first counter, repeated for its ``rows`` codes (cached: batches repeat)."""
        cached = self._last_offsets
        if cached is not None and cached[0] is layout:
            offsets = cached[1]
            if offsets.shape[0] == rows * (1 + len(self.specs)) and offsets.device == device:
                return offsets
        starts = [0] + [layout.offsets[spec.name] * layout.num_cells for spec in self.specs]
        offsets = torch.tensor(starts, dtype=torch.int64, device=device).repeat_interleave(rows)
        self._last_offsets = (layout, offsets)
        return offsets

    def relayout(
        self,
        counts: torch.Tensor,
        old: Layout,
        new: Layout,
        remaps: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Move counts from layout ``old`` to ``new``, renumbering ids with ``remaps``.

        Args:
            counts: flat counts in layout ``old`` (with the trailing exclusion counter), optionally
                with trailing axes (e.g. ``(num_slots + 1, B)`` bootstrap replicate counts).
            old: the layout ``counts`` is in.
            new: the layout to move to (capacities may only grow).
            remaps: attribute key -> map from old ids to new ids (see :meth:`align`).

        Returns:
            Flat counts in layout ``new``; the exclusion counter is carried over.
        """
        remaps = remaps or {}
        k = old.num_cells
        rest = tuple(counts.shape[1:])  # e.g. bootstrap replicates
        out = counts.new_zeros((new.num_slots + 1, *rest))
        out[-1] = counts[-1]
        for name, offset in old.offsets.items():
            attributes = (
                () if name == OVERALL else next(s for s in self.specs if s.name == name).attributes
            )
            old_shape = [old.capacities[a.key] for a in attributes]
            block = counts[offset * k : (offset + old.sizes[name]) * k].view(*old_shape, k, *rest)
            for axis, attribute in enumerate(attributes):
                remap = remaps.get(attribute.key)
                new_cap = new.capacities[attribute.key]
                if remap is None and new_cap == old_shape[axis]:
                    continue
                index = torch.arange(old_shape[axis], device=counts.device)
                if remap is not None:
                    index[: remap.numel()] = remap.to(counts.device)
                shape = list(block.shape)
                shape[axis] = new_cap
                block = block.new_zeros(shape).index_add_(axis, index, block)
            start = new.offsets[name] * k
            out[start : start + new.sizes[name] * k] = block.reshape(-1, *rest)
        return out

    # ------------------------------------------------------------------ agreement across ranks
    def align(self, gather: Gather | None) -> dict[str, torch.Tensor]:
        """Agree on the ids of the values seen since the last call, on every rank.

        Args:
            gather: ``all_gather_object``-like: takes this rank's object, returns every rank's (in rank
                order). ``None`` for a single process.

        Returns:
            For each categorical attribute whose values were provisional anywhere, the map from the ids
            this rank used (index) to the agreed ids (value), as an int64 tensor.
        """
        mine = {k: list(v) for k, v in self._pending.items()}
        everyone = [mine] if gather is None else gather(mine)
        remaps: dict[str, torch.Tensor] = {}
        for key, agreed in self._vocabulary.items():
            union: set[Hashable] = set()
            for pending in everyone:
                union.update(pending.get(key, ()))
            if not union:
                continue
            before = len(agreed)
            local = self._pending[key]
            agreed.extend(sorted(union, key=_canonical_order))
            self._lookup[key] = {v: i for i, v in enumerate(agreed)}
            remap = torch.arange(before + len(local), dtype=torch.int64)
            if local:
                remap[before:] = torch.tensor(
                    [self._lookup[key][v] for v in local], dtype=torch.int64
                )
            remaps[key] = remap
            self._pending[key] = []
        return remaps

    # ------------------------------------------------------------------ reading counts back
    def values(self, key: str) -> list[Hashable]:
        """The agreed values of a categorical attribute, in id order."""
        return list(self._vocabulary[key])

    def slices(self, spec: SliceSpec, block: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Name and counts of every reported slice of one dimension (see :meth:`slice_positions`)."""
        names, positions = self.slice_positions(spec, block)
        if positions is None:
            return names, np.zeros((0, block.shape[-1]), np.int64)
        return names, block[positions]

    def slice_positions(
        self, spec: SliceSpec, block: np.ndarray
    ) -> tuple[list[str], tuple[np.ndarray, ...] | None]:
        """Names of the reported slices of one dimension, and where their counts are in ``block``.

        A slice of a single attribute is reported whenever its value is known (count 0 when absent this
        epoch); an intersection is reported from the first epoch it holds samples onwards.

        Args:
            spec: the dimension.
            block: its counts, shape ``(cap_1, ..., cap_k, num_cells)``, agreed ids.

        Returns:
            Slice names and the index of their counts in ``block`` (``block[index]`` has shape
            ``(num_slices, num_cells)``; ``None`` when there is no slice). The same index picks the
            slices out of a block with more trailing axes (bootstrap replicates).
        """
        labels: list[list[str]] = []
        for attribute in spec.attributes:
            if attribute.is_binned:
                labels.append(list(attribute.bin_labels()))
            else:
                labels.append([str(v) for v in self._vocabulary[attribute.key]])
        known = tuple(len(x) for x in labels)
        block = block[tuple(slice(0, n) for n in known)]
        combos: list[tuple[int, ...]]
        if len(spec.attributes) == 1:
            combos = [(i,) for i in range(known[0])]
        else:
            self._seen[spec.name].update(map(tuple, np.argwhere(block.sum(axis=-1) > 0).tolist()))
            combos = sorted(self._seen[spec.name])
        names = [spec.slice_name(tuple(map(list.__getitem__, labels, c))) for c in combos]
        if not combos:
            return names, None
        return names, tuple(np.array(combos).T)

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Agreed values and reported intersections, as plain lists (safe for ``weights_only`` loads)."""
        return {
            "vocabulary": {k: list(v) for k, v in self._vocabulary.items()},
            "seen": {k: sorted(list(c) for c in v) for k, v in self._seen.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved; attributes not in it stay empty."""
        for key, values in state.get("vocabulary", {}).items():
            if key in self._vocabulary:
                self._vocabulary[key] = list(values)
                self._lookup[key] = {v: i for i, v in enumerate(values)}
                self._pending[key] = []
        for name, combos in state.get("seen", {}).items():
            if name in self._seen:
                self._seen[name] = {tuple(c) for c in combos}
