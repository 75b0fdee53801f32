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
                ids[key] = self._categorical_ids(key, values).to(device=device, non_blocking=True)
        return ids

    def _binned_ids(self, attribute: AttributeSpec, values: Any, device: torch.device | None) -> torch.Tensor:
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
        return torch.where(valid, ids, torch.full_like(ids, -1))

    def _categorical_ids(self, key: str, values: Any) -> torch.Tensor:
        if isinstance(values, torch.Tensor):
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
        return torch.tensor(out, dtype=torch.int64)

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
                shifted = (array - low).astype(np.intp)
                present = np.flatnonzero(np.bincount(shifted))
                table = np.full(high - low + 1, -1, dtype=np.int64)
                table[present] = [self._id(key, int(v) + low) for v in present]
                return torch.from_numpy(table[shifted])
        uniques, inverse = np.unique(array, return_inverse=True)
        table = np.array([self._id(key, u) for u in uniques], dtype=np.int64)
        return torch.from_numpy(table[inverse.reshape(-1)] if table.size else np.zeros(0, np.int64))

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

    # ------------------------------------------------------------------ layout and bins
    def layout(self, num_cells: int) -> Layout:
        """The dense layout for the values known now.

        Raises:
            ValueError: if an intersection would need more than ``MAX_DENSE_CELLS`` counters.
        """
        capacities: dict[str, int] = {}
        for key, attribute in self.attributes.items():
            if attribute.is_binned:
                capacities[key] = len(attribute.bin_labels())
            else:
                capacities[key] = _next_capacity(len(self._vocabulary[key]) + len(self._pending[key]))
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
        return Layout(capacities=capacities, offsets=offsets, sizes=sizes, num_cells=num_cells)

    def bins(
        self, ids: Mapping[str, torch.Tensor], cells: torch.Tensor, valid: torch.Tensor, layout: Layout
    ) -> torch.Tensor:
        """Flat counter index of every (dimension, sample), the exclusion counter where not counted.

        Returns:
            An int64 tensor of length ``(1 + len(specs)) * N``: overall first, then each dimension.
        """
        trash = layout.num_slots
        k = layout.num_cells
        cells = cells.to(torch.int64)
        parts = [torch.where(valid, cells, trash)]
        for spec in self.specs:
            code = torch.zeros_like(cells)
            keep = valid
            for attribute in spec.attributes:
                attribute_ids = ids[attribute.key]
                code = code * layout.capacities[attribute.key] + attribute_ids.clamp_min(0)
                if attribute.is_binned:
                    keep = keep & (attribute_ids >= 0)
            flat = (code + layout.offsets[spec.name]) * k + cells
            parts.append(torch.where(keep, flat, trash))
        return torch.cat(parts)

    def relayout(
        self,
        counts: torch.Tensor,
        old: Layout,
        new: Layout,
        remaps: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Move counts from layout ``old`` to ``new``, renumbering ids with ``remaps``.

        Args:
            counts: flat counts in layout ``old`` (with the trailing exclusion counter).
            old: the layout ``counts`` is in.
            new: the layout to move to (capacities may only grow).
            remaps: attribute key -> map from old ids to new ids (see :meth:`align`).

        Returns:
            Flat counts in layout ``new``; the exclusion counter is carried over.
        """
        remaps = remaps or {}
        k = old.num_cells
        out = counts.new_zeros(new.num_slots + 1)
        out[-1] = counts[-1]
        for name, offset in old.offsets.items():
            attributes = () if name == OVERALL else next(s for s in self.specs if s.name == name).attributes
            old_shape = [old.capacities[a.key] for a in attributes]
            block = counts[offset * k : (offset + old.sizes[name]) * k].view(*old_shape, k)
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
            out[start : start + new.sizes[name] * k] = block.reshape(-1)
        return out

    # ------------------------------------------------------------------ agreement across ranks
    def has_pending(self) -> bool:
        """Whether values were seen since the last :meth:`align`."""
        return any(self._pending.values())

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
                remap[before:] = torch.tensor([self._lookup[key][v] for v in local], dtype=torch.int64)
            remaps[key] = remap
            self._pending[key] = []
        return remaps

    # ------------------------------------------------------------------ reading counts back
    def values(self, key: str) -> list[Hashable]:
        """The agreed values of a categorical attribute, in id order."""
        return list(self._vocabulary[key])

    def slices(self, spec: SliceSpec, block: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Name and counts of every reported slice of one dimension.

        A slice of a single attribute is reported whenever its value is known (count 0 when absent this
        epoch); an intersection is reported from the first epoch it holds samples onwards.

        Args:
            spec: the dimension.
            block: its counts, shape ``(cap_1, ..., cap_k, num_cells)``, agreed ids.

        Returns:
            Slice names and counts of shape ``(num_slices, num_cells)``.
        """
        labels: list[list[str]] = []
        for attribute in spec.attributes:
            if attribute.is_binned:
                labels.append(list(attribute.bin_labels()))
            else:
                labels.append([str(v) for v in self._vocabulary[attribute.key]])
        known = tuple(len(x) for x in labels)
        block = block[tuple(slice(0, n) for n in known)]
        if len(spec.attributes) == 1:
            combos = [(i,) for i in range(known[0])]
        else:
            occupied = {tuple(int(i) for i in c) for c in np.argwhere(block.sum(axis=-1) > 0)}
            self._seen[spec.name] |= occupied
            combos = sorted(self._seen[spec.name])
        names = [spec.slice_name(tuple(labels[j][c[j]] for j in range(len(c)))) for c in combos]
        counts = np.stack([block[c] for c in combos]) if combos else np.zeros((0, block.shape[-1]), np.int64)
        return names, counts

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
