"""The YOLOX example (examples/yolox): pure-torch NMS, the LightningModule, and `lightning-insight fit`."""

from __future__ import annotations

import csv
import importlib.util
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("yolox")  # installed by examples/yolox/install.sh (CI runs it)

import insight_yolox
from insight_yolox import YOLOXDetector, batched_nms, nms

CONFIG = Path(__file__).parents[2] / "configs" / "detection_yolox.yaml"

pytestmark = [
    # The steps are called without a Trainer, and YOLOX's assignment uses a deprecated autocast spelling.
    pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`:UserWarning"),
    pytest.mark.filterwarnings("ignore:`torch.cuda.amp.autocast:FutureWarning"),
]


# --------------------------------------------------------------------------------------------- NMS


def reference_nms(boxes: list[list[float]], scores: list[float], threshold: float) -> list[int]:
    """Greedy NMS as the textbook states it, on plain floats."""

    def iou(a: list[float], b: list[float]) -> float:
        width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = width * height
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union

    remaining = sorted(range(len(boxes)), key=lambda i: -scores[i])
    kept: list[int] = []
    while remaining:
        best = remaining.pop(0)
        kept.append(best)
        remaining = [i for i in remaining if not iou(boxes[best], boxes[i]) > threshold]
    return kept


def random_boxes(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Boxes clustered around a few centres, so that many overlap."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.rand(4, 2, generator=generator, dtype=torch.float64) * 100
    picked = centres[torch.randint(0, 4, (count,), generator=generator)]
    centre = picked + torch.randn(count, 2, generator=generator, dtype=torch.float64) * 6
    half = 4 + torch.rand(count, 2, generator=generator, dtype=torch.float64) * 12
    boxes = torch.cat([centre - half, centre + half], dim=1)
    scores = torch.rand(count, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 3, (count,), generator=generator)
    return boxes, scores, labels


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.8])
def test_nms_matches_greedy_reference(seed: int, threshold: float) -> None:
    boxes, scores, labels = random_boxes(60, seed)
    expected = reference_nms(boxes.tolist(), scores.tolist(), threshold)
    assert nms(boxes, scores, threshold).tolist() == expected
    if 0.0 < threshold <= 0.5:  # the boxes overlap enough that NMS both keeps and drops some
        assert 1 < len(expected) < 60

    by_class = sorted(
        (i for c in range(3) for i in _per_class(boxes, scores, labels, c, threshold)),
        key=lambda i: -float(scores[i]),
    )
    assert batched_nms(boxes, scores, labels, threshold).tolist() == by_class


def _per_class(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, label: int, threshold: float
) -> list[int]:
    members = [i for i in range(len(labels)) if int(labels[i]) == label]
    kept = reference_nms(
        [boxes[i].tolist() for i in members], [float(scores[i]) for i in members], threshold
    )
    return [members[k] for k in kept]


def test_nms_edge_cases() -> None:
    empty = torch.zeros(0, 4)
    assert nms(empty, torch.zeros(0), 0.5).tolist() == []
    assert batched_nms(empty, torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).tolist() == []
    one = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    assert nms(one, torch.tensor([0.3]), 0.5).tolist() == [0]
    same = torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 4.0, 4.0]])
    assert batched_nms(same, torch.tensor([0.2, 0.9]), torch.tensor([1, 1]), 0.5).tolist() == [1]
    assert batched_nms(same, torch.tensor([0.2, 0.9]), torch.tensor([0, 1]), 0.5).tolist() == [1, 0]


def test_yolox_imported_without_leaving_a_fake_torchvision() -> None:
    insight_yolox._yolox.load_yolox()
    import yolox.utils.boxes

    ops = yolox.utils.boxes.torchvision.ops
    if ops.nms is not nms:  # a real torchvision is installed: nothing was replaced
        pytest.skip("torchvision is installed")
    assert "torchvision" not in sys.modules and importlib.util.find_spec("torchvision") is None
    # YOLOX's own post-processing runs on the stand-in.
    prediction = torch.tensor(
        [[[5.0, 5.0, 4.0, 4.0, 0.9, 0.8, 0.1], [5.0, 5.0, 4.0, 4.0, 0.8, 0.8, 0.1]]]
    )
    (kept,) = yolox.utils.boxes.postprocess(prediction, num_classes=2, conf_thre=0.1, nms_thre=0.5)
    assert kept.shape == (1, 7)


def test_missing_yolox_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        insight_yolox._yolox.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "yolox" else real_find_spec(name, *args),
    )
    with pytest.raises(ModuleNotFoundError, match=r"examples/yolox/install.sh"):
        YOLOXDetector()


