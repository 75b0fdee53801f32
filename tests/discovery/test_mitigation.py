"""Mitigation for spurious slices: region masks, core-region noise, the input-gradient penalty, the callback."""

from __future__ import annotations

import copy
import io
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from lightning_insight.datasets import SceneClassifier, ScenesDataModule, ScenesDataset, make_scenes
from lightning_insight.datasets.scenes import SceneData
from lightning_insight.discovery.attributions import layer_attributions
from lightning_insight.discovery.mitigation import (
    SpuriousSliceMitigation,
    core_risk_noise,
    input_gradient_penalty,
    spurious_region_mask,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:You defined a `validation_step` but have no `val_dataloader`"
)


# ---------------------------------------------------------------------------------------- helpers
class RedSpotModel(nn.Module):
    """One logit: the strongest "red minus green minus blue" response anywhere in the image.

    GradCAM at ``detector`` is proportional to the detector's (full-resolution) output, which is
    positive exactly on red pixels: an oracle for where the evidence is.
    """

    def __init__(self) -> None:
        super().__init__()
        self.detector = nn.Conv2d(3, 1, kernel_size=1)
        with torch.no_grad():
            self.detector.weight.copy_(torch.tensor([1.0, -1.0, -1.0]).reshape(1, 3, 1, 1))
            self.detector.bias.zero_()
        self.pool = nn.AdaptiveMaxPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.detector(x))).flatten()


def _red_spot_images() -> tuple[torch.Tensor, torch.Tensor]:
    """Two grey 16x16 images; the first has a red 3x3 spot at rows 2-4, columns 5-7. Returns the spot too."""
    images = torch.full((2, 3, 16, 16), 0.3)
    images[0, :, 2:5, 5:8] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
    spot = torch.zeros(2, 1, 16, 16)
    spot[0, :, 2:5, 5:8] = 1.0
    return images, spot


def _scene_model(seed: int = 0) -> SceneClassifier:
    torch.manual_seed(seed)
    return SceneClassifier(channels=(4, 8))


def _loader(data: SceneData, batch_size: int = 16) -> DataLoader[dict[str, Any]]:
    return DataLoader(ScenesDataset(data), batch_size=batch_size, shuffle=False)


def _trainer(tmp_path: Path, callbacks: list[Any], **kwargs: Any) -> Trainer:
    options: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "logger": False,
        "enable_checkpointing": False,
        "default_root_dir": str(tmp_path),
        "num_sanity_val_steps": 0,
        "limit_val_batches": 0,
    }
    options.update(kwargs)
    return Trainer(callbacks=callbacks, **options)


class Recorder(SceneClassifier):
    """Keeps what each training step received."""

    def __init__(self) -> None:
        super().__init__(channels=(4, 8))
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        self.seen.append((batch["sample_id"].clone(), batch["image"].detach().clone()))
        return super().training_step(batch, batch_idx)


