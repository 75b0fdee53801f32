from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from lightning_insight.comparison import (
    AttributionComparer,
    AttributionComparisonReport,
    cell_boxes,
    cell_masses,
    default_num_clusters,
)
from lightning_insight.datasets.scenes import SceneData, ScenesDataset, make_scenes
from lightning_insight.discovery.finder import probe_hash
from tests.comparison.models import SceneNet, copy_of, train_scene_net

CORNER = (0, 0, 8, 8)  # The 4x4 grid cell of a 32x32 scene holding the 3x3 red cue.


@pytest.fixture(scope="module")
def val() -> SceneData:
    return make_scenes(400, seed=0, split="val")


@pytest.fixture(scope="module")
def loader(val: SceneData) -> DataLoader[Any]:
    return DataLoader(ScenesDataset(val), batch_size=100)


@pytest.fixture(scope="module")
def object_model(one_torch_thread: None) -> nn.Module:
    return train_scene_net(carrier="object")


@pytest.fixture(scope="module")
def cue_model(one_torch_thread: None) -> nn.Module:
    return train_scene_net(carrier="cue")


def _tiny(num_classes: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, num_classes),
    )


def _batches(n: int = 24, size: int = 16, batch: int = 8) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, size, size, generator=generator)
    labels = torch.randint(0, 2, (n,), generator=generator)
    ids = torch.arange(n) + 100
    return [
        {
            "image": images[i : i + batch],
            "target": labels[i : i + batch],
            "sample_id": ids[i : i + batch],
        }
        for i in range(0, n, batch)
    ]


def test_planted_shift_cue_regions_rank_first_with_b_above_a(
    object_model: nn.Module, cue_model: nn.Module, loader: DataLoader[Any], val: SceneData
) -> None:
    report = AttributionComparer("backbone.2", max_samples=400).fit(object_model, cue_model, loader)
    cue = dict(zip(val.sample_ids.tolist(), val.truth.spurious_cue.tolist(), strict=True))

    def cue_corner(cluster: Any) -> np.ndarray[Any, Any]:
        return np.array([box == CORNER and cue[sample] for sample, box in cluster.exemplars])

    total = sum(int(cue_corner(c).sum()) for c in report.clusters)
    top = report.clusters[0]
    # B (trained on the cue) relies on the cue corner far more than A (trained on the object).
    assert top.lower > 0
    assert top.difference > 0.3
    assert cue_corner(top).mean() >= 0.7  # made of cue-holding corner cells ...
    assert cue_corner(top).sum() >= 0.8 * total  # ... and holds most of them
    assert top.exemplars[0][1] == CORNER and cue[top.exemplars[0][0]]
    # The next cluster is where A relies more than B: regions away from the cue (the object).
    second = report.clusters[1]
    assert second.upper < 0
    assert cue_corner(second).sum() == 0
    a_above_b = [c for c in report.clusters if c.upper < 0]
    assert sum(c.regions for c in a_above_b) >= 0.3 * report.num_regions
    assert all(cue_corner(c).sum() == 0 for c in a_above_b)
    assert report.accuracy_a > 0.85 > 0.6 > report.accuracy_b  # B only knows the cue, not the label
    ranked = [abs(c.difference) * c.regions for c in report.clusters]
    assert ranked == sorted(ranked, reverse=True)
    assert [c.cluster_id for c in report.clusters] == list(range(len(report.clusters)))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_planted_shift_with_both_models_features_holds_on_every_seed(
    seed: int, loader: DataLoader[Any], val: SceneData, one_torch_thread: None
) -> None:
    # With model A's features alone the cue corner is found on seed 0 only (A, trained on the object,
    # barely sees the red corner); with both models' features it is the top cluster on each seed.
    object_model = train_scene_net(carrier="object", seed=seed)
    cue_model = train_scene_net(carrier="cue", seed=seed)
    report = AttributionComparer("backbone.2", max_samples=400, embedding="both").fit(
        object_model, cue_model, loader
    )
    cue = dict(zip(val.sample_ids.tolist(), val.truth.spurious_cue.tolist(), strict=True))

    def cue_corner(cluster: Any) -> np.ndarray[Any, Any]:
        return np.array([box == CORNER and cue[sample] for sample, box in cluster.exemplars])

    total = sum(int(cue_corner(c).sum()) for c in report.clusters)
    top = report.clusters[0]
    assert top.lower > 0.3 and cue_corner(top).mean() >= 0.9
    cue_clusters = [c for c in report.clusters if cue_corner(c).mean() >= 0.5]
    assert all(c.lower > 0 for c in cue_clusters)  # every cue cluster: B > A
    assert sum(int(cue_corner(c).sum()) for c in cue_clusters) >= 0.9 * total
    a_above_b = [c for c in report.clusters if c.upper < 0]
    assert a_above_b and all(cue_corner(c).sum() == 0 for c in a_above_b)


