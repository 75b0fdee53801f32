from __future__ import annotations

import json
import pickle
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.cli import LightningCLI

from lightning_insight.datasets import BDDDataModule, SceneClassifier, make_synthetic_bdd
from lightning_insight.datasets.bdd100k import CATEGORIES

SMALL = {"num_train": 6, "num_val": 5, "num_test": 3}


def _batch_contract(batch: dict[str, Any], size: int, shape: tuple[int, int]) -> None:
    assert set(batch) == {"image", "target", "attributes", "sample_id"}
    assert batch["image"].shape == (size, 3, shape[1], shape[0])
    assert batch["image"].dtype == torch.float32
    assert batch["sample_id"].dtype == torch.int64
    assert batch["sample_id"].shape == (size,)
    assert set(batch["attributes"]) == {"weather", "timeofday", "scene"}
    assert all(len(values) == size for values in batch["attributes"].values())
    assert all(isinstance(value, str) for value in batch["attributes"]["weather"])
    assert isinstance(batch["target"], list)
    assert len(batch["target"]) == size
    for target in batch["target"]:
        assert {"boxes", "labels", "iscrowd", "occluded", "truncated", "skin_tone"} <= set(target)
        assert target["boxes"].dtype == torch.float32
        assert target["boxes"].shape == (len(target["labels"]), 4)
        assert target["labels"].dtype == torch.int64
        assert len(target["skin_tone"]) == len(target["labels"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"batch_size": 0},
            r"^Expected argument `batch_size` to be a positive int, but got 0\.$",
        ),
        (
            {"num_workers": -1},
            r"^Expected argument `num_workers` to be a non-negative int, but got -1\.$",
        ),
        ({"seed": True}, r"^Expected argument `seed` to be a non-negative int, but got True\.$"),
        (
            {"image_size": (64, 0)},
            r"^Expected argument `image_size` to be an int or a \(width, height\) pair of ints >= "
            r"1, but got \(64, 0\)\.$",
        ),
        (
            {"synthetic": "yes"},
            r"^Expected argument `synthetic` to be a bool or a dict, but got 'yes'\.$",
        ),
        (
            {"synthetic": {"num_val": 4, "colour": "red"}},
            r"^Expected the keys of argument `synthetic` to be among \['image_size', "
            r"'max_objects', 'num_test', 'num_train', 'num_val', 'seed'\], but got \['colour'\]\.$",
        ),
        (
            {"synthetic": {"num_train": 0}},
            r"^Expected argument `num_images` to be a positive int below 1000000, but got 0\.$",
        ),
        (
            {"synthetic": {"image_size": 8}},
            r"^Expected argument `image_size` to be an int or a \(width, height\) pair of ints >= "
            r"32, but got 8\.$",
        ),
    ],
)
def test_datamodule_validates_arguments(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BDDDataModule(str(tmp_path), **kwargs)


def test_datamodule_needs_a_source() -> None:
    with pytest.raises(
        ValueError,
        match=r"^Expected argument `root` to be a folder without label files, but got None\. HINT:",
    ):
        BDDDataModule()
    with pytest.raises(
        ValueError, match=r"^Expected argument `root` to be a folder with `synthetic`, but got None"
    ):
        BDDDataModule(train_labels="det_train.json", synthetic=True)
    with pytest.raises(
        TypeError,
        match=r"^Expected argument `val_labels` to be None, a str or os\.PathLike, but got int\.$",
    ):
        BDDDataModule("root", val_labels=3)  # type: ignore[arg-type]


def test_synthetic_from_nothing(tmp_path: Path) -> None:
    root = tmp_path / "bdd"
    datamodule = BDDDataModule(str(root), batch_size=4, image_size=(64, 48), synthetic=SMALL)
    assert datamodule.num_classes == 10
    assert datamodule.categories == CATEGORIES
    assert datamodule.hparams["synthetic"] == SMALL
    with pytest.raises(
        RuntimeError, match=r"^The val split has not been loaded\. HINT: call `setup\(\)`"
    ):
        datamodule.val_dataloader()

    datamodule.setup("fit")
    assert (root / "labels" / "det_train.json").is_file()
    assert (root / "labels" / "synthetic_val.json").is_file()
    assert not (root / "labels" / "det_test.json").exists()
    assert len(list((root / "images" / "train").iterdir())) == 6

    val = list(datamodule.val_dataloader())
    assert [len(batch["target"]) for batch in val] == [4, 1]
    _batch_contract(val[0], 4, (64, 48))
    assert torch.cat([batch["sample_id"] for batch in val]).tolist() == [0, 1, 2, 3, 4]
    truth = json.loads((root / "labels" / "synthetic_val.json").read_text(encoding="utf-8"))
    assert val[0]["attributes"]["timeofday"] == truth["attributes"]["timeofday"][:4]

    train_ids = torch.cat([batch["sample_id"] for batch in datamodule.train_dataloader()])
    assert sorted(train_ids.tolist()) == list(range(6))
    again = torch.cat([batch["sample_id"] for batch in datamodule.train_dataloader()])
    assert again.tolist() == train_ids.tolist()

    datamodule.setup("test")
    test = list(datamodule.test_dataloader())
    _batch_contract(test[0], 3, (64, 48))
    predict = list(datamodule.predict_dataloader())
    assert predict[0]["sample_id"].tolist() == [0, 1, 2]


def test_synthetic_is_generated_once_per_config(tmp_path: Path) -> None:
    datamodule = BDDDataModule(str(tmp_path), image_size=32, synthetic=SMALL)
    datamodule.prepare_data()
    labels = tmp_path / "labels" / "det_val.json"
    assert (tmp_path / "labels" / "det_test.json").is_file()
    stamp = labels.stat().st_mtime_ns
    labels_text = labels.read_text(encoding="utf-8")

    same = BDDDataModule(str(tmp_path), image_size=32, synthetic=SMALL)
    same.prepare_data()
    same.setup("validate")
    assert labels.stat().st_mtime_ns == stamp
    assert len(same.datasets["val"]) == 5

    changed = BDDDataModule(str(tmp_path), image_size=32, synthetic={**SMALL, "num_val": 7})
    changed.setup("validate")
    assert len(changed.datasets["val"]) == 7
    assert len(list((tmp_path / "images" / "val").iterdir())) == 7
    assert labels.read_text(encoding="utf-8") != labels_text


def test_synthetic_refuses_foreign_labels(tmp_path: Path) -> None:
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "det_val.json").write_text("[]", encoding="utf-8")
    datamodule = BDDDataModule(str(tmp_path), synthetic=True)
    with pytest.raises(
        FileExistsError,
        match=r"^Expected .* to hold no val labels or synthetic ones, but .*det_val\.json exists "
        r"and was not written by make_synthetic_bdd\. HINT: pick an empty `root`",
    ):
        datamodule.setup("validate")


