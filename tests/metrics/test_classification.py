from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fairlearn.metrics import MetricFrame, false_positive_rate, true_positive_rate
from sklearn.metrics import accuracy_score

from lightning_insight import slice_metrics
from lightning_insight.metrics.classification import SlicedConfusion, classification_metrics
from lightning_insight.slicing import parse_slice_specs


def test_batches_missing_groups_count_like_fairlearn() -> None:
    # torchmetrics 1.9's group metrics renumber groups per batch; here each batch holds one group only.
    rng = np.random.default_rng(0)
    n = 600
    group = np.repeat(["a", "b", "c"], n // 3)
    target = rng.integers(0, 2, n)
    preds = rng.random(n)
    metric = SlicedConfusion(task="binary", specs=parse_slice_specs(["g"]))
    for start in range(0, n, 50):
        s = slice(start, start + 50)
        metric.update(torch.tensor(preds[s]), torch.tensor(target[s]), {"g": group[s].tolist()})
    names, counts = metric.compute().dimensions["g"]
    values = classification_metrics(counts, task="binary")
    frame = MetricFrame(
        metrics={"accuracy": accuracy_score, "tpr": true_positive_rate, "fpr": false_positive_rate},
        y_true=target,
        y_pred=(preds >= 0.5).astype(int),
        sensitive_features=group,
    )
    for i, name in enumerate(names):
        row = frame.by_group.loc[name.split("=")[1]]
        for metric_name in ("accuracy", "tpr", "fpr"):
            assert abs(values[metric_name][i] - row[metric_name]) < 1e-12


def test_empty_slice_is_nan_not_zero() -> None:
    report = slice_metrics(
        [0.9, 0.1], [1, 0], {"age": [5, 30]}, task="binary", slices=["age:0,18,65,inf"]
    )
    empty = report.slices["age=[65,inf)"]
    assert empty["count"] == 0
    assert all(math.isnan(v) for k, v in empty.items() if k != "count")
    assert "age=[65,inf)" in report.excluded  # count 0 < min_support 1


def test_update_reads_nothing_back_to_the_host_after_the_first_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metric = SlicedConfusion(task="binary", specs=parse_slice_specs(["w", "w&age:0,18,inf"]))
    age = torch.tensor([3.0, 40.0, 70.0, 12.0])
    metric.update(
        torch.tensor([0.9, 0.2, 0.6, 0.4]),
        torch.tensor([1, 0, 0, 1]),
        {"w": ["a", "b", "a", "b"], "age": age},
        torch.arange(4),
    )

    def host_read(*args: object, **kwargs: object) -> None:
        raise AssertionError("update read a tensor back to the host")

    with monkeypatch.context() as patched:
        for name in ("item", "tolist", "__bool__", "numpy"):
            patched.setattr(torch.Tensor, name, host_read)
        metric.update(
            torch.tensor([0.3, 0.8]),
            torch.tensor([0, 1]),
            {"w": ["b", "c"], "age": torch.tensor([50.0, 5.0])},
            torch.arange(4, 6),
        )
    out = metric.compute()
    assert out.overall.sum() == 6
    assert out.dimensions["w"][0] == ["w=a", "w=b", "w=c"]


def test_multiclass_streaming_with_scores_infers_classes() -> None:
    metric = SlicedConfusion(task="multiclass", specs=parse_slice_specs(["g"]))
    scores = torch.tensor([[0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.2, 0.2, 0.6]])
    metric.update(scores, torch.tensor([1, 0, 1]), {"g": ["x", "x", "y"]})
    out = metric.compute()
    assert out.num_classes == 3
    values = classification_metrics(out.dimensions["g"][1], task="multiclass", num_classes=3)
    assert values["accuracy"].tolist() == [1.0, 0.0]


def test_shapes_and_task_are_checked() -> None:
    with pytest.raises(
        ValueError, match=r"`task` to be one of \['binary', 'multiclass'\], but got 'detection'"
    ):
        SlicedConfusion(task="detection", specs=parse_slice_specs(["g"]))
    metric = SlicedConfusion(task="binary", specs=parse_slice_specs(["g"]))
    with pytest.raises(ValueError, match=r"shape \(N,\) for task='binary', but got preds \(2, 3\)"):
        metric.update(torch.rand(2, 3), torch.tensor([0, 1]), {"g": ["a", "b"]})
    with pytest.raises(ValueError, match=r"one sample id per prediction \(2\), but got 3"):
        metric.update(torch.rand(2), torch.tensor([0, 1]), {"g": ["a", "b"]}, torch.arange(3))


def _as_dict(counts: object) -> dict[str, dict[str, list[int]]]:
    return {
        dim: dict(zip(names, block.tolist(), strict=True))
        for dim, (names, block) in counts.dimensions.items()  # type: ignore[attr-defined]
    }


CASES = [
    (["a", "c"], True),  # widening int range across chunks, negative values, an int16 array
    (["a", "age:0,18,65"], True),  # bins with values outside them
    (["d", "b"], True),  # strings and a bool tensor
    (["a", "b&c", "d&age:0,18,65", "c"], False),  # joint count too large for its rows: exact path
]


@pytest.mark.parametrize("chunk", [64, 1000, 1 << 16])
@pytest.mark.parametrize(("slices", "joint"), CASES)
def test_one_shot_joint_path_equals_streaming_path_across_chunks(
    monkeypatch: pytest.MonkeyPatch, chunk: int, slices: list[str], joint: bool
) -> None:
    import lightning_insight.metrics.classification as classification
    from lightning_insight.metrics.classification import slice_counts

    monkeypatch.setattr(classification, "_CHUNK_ROWS", chunk)
    rng = np.random.default_rng(chunk)
    n = 5000
    a = torch.from_numpy(rng.integers(-3, 3, n) * np.linspace(1, 40, n).astype(np.int64))
    b = torch.from_numpy(rng.random(n) < 0.3)
    c = rng.integers(0, 5, n).astype(np.int16)
    d = rng.choice(["x", "y", "z"], n).tolist()
    age = torch.from_numpy(rng.uniform(-10, 100, n))
    attributes = {"a": a, "b": b, "c": c, "d": d, "age": age}
    preds = torch.from_numpy(rng.random(n))
    target = torch.from_numpy(rng.integers(0, 2, n))
    specs = parse_slice_specs(slices)
    taken = classification._joint_slice_counts(
        preds,
        target,
        attributes,
        task="binary",
        specs=specs,
        threshold=0.5,
        num_classes=None,
        max_slices=1000,
    )
    assert (taken is not None) == joint
    one_shot = slice_counts(preds, target, attributes, task="binary", specs=specs)
    metric = SlicedConfusion(task="binary", specs=specs)
    for start in range(0, n, 512):
        s = slice(start, start + 512)
        metric.update(preds[s], target[s], {k: v[s] for k, v in attributes.items()})
    streamed = metric.compute()
    assert _as_dict(one_shot) == _as_dict(streamed)
    assert one_shot.overall.tolist() == streamed.overall.tolist()
    y_pred = (preds.numpy() >= 0.5).astype(int)
    for dim in one_shot.dimensions:
        if "&" in dim or ":" in dim:
            continue
        names, block = one_shot.dimensions[dim]
        raw = (
            np.asarray(attributes[dim]).astype(str)
            if dim != "b"
            else np.asarray(attributes[dim]).astype(bool).astype(str)
        )
        for name, row in zip(names, block.tolist(), strict=True):
            m = raw == name.split("=")[1]
            cells = 2 * target.numpy()[m] + y_pred[m]
            assert row == np.bincount(cells, minlength=4).tolist(), name
