from __future__ import annotations

import pytest
import torch
from captum.attr import LayerGradCam
from torch import nn
from torch.nn import functional as F

from lightning_insight.discovery.attributions import (
    as_logits,
    attribution_weighted_features,
    layer_attributions,
    resolve_layer,
    top_patch,
)
from tests.discovery.models import FlatInput, SmallNet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class ReturnsDict(SmallNet):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return {"logits": super().forward(x)}


class ReturnsMaps(SmallNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


@pytest.fixture
def net() -> SmallNet:
    torch.manual_seed(0)
    return SmallNet().eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def test_resolve_layer_by_name_and_module(net: SmallNet) -> None:
    assert resolve_layer(net, "features.4") is net.features[4]
    assert resolve_layer(net, net.head) is net.head


def test_resolve_layer_lists_close_matches(net: SmallNet) -> None:
    with pytest.raises(
        ValueError, match=r"got 'features\.9'\. Close matches: \['features\."
    ) as info:
        resolve_layer(net, "features.9")
    assert "'features.4'" in str(info.value)
    with pytest.raises(ValueError, match="Some module names: \\['features'"):
        resolve_layer(net, "zzzzzz")
    with pytest.raises(ValueError, match="not part of it"):
        resolve_layer(net, nn.ReLU())
    with pytest.raises(TypeError, match=r"module name or an nn\.Module"):
        resolve_layer(net, 3)  # type: ignore[arg-type]


@pytest.mark.parametrize("target", ["predicted", "label"])
def test_gradcam_equals_captum(net: SmallNet, images: torch.Tensor, target: str) -> None:
    labels = torch.arange(12) % 3
    result = layer_attributions(net, images, layer="features.4", target=target, labels=labels)
    expected_targets = net(images).argmax(1) if target == "predicted" else labels
    assert torch.equal(result.targets, expected_targets)
    reference = LayerGradCam(net, net.features[4]).attribute(images, target=expected_targets)
    torch.testing.assert_close(result.maps, reference[:, 0], atol=1e-5, rtol=1e-5)
    assert result.activations.shape == (12, 8, 8, 8)
    torch.testing.assert_close(result.logits, net(images))


def test_single_logit_model_is_binary(images: torch.Tensor) -> None:
    from lightning_insight.datasets.lightning import SceneClassifier

    torch.manual_seed(0)
    model = SceneClassifier(channels=(4, 8)).eval()
    x = torch.rand(6, 3, 32, 32)
    result = layer_attributions(model, x, layer="backbone.1")
    z = model(x)
    torch.testing.assert_close(result.logits.softmax(1)[:, 1], torch.sigmoid(z))
    assert torch.equal(result.targets, (z > 0).long())
    reference = LayerGradCam(lambda b: as_logits(model(b)), model.backbone[1]).attribute(
        x, target=result.targets
    )
    torch.testing.assert_close(result.maps, reference[:, 0], atol=1e-5, rtol=1e-5)


def test_works_under_inference_mode_and_no_grad(net: SmallNet, images: torch.Tensor) -> None:
    expected = layer_attributions(net, images, layer="features.4").maps
    with torch.inference_mode():
        inference_images = images.clone()
        under_inference = layer_attributions(net, inference_images, layer="features.4")
        other = layer_attributions(
            net, inference_images, layer="features.4", method="integrated_gradients", n_steps=4
        )
        by_label = layer_attributions(
            net, inference_images, layer="features.4", target="label", labels=torch.arange(12) % 3
        )
    with torch.no_grad():
        under_no_grad = layer_attributions(net, images, layer="features.4", method="saliency")
    torch.testing.assert_close(under_inference.maps, expected)
    assert torch.equal(by_label.targets, torch.arange(12) % 3)
    assert other.maps.shape == under_no_grad.maps.shape == (12, 8, 8)
    assert all(parameter.grad is None for parameter in net.parameters())


def test_frozen_parameters_still_get_maps(net: SmallNet, images: torch.Tensor) -> None:
    expected = layer_attributions(net, images, layer="features.4").maps
    net.requires_grad_(False)
    torch.testing.assert_close(layer_attributions(net, images, layer="features.4").maps, expected)


def test_integrated_gradients_completeness(net: SmallNet, images: torch.Tensor) -> None:
    # Layer IG from a zero input: the map sums to logit(x) - logit(0) for the attributed class.
    result = layer_attributions(
        net, images, layer="features.4", method="integrated_gradients", n_steps=64
    )
    chosen = net(images).gather(1, result.targets[:, None])[:, 0]
    baseline = net(torch.zeros_like(images)).gather(1, result.targets[:, None])[:, 0]
    torch.testing.assert_close(
        result.maps.sum(dim=(1, 2)), (chosen - baseline).detach(), atol=2e-2, rtol=2e-2
    )


def test_input_integrated_gradients_pools_captum_and_is_complete(
    net: SmallNet, images: torch.Tensor
) -> None:
    from captum.attr import IntegratedGradients

    result = layer_attributions(
        net, images, layer="features.4", method="input_integrated_gradients", n_steps=64
    )
    expected = IntegratedGradients(net).attribute(images, target=result.targets, n_steps=64)
    pooled = F.adaptive_avg_pool2d(expected.sum(dim=1, keepdim=True), (8, 8))[:, 0]
    torch.testing.assert_close(result.maps, pooled)
    # completeness: the pixels' attributions sum to logit(x) - logit(0) for the attributed class
    area = images.shape[-1] * images.shape[-2] / 64
    chosen = net(images).gather(1, result.targets[:, None])[:, 0]
    baseline = net(torch.zeros_like(images)).gather(1, result.targets[:, None])[:, 0]
    torch.testing.assert_close(
        result.maps.sum(dim=(1, 2)) * area, (chosen - baseline).detach(), atol=2e-2, rtol=2e-2
    )


def test_saliency_is_pooled_input_gradient(net: SmallNet, images: torch.Tensor) -> None:
    result = layer_attributions(net, images, layer="features.4", method="saliency")
    x = images.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(net(x).gather(1, result.targets[:, None]).sum(), x)
    expected = F.adaptive_avg_pool2d(gradient.abs().amax(dim=1, keepdim=True), (8, 8))[:, 0]
    torch.testing.assert_close(result.maps, expected)


def test_bad_layer_and_model_output(net: SmallNet, images: torch.Tensor) -> None:
    with pytest.raises(
        ValueError, match=r"layer 'head' to output a 4-D feature map .* shape \(12, 3\)"
    ):
        layer_attributions(net, images, layer="head")
    with pytest.raises(
        TypeError, match=r"Expected the model to return logits of shape \(N, C\).*dict"
    ):
        layer_attributions(ReturnsDict().eval(), images, layer="features.4")
    with pytest.raises(ValueError, match=r"logits of shape \(N, C\).*shape \(12, 8, 8, 8\)"):
        layer_attributions(ReturnsMaps().eval(), images, layer="features.4")
    with pytest.raises(ValueError, match="`method` to be one of"):
        layer_attributions(net, images, layer="features.4", method="lime")
    with pytest.raises(ValueError, match="`target` to be one of"):
        layer_attributions(net, images, layer="features.4", target="true")
    with pytest.raises(ValueError, match="`labels` when `target='label'`"):
        layer_attributions(net, images, layer="features.4", target="label")
    with pytest.raises(ValueError, match="one label per input"):
        layer_attributions(
            net, images, layer="features.4", target="label", labels=torch.zeros(3, dtype=torch.long)
        )
    with pytest.raises(ValueError, match="`n_steps` to be a positive int"):
        layer_attributions(net, images, layer="features.4", n_steps=0)


def test_non_image_inputs() -> None:
    model = FlatInput().eval()
    vectors = torch.rand(5, 16)
    assert layer_attributions(model, vectors, layer="conv").maps.shape == (5, 4, 4)
    with pytest.raises(ValueError, match=r"image inputs \(N, C, H, W\) for method='saliency'"):
        layer_attributions(model, vectors, layer="conv", method="saliency")
    with pytest.raises(RuntimeError, match="layer 'unused' to run during the model's forward pass"):
        layer_attributions(model, vectors, layer="unused")


def test_as_logits_shapes() -> None:
    z = torch.tensor([[1.0], [-2.0]])
    torch.testing.assert_close(as_logits(z), torch.tensor([[-0.5, 0.5], [1.0, -1.0]]))
    three = torch.rand(4, 3)
    assert as_logits(three) is three
    with pytest.raises(TypeError, match=r"floating-point tensor, but got a torch\.int64 tensor"):
        as_logits(torch.ones(4, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="but got a tuple"):
        as_logits((three,))


def test_attribution_weighted_features_by_hand() -> None:
    activations = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    maps = torch.tensor([[[3.0, 1.0], [0.0, -5.0]], [[-1.0, -1.0], [-1.0, -1.0]]])
    features = attribution_weighted_features(activations, maps)
    # sample 0: weights 3/4, 1/4 on the first two cells; sample 1: no positive value -> plain mean
    expected0 = 0.75 * activations[0, :, 0, 0] + 0.25 * activations[0, :, 0, 1]
    torch.testing.assert_close(features[0], expected0)
    torch.testing.assert_close(features[1], activations[1].mean(dim=(1, 2)))
    both = attribution_weighted_features(activations, maps, context=True)
    assert both.shape == (2, 6)
    # context weights for sample 0: 1 - (1, 1/3, 0, 0) -> (0, 2/3, 1, 1), normalised by 8/3
    context0 = (
        0.25 * activations[0, :, 0, 1]
        + 0.375 * activations[0, :, 1, 0]
        + 0.375 * activations[0, :, 1, 1]
    )
    torch.testing.assert_close(both[0, 3:], context0)
    torch.testing.assert_close(both[1, 3:], activations[1].mean(dim=(1, 2)))
    # the scale of the map does not matter
    torch.testing.assert_close(attribution_weighted_features(activations, 100 * maps), features)
    with pytest.raises(ValueError, match="same N, h, w"):
        attribution_weighted_features(activations, maps[:, :1])


def test_top_patch_finds_the_peak() -> None:
    images = torch.rand(3, 3, 12, 12)
    maps = torch.zeros(3, 4, 4)
    maps[0, 3, 3] = 1.0  # bottom-right corner
    maps[1, 0, 0] = 1.0  # top-left corner
    maps[2, 1, 2] = 1.0
    patches = top_patch(images, maps, patch=4)
    assert patches.shape == (3, 3, 4, 4)
    torch.testing.assert_close(patches[0], images[0, :, 8:, 8:])
    torch.testing.assert_close(patches[1], images[1, :, :4, :4])
    # cell (1, 2) of a 4x4 map covers rows 3..5 and columns 6..8 of the image
    torch.testing.assert_close(top_patch(images, maps, patch=3)[2], images[2, :, 3:6, 6:9])
    with pytest.raises(ValueError, match=r"`patch` to be an int in \[1, 12\], but got 13"):
        top_patch(images, maps, patch=13)
    with pytest.raises(ValueError, match="same N"):
        top_patch(images, maps[:2], patch=3)
