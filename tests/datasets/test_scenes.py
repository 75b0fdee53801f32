from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lightning_insight.datasets import PlantedTruth, SceneData, ScenesDataset, make_scenes
from lightning_insight.datasets.scenes import (
    FOGGY_NIGHT_DIFFICULTY,
    ID_OFFSET,
    SCENE,
    SCENE_PROBABILITIES,
    TIMEOFDAY,
    TIMEOFDAY_PROBABILITIES,
    WEATHER,
    WEATHER_PROBABILITIES,
)

NUM_LARGE = 8000


def _tolerance(probability: float, count: int, sigmas: float = 5.0) -> float:
    """Half-width of a ``sigmas``-sigma binomial band for a frequency estimated from ``count`` draws."""
    return sigmas * math.sqrt(probability * (1.0 - probability) / count)


@pytest.fixture(scope="module")
def train() -> SceneData:
    return make_scenes(NUM_LARGE, seed=0, split="train")


@pytest.fixture(scope="module")
def val() -> SceneData:
    return make_scenes(NUM_LARGE, seed=0, split="val")


def _assert_same(left: SceneData, right: SceneData) -> None:
    assert torch.equal(left.images, right.images)
    assert torch.equal(left.targets, right.targets)
    assert torch.equal(left.clean_targets, right.clean_targets)
    assert torch.equal(left.sample_ids, right.sample_ids)
    assert left.attributes == right.attributes
    assert left.truth.to_dict() == right.truth.to_dict()


def test_same_seed_gives_identical_data() -> None:
    _assert_same(make_scenes(300, seed=3, split="val"), make_scenes(300, seed=3, split="val"))


def test_different_seeds_differ() -> None:
    first = make_scenes(300, seed=0)
    second = make_scenes(300, seed=1)
    assert not torch.equal(first.images, second.images)
    assert first.attributes != second.attributes
    assert torch.equal(first.sample_ids, second.sample_ids)


def test_splits_differ_and_have_disjoint_ids() -> None:
    splits = {split: make_scenes(300, seed=0, split=split) for split in ("train", "val", "test")}
    ids = [set(data.sample_ids.tolist()) for data in splits.values()]
    assert all(len(split_ids) == 300 for split_ids in ids)
    assert not ids[0] & ids[1]
    assert not ids[0] & ids[2]
    assert not ids[1] & ids[2]
    assert splits["val"].sample_ids[0].item() == ID_OFFSET
    assert splits["test"].sample_ids[-1].item() == 2 * ID_OFFSET + 299
    assert not torch.equal(splits["train"].images, splits["val"].images)
    assert not torch.equal(splits["val"].images, splits["test"].images)


@pytest.mark.parametrize("image_size", [16, 32, 48])
def test_shapes_dtypes_and_ranges(image_size: int) -> None:
    data = make_scenes(50, image_size=image_size, seed=0)
    assert len(data) == 50
    assert data.images.shape == (50, 3, image_size, image_size)
    assert data.images.dtype == torch.float32
    assert data.images.is_contiguous()
    assert float(data.images.min()) >= 0.0
    assert float(data.images.max()) <= 1.0
    for tensor in (data.targets, data.clean_targets, data.sample_ids):
        assert tensor.shape == (50,)
        assert tensor.dtype == torch.int64
    assert set(data.targets.tolist()) <= {0, 1}
    assert set(data.attributes) == {"weather", "timeofday", "scene"}
    assert all(len(values) == 50 for values in data.attributes.values())
    assert all(isinstance(value, str) for values in data.attributes.values() for value in values)
    truth = data.truth
    assert truth.spurious_cue.shape == truth.flipped.shape == truth.difficulty.shape == (50,)
    assert truth.spurious_cue.dtype == truth.flipped.dtype == np.bool_
    assert truth.difficulty.dtype == np.float64
    assert truth.difficulty.min() >= 0.0
    assert truth.difficulty.max() <= 1.0


@pytest.mark.parametrize(
    ("name", "values", "probabilities"),
    [
        ("weather", WEATHER, WEATHER_PROBABILITIES),
        ("timeofday", TIMEOFDAY, TIMEOFDAY_PROBABILITIES),
        ("scene", SCENE, SCENE_PROBABILITIES),
    ],
)
def test_attribute_frequencies_match_the_requested_probabilities(
    train: SceneData, name: str, values: tuple[str, ...], probabilities: tuple[float, ...]
) -> None:
    observed = np.array(train.attributes[name])
    assert set(observed.tolist()) == set(values)
    for value, probability in zip(values, probabilities, strict=True):
        frequency = float(np.mean(observed == value))
        assert abs(frequency - probability) < _tolerance(probability, NUM_LARGE), (value, frequency)


