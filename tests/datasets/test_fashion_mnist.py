from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_lightning import Trainer

from lightning_insight import FairnessMonitor
from lightning_insight.datasets import FashionClassifier, FashionMNISTDataModule
from lightning_insight.datasets.fashion_mnist import (
    ATTRIBUTE_BINS,
    DEFAULT_ROOT,
    ID_STRIDE,
    image_attributes,
    load_fashion_mnist,
)

HAS_DEBIAN_FILES = Path(DEFAULT_ROOT, "train-images-idx3-ubyte.gz").is_file()


def write_idx(path: Path, array: np.ndarray, *, compress: bool) -> None:
    data = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    data += array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def fake_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rectangles of random size and grey level: every attribute bin shows up."""
    rng = np.random.default_rng(seed)
    images = np.zeros((count, 28, 28), dtype=np.uint8)
    for image in images:
        height, width = rng.integers(4, 28, size=2)
        top, left = (28 - height) // 2, (28 - width) // 2
        image[top : top + height, left : left + width] = rng.integers(60, 256)
    return images, rng.integers(0, 10, size=count).astype(np.uint8)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A folder laid out like Debian's: train (gzipped) and t10k (plain) IDX files."""
    for split, count, compress in (("train", 120, True), ("t10k", 60, False)):
        images, labels = fake_images(count, seed=count)
        suffix = ".gz" if compress else ""
        write_idx(tmp_path / f"{split}-images-idx3-ubyte{suffix}", images, compress=compress)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte{suffix}", labels, compress=compress)
    return tmp_path


def test_image_attributes_against_hand_computed_values() -> None:
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    images[0, 0:28, 10:18] = 200  # tall: 8 wide, 28 high
    images[1, 10:18, 0:28] = 250  # wide
    images[2] = 255  # all ink, square, bright
    images[3, 5, 5] = 20  # below the ink level: no ink at all
    out = image_attributes(torch.from_numpy(images))
    # brightness: 224 * 200 / 784 / 255 = 0.224; 224 * 250 / 784 / 255 = 0.280; 1.0; 0.00003
    assert out["brightness"].tolist() == ["medium", "medium", "bright", "dark"]
    # ink: 224 / 784 = 0.286 (low); 0.286; 1.0 (high); 0
    assert out["ink"].tolist() == ["low", "low", "high", "low"]
    assert out["aspect"].tolist() == ["tall", "wide", "square", "square"]
    assert set(out) == set(ATTRIBUTE_BINS)


def test_image_attributes_bin_edges() -> None:
    # brightness exactly at a cut point goes to the upper bin (np.digitize, right-open bins)
    images = np.zeros((2, 10, 10), dtype=np.uint8)
    images[0, :, :] = 51  # 51 / 255 = 0.2
    images[1, :5, :] = 179  # 0.5 * 179 / 255 = 0.351
    assert image_attributes(images)["brightness"].tolist() == ["medium", "bright"]


def test_image_attributes_rejects_a_bad_shape() -> None:
    with pytest.raises(
        ValueError, match=r"`images` to have shape \(N, H, W\), but got shape \(28, 28\)"
    ):
        image_attributes(np.zeros((28, 28)))


def test_missing_files_name_the_package_and_the_folder(tmp_path: Path) -> None:
    empty = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=rf"in '{empty}'.*`dataset-fashion-mnist`"):
        load_fashion_mnist(empty, "train")
    datamodule = FashionMNISTDataModule(root=str(empty))  # checked at setup, not construction
    with pytest.raises(FileNotFoundError, match=r"apt-get install dataset-fashion-mnist"):
        datamodule.setup("fit")


def test_unknown_split_and_labels_out_of_range(root: Path) -> None:
    with pytest.raises(
        ValueError, match=r"`split` to be one of \['t10k', 'train'\], but got 'val'"
    ):
        load_fashion_mnist(root, "val")
    write_idx(root / "t10k-labels-idx1-ubyte", np.full(60, 12, np.uint8), compress=False)
    with pytest.raises(
        ValueError, match=r"labels in '.*t10k-labels-idx1-ubyte' to lie in \[0, 10\)"
    ):
        load_fashion_mnist(root, "t10k")


def test_a_mislabelled_pair_in_the_root_is_rejected(root: Path) -> None:
    write_idx(root / "t10k-labels-idx1-ubyte", np.zeros(59, np.uint8), compress=False)
    with pytest.raises(ValueError, match=r"60 images and 59 labels: a mislabelled pair"):
        FashionMNISTDataModule(root=str(root), num_val=10, num_test=10).setup("validate")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_train": 0}, r"`num_train` to be None or an int in \[1, 60000\], but got 0"),
        ({"num_val": 20_000}, r"`num_val` to be None or an int in \[1, 10000\], but got 20000"),
        ({"num_test": None}, r"`num_test` to be an int >= 1, but got None"),
        ({"batch_size": 1.5}, r"`batch_size` to be None or an int .* but got 1.5"),
        ({"seed": -1}, r"`seed` to be a non-negative int, but got -1"),
    ],
)
def test_datamodule_argument_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FashionMNISTDataModule(**kwargs)  # type: ignore[arg-type]


def test_root_type_is_checked() -> None:
    with pytest.raises(TypeError, match=r"`root` to be a path, but got 3"):
        FashionMNISTDataModule(root=3)  # type: ignore[arg-type]


