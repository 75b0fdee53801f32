"""Failure-mode mining cost: mutual information + tree per fit, and the monitor's per-epoch cost.

1. ``FailureModeMiner.fit`` on Gaussian features (one group, failures planted on two features, 20%
   failure rate) for N in {1e3, 1e4, 1e5} x D in {512, 2048}: ours with the default ``"knn"``
   estimator (scikit-learn's ``mutual_info_classif``) on a seeded stratified subsample of 5000 rows
   per group (the default ``max_samples_per_group``), ours with the ``"binned"`` estimator (16
   quantile bins, vectorised), and the peer a user would otherwise write after Barlow's reference code:
   ``mutual_info_classif`` on every row, top 50 features, then the same ``DecisionTreeClassifier``
   (skipped where it would take minutes; the estimate from the per-feature cost is printed instead).
   Target: under 2 s at N=1e4, D=2048.
2. ``FailureModeMonitor`` under ``trainer.validate()`` twice on the quickstart's 1500 validation scenes
   with a robust extractor: the monitor's hook time in the first epoch (features computed) and in the
   second (every feature cached).

Run ``python benchmarks/failure_modes.py`` (about 5 minutes) or ``--quick`` (N up to 1e4).
"""

from __future__ import annotations

import argparse
import platform
import time
from typing import Any

import numpy as np
import torch
from sklearn.feature_selection import mutual_info_classif
from sklearn.tree import DecisionTreeClassifier

from benchmarks._timing import timed
from lightning_insight.failure_modes import FailureModeMiner


def data(n: int, d: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    planted = (x[:, 7] > 0.5) & (x[:, 23] <= -0.3)
    fails = planted | (rng.random(n) < 0.1)
    target = np.zeros(n, dtype=np.int64)
    return x, fails.astype(np.int64), target


def seconds(fn: Any, *args: Any, **kwargs: Any) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def peer(x: np.ndarray[Any, Any], fails: np.ndarray[Any, Any]) -> float:
    def run() -> None:
        scores = mutual_info_classif(x, fails, random_state=0)
        top = np.argsort(-scores)[:50]
        DecisionTreeClassifier(
            criterion="entropy", max_depth=3, class_weight="balanced", random_state=0
        ).fit(x[:, top], fails)

    return seconds(run)


def mining(sizes: list[int]) -> None:
    print("\n| N | D | ours knn, 5000-row subsample (s) | ours binned (s) | peer: mutual_info_classif on all rows + tree (s) |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|")
    for n in sizes:
        for d in (512, 2048):
            x, preds, target = data(n, d)
            knn = FailureModeMiner(grouping="all", mutual_information="knn")
            binned = FailureModeMiner(grouping="all", mutual_information="binned")
            ours_knn = seconds(knn.fit, x, preds, target)
            ours_binned = seconds(binned.fit, x, preds, target)
            if n * d <= 1e4 * 512:
                peer_text = f"{peer(x, preds):.2f}"
            else:  # time 64 features and scale: the full run takes minutes
                per_feature = seconds(mutual_info_classif, x[:, :64], preds, random_state=0)
                peer_text = f"~{per_feature / 64 * d:.0f} (estimated from 64 features)"
            print(f"| {n:.0e} | {d} | {ours_knn:.2f} | {ours_binned:.2f} | {peer_text} |")


def monitor_epochs(quick: bool) -> tuple[float, float, float]:
    from pytorch_lightning import Trainer

    from lightning_insight import FailureModeMonitor, MemorySink
    from lightning_insight.datasets import SceneClassifier, ScenesDataModule
    from lightning_insight.datasets.scenes import make_scenes
    from lightning_insight.failure_modes import make_robust_extractor

    num_val = 300 if quick else 1500
    train = make_scenes(2000, seed=0, split="train")
    start = time.perf_counter()
    extractor = make_robust_extractor((train.images, train.targets), num_classes=2, epochs=4)
    robust = time.perf_counter() - start
    hook_seconds = [0.0]
    monitor = timed(FailureModeMonitor, hook_seconds)(
        extractor, task="binary", max_depth=2, num_features=32, sinks=[MemorySink()]
    )
    trainer = Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[monitor],
    )
    torch.manual_seed(0)
    model = SceneClassifier()
    datamodule = ScenesDataModule(num_train=64, num_val=num_val, num_test=64, batch_size=64)
    epochs = []
    for _ in range(2):
        hook_seconds[0] = 0.0
        trainer.validate(model, datamodule, verbose=False)
        epochs.append(hook_seconds[0])
    return robust, epochs[0], epochs[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(f"Python {platform.python_version()}, torch {torch.__version__}, 2 cores")
    mining([1_000, 10_000] if args.quick else [1_000, 10_000, 100_000])
    robust, first, second = monitor_epochs(args.quick)
    print("\n| FailureModeMonitor on the quickstart's validation scenes | seconds |")
    print("|---|---:|")
    print(f"| make_robust_extractor (2000 images, 4 epochs, one-time) | {robust:.1f} |")
    print(f"| first epoch: features computed + mining + pictures | {first:.2f} |")
    print(f"| later epoch: every feature cached + mining + pictures | {second:.2f} |")


if __name__ == "__main__":
    main()
