from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from lightning_insight.datasets.scenes import SceneData, ScenesDataset, make_scenes
from lightning_insight.discovery import finder as finder_module
from lightning_insight.discovery.finder import SliceFinder, probe_hash
from lightning_insight.discovery.mosaic import CELL_COLOURS
from tests.discovery.models import (
    FlatInput,
    SmallNet,
    planted_groups,
    precision_at,
    train_scene_classifier,
)

LAYER = "backbone.2.2"  # the last block's ReLU: 8x8 maps, before the block's max-pool

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model(one_torch_thread: None) -> nn.Module:
    return train_scene_classifier(seed=0, epochs=3)


@pytest.fixture(scope="module")
def val() -> SceneData:
    return make_scenes(2000, seed=0, split="val")


@pytest.fixture(scope="module")
def loader(val: SceneData) -> DataLoader[dict[str, Any]]:
    return DataLoader(ScenesDataset(val), batch_size=128)


@pytest.fixture(scope="module")
def small() -> SceneData:
    return make_scenes(600, seed=1, split="val")


def batches(data: SceneData, order: np.ndarray, size: int = 50) -> Iterator[dict[str, Any]]:
    for start in range(0, order.size, size):
        rows = torch.from_numpy(order[start : start + size])
        yield {
            "image": data.images[rows],
            "target": data.targets[rows],
            "sample_id": data.sample_ids[rows],
        }


