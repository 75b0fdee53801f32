"""Sliced binary metrics: lightning_insight vs fairlearn ``MetricFrame`` vs reading the inputs once.

For every N (rows) and G (distinct values of one categorical int attribute), plus a 3-way intersection
(attributes of 16/4/4 values, dimension ``a&b&c``), times in one process, one thread each:

- ours: ``lightning_insight.slice_metrics(preds, target, attributes, task="binary", slices=[...])`` on
  torch tensors (float probabilities, int64 target, int64 attributes), all metrics and indicators;
- counts: ``slice_counts`` alone (the per-slice confusion counts ``slice_metrics`` is built on);
- fairlearn: ``MetricFrame`` with the same binary metrics by group, plus ``difference()`` and
  ``ratio()``, on the numpy views of the same data; skipped where its estimated time exceeds
  ``--fairlearn-budget`` seconds (estimate from a calibration run: a cost per row plus a cost per group);
- floor: reading every input once (``torch.sum`` over each input tensor).

Each number is the median of several repeats. Run ``python benchmarks/sliced_counts.py`` (full grid, a
few minutes) or ``--quick`` (small N, seconds).
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import lightning_insight
from lightning_insight.metrics.classification import slice_counts
from lightning_insight.slicing.spec import parse_slice_specs

INTERSECTION = "3-way"
INTERSECTION_SIZES = {"a": 16, "b": 4, "c": 4}


@dataclass(frozen=True)
class Case:
    n: int
    groups: int | str  # number of values of "a", or INTERSECTION

    @property
    def slices(self) -> list[str]:
        return ["a&b&c"] if self.groups == INTERSECTION else ["a"]

    @property
    def num_groups(self) -> int:
        if self.groups == INTERSECTION:
            return int(np.prod(list(INTERSECTION_SIZES.values())))
        return int(self.groups)


def make_inputs(
    case: Case, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Probabilities, targets and int64 attributes with a group effect (so metrics differ by group)."""
    generator = torch.Generator().manual_seed(seed)
    sizes = INTERSECTION_SIZES if case.groups == INTERSECTION else {"a": int(case.groups)}
    attributes = {
        name: torch.randint(0, size, (case.n,), generator=generator) for name, size in sizes.items()
    }
    shift = (attributes["a"] % 7).to(torch.float32) / 14.0  # groups differ in base rate
    target = (torch.rand(case.n, generator=generator) < 0.3 + shift).to(torch.int64)
    noise = torch.rand(case.n, generator=generator)
    preds = (0.6 * target + 0.4 * noise).clamp_(0.0, 1.0)
    return preds, target, attributes


def median_ms(fn: Callable[[], object], repeats: int, *, warm_up: bool = True) -> float:
    if warm_up:
        fn()  # allocator, lazy imports, caches
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def ours(
    case: Case, preds: torch.Tensor, target: torch.Tensor, attributes: dict[str, torch.Tensor]
) -> Callable[[], object]:
    def run() -> object:
        return lightning_insight.slice_metrics(
            preds, target, attributes, task="binary", slices=case.slices
        )

    return run


def counts_only(
    case: Case, preds: torch.Tensor, target: torch.Tensor, attributes: dict[str, torch.Tensor]
) -> Callable[[], object]:
    specs = parse_slice_specs(case.slices)

    def run() -> object:
        return slice_counts(preds, target, attributes, task="binary", specs=specs)

    return run


def floor(
    preds: torch.Tensor, target: torch.Tensor, attributes: dict[str, torch.Tensor]
) -> Callable[[], object]:
    tensors = [preds, target, *attributes.values()]

    def run() -> object:
        return [t.sum() for t in tensors]

    return run


def fairlearn_frame(
    preds: torch.Tensor, target: torch.Tensor, attributes: dict[str, torch.Tensor]
) -> Callable[[], object]:
    import pandas as pd
    from fairlearn.metrics import (
        MetricFrame,
        count,
        false_negative_rate,
        false_positive_rate,
        selection_rate,
        true_negative_rate,
        true_positive_rate,
    )
    from sklearn.metrics import accuracy_score, f1_score, precision_score

    metrics = {
        "accuracy": accuracy_score,
        "tpr": true_positive_rate,
        "fpr": false_positive_rate,
        "tnr": true_negative_rate,
        "fnr": false_negative_rate,
        "ppv": lambda y, p: precision_score(y, p, zero_division=0),
        "f1": lambda y, p: f1_score(y, p, zero_division=0),
        "selection_rate": selection_rate,
        "count": count,
    }
    probabilities = preds.numpy()
    y_true = target.numpy()
    columns = {name: values.numpy() for name, values in attributes.items()}
    sensitive = columns["a"] if len(columns) == 1 else pd.DataFrame(columns)

    def run() -> object:
        y_pred = (probabilities >= 0.5).astype(np.int64)
        frame = MetricFrame(
            metrics=metrics, y_true=y_true, y_pred=y_pred, sensitive_features=sensitive
        )
        return frame.by_group, frame.difference(), frame.ratio()

    return run


