"""Poisson bootstrap weights drawn from each sample's id, and percentile intervals.

A Poisson bootstrap gives every sample an independent ``Poisson(1)`` weight per replicate instead of
resampling ``N`` rows with replacement; for large ``N`` the two agree, and the Poisson form streams:
a batch's weights depend only on its own samples. Here a sample's weights are a pure function of its id,
the replicate and a seed (a counter-based hash, no random state), so every rank, every epoch, a resumed
run and a single process all draw the same weights for the same sample, and replicate counts are sums of
integers that a DDP all-reduce adds exactly.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

__all__ = ["percentile_interval", "poisson_weights"]

_MASK32 = 0xFFFFFFFF
#: ``Poisson(1)``'s CDF at 0..7 in units of 2**-16: a 16-bit draw ``u`` gets the weight
#: ``#{k: u >= CDF[k]}`` (each probability within 2**-17 of Poisson(1)'s; the mass above 7, 1e-5, is
#: weight 8).
_POISSON_CDF = torch.tensor(
    [
        round(2**16 * math.exp(-1) * sum(1 / math.factorial(j) for j in range(k + 1)))
        for k in range(8)
    ],
    dtype=torch.int64,
)
_GOLDEN = 0x9E3779B9


def _mix32(values: torch.Tensor) -> torch.Tensor:
    """murmur3's 32-bit finaliser on int64 tensors holding values in ``[0, 2**32)``.

    Products are taken modulo 2**64 (two's complement) and masked back to 32 bits, which keeps the low
    32 bits exact on every device.
    """
    h = values & _MASK32
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & _MASK32
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & _MASK32
    return h ^ (h >> 16)


_CDF_ON: dict[torch.device, torch.Tensor] = {}


def _cdf_on(device: torch.device) -> torch.Tensor:
    """:data:`_POISSON_CDF` on ``device``, copied there once (this runs on every batch)."""
    if device not in _CDF_ON:
        _CDF_ON[device] = _POISSON_CDF.to(device)
    return _CDF_ON[device]


def _mix32_int(value: int) -> int:
    """:func:`_mix32` of one Python int."""
    h = value & _MASK32
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK32
    return h ^ (h >> 16)


def poisson_weights(sample_ids: torch.Tensor, replicates: int, *, seed: int = 0) -> torch.Tensor:
    """``Poisson(1)`` weights, one row per sample and one column per replicate, from the sample ids.

    Args:
        sample_ids: int64 ids ``(N,)`` on any device (negative ids and ids past 2**32 are fine).
        replicates: ``B``, the number of bootstrap replicates.
        seed: Seed of the whole bootstrap: another seed, other weights.

    Returns:
        An int32 tensor ``(N, B)`` on the ids' device; the same id always gets the same row.

    Example:
        >>> w = poisson_weights(torch.tensor([3, 7, 3]), 5)
        >>> w.shape, bool((w[0] == w[2]).all()), w.dtype
        (torch.Size([3, 5]), True, torch.int32)
    """
    ids = sample_ids.reshape(-1).to(torch.int64)
    seed_key = _mix32_int((seed * _GOLDEN + 0x632BE5AB) & _MASK32)
    # the high 32 bits folded into the low ones, then one mix: a key per sample
    key = _mix32((ids ^ ((ids >> 32) * 0x27D4EB2F)) ^ seed_key)
    # one 32-bit hash gives two replicates' 16-bit draws
    pairs = (replicates + 1) // 2
    columns = torch.arange(pairs, dtype=torch.int64, device=ids.device) * _GOLDEN
    bits = _mix32(key[:, None] + columns[None, :])
    draws = torch.cat([bits & 0xFFFF, bits >> 16], dim=1)[:, :replicates]
    return torch.bucketize(draws, _cdf_on(ids.device), right=True, out_int32=True)


def percentile_interval(
    replicates: np.ndarray[Any, Any], confidence: float, *, axis: int = 0
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Percentile interval of replicate values along ``axis``, ignoring NaN replicates.

    A position where every replicate is NaN gets NaN bounds.

    Example:
        >>> low, high = percentile_interval(np.arange(101.0)[:, None], 0.9)
        >>> round(float(low[0]), 9), round(float(high[0]), 9)
        (5.0, 95.0)
    """
    values = np.asarray(replicates, dtype=np.float64)
    tail = (1.0 - confidence) / 2.0 * 100.0
    if not np.isnan(values).any():  # the common case, and much faster than nanpercentile
        low, high = np.percentile(values, [tail, 100.0 - tail], axis=axis)
        return low, high
    with warnings.catch_warnings():  # an all-NaN position warns and gives NaN, as wanted
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(values, [tail, 100.0 - tail], axis=axis)
    return low, high
