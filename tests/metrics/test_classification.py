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