class GradientCapture(Callback):
    """The parameters' gradients right after Lightning's backward pass."""

    def __init__(self) -> None:
        self.gradients: list[dict[str, torch.Tensor]] = []

    def on_after_backward(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.gradients.append(
            {name: p.grad.clone() for name, p in pl_module.named_parameters() if p.grad is not None}
        )


# ---------------------------------------------------------------------------------------- region mask
def test_region_mask_is_exactly_where_the_evidence_is() -> None:
    model = RedSpotModel()
    images, spot = _red_spot_images()
    mask = spurious_region_mask(model, images, layer="detector", quantile=0.9)
    assert mask.shape == (2, 1, 16, 16) and mask.dtype == torch.float32
    # the grey image has no positive evidence: an empty region, not the top 10% of a flat map
    assert torch.equal(mask, spot)
    soft = spurious_region_mask(model, images, layer="detector", quantile=None)
    assert torch.allclose(soft, spot)
    half = spurious_region_mask(model, images, layer="detector", spurious=torch.tensor([0.5, 1.0]))
    assert torch.equal(half, 0.5 * spot)
    none = spurious_region_mask(
        model, images, layer="detector", spurious=torch.tensor([False, True])
    )
    assert not none.any()


def test_region_mask_keeps_the_top_fraction_and_leaves_the_model_alone() -> None:
    model = _scene_model()
    model.train()
    model.backbone[0][1].eval()  # a submodule in its own mode must get that mode back
    running_mean = model.backbone[1][1].running_mean.clone()
    images = make_scenes(12, seed=1).images
    spurious = torch.tensor([1.0, 0.0] * 6)
    mask = spurious_region_mask(model, images, layer="backbone.1", spurious=spurious, quantile=0.75)
    assert mask.shape == (12, 1, 32, 32) and mask.dtype == images.dtype
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert not mask[1::2].any()
    fractions = mask[::2].mean(dim=(1, 2, 3))
    # at least the top quarter (ties at the threshold count in), never more than the positive evidence
    maps = layer_attributions(model.eval(), images[::2], layer="backbone.1").maps
    model.train()
    model.backbone[0][1].eval()
    positive = F.interpolate(maps.clamp_min(0)[:, None], size=(32, 32), mode="bilinear") > 0
    expected = torch.minimum(torch.full_like(fractions, 0.25), positive.float().mean(dim=(1, 2, 3)))
    assert bool((fractions >= expected - 1 / 1024).all()) and bool((fractions <= 0.3).all())
    assert model.training and not model.backbone[0][1].training and model.backbone[1][1].training
    assert torch.equal(model.backbone[1][1].running_mean, running_mean)
    assert all(p.grad is None for p in model.parameters())


def test_region_mask_under_no_grad_and_inference_mode() -> None:
    model = RedSpotModel()
    images, spot = _red_spot_images()
    with torch.no_grad():
        assert torch.equal(spurious_region_mask(model, images, layer="detector"), spot)
    with torch.inference_mode():
        assert torch.equal(spurious_region_mask(model, images.clone(), layer="detector"), spot)


# ---------------------------------------------------------------------------------------- core-region noise
def test_noise_only_inside_the_region_of_flagged_samples() -> None:
    model = RedSpotModel()
    images, spot = _red_spot_images()
    images = torch.cat([images, images[:1]])  # a second red image, flagged with weight 0
    spurious = torch.tensor([1.0, 1.0, 0.0])
    noised = core_risk_noise(
        model,
        images,
        layer="detector",
        spurious=spurious,
        sigma=0.5,
        generator=torch.Generator().manual_seed(0),
    )
    assert noised.shape == images.shape and noised.dtype == images.dtype
    assert not noised.requires_grad
    inside = spot[0].expand(3, -1, -1).bool()
    assert torch.equal(noised[0][~inside], images[0][~inside])
    assert bool((noised[0][inside] != images[0][inside]).all())
    assert torch.equal(noised[1:], images[1:])
    again = core_risk_noise(
        model,
        images,
        layer="detector",
        spurious=spurious,
        sigma=0.5,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(noised, again)
    assert torch.equal(core_risk_noise(model, images, layer="detector", sigma=0.0), images)


def test_noise_standard_deviation_is_weight_times_sigma() -> None:
    model = RedSpotModel()
    images = torch.full((2, 3, 32, 32), 0.3)
    images[:, :, 4:28, 4:28] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]  # 3 * 576 noised values
    noised = core_risk_noise(
        model,
        images,
        layer="detector",
        spurious=torch.tensor([1.0, 0.5]),
        sigma=0.4,
        quantile=0.5,
        generator=torch.Generator().manual_seed(3),
    )
    spread = (noised - images)[:, :, 4:28, 4:28].flatten(1).std(dim=1)
    assert spread.tolist() == pytest.approx([0.4, 0.2], rel=0.1)


def test_noise_under_inference_mode() -> None:
    model = RedSpotModel()
    images, spot = _red_spot_images()
    with torch.inference_mode():
        noised = core_risk_noise(model, images.clone(), layer="detector", sigma=1.0)
    assert bool(((noised != images) == spot.expand(-1, 3, -1, -1).bool()).all())


# ---------------------------------------------------------------------------------------- input-gradient penalty
def _sigmoid(z: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


def test_penalty_matches_hand_computed_single_logit_gradients() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(12, 1).double()
    model = nn.Sequential(nn.Flatten(), linear)
    inputs = torch.randn(5, 3, 2, 2, dtype=torch.float64)
    mask = (torch.rand(5, 1, 2, 2) > 0.5).double()
    targets = torch.tensor([0, 1, 1, 0, 1])
    x = inputs.flatten(1).numpy()
    w = linear.weight.detach().numpy()[0]
    z = x @ w + linear.bias.item()
    m = mask.expand(-1, 3, -1, -1).flatten(1).numpy()
    # d/dx [log sigmoid(z) + log sigmoid(-z)] = (1 - 2 sigmoid(z)) w
    expected = 2.5 * np.mean(np.sum((m * (1 - 2 * _sigmoid(z))[:, None] * w) ** 2, axis=1))
    penalty = input_gradient_penalty(model, inputs, mask=mask, weight=2.5)
    assert penalty.ndim == 0 and penalty.dtype == torch.float64
    assert float(penalty.detach()) == pytest.approx(expected, rel=1e-10)
    # log p_y: d/dz log sigmoid(z) = sigmoid(-z), d/dz log sigmoid(-z) = -sigmoid(z)
    slope = np.where(targets.numpy() == 1, _sigmoid(-z), -_sigmoid(z))
    expected_target = np.mean(np.sum((m * slope[:, None] * w) ** 2, axis=1))
    penalised = input_gradient_penalty(model, inputs, mask=mask, targets=targets)
    assert float(penalised.detach()) == pytest.approx(expected_target, rel=1e-10)


def test_penalty_matches_hand_computed_multiclass_gradients() -> None:
    torch.manual_seed(1)
    linear = nn.Linear(4, 3).double()
    inputs = torch.randn(6, 4, dtype=torch.float64)
    mask = torch.tensor([1.0, 0.0, 1.0, 0.5], dtype=torch.float64)  # one mask for every sample
    weights = linear.weight.detach().numpy()
    logits = inputs.numpy() @ weights.T + linear.bias.detach().numpy()
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    # d/dx sum_k log p_k = sum_k W_k - C * sum_k p_k W_k
    gradients = weights.sum(axis=0) - 3 * probabilities @ weights
    expected = np.mean(np.sum((mask.numpy() * gradients) ** 2, axis=1))
    penalty = input_gradient_penalty(linear, inputs, mask=mask)
    assert float(penalty.detach()) == pytest.approx(expected)


def test_penalty_is_zero_for_an_empty_mask_and_differentiable() -> None:
    model = _scene_model()
    images = make_scenes(8, seed=0).images
    zero = input_gradient_penalty(model, images, mask=torch.zeros(8, 1, 32, 32))
    assert float(zero.detach()) == 0.0
    zero.backward()
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())
    model.zero_grad(set_to_none=True)
    mask = torch.zeros(8, 1, 32, 32, dtype=torch.bool)
    mask[:, :, :8, :8] = True
    penalty = input_gradient_penalty(model, images, mask=mask, weight=3.0)
    assert float(penalty.detach()) > 0 and penalty.requires_grad
    penalty.backward()
    first_conv = model.backbone[0][0].weight.grad
    assert first_conv is not None and first_conv.abs().sum() > 0
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0


def test_penalty_parameter_gradients_pass_gradcheck() -> None:
    # create_graph=True must give the exact gradient of the penalty with respect to the parameters
    torch.manual_seed(2)
    conv = nn.Conv2d(1, 2, kernel_size=3, padding=1).double()
    inputs = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    mask = torch.rand(3, 1, 4, 4, dtype=torch.float64)

    def penalty(weight: torch.Tensor) -> torch.Tensor:
        def model(x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(F.conv2d(x, weight, conv.bias, padding=1)).mean(dim=(2, 3))

        return input_gradient_penalty(model, inputs, mask=mask)  # type: ignore[arg-type]

    weight = conv.weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(penalty, (weight,))


def test_penalty_under_no_grad_and_inference_mode_still_reaches_the_parameters() -> None:
    model = _scene_model()
    images = make_scenes(4, seed=0).images
    mask = torch.ones(1, 1, 32, 32)
    with torch.no_grad():
        penalty = input_gradient_penalty(model, images, mask=mask)
    assert penalty.requires_grad
    penalty.backward()
    assert model.head.weight.grad is not None
    with torch.inference_mode():
        inside = input_gradient_penalty(model, images, mask=mask)
    assert inside.requires_grad
    assert float(inside.detach()) == pytest.approx(float(penalty.detach()), rel=1e-5)


# ---------------------------------------------------------------------------------------- argument errors
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "dropout"}, ValueError, r"`method` to be one of \('core_risk', 'input_gradient'\), but got 'dropout'"),
        ({"sigma": -0.1}, ValueError, r"`sigma` to be a finite float >= 0, but got -0.1"),
        ({"sigma": float("inf")}, ValueError, r"`sigma` to be a finite float >= 0, but got inf"),
        ({"quantile": 0.0}, ValueError, r"`quantile` to be None or a float in \(0, 1\), but got 0.0"),
        ({"quantile": 1}, ValueError, r"`quantile` to be None or a float in \(0, 1\), but got 1"),
        ({"quantile": 1.5}, ValueError, r"`quantile` to be None or a float in \(0, 1\), but got 1.5"),
        ({"penalty_weight": -1.0}, ValueError, r"`penalty_weight` to be a finite float >= 0"),
        ({"every_n_steps": 0}, ValueError, r"`every_n_steps` to be a positive int, but got 0"),
        ({"seed": -1}, ValueError, r"`seed` to be None or a non-negative int, but got -1"),
        ({"spurious_ids": {4: 1.5}}, ValueError, r"weights in \[0, 1\], but sample 4 has 1.5"),
        ({"spurious_ids": [4, 5]}, TypeError, r"`spurious_ids` to be None or a mapping .* but got a list"),
        ({"layer": 2}, TypeError, r"`layer` to be a module name such as 'backbone.2', but got 2"),
        ({"input_key": 1.5}, TypeError, r"`input_key` to be None, a str or an int, but got 1.5"),
        ({"attribution_model": "resnet"}, TypeError, r"`attribution_model` to be None or an nn.Module, but got a str"),
    ],
)  # fmt: skip
def test_callback_argument_errors(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    arguments: dict[str, Any] = {"method": "core_risk", "layer": "backbone.1", **kwargs}
    with pytest.raises(error, match=match):
        SpuriousSliceMitigation(**arguments)


def test_function_argument_errors() -> None:
    model = RedSpotModel()
    images, _ = _red_spot_images()
    with pytest.raises(ValueError, match=r"`sigma` to be a finite float >= 0, but got -1"):
        core_risk_noise(model, images, layer="detector", sigma=-1)
    for quantile in (0.0, 1.0, -0.2, 2):
        with pytest.raises(ValueError, match=r"`quantile` to be None or a float in \(0, 1\)"):
            spurious_region_mask(model, images, layer="detector", quantile=quantile)
    with pytest.raises(
        ValueError, match=r"one value per input, shape \(2,\), but got shape \(3,\)"
    ):
        spurious_region_mask(model, images, layer="detector", spurious=torch.ones(3))
    with pytest.raises(ValueError, match=r"weights in \[0, 1\], but got values from 0 to 2"):
        spurious_region_mask(model, images, layer="detector", spurious=torch.tensor([0.0, 2.0]))
    with pytest.raises(TypeError, match=r"`spurious` to be None or a tensor .* but got a list"):
        spurious_region_mask(model, images, layer="detector", spurious=[1, 0])  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"`inputs` to be a floating-point tensor, but got a torch.uint8"
    ):
        spurious_region_mask(model, images.to(torch.uint8), layer="detector")
    with pytest.raises(
        ValueError, match=r"`inputs` to be images \(N, C, H, W\), but got shape \(3, 16, 16\)"
    ):
        spurious_region_mask(model, images[0], layer="detector")
    with pytest.raises(
        ValueError, match=r"`layer` to name a module of the model, but got 'detektor'"
    ):
        spurious_region_mask(model, images, layer="detektor")
    with pytest.raises(ValueError, match=r"`weight` to be a finite float >= 0, but got -2"):
        input_gradient_penalty(model, images, mask=torch.ones(1), weight=-2)
    with pytest.raises(
        ValueError,
        match=r"`mask` to broadcast to the inputs' shape \(2, 3, 16, 16\), but got shape \(2, 1, 8, 8\)",
    ):
        input_gradient_penalty(model, images, mask=torch.ones(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"`mask` to broadcast .* HINT: use \(N, 1, H, W\)"):
        input_gradient_penalty(model, images, mask=torch.ones(1, 2, 1, 3, 16, 16))
    with pytest.raises(
        ValueError, match=r"`mask` to hold non-negative weights, but its minimum is -1"
    ):
        input_gradient_penalty(model, images, mask=-torch.ones(2, 1, 16, 16))
    with pytest.raises(
        TypeError, match=r"`mask` to be a floating-point or boolean tensor, but got a torch.int64"
    ):
        input_gradient_penalty(model, images, mask=torch.ones(2, 1, 16, 16, dtype=torch.long))
    with pytest.raises(
        ValueError, match=r"`targets` to be a tensor of one class index per input, shape \(2,\)"
    ):
        input_gradient_penalty(model, images, mask=torch.ones(1), targets=torch.zeros(3))
    with pytest.raises(
        TypeError, match=r"`inputs` to be a floating-point tensor, but got a torch.int64"
    ):
        input_gradient_penalty(model, images.long(), mask=torch.ones(1))


# ---------------------------------------------------------------------------------------- the callback
def test_core_risk_noises_only_the_flagged_samples_the_module_sees(tmp_path: Path) -> None:
    data = make_scenes(64, seed=0)
    originals = data.images.clone()
    flagged = {int(i): 1.0 for i in data.sample_ids[::2]}
    model = Recorder()
    mitigation = SpuriousSliceMitigation(
        "core_risk", layer="backbone.1", spurious_ids=flagged, sigma=0.5, seed=0
    )
    _trainer(tmp_path, [mitigation]).fit(model, train_dataloaders=_loader(data))
    assert torch.equal(data.images, originals)  # the loader's tensors are not modified
    changed = 0
    for ids, images in model.seen:
        for sample_id, image in zip(ids.tolist(), images, strict=True):
            same = torch.equal(image, originals[sample_id])
            assert same or sample_id in flagged
            changed += not same
    assert changed >= len(flagged) // 2  # a flagged sample stays clean only if its map is empty


def test_every_n_steps_and_the_same_seed_give_the_same_noise(tmp_path: Path) -> None:
    data = make_scenes(64, seed=0)

    def run(every_n_steps: int) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = Recorder()
        mitigation = SpuriousSliceMitigation(
            "core_risk", layer="backbone.1", sigma=0.5, seed=7, every_n_steps=every_n_steps
        )
        _trainer(tmp_path, [mitigation]).fit(model, train_dataloaders=_loader(data))
        return [images for _, images in model.seen]

    every, again, second = run(1), run(1), run(2)
    assert all(torch.equal(a, b) for a, b in zip(every, again, strict=True))
    clean = [
        torch.equal(images, data.images[16 * i : 16 * (i + 1)]) for i, images in enumerate(second)
    ]
    assert clean == [False, True, False, True]


@pytest.mark.parametrize("accumulate", [1, 2])
def test_input_gradient_changes_the_gradients_to_those_of_loss_plus_penalty(
    tmp_path: Path, accumulate: int
) -> None:
    data = make_scenes(32, seed=0)
    flagged = {int(i): 1.0 for i in data.sample_ids[:24]}
    model = _scene_model()
    manual = copy.deepcopy(model)
    capture = GradientCapture()
    mitigation = SpuriousSliceMitigation(
        "input_gradient", layer="backbone.1", spurious_ids=flagged, penalty_weight=50.0
    )
    trainer = _trainer(
        tmp_path, [mitigation, capture], max_steps=1, accumulate_grad_batches=accumulate
    )
    trainer.fit(model, train_dataloaders=_loader(data))

    manual.train()
    penalties = []
    for batch in list(_loader(data))[:accumulate]:
        images, targets = batch["image"], batch["target"].float()
        weights = torch.tensor([flagged.get(int(i), 0.0) for i in batch["sample_id"]])
        mask = spurious_region_mask(manual, images, layer="backbone.1", spurious=weights)
        loss = F.binary_cross_entropy_with_logits(manual(images), targets)
        penalty = input_gradient_penalty(manual, images, mask=mask, weight=50.0)
        penalties.append(float(penalty.detach()))
        ((loss + penalty) / accumulate).backward()
    assert min(penalties) > 0
    (got,) = capture.gradients[-1:]
    expected = {name: p.grad for name, p in manual.named_parameters() if p.grad is not None}
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.allclose(got[name], expected[name], rtol=1e-4, atol=1e-7), name
    # the plain loss is still what Lightning logs; the penalty has its own key
    metrics = trainer.callback_metrics
    assert float(metrics["mitigation/input_gradient_penalty"]) == pytest.approx(
        penalties[-1], rel=1e-5
    )
    assert float(metrics["train_loss"]) == pytest.approx(float(loss.detach()), rel=1e-5)


def test_input_gradient_is_scaled_like_the_loss_under_amp(tmp_path: Path) -> None:
    from pytorch_lightning.plugins import MixedPrecision

    data = make_scenes(16, seed=0)
    model = _scene_model()
    manual = copy.deepcopy(model)
    capture = GradientCapture()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    mitigation = SpuriousSliceMitigation("input_gradient", layer="backbone.1", penalty_weight=50.0)
    _trainer(
        tmp_path,
        [mitigation, capture],
        max_steps=1,
        plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)],
    ).fit(model, train_dataloaders=_loader(data))

    manual.train()
    images, targets = data.images, data.targets.float()
    mask = spurious_region_mask(manual, images, layer="backbone.1")
    with torch.autocast("cpu", dtype=torch.float16):
        loss = F.binary_cross_entropy_with_logits(manual(images), targets)
    loss.backward(retain_graph=True)
    plain = {name: p.grad.clone() for name, p in manual.named_parameters() if p.grad is not None}
    input_gradient_penalty(manual, images, mask=mask, weight=50.0).backward()
    for name, parameter in manual.named_parameters():
        assert parameter.grad is not None
        unscaled = capture.gradients[0][name] / 1024.0
        # half-precision sums in another order: compare the whole tensor, not each element
        assert float((unscaled - parameter.grad).norm()) <= 1e-4 * float(parameter.grad.norm()), (
            name
        )
    assert not torch.allclose(plain["backbone.0.0.weight"], manual.backbone[0][0].weight.grad)  # type: ignore[arg-type]