def test_any_module_can_embed_the_regions() -> None:
    torch.manual_seed(0)
    extractor = nn.Conv2d(3, 5, 3, padding=1)
    report = AttributionComparer(
        "1", num_clusters=2, grid=2, bootstrap=20, embedding=extractor
    ).fit(_tiny(), _tiny(), _batches())
    assert report.num_regions >= 2 and len(report.clusters) == 2
    with pytest.raises(ValueError, match=r"`embedding` \(a module\) to return a 4-D feature map"):
        AttributionComparer("1", num_clusters=2, grid=2, embedding=nn.Flatten()).fit(
            _tiny(), _tiny(), _batches()
        )


@pytest.mark.parametrize(
    "options", [{}, {"method": "input_integrated_gradients", "n_steps": 8}], ids=["gradcam", "ig"]
)
def test_identical_models_give_no_difference(
    object_model: nn.Module, loader: DataLoader[Any], options: dict[str, Any]
) -> None:
    report = AttributionComparer("backbone.2", max_samples=200, **options).fit(
        object_model, copy_of(object_model), loader
    )
    assert report.num_samples == 200 and report.method == options.get("method", "gradcam")
    assert len(report.clusters) >= 4
    for cluster in report.clusters:
        assert cluster.lower <= 0 <= cluster.upper
        assert cluster.difference == pytest.approx(0.0, abs=1e-6)
        assert cluster.accuracy_a == cluster.accuracy_b


def test_seeded_determinism_and_probe_set(object_model: nn.Module, val: SceneData) -> None:
    dataset = ScenesDataset(val)
    comparer = AttributionComparer("backbone.2", max_samples=100, bootstrap=50, random_state=3)
    first = comparer.fit(object_model, object_model, DataLoader(dataset, batch_size=64))
    assert comparer.report_ is first
    shuffled = DataLoader(
        dataset, batch_size=37, shuffle=True, generator=torch.Generator().manual_seed(1)
    )
    again = AttributionComparer("backbone.2", max_samples=100, bootstrap=50, random_state=3).fit(
        object_model, object_model, shuffled
    )
    assert json.dumps(first.to_dict()) == json.dumps(again.to_dict())
    ids = val.sample_ids.numpy()
    expected = set(ids[np.argsort(probe_hash(ids, 3), kind="stable")[:100]].tolist())
    seen = {sample for c in first.clusters for sample, _ in c.exemplars}
    assert seen <= expected
    assert first.num_samples == 100


def test_tuple_batches_without_ids_and_predicted_target() -> None:
    model = _tiny()
    batches = [(b["image"], b["target"]) for b in _batches()]
    report = AttributionComparer("1", num_clusters=2, grid=2, target="predicted", bootstrap=20).fit(
        model, model, batches
    )
    assert report.num_samples == 24
    assert report.input_size == (16, 16)
    ids = {sample for c in report.clusters for sample, _ in c.exemplars}
    assert ids <= set(range(24))


def test_cell_masses_and_boxes_against_hand_computed() -> None:
    assert cell_boxes(32, 32, 4)[0] == CORNER
    assert cell_boxes(5, 5, 2) == [(0, 0, 2, 2), (2, 0, 5, 2), (0, 2, 2, 5), (2, 2, 5, 5)]
    maps = torch.tensor([[[3.0, 1.0], [0.0, -2.0]]])
    # Same-size maps: no interpolation; shares 3/4, 1/4, 0, 0 (the negative value is rectified away).
    assert cell_masses(maps, (2, 2), 2).tolist() == [[0.75, 0.25, 0.0, 0.0]]
    upsampled = cell_masses(maps, (8, 8), 2)
    assert upsampled.sum().item() == pytest.approx(1.0)
    assert upsampled[0, 0] > upsampled[0, 1] > upsampled[0, 2] >= upsampled[0, 3]
    assert default_num_clusters(400) == 10


