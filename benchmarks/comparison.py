"""Attribution comparison cost: two models' attributions per image vs a forward pass, and the
monitor's share of the quickstart's training run.

1. Per probe image, 100 images, one thread: one forward pass of one model (no_grad); the whole
   ``AttributionComparer.fit`` of two models (attributions of both, grid regions, embedding, k-means,
   bootstrap intervals) with GradCAM (median of 5) and with Integrated Gradients on the input at 16
   and 32 steps (one run each); and the peer a user would otherwise write with captum:
   ``LayerGradCam`` / ``IntegratedGradients`` of both models for the labelled class (maps only: no
   regions, clusters or intervals). Models: ``SceneClassifier`` (16, 32, 64) at 32x32 (the
   quickstart's), and (32, 64, 128) at 64x64.
2. The quickstart's training run (``configs/quickstart.yaml`` sizes: 3000 train / 1500 val images,
   6 epochs, FairnessMonitor on) with AttributionComparisonMonitor added as the quickstart configures it
   (``reference="epoch:0"``, every 2nd epoch, 200 probe images): total time and the monitor's own
   hook time (target: under 5% of the run).

Run ``python benchmarks/comparison.py`` (about 3 minutes) or ``--quick``.
"""

from __future__ import annotations

import argparse
import platform
from typing import Any

import torch
from threadpoolctl import threadpool_limits
from torch import nn

from benchmarks._timing import median_ms, quickstart_share, timed
from lightning_insight.comparison import AttributionComparer
from lightning_insight.datasets import SceneClassifier

PROBE = 100


class TwoLogits(nn.Module):
    """captum wants (N, C) outputs; SceneClassifier has one binary logit."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = self.model(x)
        return torch.stack([-logit, logit], dim=1)


def per_image(channels: tuple[int, ...], side: int, repeats: int) -> dict[str, float]:
    from captum.attr import IntegratedGradients, LayerGradCam

    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(SceneClassifier(channels=channels, image_size=side).eval())
    images = torch.rand(PROBE, 3, side, side)
    labels = torch.randint(0, 2, (PROBE,))
    batches = [(images[i : i + 100], labels[i : i + 100]) for i in range(0, PROBE, 100)]
    layer = f"backbone.{len(channels) - 1}"
    wrapped = [TwoLogits(m).eval() for m in models]

    def forward() -> None:
        with torch.no_grad():
            models[0](images)

    def ours(method: str, n_steps: int = 16) -> float:
        comparer = AttributionComparer(layer, method=method, max_samples=PROBE, n_steps=n_steps)
        if method == "gradcam":
            return median_ms(lambda: comparer.fit(models[0], models[1], batches), repeats) / PROBE
        # Integrated Gradients is slow enough to time once, after the GradCAM runs warmed up
        return (
            median_ms(lambda: comparer.fit(models[0], models[1], batches), 1, warm_up=False) / PROBE
        )

    def captum_gradcam() -> None:
        for model in wrapped:
            LayerGradCam(model, model.model.backbone[len(channels) - 1]).attribute(
                images, target=labels
            )

    def captum_ig(steps: int) -> None:
        for model in wrapped:
            IntegratedGradients(model).attribute(
                images, target=labels, n_steps=steps, internal_batch_size=PROBE
            )

    return {
        "forward": median_ms(forward, repeats) / PROBE,
        "ours gradcam": ours("gradcam"),
        "captum gradcam": median_ms(captum_gradcam, repeats) / PROBE,
        "ours ig16": ours("input_integrated_gradients", 16),
        "ours ig32": ours("input_integrated_gradients", 32),
        "captum ig16": median_ms(lambda: captum_ig(16), 1, warm_up=False) / PROBE,
        "captum ig32": median_ms(lambda: captum_ig(32), 1, warm_up=False) / PROBE,
    }


def training_share(quick: bool) -> dict[str, float]:
    from lightning_insight import AttributionComparisonMonitor, MemorySink

    def monitor(hook_seconds: list[float], num_val: int) -> Any:
        return timed(AttributionComparisonMonitor, hook_seconds)(
            "epoch:0", "backbone.2", max_samples=200, sinks=[MemorySink()]
        )

    return quickstart_share(monitor, quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 3 if args.quick else 5
    torch.set_num_threads(1)
    print(
        f"Python {platform.python_version()}, torch {torch.__version__}, 1 thread, {PROBE} images"
    )
    print(
        "\n| model | forward ms/img | ours GradCAM, 2 models (x fwd) | captum LayerGradCam, 2 models "
        "(x fwd) | ours IG 16 / 32 steps (x fwd) | captum IG 16 / 32 steps, 2 models (x fwd) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    with threadpool_limits(1):
        for channels, side in (((16, 32, 64), 32), ((32, 64, 128), 64)):
            r = per_image(channels, side, repeats)
            f = r["forward"]
            print(
                f"| SceneClassifier{channels} {side}px | {f:.3f} | "
                f"{r['ours gradcam']:.3f} ({r['ours gradcam'] / f:.1f}x) | "
                f"{r['captum gradcam']:.3f} ({r['captum gradcam'] / f:.1f}x) | "
                f"{r['ours ig16']:.2f} / {r['ours ig32']:.2f} "
                f"({r['ours ig16'] / f:.0f}x / {r['ours ig32'] / f:.0f}x) | "
                f"{r['captum ig16']:.2f} / {r['captum ig32']:.2f} "
                f"({r['captum ig16'] / f:.0f}x / {r['captum ig32'] / f:.0f}x) |"
            )
    share = training_share(args.quick)
    print("\n| quickstart fit | seconds |")
    print("|---|---:|")
    print(f"| FairnessMonitor only | {share['without']:.1f} |")
    print(f"| + AttributionComparisonMonitor (epoch:0, every 2nd epoch) | {share['with']:.1f} |")
    print(f"| AttributionComparisonMonitor hooks | {share['hooks']:.2f} ({share['hooks'] / share['with']:.1%} of the run) |")  # fmt: skip


if __name__ == "__main__":
    main()