def test_input_gradient_penalty_really_moves_the_gradients(tmp_path: Path) -> None:
    data = make_scenes(16, seed=0)
    gradients = []
    for mitigation in ([], [SpuriousSliceMitigation("input_gradient", layer="backbone.1")]):
        capture = GradientCapture()
        _trainer(tmp_path, [*mitigation, capture], max_steps=1).fit(
            _scene_model(), train_dataloaders=_loader(data)
        )
        gradients.append(capture.gradients[0]["backbone.0.0.weight"])
    assert not torch.allclose(gradients[0], gradients[1])


class ManualOptimisation(SceneClassifier):
    def __init__(self) -> None:
        super().__init__(channels=(4, 8))
        self.automatic_optimization = False

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        optimiser = self.optimizers()
        loss = F.binary_cross_entropy_with_logits(self(batch["image"]), batch["target"].float())
        optimiser.zero_grad()  # type: ignore[union-attr]
        self.manual_backward(loss)
        optimiser.step()  # type: ignore[union-attr]
        return loss


def test_input_gradient_refuses_manual_optimisation(tmp_path: Path) -> None:
    mitigation = SpuriousSliceMitigation("input_gradient", layer="backbone.1")
    with pytest.raises(
        RuntimeError, match=r"Expected automatic optimisation .* HINT: add `input_gradient_penalty"
    ):
        _trainer(tmp_path, [mitigation]).fit(
            ManualOptimisation(), train_dataloaders=_loader(make_scenes(16))
        )