def test_labels_are_balanced(train: SceneData) -> None:
    frequency = float(train.clean_targets.float().mean())
    assert abs(frequency - 0.5) < _tolerance(0.5, NUM_LARGE)


def test_spurious_cue_agrees_with_the_label_in_train(train: SceneData) -> None:
    cue = train.truth.spurious_cue
    label = train.clean_targets.numpy() == 1
    assert train.truth.spurious_agreement == pytest.approx(0.9)
    agreement = float(np.mean(cue == label))
    assert abs(agreement - 0.9) < _tolerance(0.9, NUM_LARGE)
    # The cue is planted per class: P(cue | y=1) = 0.9 and P(cue | y=0) = 0.1.
    assert abs(cue[label].mean() - 0.9) < _tolerance(0.9, int(label.sum()))
    assert abs(cue[~label].mean() - 0.1) < _tolerance(0.1, int((~label).sum()))


def test_spurious_cue_is_independent_of_the_label_in_val(val: SceneData) -> None:
    cue = val.truth.spurious_cue
    label = val.clean_targets.numpy() == 1
    assert val.truth.spurious_agreement == pytest.approx(0.5)
    assert abs(float(np.mean(cue == label)) - 0.5) < _tolerance(0.5, NUM_LARGE)
    assert abs(cue[label].mean() - cue[~label].mean()) < 2 * _tolerance(0.5, NUM_LARGE // 2)


@pytest.mark.parametrize(("split", "agreement"), [("train", 0.7), ("val", 0.9), ("test", 0.0)])
def test_spurious_correlation_overrides_the_default(split: str, agreement: float) -> None:
    data = make_scenes(2000, seed=1, split=split, spurious_correlation=agreement)
    observed = float(np.mean(data.truth.spurious_cue == (data.clean_targets.numpy() == 1)))
    assert data.truth.spurious_agreement == pytest.approx(agreement)
    assert abs(observed - agreement) < _tolerance(max(agreement, 0.01), 2000)


def test_spurious_cue_is_a_red_corner_patch(train: SceneData) -> None:
    corner = train.images[:, :, :3, :3]
    red = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
    with_patch = (corner == red).all(dim=(1, 2, 3)).numpy()
    np.testing.assert_array_equal(with_patch, train.truth.spurious_cue)


def test_label_noise_flips_the_requested_fraction(train: SceneData) -> None:
    flipped = train.truth.flipped
    assert int(flipped.sum()) == round(0.03 * NUM_LARGE)
    np.testing.assert_array_equal(flipped, (train.targets != train.clean_targets).numpy())


def test_no_label_noise_keeps_every_label() -> None:
    data = make_scenes(500, seed=0, label_noise=0.0)
    assert not data.truth.flipped.any()
    assert torch.equal(data.targets, data.clean_targets)


def test_hard_slices_are_planted(val: SceneData) -> None:
    assert "weather=foggy&timeofday=night" in val.truth.hard_slices
    weather = np.array(val.attributes["weather"])
    night = np.array(val.attributes["timeofday"]) == "night"
    difficulty = val.truth.difficulty
    hard = (weather == "foggy") & night
    easy = (weather == "clear") & ~night
    assert difficulty[hard].min() > FOGGY_NIGHT_DIFFICULTY - 0.05
    assert difficulty[easy].max() < 0.05
    assert difficulty[hard].mean() - difficulty[~hard].max() > 0.5


def test_scene_is_a_null_control(val: SceneData) -> None:
    scene = np.array(val.attributes["scene"])
    difficulty = val.truth.difficulty
    means = [float(difficulty[scene == value].mean()) for value in SCENE]
    assert max(means) - min(means) < 0.03


def test_hard_slice_loses_object_contrast() -> None:
    # With the spurious cue and noise removed, the per-image spread of pixel values (object against
    # background) must be far smaller under fog at night than on a clear day.
    data = make_scenes(2000, seed=0, split="val", label_noise=0.0)
    weather = np.array(data.attributes["weather"])
    night = np.array(data.attributes["timeofday"]) == "night"
    interior = data.images[:, :, 4:, :].numpy()
    spread = interior.max(axis=(1, 2, 3)) - np.median(interior, axis=(1, 2, 3))
    hard = spread[(weather == "foggy") & night].mean()
    easy = spread[(weather == "clear") & ~night].mean()
    assert hard < 0.4 * easy


def test_truth_to_dict_is_json_safe() -> None:
    data = make_scenes(20, seed=0)
    payload = data.truth.to_dict()
    assert json.loads(json.dumps(payload)) == payload
    assert payload["hard_slices"] == ["weather=foggy&timeofday=night"]
    assert payload["schema_version"] == 1
    assert (
        len(payload["difficulty"]) == len(payload["flipped"]) == len(payload["spurious_cue"]) == 20
    )
    assert isinstance(data.truth, PlantedTruth)


def test_data_classes_are_frozen() -> None:
    data = make_scenes(4, seed=0)
    with pytest.raises(AttributeError):
        data.targets = torch.zeros(4)  # type: ignore[misc]
    with pytest.raises(AttributeError):
        data.truth.spurious_agreement = 0.1  # type: ignore[misc]


def test_dataset_items_and_default_collate() -> None:
    data = make_scenes(10, seed=0, split="test")
    dataset = ScenesDataset(data)
    assert len(dataset) == 10
    item = dataset[3]
    assert item["image"].shape == (3, 32, 32)
    assert item["target"].dtype == torch.int64
    assert item["target"].ndim == 0
    assert item["sample_id"].item() == 2 * ID_OFFSET + 3
    assert item["attributes"] == {name: values[3] for name, values in data.attributes.items()}

    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert batch["image"].shape == (4, 3, 32, 32)
    assert batch["target"].tolist() == data.targets[:4].tolist()
    assert batch["sample_id"].tolist() == data.sample_ids[:4].tolist()
    assert batch["attributes"]["weather"] == data.attributes["weather"][:4]
    assert batch["attributes"]["scene"] == data.attributes["scene"][:4]


def test_dataset_and_data_pickle() -> None:
    dataset = ScenesDataset(make_scenes(10, seed=0))
    restored = pickle.loads(pickle.dumps(dataset))
    _assert_same(restored.data, dataset.data)


def test_dataset_rejects_other_types() -> None:
    with pytest.raises(
        TypeError, match=r"Expected argument `data` to be a SceneData, but got list\."
    ):
        ScenesDataset([])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_samples": 0}, r"`num_samples` to be a positive int below 1000000, but got 0\."),
        ({"num_samples": -1}, r"`num_samples` to be a positive int below 1000000, but got -1\."),
        ({"num_samples": 2.5}, r"`num_samples` to be a positive int below 1000000, but got 2\.5\."),
        (
            {"num_samples": True},
            r"`num_samples` to be a positive int below 1000000, but got True\.",
        ),
        ({"num_samples": ID_OFFSET}, r"`num_samples` to be a positive int below 1000000"),
        ({"image_size": 8}, r"`image_size` to be an int >= 16, but got 8\."),
        ({"seed": -1}, r"`seed` to be a non-negative int, but got -1\."),
        ({"split": "dev"}, r"`split` to be one of \('train', 'val', 'test'\), but got 'dev'\."),
        (
            {"spurious_correlation": 1.5},
            r"`spurious_correlation` to be None or a float in \[0, 1\]",
        ),
        ({"spurious_correlation": "high"}, r"`spurious_correlation` .* but got 'high'\."),
        ({"label_noise": 0.5}, r"`label_noise` to be a float in \[0, 0\.5\), but got 0\.5\."),
        ({"label_noise": -0.1}, r"`label_noise` to be a float in \[0, 0\.5\), but got -0\.1\."),
    ],
)
def test_make_scenes_validates_arguments(kwargs: dict[str, object], match: str) -> None:
    arguments: dict[str, object] = {"num_samples": 10, **kwargs}
    num_samples = arguments.pop("num_samples")
    with pytest.raises(ValueError, match=rf"^Expected argument {match}"):
        make_scenes(num_samples, **arguments)  # type: ignore[arg-type]


def test_importing_the_data_does_not_import_lightning() -> None:
    code = (
        "import sys\n"
        "import lightning_insight\n"
        "before = 'pytorch_lightning' in sys.modules\n"
        "import lightning_insight.datasets\n"
        "assert 'lightning_insight.datasets.lightning' not in sys.modules\n"
        "assert before or 'pytorch_lightning' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_lazy_attribute_errors() -> None:
    import lightning_insight.datasets as datasets

    with pytest.raises(AttributeError, match="has no attribute 'Missing'"):
        _ = datasets.Missing
    assert datasets.__all__ == sorted(datasets.__all__)
    assert set(datasets.__all__) <= set(dir(datasets))