# ---------------------------------------------------------------------------------------- module


def make_batch(count: int = 4, size: int = 64, seed: int = 0) -> dict[str, Any]:
    """Coloured rectangles on a dark background, in the BDDDataModule batch layout."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 3, size, size, generator=generator) * 0.2
    targets = []
    for index in range(count):
        boxes, labels = [], []
        for _ in range(2):
            width, height = torch.randint(size // 6, size // 2, (2,), generator=generator).tolist()
            x = int(torch.randint(0, size - width, (1,), generator=generator))
            y = int(torch.randint(0, size - height, (1,), generator=generator))
            label = int(torch.randint(0, 3, (1,), generator=generator))
            images[index, label, y : y + height, x : x + width] = 0.9
            boxes.append([x, y, x + width, y + height])
            labels.append(label)
        targets.append(
            {
                "boxes": torch.tensor(boxes, dtype=torch.float32),
                "labels": torch.tensor(labels),
                "iscrowd": torch.tensor([False, index == 0]),
                "occluded": torch.tensor([False, True]),
            }
        )
    attributes = {"timeofday": ["daytime", "night"] * (count // 2)}
    return {"image": images, "target": targets, "attributes": attributes,
            "sample_id": torch.arange(count)}  # fmt: skip


def test_loss_decreases_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    model = YOLOXDetector(num_classes=3, learning_rate=3e-3, warmup_steps=0)
    optimizer = model.configure_optimizers()["optimizer"]
    batch = make_batch()
    model.train()
    losses = []
    # SimOTA re-assigns anchors as the predictions move, so the loss is noisy step to step.
    for _ in range(20):
        loss = model.training_step(batch, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < 0.85 * losses[0], losses


def test_validation_step_returns_torchmetrics_detections() -> None:
    model = YOLOXDetector(num_classes=3, confidence_threshold=0.0, max_detections=7).eval()
    batch = make_batch(count=2)
    batch["image"] = batch["image"][:, :, :, :48]  # 64 x 48: padded to 64 x 64 inside
    with torch.no_grad():
        outputs = model.validation_step(batch, 0)
    assert outputs["target"] is batch["target"]
    assert len(outputs["preds"]) == 2
    for prediction in outputs["preds"]:
        assert set(prediction) == {"boxes", "scores", "labels"}
        assert prediction["boxes"].shape == (7, 4) and prediction["boxes"].dtype == torch.float32
        assert prediction["labels"].dtype == torch.int64 and prediction["scores"].shape == (7,)
        assert prediction["boxes"][:, 0::2].max() <= 48 and prediction["boxes"][:, 1::2].max() <= 64
        assert bool((prediction["scores"][:-1] >= prediction["scores"][1:]).all())


def test_letterbox_scales_targets_and_predictions() -> None:
    model = YOLOXDetector(num_classes=3, input_size=[32, 64], confidence_threshold=0.0).eval()
    images = torch.rand(1, 3, 64, 64)
    inputs, ratio = model._network_input(images)
    assert inputs.shape == (1, 3, 32, 64) and ratio == 0.5
    assert float(inputs[0, :, :, 32:].min()) == 114.0  # YOLOX's grey padding right of the image
    target = {"boxes": torch.tensor([[8.0, 8.0, 40.0, 24.0], [0.0, 0.0, 2.0, 60.0]]),
              "labels": torch.tensor([2, 1]), "iscrowd": torch.tensor([False, False])}  # fmt: skip
    rows = model._training_targets([target], ratio, torch.device("cpu"))
    # The second box is 1 input pixel wide after scaling: dropped, as YOLOX's own transform does.
    assert rows.tolist() == [[[2.0, 12.0, 8.0, 16.0, 8.0]]]
    with torch.no_grad():
        (prediction,) = model(images)
    assert prediction["boxes"].max() <= 64 and len(prediction["boxes"]) > 0


def test_crowd_boxes_are_left_out_of_training_targets() -> None:
    model = YOLOXDetector(num_classes=3)
    batch = make_batch(count=2)
    rows = model._training_targets(batch["target"], 1.0, torch.device("cpu"))
    assert rows.shape == (2, 2, 5)
    assert (
        rows[0, 1].abs().sum() == 0 and rows[1, 1].abs().sum() > 0
    )  # image 0's second box is crowd


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 0}, r"`num_classes` to be a positive int, but got 0"),
        ({"width": -1.0}, r"`width` to be a positive float, but got -1.0"),
        ({"depth": "0.33"}, r"`depth` to be a positive float, but got '0.33'"),
        ({"depthwise": 1}, r"`depthwise` to be a bool, but got 1"),
        ({"learning_rate": 0}, r"`learning_rate` to be a positive float"),
        ({"weight_decay": -0.1}, r"`weight_decay` to be a non-negative float"),
        ({"warmup_steps": -1}, r"`warmup_steps` to be a non-negative int"),
        ({"confidence_threshold": 1.5}, r"`confidence_threshold` to be a float in \[0, 1\]"),
        ({"nms_threshold": True}, r"`nms_threshold` to be a float in \[0, 1\]"),
        ({"max_detections": 0}, r"`max_detections` to be a positive int"),
        ({"input_size": 100}, r"`input_size` to be None, an int or \(height, width\).*got 100"),
        ({"input_size": [64, 64, 64]}, r"`input_size`.*got \[64, 64, 64\]"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        YOLOXDetector(**kwargs)


def test_bad_batches() -> None:
    model = YOLOXDetector(num_classes=2)
    batch = make_batch(count=2)
    batch["target"][0]["labels"] = torch.tensor([0, 2])
    with pytest.raises(ValueError, match=r"label in \[0, 2\), but got \[0, 2\]\. HINT: set `num_"):
        model.training_step(batch, 0)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*got shape \(2, 64, 64\)"):
        model.training_step({**batch, "image": batch["image"][:, 0]}, 0)


# ------------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_fit_with_fairness_monitor_writes_detection_slices(tmp_path: Path, run_ok: Any) -> None:
    script = shutil.which("lightning-insight", path=str(Path(sys.executable).parent))
    assert script is not None
    run_ok(
        [script, "fit", "--config", str(CONFIG),
         "--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2",
         "--trainer.enable_progress_bar=false", "--data.init_args.image_size=64",
         "--data.init_args.batch_size=4",
         "--data.init_args.synthetic={num_train: 12, num_val: 8, num_test: 4}",
         "--trainer.callbacks.init_args.min_support=1",
         "--model.init_args.confidence_threshold=0.0001"],
        tmp_path,
    )  # fmt: skip
    (csv_path,) = tmp_path.glob("lightning_logs/version_*/insight/slices.csv")
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    dimensions = {row["dimension"] for row in rows}
    assert {"timeofday", "weather&timeofday", "occluded", "box_area:0,1024,9216,inf"} <= dimensions
    timeofday = [row for row in rows if row["dimension"] == "timeofday"]
    assert {"map", "map_50", "map_ratio"} <= {row["metric"] for row in timeofday}
    overall = {row["metric"]: float(row["value"]) for row in rows if row["dimension"] == "overall"}
    assert 0.0 <= overall["map"] <= 1.0 and overall["count"] == 8  # the 8 validation images


@pytest.mark.slow
def test_trained_yolox_shows_the_planted_pedestrian_gap(tmp_path: Path, run_ok: Any) -> None:
    """The case study, shortened to 6 epochs (~1 min): dark-skinned pedestrians at night are missed most.

    The synthetic data keep 15% of a dark-skinned pedestrian's contrast at night against 50% for a
    light-skinned one; a detector trained on them must show it in the monitor's slices.
    """
    script = shutil.which("lightning-insight", path=str(Path(sys.executable).parent))
    assert script is not None
    proc = run_ok(
        [script, "fit", "--config", str(CONFIG), "--trainer.max_epochs=6",
         "--trainer.enable_progress_bar=false"],
        tmp_path,
    )  # fmt: skip
    (csv_path,) = tmp_path.glob("lightning_logs/version_*/insight/slices.csv")
    with csv_path.open() as f:
        rows = [r for r in csv.DictReader(f) if r["epoch"] == "5"]
    recall = {
        r["slice"]: float(r["value"])
        for r in rows
        if r["dimension"] == "timeofday&skin_tone" and r["metric"] == "recall_50"
    }
    dark_night = recall["timeofday=night&skin_tone=dark"]
    for other in ("timeofday=night&skin_tone=light", "timeofday=daytime&skin_tone=dark"):
        assert dark_night < recall[other] - 0.1, (dark_night, other, recall[other])
    overall = {r["metric"]: float(r["value"]) for r in rows if r["dimension"] == "overall"}
    assert overall["recall_50"] > dark_night + 0.2  # the aggregate hides it
    assert "alerts: timeofday&skin_tone: recall_50_difference > 0.15" in proc.stdout