class FairlearnEstimate:
    """Seconds per row and per group of one MetricFrame evaluation, from two small calibration runs."""

    def __init__(self, rows: int = 20_000) -> None:
        small, large = 2, 64
        t_small = self._time(Case(rows, small))
        t_large = self._time(Case(rows, large))
        self.per_group = max(t_large - t_small, 0.0) / (large - small)
        self.per_row = max(t_small - small * self.per_group, 0.0) / rows

    @staticmethod
    def _time(case: Case) -> float:
        preds, target, attributes = make_inputs(case)
        return median_ms(fairlearn_frame(preds, target, attributes), repeats=3) / 1e3

    def seconds(self, case: Case) -> float:
        return self.per_row * case.n + self.per_group * case.num_groups


@dataclass
class Row:
    case: Case
    ours: float
    counts: float
    floor: float
    fairlearn: float | None  # None: skipped
    fairlearn_estimate: float
    budget: float

    def markdown(self) -> str:
        if self.fairlearn is None:
            estimate = f"est. {self.fairlearn_estimate:.0f} s > {self.budget:.0f} s"
            fair_cell, ratio_cell = f"skipped ({estimate})", "-"
        else:
            fair_cell, ratio_cell = f"{self.fairlearn:.0f}", f"{self.fairlearn / self.ours:.0f}x"
        groups = "3-way (16x4x4)" if self.case.groups == INTERSECTION else str(self.case.groups)
        return (
            f"| {self.case.n:.0e} | {groups} | {self.ours:.1f} | {self.counts:.1f} | {fair_cell} | "
            f"{self.floor:.2f} | {self.ours / self.floor:.1f}x | {ratio_cell} |"
        )


HEADER = (
    "| N | G | ours ms | counts ms | fairlearn ms | floor ms | ours/floor | fairlearn/ours |\n"
    "|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def measure(cases: Sequence[Case], *, repeats: int, budget: float) -> list[Row]:
    estimate = FairlearnEstimate()
    print(
        f"fairlearn calibration: {estimate.per_row * 1e9:.0f} ns per row + "
        f"{estimate.per_group * 1e3:.1f} ms per group; budget {budget:.0f} s\n"
    )
    print(HEADER)
    rows = []
    for case in cases:
        preds, target, attributes = make_inputs(case)
        reps = repeats if case.n < 10**7 else max(3, repeats // 2)
        seconds = estimate.seconds(case)
        fair = None
        if seconds <= budget:
            slow = seconds >= 5  # one timed run, no warm-up: a few ms of set-up do not matter there
            fair = median_ms(
                fairlearn_frame(preds, target, attributes), 1 if slow else 3, warm_up=not slow
            )
        row = Row(
            case=case,
            ours=median_ms(ours(case, preds, target, attributes), reps),
            counts=median_ms(counts_only(case, preds, target, attributes), reps),
            floor=median_ms(floor(preds, target, attributes), reps),
            fairlearn=fair,
            fairlearn_estimate=seconds,
            budget=budget,
        )
        rows.append(row)
        print(row.markdown(), flush=True)
        del preds, target, attributes
        gc.collect()
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small N only (a smoke run of seconds)"
    )
    parser.add_argument("--sizes", type=float, nargs="+", help="row counts (default 1e5 1e6 1e7)")
    parser.add_argument(
        "--groups", type=int, nargs="+", help="values of the attribute (default 2 16 256 1000)"
    )
    parser.add_argument("--no-intersection", action="store_true", help="leave out the 3-way case")
    parser.add_argument(
        "--repeats", type=int, default=7, help="timed repeats per measurement (median)"
    )
    parser.add_argument(
        "--fairlearn-budget",
        type=float,
        default=60.0,
        help="skip fairlearn above this many estimated seconds",
    )
    args = parser.parse_args(argv)
    sizes = (
        [int(s) for s in args.sizes]
        if args.sizes
        else ([10**4, 10**5] if args.quick else [10**5, 10**6, 10**7])
    )
    groups: list[int | str] = (
        list(args.groups) if args.groups else ([2, 16] if args.quick else [2, 16, 256, 1000])
    )
    if not args.no_intersection:
        groups.append(INTERSECTION)
    repeats = 3 if args.quick and args.repeats == 7 else args.repeats
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        import fairlearn
        import pandas
        import sklearn

        print(
            f"python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
            f"pandas {pandas.__version__}, scikit-learn {sklearn.__version__}, fairlearn {fairlearn.__version__}, "
            f"lightning_insight {lightning_insight.__version__}; 1 thread; {platform.processor() or platform.machine()}"
        )
        cases = [Case(n, g) for n in sizes for g in groups]
        measure(cases, repeats=repeats, budget=args.fairlearn_budget)


if __name__ == "__main__":
    main()