class _WrongSize(nn.Module):
    """Takes only 8x8 inputs (a linear layer over the flattened image)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.head = nn.Linear(2 * 8 * 8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).flatten(1))


@pytest.mark.parametrize(
    ("model_b", "match"),
    [
        (
            _WrongSize(),
            r"same inputs and return the same number of classes, but got 2 classes and RuntimeError",
        ),
        (
            _tiny(3),
            r"same inputs and return the same number of classes, but got 2 classes and 3 classes",
        ),
    ],
)
def test_incompatible_models(model_b: nn.Module, match: str) -> None:
    model_b_layer = "conv" if isinstance(model_b, _WrongSize) else "1"
    with pytest.raises(ValueError, match=match):
        AttributionComparer("1", model_b_layer).fit(_tiny(), model_b, _batches())


def test_missing_layer_names_close_matches() -> None:
    with pytest.raises(ValueError, match=r"`layer_b` to name a module of `model_b`.*'backbone.2'"):
        AttributionComparer("1", "backbone.20").fit(_tiny(), SceneNet(), _batches())
    with pytest.raises(ValueError, match=r"`layer_a` to name a module of `model_b`"):
        AttributionComparer("1").fit(_tiny(), SceneNet(), _batches())
    with pytest.raises(ValueError, match=r"`embedding_layer` to name a module of `model_a`"):
        AttributionComparer("1", embedding_layer="nope").fit(_tiny(), _tiny(), _batches())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"max_samples": 5, "num_clusters": 8},
            ValueError,
            r"`max_samples` to be at least `num_clusters` \(8\), but got 5",
        ),
        ({"method": "lime"}, ValueError, r"`method` to be one of .*but got 'lime'"),
        ({"target": "truth"}, ValueError, r"`target` to be one of .*but got 'truth'"),
        ({"grid": 0}, ValueError, r"`grid` to be an int >= 1, but got 0"),
        ({"top_regions": 17}, ValueError, r"`top_regions` to be an int in \[1, 16\], but got 17"),
        ({"bootstrap": 0}, ValueError, r"`bootstrap` to be an int >= 1, but got 0"),
        ({"n_steps": 0}, ValueError, r"`n_steps` to be an int >= 1, but got 0"),
        ({"embedding": "pixels"}, ValueError, r"`embedding` to be one of .*but got 'pixels'"),
        ({"num_clusters": 1}, ValueError, r"`num_clusters` to be an int >= 2, but got 1"),
        (
            {"layer_b": 3},
            TypeError,
            r"`layer_b` to be a module name \(a non-empty str\), but got int",
        ),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        AttributionComparer("1", **kwargs).fit(_tiny(), _tiny(), _batches())


def test_bad_models_and_data() -> None:
    with pytest.raises(TypeError, match=r"`model_b` to be an nn.Module, but got str"):
        AttributionComparer("1").fit(_tiny(), "model", _batches())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"at least one batch, but got none"):
        AttributionComparer("1").fit(_tiny(), _tiny(), [])
    with pytest.raises(ValueError, match=r"layer that runs and outputs a 4-D feature map"):
        AttributionComparer("1", embedding_layer="4").fit(_tiny(), _tiny(), _batches())


def test_report_round_trip_and_views(
    object_model: nn.Module, cue_model: nn.Module, loader: DataLoader[Any]
) -> None:
    report = AttributionComparer("backbone.2", max_samples=120, bootstrap=50).fit(
        object_model, cue_model, loader
    )
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["schema_version"] == 1
    assert AttributionComparisonReport.from_dict(data) == report
    rows = report.rows()
    assert {row["dimension"] for row in rows} == {"comparison"}
    top = report.clusters[0]
    assert {
        "slice": "cluster_0",
        "metric": "difference",
        "value": top.difference,
        "count": top.regions,
    }.items() <= next(
        r for r in rows if r["slice"] == "cluster_0" and r["metric"] == "difference"
    ).items()
    scalars = report.scalars()
    assert scalars["insight/comparison/cluster_0/difference"] == top.difference
    assert scalars["insight/comparison/cluster_0/lower"] == top.lower
    assert scalars["insight/comparison/num_clusters"] == len(report.clusters)
    assert "custom/comparison/top/difference" in report.scalars(prefix="custom")
    with pytest.raises(ValueError, match=r"`schema_version` <= 1, but got 2"):
        AttributionComparisonReport.from_dict({**data, "schema_version": 2})