def test_splits_ids_attributes_and_batches(root: Path) -> None:
    datamodule = FashionMNISTDataModule(
        root=str(root), num_train=50, num_val=20, num_test=30, batch_size=16
    )
    datamodule.setup("fit")
    datamodule.setup("test")
    assert datamodule.train_data is not None and datamodule.val_data is not None
    assert datamodule.test_data is not None
    assert len(datamodule.train_data) == 50 and len(datamodule.val_data) == 20
    train_ids = datamodule.train_data.sample_ids.numpy()
    val_ids = datamodule.val_data.sample_ids.numpy()
    test_ids = datamodule.test_data.sample_ids.numpy()
    assert (train_ids < ID_STRIDE).all() and (val_ids >= ID_STRIDE).all()
    assert not set(val_ids) & set(test_ids)  # validation and test are disjoint halves of t10k
    assert len(set(val_ids) | set(test_ids)) == 50
    # a sample's id is its index in its file: the image and label there are the ones served
    images, labels = fake_images(60, seed=60)
    item = datamodule.val_data[3]
    index = int(item["sample_id"]) - ID_STRIDE
    np.testing.assert_allclose(item["image"][0].numpy(), images[index] / 255.0, atol=1e-6)
    assert int(item["target"]) == labels[index]
    assert item["attributes"] == {k: v[index] for k, v in image_attributes(images).items()}
    batch = next(iter(datamodule.val_dataloader()))
    assert batch["image"].shape == (16, 1, 28, 28) and batch["image"].dtype == torch.float32
    assert batch["target"].dtype == torch.int64 and batch["sample_id"].shape == (16,)
    assert set(batch["attributes"]) == {"brightness", "ink", "aspect"}
    assert all(isinstance(v, str) for v in batch["attributes"]["ink"])


def test_subsets_are_seeded_and_nested_ids_stable(root: Path) -> None:
    def ids(**kwargs: object) -> list[int]:
        datamodule = FashionMNISTDataModule(root=str(root), num_val=10, **kwargs)  # type: ignore[arg-type]
        datamodule.setup("fit")
        assert datamodule.train_data is not None
        return datamodule.train_data.sample_ids.tolist()

    assert ids(num_train=30, seed=1) == ids(num_train=30, seed=1)
    assert ids(num_train=30, seed=1) != ids(num_train=30, seed=2)
    assert set(ids(num_train=30, seed=1)) <= set(ids(num_train=60, seed=1))
    assert ids(num_train=None) == list(range(120))


def test_too_many_images_for_the_files(root: Path) -> None:
    datamodule = FashionMNISTDataModule(root=str(root), num_val=50, num_test=20)
    datamodule.setup("validate")
    with pytest.raises(ValueError, match=r"at most 60 images from 't10k' .* ask for 70"):
        datamodule.setup("test")
    with pytest.raises(RuntimeError, match=r"The test split has not been set up"):
        datamodule.test_dataloader()


def test_classifier_outputs_probabilities_and_validates_args() -> None:
    model = FashionClassifier(channels=(4, 8, 8))
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert dict(model.backbone.named_children()).keys() == {"0", "1", "2"}
    assert model.backbone[2](torch.zeros(1, 8, 7, 7)).shape == (1, 8, 7, 7)
    batch = {"image": torch.rand(5, 1, 28, 28), "target": torch.tensor([0, 1, 2, 3, 9])}
    model.eval()
    out = model.validation_step(batch, 0)
    assert out["preds"].shape == (5, 10)
    torch.testing.assert_close(out["preds"].sum(1), torch.ones(5))
    assert pickle.loads(pickle.dumps(model)).hparams["channels"] == [4, 8, 8]
    with pytest.raises(ValueError, match=r"`channels` to be a non-empty sequence"):
        FashionClassifier(channels=())
    with pytest.raises(ValueError, match=r"`learning_rate` to be a positive float, but got 0"):
        FashionClassifier(learning_rate=0)
    with pytest.raises(ValueError, match=r"`num_classes` to be an int >= 2, but got 1"):
        FashionClassifier(num_classes=1)


def test_fit_with_fairness_monitor_on_the_attributes(root: Path) -> None:
    datamodule = FashionMNISTDataModule(root=str(root), num_train=64, num_val=40, batch_size=16)
    monitor = FairnessMonitor(
        "multiclass", ["brightness", "ink&aspect"], min_support=5, sinks=["memory"]
    )
    trainer = Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[monitor],
    )
    trainer.fit(FashionClassifier(channels=(4, 8)), datamodule)
    (report,) = monitor.history
    assert report.overall["count"] == 40
    assert any(name.startswith("brightness=") for name in report.slices)
    assert any(name.startswith("ink=") and "&aspect=" in name for name in report.slices)
    assert sum(v["count"] for k, v in report.slices.items() if k.startswith("brightness=")) == 40
    assert pickle.loads(pickle.dumps(datamodule)).root == str(root)


@pytest.mark.skipif(
    not HAS_DEBIAN_FILES,
    reason=f"needs Debian's dataset-fashion-mnist in {DEFAULT_ROOT} (apt-get install "
    "dataset-fashion-mnist; scripts/test.sh installs it in CI)",
)
def test_the_real_files() -> None:
    images, labels = load_fashion_mnist(split="t10k")
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1000] * 10
    datamodule = FashionMNISTDataModule(num_train=100, num_val=200, num_test=100)
    datamodule.setup("validate")
    assert datamodule.val_data is not None
    counts = {
        name: dict(zip(*np.unique(values, return_counts=True), strict=True))
        for name, values in datamodule.val_data.attributes.items()
    }
    # every bin is populated on real images (the cut points are about the training terciles)
    for name, (_, bins) in ATTRIBUTE_BINS.items():
        assert set(counts[name]) == set(bins)
        assert min(counts[name].values()) >= 20
