from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Train and attribute on one intra-op thread: the same numbers on any core count, and far
    faster than two threads on a shared, loaded 2-core machine (measured: 2.7 s against 9-23 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
