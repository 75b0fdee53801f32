from __future__ import annotations

import pytest
import torch

from lightning_insight.batch import BatchData, read_batch


def test_dict_outputs_and_dict_batch_with_attributes() -> None:
    batch = {
        "image": torch.zeros(2, 3),
        "target": torch.tensor([0, 1]),
        "sample_id": torch.tensor([5, 6]),
        "attributes": {"weather": ["fog", "sun"], "scene": ["a", "b"]},
    }
    data = read_batch({"preds": torch.tensor([0.1, 0.9])}, batch, attribute_names=["weather"])
    assert data.target.tolist() == [0, 1]
    assert dict(data.attributes) == {"weather": ["fog", "sun"]}
    assert data.sample_ids.tolist() == [5, 6]


def test_named_keys_and_target_in_outputs() -> None:
    batch = {"x": torch.zeros(2), "weather": ["fog", "sun"]}
    data = read_batch({"preds": [0.2, 0.3], "target": [1, 0]}, batch, attribute_names=["weather"])
    assert data.target == [1, 0] and data.sample_ids is None


def test_tuple_batch_with_meta_and_tensor_outputs() -> None:
    batch = (torch.zeros(2, 3), torch.tensor([1, 0]), {"weather": ["a", "b"], "sample_id": [1, 2]})
    data = read_batch(torch.tensor([0.7, 0.1]), batch, attribute_names=["weather"])
    assert data.target.tolist() == [1, 0] and data.sample_ids == [1, 2]


def test_adapter() -> None:
    def adapter(outputs: object, batch: object) -> dict[str, object]:
        return {"preds": [0.5], "target": [1], "attributes": {"w": ["x"]}}

    assert read_batch(None, None, attribute_names=["w"], adapter=adapter).preds == [0.5]
    assert read_batch(
        None, None, attribute_names=["w"], adapter=lambda o, b: BatchData([1], [1], {})
    ).preds == [1]
    with pytest.raises(
        RuntimeError, match=r"to provide \['attributes'\], but it gave keys \['preds', 'target'\]"
    ):
        read_batch(
            None, None, attribute_names=["w"], adapter=lambda o, b: {"preds": 1, "target": 1}
        )
    with pytest.raises(TypeError, match="BatchData or a mapping, but got int"):
        read_batch(None, None, attribute_names=["w"], adapter=lambda o, b: 3)


def test_missing_keys_name_what_was_found() -> None:
    with pytest.raises(RuntimeError, match=r"to hold 'preds', but found keys \['loss'\]"):
        read_batch({"loss": 1.0}, {"target": [1]}, attribute_names=[])
    with pytest.raises(
        RuntimeError,
        match=r"Expected attributes \['timeofday'\].*batch\['attributes'\], but found keys \['weather'\]",
    ):
        read_batch(
            {"preds": [1]},
            {"target": [1], "attributes": {"weather": ["a"]}},
            attribute_names=["timeofday"],
        )
    with pytest.raises(RuntimeError, match="Expected a target"):
        read_batch({"preds": [1]}, {"attributes": {"w": [1]}}, attribute_names=["w"])
    with pytest.raises(RuntimeError, match="dict or an \\(x, y, meta\\) tuple"):
        read_batch({"preds": [1], "target": [1]}, torch.zeros(1), attribute_names=["w"])
    with pytest.raises(RuntimeError, match="a dict with 'preds' or a tensor"):
        read_batch([1, 2], {"target": [1]}, attribute_names=[])