class TupleBatches(SceneClassifier):
    def __init__(self) -> None:
        super().__init__(channels=(4, 8))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, targets = batch[0], batch[1]
        return F.binary_cross_entropy_with_logits(self(images), targets.float())


def _tuples(batch: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([item["image"] for item in batch]), torch.stack(
        [item["target"] for item in batch]
    )


def _lists(batch: list[dict[str, Any]]) -> list[Any]:
    return [*_tuples(batch), {"sample_id": torch.stack([item["sample_id"] for item in batch])}]


def test_batch_layout_errors(tmp_path: Path) -> None:
    dataset = ScenesDataset(make_scenes(16))
    tuples = DataLoader(dataset, batch_size=8, collate_fn=_tuples)
    with pytest.raises(RuntimeError, match=r"dict or list training batch .* but got a tuple. HINT"):
        _trainer(tmp_path, [SpuriousSliceMitigation("core_risk", layer="backbone.1")]).fit(
            TupleBatches(), train_dataloaders=tuples
        )
    with pytest.raises(RuntimeError, match=r"carry 'sample_id' .* HINT: add the ids"):
        _trainer(
            tmp_path,
            [SpuriousSliceMitigation("input_gradient", layer="backbone.1", spurious_ids={})],
        ).fit(TupleBatches(), train_dataloaders=tuples)
    keyed = SpuriousSliceMitigation("core_risk", layer="backbone.1", input_key="pixels")
    with pytest.raises(
        RuntimeError,
        match=r"inputs under one of \['pixels'\], but found keys .* HINT: pass `input_key`",
    ):
        _trainer(tmp_path, [keyed]).fit(Recorder(), train_dataloaders=_loader(dataset.data))
    missing = SpuriousSliceMitigation("core_risk", layer="backbone.9")
    with pytest.raises(
        ValueError, match=r"`layer` to name a module of the model, but got 'backbone.9'"
    ):
        _trainer(tmp_path, [missing]).fit(Recorder(), train_dataloaders=_loader(dataset.data))


def test_list_batches_with_meta_ids_are_noised_in_place_of_the_list_entry(tmp_path: Path) -> None:
    data = make_scenes(16, seed=0)
    lists = DataLoader(ScenesDataset(data), batch_size=8, collate_fn=_lists)
    seen: list[torch.Tensor] = []

    class Keeper(TupleBatches):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            seen.append(batch[0].clone())
            return super().training_step(batch, batch_idx)

    flagged = {int(data.sample_ids[0]): 1.0}
    mitigation = SpuriousSliceMitigation(
        "core_risk", layer="backbone.1", spurious_ids=flagged, sigma=1.0
    )
    _trainer(tmp_path, [mitigation]).fit(Keeper(), train_dataloaders=lists)
    assert not torch.equal(seen[0][0], data.images[0])
    assert torch.equal(seen[0][1:], data.images[1:8]) and torch.equal(seen[1], data.images[8:])


def test_state_round_trip_pickle_and_two_instances(tmp_path: Path) -> None:
    data = make_scenes(32, seed=0)
    noise = SpuriousSliceMitigation("core_risk", layer="backbone.1", seed=3)
    penalty = SpuriousSliceMitigation("input_gradient", layer="backbone.1")
    assert noise.state_key != penalty.state_key
    trainer = _trainer(tmp_path, [noise, penalty], limit_val_batches=1)
    trainer.fit(_scene_model(), train_dataloaders=_loader(data), val_dataloaders=_loader(data))
    assert "mitigation/input_gradient_penalty" in trainer.callback_metrics
    trainer.validate(trainer.lightning_module, dataloaders=_loader(data), verbose=False)
    assert penalty.state_dict() == {}

    # through a weights_only load, as a plain `trainer.fit(ckpt_path=...)` reads it
    buffer = io.BytesIO()
    torch.save(noise.state_dict(), buffer)
    buffer.seek(0)
    resumed = SpuriousSliceMitigation("core_risk", layer="backbone.1", seed=3)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    copied = pickle.loads(pickle.dumps(noise))
    expected = torch.randn(5, generator=noise._noise_generator(torch.device("cpu")))
    for other in (resumed, copied):
        assert torch.equal(
            torch.randn(5, generator=other._noise_generator(torch.device("cpu"))), expected
        )
    resumed.load_state_dict({})  # an old or foreign checkpoint: start from the seed
    assert resumed.state_dict() == {}


DDP_SCRIPT = """
import sys

import torch
from pytorch_lightning import Callback, Trainer
from torch.utils.data import DataLoader

from lightning_insight.datasets import SceneClassifier, ScenesDataset, make_scenes
from lightning_insight.discovery.mitigation import SpuriousSliceMitigation


class Capture(Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.ids = batch["sample_id"].clone()

    def on_after_backward(self, trainer, pl_module):
        self.gradients = {n: p.grad.clone() for n, p in pl_module.named_parameters()}


if __name__ == "__main__":
    torch.manual_seed(0)
    data = make_scenes(32, seed=0)
    flagged = {int(i): 1.0 for i in data.sample_ids[:20]}
    capture = Capture()
    mitigation = SpuriousSliceMitigation(
        "input_gradient", layer="backbone.1", spurious_ids=flagged, penalty_weight=50.0
    )
    trainer = Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_steps=1, logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        callbacks=[mitigation, capture],
    )
    trainer.fit(SceneClassifier(channels=(4, 8)), DataLoader(ScenesDataset(data), batch_size=8))
    torch.save(
        {"ids": capture.ids, "gradients": capture.gradients},
        f"{sys.argv[1]}.{trainer.global_rank}",
    )
"""


@pytest.mark.slow
def test_input_gradient_under_two_process_ddp_averages_loss_plus_penalty_gradients(
    tmp_path: Path, run_ok: Any
) -> None:
    script = tmp_path / "ddp_mitigation.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "gradients.pt"
    run_ok([sys.executable, str(script), str(out)], tmp_path)
    ranks = [torch.load(f"{out}.{rank}", weights_only=True) for rank in (0, 1)]
    data = make_scenes(32, seed=0)
    flagged = set(data.sample_ids[:20].tolist())
    expected: dict[str, torch.Tensor] = {}
    for rank in ranks:
        ids = rank["ids"]
        assert len(ids) == 8
        model = _scene_model()
        images, targets = data.images[ids], data.targets[ids].float()
        weights = torch.tensor([float(int(i) in flagged) for i in ids])
        mask = spurious_region_mask(model, images, layer="backbone.1", spurious=weights)
        loss = F.binary_cross_entropy_with_logits(model(images), targets)
        (loss + input_gradient_penalty(model, images, mask=mask, weight=50.0)).backward()
        for name, parameter in model.named_parameters():
            assert parameter.grad is not None
            expected[name] = expected.get(name, 0) + parameter.grad / 2
    assert set(ranks[0]["ids"].tolist()).isdisjoint(ranks[1]["ids"].tolist())
    for rank in ranks:
        for name, gradient in expected.items():
            # float32 sums in another order (the all-reduce): tolerance relative to the gradient's scale
            scale = float(gradient.abs().max())
            assert torch.allclose(
                rank["gradients"][name], gradient, rtol=1e-4, atol=1e-5 * scale
            ), name


# ---------------------------------------------------------------------------------------- the planted shortcut
def _group_accuracies(model: SceneClassifier, data: SceneData) -> tuple[float, float]:
    """Validation accuracy on cue-aligned and on cue-conflicting images."""
    model.eval()
    with torch.no_grad():
        predictions = (model(data.images) > 0).long()
    correct = (predictions == data.targets).numpy()
    aligned = data.truth.spurious_cue == (data.targets.numpy() == 1)
    return float(correct[aligned].mean()), float(correct[~aligned].mean())


@pytest.mark.slow
def test_core_risk_noise_closes_the_gap_the_corner_cue_opens(tmp_path: Path) -> None:
    """Cue agreement 0.95 in training, independent in validation; same seed, data order and epochs.

    The pipeline a user would run: train, flag the training samples whose GradCAM evidence peaks in
    the cue's corner (the top-left cell of the last block's 4x4 map: the 3x3 red patch lies inside
    it), then train again from the same start with those ids flagged and the regions taken from the
    first model, frozen. Flagging every cue image would be the oracle; the peak rule is what the slice
    finder can see without the planted truth, and it flags about 80% of the cue images and almost no
    other. Seeds 0-4 (2 threads) gave gaps of 0.11/0.18/0.38/0.15/0.20 without and
    0.02/0.07/0.10/0.00/-0.00 with; cue-conflicting accuracy rose in all five. This is seed 2, the
    one whose baseline leans on the cue most.
    """
    seed = 2
    datamodule = ScenesDataModule(
        num_train=2000, num_val=1000, seed=seed, spurious_correlation=0.95, label_noise=0.0
    )
    datamodule.setup("fit")
    assert datamodule.train_data is not None and datamodule.val_data is not None

    def fit(callbacks: list[Any]) -> SceneClassifier:
        torch.manual_seed(seed)
        model = SceneClassifier(channels=(8, 16, 32))
        _trainer(tmp_path, callbacks, max_epochs=5, deterministic=True).fit(
            model, datamodule=datamodule
        )
        return model

    baseline = fit([])
    aligned, conflicting = _group_accuracies(baseline, datamodule.val_data)
    maps = layer_attributions(baseline, datamodule.train_data.images, layer="backbone.2").maps
    corner = maps.flatten(1).argmax(dim=1) == 0
    cue = torch.from_numpy(datamodule.train_data.truth.spurious_cue)
    assert int((corner & ~cue).sum()) < 0.02 * int(corner.sum())  # the flags are cue images
    flagged = {int(i): 1.0 for i in datamodule.train_data.sample_ids[corner]}
    mitigation = SpuriousSliceMitigation(
        "core_risk",
        layer="backbone.2",
        spurious_ids=flagged,
        sigma=0.5,
        seed=seed,
        attribution_model=copy.deepcopy(baseline),
    )
    mitigated = fit([mitigation])
    fair_aligned, fair_conflicting = _group_accuracies(mitigated, datamodule.val_data)
    assert aligned - conflicting > 0.25  # the shortcut is there to mitigate
    assert fair_aligned - fair_conflicting < (aligned - conflicting) / 2
    assert fair_conflicting > conflicting + 0.1
    assert fair_aligned > 0.8  # not a constant predictor with a small gap