def test_real_layout_and_explicit_paths(tmp_path: Path) -> None:
    source = make_synthetic_bdd(tmp_path / "source", num_images=4, image_size=40, split="val")
    # The BDD100k download layout: labels/det_20/det_val.json and images/100k/val.
    root = tmp_path / "bdd100k"
    (root / "labels" / "det_20").mkdir(parents=True)
    shutil.copy(source.labels_path, root / "labels" / "det_20" / "det_val.json")
    shutil.copytree(source.image_dir, root / "images" / "100k" / "val")
    datamodule = BDDDataModule(str(root), batch_size=4)
    datamodule.setup("validate")
    batch = next(iter(datamodule.val_dataloader()))
    assert batch["image"].shape == (4, 3, 40, 40)
    # No attribute file in this layout: pedestrians have no skin tone column.
    assert "skin_tone" not in batch["target"][0]

    explicit = BDDDataModule(
        val_labels=source.labels_path,
        val_images=source.image_dir,
        pedestrian_attributes=source.pedestrian_attributes_path,
        image_size=32,
        batch_size=4,
    )
    explicit.setup("validate")
    batch = next(iter(explicit.val_dataloader()))
    _batch_contract(batch, 4, (32, 32))
    with pytest.raises(
        FileNotFoundError,
        match=r"^Expected the train labels at `train_labels` or under `root` .*HINT: pass "
        r"`train_labels`, or `synthetic=True`",
    ):
        explicit.setup("fit")

    (root / "labels" / "det_20" / "det_train.json").write_text("[]", encoding="utf-8")
    with pytest.raises(
        FileNotFoundError,
        match=r"^Expected the train images at `train_images` or under `root` \(images/train, "
        r"images/100k/train\), but found none in .*bdd100k\. HINT: pass `train_images`\.$",
    ):
        datamodule.setup("fit")


def test_datamodule_pickles(tmp_path: Path) -> None:
    datamodule = BDDDataModule(str(tmp_path), batch_size=2, image_size=32, synthetic=SMALL)
    datamodule.setup("validate")
    restored = pickle.loads(pickle.dumps(datamodule))
    left = next(iter(datamodule.val_dataloader()))
    right = next(iter(restored.val_dataloader()))
    assert torch.equal(left["image"], right["image"])
    assert left["attributes"] == right["attributes"]


class _Recorder(LightningModule):
    """Checks that a Trainer hands the batch contract to the steps unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Conv2d(3, 1, 1)
        self.batches: list[dict[str, Any]] = []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.batches.append(batch)
        self.layer(batch["image"])


def test_trainer_validate_with_worker(tmp_path: Path) -> None:
    datamodule = BDDDataModule(
        str(tmp_path), batch_size=2, image_size=(48, 32), num_workers=1, synthetic=SMALL
    )
    model = _Recorder()
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.validate(model, datamodule=datamodule)
    assert [len(batch["target"]) for batch in model.batches] == [2, 2, 1]
    _batch_contract(model.batches[0], 2, (48, 32))
    assert torch.cat([batch["sample_id"] for batch in model.batches]).tolist() == list(range(5))


# Lightning 2.6.6's own CLI code calls jsonargparse APIs deprecated in 4.49; nothing to fix on our side.
@pytest.mark.filterwarnings("ignore::jsonargparse._deprecated.JsonargparseDeprecationWarning")
def test_lightning_cli_reads_the_signature(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "argv", ["lightning-insight"])
    cli = LightningCLI(
        SceneClassifier,
        BDDDataModule,
        run=False,
        args=[
            f"--data.root={tmp_path}",
            "--data.image_size=[64, 48]",
            "--data.batch_size=3",
            '--data.synthetic={"num_train": 4, "num_val": 2, "seed": 3}',
        ],
        trainer_defaults={"logger": False, "enable_checkpointing": False},
        seed_everything_default=0,
    )
    datamodule = cli.datamodule
    assert isinstance(datamodule, BDDDataModule)
    assert datamodule.image_size == (64, 48)
    assert datamodule.batch_size == 3
    assert datamodule.synthetic is not None
    assert datamodule.synthetic["seed"] == 3
    assert datamodule.synthetic["num_test"] == 250
