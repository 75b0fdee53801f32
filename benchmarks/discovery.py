"""Slice discovery cost: the attribution pass per image vs a forward pass, clustering, and the monitor's
share of a training run.

1. Per image, batch 100, one thread, medians: a plain forward pass (no_grad); ours
   (``SliceFinder.update``: one forward with a hook + ``autograd.grad``, features and top patches);
   the peer a user would otherwise write, captum ``LayerGradCam`` after a forward for the predicted class
   (``attribute(inputs, target=forward(inputs).argmax)``); and ours with Integrated Gradients (16 steps).
   Models: ``SceneClassifier`` (16, 32, 64) at 32x32, and a wider one (64, 128, 256) at 64x64.
2. Clustering (standardise, PCA to 50, k-means with the default k) of 2k and 20k random feature rows of
   width 128 (``cluster_features``; MiniBatchKMeans past 20k rows).
3. The quickstart's training run (``configs/quickstart.yaml`` sizes: 3000 train / 1500 val images,
   6 epochs) with FairnessMonitor only, and with SliceDiscoveryMonitor added at its default schedule
   (every 2nd epoch, 1000 probe images): total time and the monitor's own hook time.

Run ``python benchmarks/discovery.py`` (about 3 minutes) or ``--quick``.
"""

from __future__ import annotations

import argparse
import platform
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from benchmarks._timing import median_ms, quickstart_share, timed
from lightning_insight.datasets import SceneClassifier
from lightning_insight.discovery.clustering import cluster_features
from lightning_insight.discovery.finder import SliceFinder


def per_image(channels: tuple[int, ...], side: int, repeats: int) -> dict[str, float]:
    from captum.attr import LayerGradCam

    torch.manual_seed(0)
    model = SceneClassifier(channels=channels, image_size=side).eval()
    images = torch.rand(100, 3, side, side)
    labels = torch.randint(0, 2, (100,))
    ids = torch.arange(100)
    layer = f"backbone.{len(channels) - 1}"

    class TwoLogits(torch.nn.Module):  # captum wants (N, C) outputs; the model has one binary logit
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logit = self.model(x)
            return torch.stack([-logit, logit], dim=1)

    wrapped = TwoLogits().eval()
    gradcam = LayerGradCam(wrapped, wrapped.model.backbone[len(channels) - 1])

    def forward() -> None:
        with torch.no_grad():
            model(images)

    def ours(method: str) -> Callable[[], None]:
        finder = SliceFinder(layer, method=method, max_samples=100, num_slices=8)

        def run() -> None:
            finder.reset()
            with torch.no_grad():
                finder.update(model, images, labels, ids, dataset_size=100)

        return run

    def captum_gradcam() -> None:
        with torch.no_grad():
            target = wrapped(images).argmax(dim=1)
        gradcam.attribute(images, target=target)

    return {
        "forward": median_ms(forward, repeats) / 100,
        "ours (GradCAM)": median_ms(ours("gradcam"), repeats) / 100,
        "captum LayerGradCam + forward": median_ms(captum_gradcam, repeats) / 100,
        "ours (Integrated Gradients, 16 steps)": median_ms(
            ours("integrated_gradients"), max(1, repeats // 3)
        )
        / 100,
    }


def clustering(rows: int, repeats: int) -> float:
    features = np.random.default_rng(0).normal(size=(rows, 128)).astype(np.float32)
    return median_ms(lambda: cluster_features(features), repeats)


def training_share(quick: bool) -> dict[str, float]:
    from lightning_insight import MemorySink, SliceDiscoveryMonitor

    def monitor(hook_seconds: list[float], num_val: int) -> Any:
        return timed(SliceDiscoveryMonitor, hook_seconds)(
            "backbone.2", max_samples=num_val, sinks=[MemorySink()]
        )

    return quickstart_share(monitor, quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    torch.set_num_threads(1)
    print(f"Python {platform.python_version()}, torch {torch.__version__}, 1 thread")
    with threadpool_limits(1):
        print(
            "\n| model | forward ms/img | ours GradCAM ms/img (x fwd) | captum LayerGradCam + forward (x fwd) | ours IG 16 steps (x fwd) |"
        )
        print("|---|---:|---:|---:|---:|")
        for channels, side in (((16, 32, 64), 32), ((64, 128, 256), 64)):
            r = per_image(channels, side, repeats)
            f = r["forward"]
            print(
                f"| SceneClassifier{channels} {side}px | {f:.3f} | {r['ours (GradCAM)']:.3f} ({r['ours (GradCAM)'] / f:.2f}x) | "
                f"{r['captum LayerGradCam + forward']:.3f} ({r['captum LayerGradCam + forward'] / f:.2f}x) | "
                f"{r['ours (Integrated Gradients, 16 steps)']:.3f} ({r['ours (Integrated Gradients, 16 steps)'] / f:.1f}x) |"
            )
        print("\n| rows (x128 features) | clustering ms |")
        print("|---:|---:|")
        for rows in (2_000, 20_000):
            print(f"| {rows} | {clustering(rows, max(1, repeats // 2)):.0f} |")
    share = training_share(args.quick)
    print("\n| quickstart fit | seconds |")
    print("|---|---:|")
    print(f"| FairnessMonitor only | {share['without']:.1f} |")
    print(f"| + SliceDiscoveryMonitor (every 2nd epoch) | {share['with']:.1f} |")
    print(f"| SliceDiscoveryMonitor hooks | {share['hooks']:.1f} ({share['hooks'] / share['with']:.1%} of the run) |")  # fmt: skip


if __name__ == "__main__":
    main()
