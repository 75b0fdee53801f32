"""Slice specifications: which attributes a dimension is made of and how their values are named.

A *dimension* is named by its spec string, for example ``"weather"`` (a categorical attribute),
``"weather&timeofday"`` (the intersection of two attributes, in the order given) or
``"age:0,18,65,inf"`` (a numeric attribute binned into ``[0, 18)``, ``[18, 65)`` and ``[65, inf)``).
A *slice* is one cell of a dimension, named ``dim=value`` with intersections joined by ``&``:
``"weather=rainy&timeofday=night"`` or ``"age=[18,65)"``.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

_NAME = re.compile(r"^[A-Za-z_][\w.\-]*$")


@dataclass(frozen=True, slots=True, kw_only=True)
class AttributeSpec:
    """One attribute of a dimension.

    Attributes:
        name: the attribute's key in the batch's attributes (``"weather"``, ``"age"``).
        edges: bin edges for a binned numeric attribute (increasing, at least two), or ``None`` for a
            categorical attribute.
    """

    name: str
    edges: tuple[float, ...] | None = None

    @property
    def key(self) -> str:
        """The spec text of this attribute: ``"weather"`` or ``"age:0,18,65,inf"``."""
        if self.edges is None:
            return self.name
        return f"{self.name}:{','.join(_format_edge(e) for e in self.edges)}"

    @property
    def is_binned(self) -> bool:
        """Whether values are numbers put into bins rather than categories."""
        return self.edges is not None

    def bin_labels(self) -> tuple[str, ...]:
        """Names of the bins, ``"[0,18)"``; the last bin is closed when its upper edge is finite."""
        if self.edges is None:
            raise RuntimeError(f"Attribute `{self.name}` is categorical and has no bins.")
        labels = []
        last = len(self.edges) - 2
        for i, (low, high) in enumerate(zip(self.edges[:-1], self.edges[1:], strict=True)):
            closing = "]" if i == last and math.isfinite(high) else ")"
            labels.append(f"[{_format_edge(low)},{_format_edge(high)}{closing}")
        return tuple(labels)


@dataclass(frozen=True, slots=True, kw_only=True)
class SliceSpec:
    """A dimension: one attribute or the intersection of several.

    Attributes:
        attributes: the attributes in the order the spec gives them.
    """

    attributes: tuple[AttributeSpec, ...]

    @property
    def name(self) -> str:
        """The dimension's name: its normalised spec text (``"weather&timeofday"``)."""
        return "&".join(a.key for a in self.attributes)

    def slice_name(self, values: tuple[str, ...]) -> str:
        """Name of the slice whose attribute values (already formatted) are ``values``."""
        return "&".join(f"{a.name}={v}" for a, v in zip(self.attributes, values, strict=True))


def _format_edge(edge: float) -> str:
    if math.isinf(edge):
        return "inf" if edge > 0 else "-inf"
    return str(int(edge)) if float(edge).is_integer() else repr(float(edge))


def _parse_attribute(text: str, spec: str) -> AttributeSpec:
    name, sep, edges_text = text.partition(":")
    name = name.strip()
    if not _NAME.match(name):
        raise ValueError(
            f"Expected each attribute in slice spec {spec!r} to be a name like 'weather' or a binned "
            f"attribute like 'age:0,18,65,inf', but got {text.strip()!r}."
        )
    if not sep:
        return AttributeSpec(name=name)
    try:
        edges = tuple(float(e) for e in edges_text.split(","))
    except ValueError:
        raise ValueError(
            f"Expected the bin edges of {name!r} in slice spec {spec!r} to be comma-separated numbers "
            f"(inf allowed), but got {edges_text!r}."
        ) from None
    if len(edges) < 2 or any(math.isnan(e) for e in edges):
        raise ValueError(
            f"Expected at least two bin edges for {name!r} in slice spec {spec!r}, but got {edges_text!r}."
        )
    if any(b <= a for a, b in itertools.pairwise(edges)):
        raise ValueError(
            f"Expected strictly increasing bin edges for {name!r} in slice spec {spec!r}, "
            f"but got {edges_text!r}."
        )
    return AttributeSpec(name=name, edges=edges)


def parse_slice_spec(spec: str | SliceSpec) -> SliceSpec:
    """Parse a slice spec string.

    Args:
        spec: ``"weather"``, ``"weather&timeofday"``, ``"age:0,18,65,inf"`` or a mix such as
            ``"timeofday&age:0,18,inf"``.

    Returns:
        The parsed :class:`SliceSpec`.

    Raises:
        TypeError: if ``spec`` is not a string.
        ValueError: if the text is malformed or names an attribute twice.

    Example:
        >>> parse_slice_spec("weather & timeofday").name
        'weather&timeofday'
        >>> parse_slice_spec("age:0,18,65,inf").attributes[0].bin_labels()
        ('[0,18)', '[18,65)', '[65,inf)')
    """
    if isinstance(spec, SliceSpec):
        return spec
    if not isinstance(spec, str):
        raise TypeError(
            f"Expected a slice spec to be a string like 'weather&timeofday', but got {spec!r}."
        )
    if not spec.strip():
        raise ValueError(
            "Expected a slice spec to be a non-empty string like 'weather', but got ''."
        )
    attributes = tuple(_parse_attribute(part, spec) for part in spec.split("&"))
    names = [a.name for a in attributes]
    if len(set(names)) != len(names):
        raise ValueError(
            f"Expected each attribute at most once in slice spec {spec!r}, but got {names}."
        )
    return SliceSpec(attributes=attributes)


def parse_slice_specs(
    specs: str | SliceSpec | list[str | SliceSpec] | tuple[str | SliceSpec, ...],
) -> tuple[SliceSpec, ...]:
    """Parse several slice specs, rejecting duplicates and an empty list.

    Raises:
        ValueError: if no spec is given or one dimension is given twice.
    """
    items = [specs] if isinstance(specs, (str, SliceSpec)) else list(specs)
    if not items:
        raise ValueError(
            "Expected argument `slices` to name at least one dimension such as ['weather'], but got []."
        )
    parsed = tuple(parse_slice_spec(s) for s in items)
    names = [p.name for p in parsed]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            f"Expected argument `slices` to name each dimension once, but got {duplicates} twice."
        )
    return parsed
