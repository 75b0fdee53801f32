"""Slice specs and the value -> id index shared by every sliced metric."""

from lightning_insight.slicing.index import Layout, SliceIndex
from lightning_insight.slicing.spec import (
    AttributeSpec,
    SliceSpec,
    parse_slice_spec,
    parse_slice_specs,
)

__all__ = [
    "AttributeSpec",
    "Layout",
    "SliceIndex",
    "SliceSpec",
    "parse_slice_spec",
    "parse_slice_specs",
]