@contextlib.contextmanager
def pooled_features() -> Iterator[None]:
    """The baseline: the same pipeline on plain average-pooled activations (no attribution weighting)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            finder_module,
            "attribution_weighted_features",
            lambda activations, maps, context: activations.mean(dim=(2, 3)),
        )
        yield


def group_precision(
    finder: SliceFinder, val: SceneData, *, top_slices: int = 5
) -> dict[str, float]:
    """Best precision@10 among the ``top_slices`` worst slices, per planted group."""
    groups = planted_groups(val)
    wrong = finder.probabilities_.argmax(axis=1) != finder.targets_
    rows = {int(i): row for row, i in enumerate(val.sample_ids.numpy())}
    assert np.array_equal(finder.sample_ids_, val.sample_ids.numpy())  # every sample probed
    # The errors the cue causes: the model followed the cue against the object, outside the fog.
    groups["cue_errors"] = groups["conflict"] & wrong & ~groups["hard"]
    worst = finder.report_.slices[:top_slices]
    out = {
        name: max(precision_at(s.sample_ids, group, rows) for s in worst)
        for name, group in groups.items()
    }
    out["worst_error_rate"] = worst[0].error_rate
    return out


def test_worst_slices_recover_planted_groups_and_beat_pooled_features(
    model: nn.Module, val: SceneData, loader: DataLoader[dict[str, Any]]
) -> None:
    def mean_over_seeds() -> dict[str, float]:
        finder = SliceFinder(LAYER)
        finder.fit(model, loader)
        runs = [group_precision(finder, val)]
        for seed in (1, 2):  # other k-means seeds on the same attributions
            finder.random_state = seed
            finder.compute()
            runs.append(group_precision(finder, val))
        return {key: float(np.mean([run[key] for run in runs])) for key in runs[0]}

    ours = mean_over_seeds()
    with pooled_features():
        baseline = mean_over_seeds()
    numbers = f"ours {ours}, pooled baseline {baseline}"
    print(numbers)
    # Chance: hard 0.075, conflict 0.5, cue_errors about 0.1 of the probe set.
    assert ours["hard"] >= 0.8, numbers
    assert ours["conflict"] >= 0.8, numbers
    assert ours["hard"] + ours["conflict"] >= baseline["hard"] + baseline["conflict"], numbers
    # Where attribution weighting earns its keep: the worst slice is made of the cue's errors,
    # where the pooled features' worst slice mixes them with images the model gets right.
    assert ours["cue_errors"] >= 0.9, numbers
    assert ours["cue_errors"] >= baseline["cue_errors"], numbers
    assert ours["worst_error_rate"] >= baseline["worst_error_rate"] + 0.1, numbers


def test_flipped_labels_are_overrepresented_among_mislabel_candidates(
    model: nn.Module, val: SceneData, loader: DataLoader[dict[str, Any]]
) -> None:
    finder = SliceFinder(LAYER)
    report = finder.fit(model, loader)
    flagged = {i for s in report.slices for i in s.mislabel_candidates}
    assert len(flagged) == 100  # 5% of 2000
    flipped = set(val.sample_ids.numpy()[val.truth.flipped].tolist())
    recall = len(flagged & flipped) / len(flipped)
    chance = len(flagged) / report.num_samples
    assert recall >= 3 * chance, f"recall {recall:.3f}, chance {chance:.3f}"
    for found in report.slices:
        assert set(found.mislabel_candidates) <= set(found.sample_ids)


def test_report_contents(model: nn.Module, small: SceneData) -> None:
    model.zero_grad(set_to_none=True)  # training left gradients behind
    model.train()
    finder = SliceFinder(LAYER, num_slices=12)
    report = finder.fit(model, DataLoader(ScenesDataset(small), batch_size=100), epoch=4)
    assert model.training  # restored
    model.eval()  # the module-scoped model stays in eval mode for the other tests
    assert all(parameter.grad is None for parameter in model.parameters())
    assert len(report.slices) == 12
    assert sum(s.size for s in report.slices) == report.num_samples == 600
    scores = [s.score for s in report.slices]
    assert scores == sorted(scores, reverse=True)
    wrong = finder.probabilities_.argmax(axis=1) != finder.targets_
    assert report.overall_error_rate == pytest.approx(wrong.mean())
    rows = {int(i): row for row, i in enumerate(finder.sample_ids_)}
    for found in report.slices:
        members = np.array([rows[i] for i in found.sample_ids])
        assert found.error_rate == pytest.approx(wrong[members].mean())
        assert found.lift == pytest.approx(found.error_rate / report.overall_error_rate)
        assert sum(found.confusion.values()) == found.size
        assert found.confusion["fp"] + found.confusion["fn"] == wrong[members].sum()
        assert found.first_seen_epoch == 4
        assert np.all(finder.labels_[members] == found.slice_id)
        centre = finder.centroids_[list(finder.slice_ids_).index(found.slice_id)]
        distances = np.linalg.norm(finder.features_[members] - centre, axis=1)
        assert np.all(np.diff(distances) >= -1e-9)  # most central first
    assert report.layer == LAYER and report.method == "gradcam" and report.epoch == 4


def test_probe_set_is_fixed_and_independent_of_batch_order(
    model: nn.Module, small: SceneData, monkeypatch: pytest.MonkeyPatch
) -> None:
    attributed: list[int] = []
    original = finder_module.layer_attributions

    def counting(model: nn.Module, inputs: torch.Tensor, **kwargs: Any) -> Any:
        attributed.append(int(inputs.shape[0]))
        return original(model, inputs, **kwargs)

    monkeypatch.setattr(finder_module, "layer_attributions", counting)
    ids = small.sample_ids.numpy()
    expected = np.sort(ids[np.argsort(probe_hash(ids, 7))[:150]])
    shuffled = np.random.default_rng(3).permutation(600)
    results = []
    for order, dataset_size in (
        (np.arange(600), 600),
        (shuffled, None),
        (shuffled[::-1].copy(), 600),
    ):
        attributed.clear()
        finder = SliceFinder(LAYER, max_samples=150, num_slices=8, random_state=7)
        for batch in batches(small, order):
            finder.update(
                model,
                batch["image"],
                batch["target"],
                batch["sample_id"],
                dataset_size=dataset_size,
            )
        report = finder.compute()
        assert report.num_samples == 150
        results.append(finder.sample_ids_)
        if dataset_size is not None:
            assert sum(attributed) < 300  # the threshold skips most non-members up front
    for probe in results:
        assert np.array_equal(probe, expected)
    other = SliceFinder(LAYER, max_samples=150, num_slices=8, random_state=8)
    for batch in batches(small, np.arange(600)):
        other.update(model, batch["image"], batch["target"], batch["sample_id"])
    other.compute()
    assert not np.array_equal(other.sample_ids_, expected)


def test_slice_ids_are_stable_across_computes(model: nn.Module, small: SceneData) -> None:
    finder = SliceFinder(LAYER, max_samples=600, num_slices=10)
    for batch in batches(small, np.arange(600)):
        finder.update(model, batch["image"], batch["target"], batch["sample_id"])
    first = finder.compute(epoch=0)
    again = finder.compute(epoch=1)
    assert {s.slice_id: s.sample_ids for s in again.slices} == {
        s.slice_id: s.sample_ids for s in first.slices
    }
    assert {s.first_seen_epoch for s in again.slices} == {0}
    # Another k-means seed numbers the clusters differently; the ids follow the members.
    finder.random_state = 5
    moved = finder.compute(epoch=2)
    before = {s.slice_id: set(s.sample_ids) for s in first.slices}
    kept = 0
    for found in moved.slices:
        members = set(found.sample_ids)
        if found.slice_id in before:
            kept += 1
            best = max(before, key=lambda i: len(members & before[i]) / len(members | before[i]))
            assert best == found.slice_id
            assert found.first_seen_epoch == 0
        else:
            assert found.slice_id >= 10 and found.first_seen_epoch == 2
    assert kept >= 7


def test_state_dict_round_trip_keeps_ids(
    model: nn.Module, small: SceneData, tmp_path: Path
) -> None:
    def fitted(state: dict[str, Any] | None = None) -> SliceFinder:
        finder = SliceFinder(LAYER, max_samples=600, num_slices=10)
        if state is not None:
            finder.load_state_dict(state)
        finder.fit(model, list(batches(small, np.arange(600))), epoch=0 if state is None else 3)
        return finder

    first = fitted()
    first.annotate(first.report_.slices[0].slice_id, "spurious")
    torch.save(first.state_dict(), tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    resumed = fitted(state)
    assert {s.slice_id: s.sample_ids for s in resumed.report_.slices} == {
        s.slice_id: s.sample_ids for s in first.report_.slices
    }
    assert {s.first_seen_epoch for s in resumed.report_.slices} == {0}
    assert resumed.report_.slices[0].annotation == "spurious"
    assert resumed.state_dict() == first.state_dict()
    fresh = fitted({})  # missing keys keep their defaults
    assert sorted(s.slice_id for s in fresh.report_.slices) == list(range(10))


class ThreadGroup:
    """``all_gather_object`` between threads standing in for processes.

    Each rank blocks until every rank gave its object. scikit-learn's thread pools are process-wide, so
    two clusterings at once in one process would change each other's thread limits (and k-means
    results); after the gather the ranks take turns (``turn`` is released when a rank's compute ends).
    """

    def __init__(self, size: int) -> None:
        self.barrier = threading.Barrier(size, timeout=60)
        self.turn = threading.Lock()
        self.objects: list[Any] = [None] * size

    def gather(self, rank: int) -> Callable[[Any], list[Any]]:
        def gather(obj: Any) -> list[Any]:
            self.objects[rank] = obj
            self.barrier.wait()
            self.turn.acquire()
            return list(self.objects)

        return gather


def test_gather_pools_every_rank_and_drops_padding(model: nn.Module, small: SceneData) -> None:
    single = SliceFinder(LAYER, max_samples=200, num_slices=8)
    single.fit(model, list(batches(small, np.arange(600))))
    ranks = [SliceFinder(LAYER, max_samples=200, num_slices=8) for _ in range(2)]
    order = np.arange(600)
    for rank, finder in enumerate(ranks):
        # DistributedSampler-like interleaving, and rank 1 repeats rank 0's first samples (padding)
        shard = order[rank::2] if rank == 0 else np.concatenate([order[1::2], order[0:20:2]])
        for batch in batches(small, shard):
            finder.update(
                model, batch["image"], batch["target"], batch["sample_id"], dataset_size=600
            )
    group = ThreadGroup(2)
    reports: list[Any] = [None, None]

    def run(rank: int) -> None:
        try:
            reports[rank] = ranks[rank].compute(gather=group.gather(rank))
        finally:
            group.turn.release()

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert reports[0] is not None and reports[1] is not None
    assert reports[0].to_dict() == reports[1].to_dict()
    assert np.array_equal(ranks[0].sample_ids_, single.sample_ids_)
    assert {s.sample_ids for s in reports[0].slices} == {
        s.sample_ids for s in single.report_.slices
    }


def test_annotations_and_propagation(model: nn.Module, small: SceneData, tmp_path: Path) -> None:
    finder = SliceFinder(LAYER, max_samples=600, num_slices=10)
    with pytest.raises(RuntimeError, match="`compute\\(\\)` has not run"):
        finder.annotate(0, "core")
    report = finder.fit(model, list(batches(small, np.arange(600))))
    worst, best = report.slices[0].slice_id, report.slices[-1].slice_id
    finder.annotate(worst, "spurious")
    with pytest.raises(ValueError, match=r"\d+ spurious and 0 core"):
        finder.propagate()
    (tmp_path / "notes.yaml").write_text(
        f"slice_{best}: core\n{report.slices[1].slice_id}: mislabel\n"
    )
    finder.load_annotations(tmp_path / "notes.yaml")
    assert finder.report_.slice(worst).annotation == "spurious"
    assert finder.report_.slice(best).annotation == "core"
    assert finder.report_.slices[1].annotation == "mislabel"
    probability = finder.propagate()
    assert probability.shape == (600,)
    assert probability[finder.labels_ == worst].min() > 0.5
    assert probability[finder.labels_ == best].max() < 0.5
    with pytest.raises(ValueError, match="`kind` to be one of"):
        finder.annotate(worst, "boring")
    with pytest.raises(ValueError, match="`slice_id` to be one of the report's slice ids"):
        finder.annotate(999, "core")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="to hold a mapping of slice id -> kind, but got list"):
        finder.load_annotations(tmp_path / "list.yaml")
    (tmp_path / "keys.yaml").write_text("worst: core\n")
    with pytest.raises(ValueError, match="slice ids like 3 or 'slice_3' as keys"):
        finder.load_annotations(tmp_path / "keys.yaml")


def test_mosaic_of_a_slice(model: nn.Module, small: SceneData) -> None:
    finder = SliceFinder(LAYER, max_samples=600, num_slices=10)
    report = finder.fit(model, list(batches(small, np.arange(600))))
    worst = report.slices[0]
    image = finder.mosaic(worst.slice_id, columns=4, count=8)
    tile = 10 + 4  # a third of 32 pixels, and a 2-pixel frame
    assert image.shape == (2 * tile, 4 * tile, 3) and image.dtype == np.uint8
    names = {(1, 1): "TP", (0, 0): "TN", (0, 1): "FP", (1, 0): "FN"}
    rows = {int(i): row for row, i in enumerate(finder.sample_ids_)}
    for index, sample in enumerate(worst.sample_ids[:8]):
        row = rows[sample]
        cell = names[(int(finder.targets_[row]), int(finder.probabilities_[row].argmax()))]
        top, left = (index // 4) * tile, (index % 4) * tile
        assert tuple(image[top, left]) == CELL_COLOURS[cell]
    with pytest.raises(KeyError, match="slice id among"):
        finder.mosaic(999)


def test_mosaic_needs_image_inputs() -> None:
    data = [(torch.rand(20, 16), torch.randint(0, 2, (20,))) for _ in range(2)]
    finder = SliceFinder("conv", num_slices=2)
    report = finder.fit(FlatInput(), data)
    with pytest.raises(RuntimeError, match=r"inputs were not \(N, C, H, W\) float images"):
        finder.mosaic(report.slices[0].slice_id)


def test_plain_tuples_number_samples_in_order(model: nn.Module, small: SceneData) -> None:
    data = [(small.images[i : i + 100], small.targets[i : i + 100]) for i in range(0, 600, 100)]
    finder = SliceFinder(LAYER, max_samples=600, num_slices=8)
    finder.fit(model, data)
    assert np.array_equal(finder.sample_ids_, np.arange(600))
    assert np.array_equal(finder.targets_, small.targets.numpy())


class ReturnsDict(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.inner(x)}


class NeverIterate:
    def __iter__(self) -> Iterator[Any]:
        raise AssertionError("the arguments should have been checked before the pass")


def test_bad_input_is_rejected_early(model: nn.Module, small: SceneData) -> None:
    data = list(batches(small, np.arange(100)))
    with pytest.raises(ValueError, match=r"got 'backbone\.9'\. Close matches: \['backbone\."):
        SliceFinder("backbone.9").fit(model, NeverIterate())
    with pytest.raises(
        ValueError, match=r"layer 'head' to output a 4-D feature map .*shape \(\d+, 1\)"
    ):
        SliceFinder("head").fit(model, data)
    with pytest.raises(
        ValueError, match=r"`max_samples` \(20\) to be at least `num_slices` \(30\)"
    ):
        SliceFinder(LAYER, num_slices=30, max_samples=20).fit(model, NeverIterate())
    with pytest.raises(TypeError, match=r"Expected the model to return logits of shape \(N, C\)"):
        SliceFinder("inner.backbone.2").fit(ReturnsDict(model), data)
    for arguments, message in (
        ({"method": "lime"}, "`method` to be one of"),
        ({"target": "truth"}, "`target` to be one of"),
        ({"max_samples": 1}, "`max_samples` to be an int >= 2"),
        ({"num_slices": 0}, "`num_slices` to be None or a positive int"),
        ({"mislabel_fraction": 1.5}, r"`mislabel_fraction` to be a float in \[0, 1\]"),
        ({"random_state": -1}, "`random_state` to be an int >= 0"),
    ):
        with pytest.raises(ValueError, match=message):
            SliceFinder(LAYER, **arguments).fit(model, NeverIterate())
    with pytest.raises(ValueError, match="`patch` to be None or a positive int"):
        SliceFinder(LAYER, patch=0).check_params()
    with pytest.raises(
        TypeError, match=r"`layer` to be a module name or an nn\.Module, but got int"
    ):
        SliceFinder(3).check_params()  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`context` to be a bool"):
        SliceFinder(LAYER, context="yes").check_params()  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`batch_reader` to be callable"):
        SliceFinder(LAYER, batch_reader=3).check_params()  # type: ignore[arg-type]


def test_runtime_errors(model: nn.Module, small: SceneData) -> None:
    finder = SliceFinder(LAYER)
    with pytest.raises(RuntimeError, match="at least 2 probe samples to cluster, but got 0"):
        finder.compute()
    with pytest.raises(
        RuntimeError, match=r"batch dict with an input key .* found keys \['pixels'\]"
    ):
        finder.fit(model, [{"pixels": small.images[:4]}])
    with pytest.raises(RuntimeError, match="an \\(x, y\\[, meta\\]\\) tuple, but got str"):
        finder.fit(model, ["batch"])
    with pytest.raises(
        ValueError, match=r"one integer sample id per input \(4\), but got 4 of dtype float"
    ):
        finder.update(model, small.images[:4], small.targets[:4], [0.5, 1.5, 2.5, 3.5])
    with pytest.raises(ValueError, match="non-negative integer class label per input"):
        finder.update(model, small.images[:4], torch.tensor([0.5, 1, 0, 1]), [0, 1, 2, 3])
    reader_finder = SliceFinder(
        LAYER,
        num_slices=2,
        max_samples=50,
        batch_reader=lambda batch: (batch["pixels"], batch["y"], None),
    )
    report = reader_finder.fit(
        model, [{"pixels": small.images[:40], "y": small.targets[:40].float()}]
    )
    assert report.num_samples == 40


def test_multiclass_model_and_inference_mode() -> None:
    torch.manual_seed(0)
    net = SmallNet().eval()
    images, labels = torch.rand(60, 3, 16, 16), torch.arange(60) % 3
    data = [(images[i : i + 20], labels[i : i + 20]) for i in range(0, 60, 20)]
    finder = SliceFinder("features.4", num_slices=4, patch=5)
    report = finder.fit(net, data, progress=True)
    found = report.slices[0]
    assert set(found.confusion) == {f"true{t}_pred{p}" for t in range(3) for p in range(3)}
    assert sum(found.confusion.values()) == found.size
    image = finder.mosaic(found.slice_id, columns=2, count=2)
    assert image.shape == (9, 18, 3)
    assert tuple(image[0, 0]) == CELL_COLOURS[None]  # no confusion cell outside binary tasks
    # The streaming path under inference mode (Lightning's validate) stores the same features.
    streamed = SliceFinder("features.4", num_slices=4, patch=5)
    with torch.inference_mode():
        for start in range(0, 60, 20):
            streamed.update(net, images[start : start + 20], labels[start : start + 20])
    streamed.compute()
    np.testing.assert_allclose(streamed.features_, finder.features_, atol=1e-5)
