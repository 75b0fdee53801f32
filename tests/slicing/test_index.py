from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_insight.metrics.classification import SlicedConfusion, slice_counts
from lightning_insight.slicing import SliceIndex, parse_slice_spec, parse_slice_specs


def test_spec_names_and_bins() -> None:
    spec = parse_slice_spec(" weather & age:0,18,65,inf ")
    assert spec.name == "weather&age:0,18,65,inf"
    assert spec.attributes[1].bin_labels() == ("[0,18)", "[18,65)", "[65,inf)")
    assert parse_slice_spec("score:0,0.5,1").attributes[0].bin_labels() == ("[0,0.5)", "[0.5,1]")
    assert spec.slice_name(("rainy", "[0,18)")) == "weather=rainy&age=[0,18)"


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("", "non-empty"),
        ("weather&&night", "to be a name"),
        ("age:0,x", "comma-separated numbers"),
        ("age:5", "at least two bin edges"),
        ("age:5,3", "strictly increasing"),
        ("a&a", "at most once"),
    ],
)
def test_bad_specs(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_slice_spec(spec)


def test_bad_spec_list() -> None:
    with pytest.raises(ValueError, match="at least one dimension"):
        parse_slice_specs([])
    with pytest.raises(ValueError, match="each dimension once"):
        parse_slice_specs(["weather", "weather"])
    with pytest.raises(TypeError, match="to be a string"):
        parse_slice_spec(3)  # type: ignore[arg-type]


def test_ids_stable_across_epochs() -> None:
    index = SliceIndex(parse_slice_specs(["w"]))
    index.attribute_ids({"w": ["b", "a"]}, 2)
    index.align(None)
    assert index.values("w") == ["a", "b"]
    ids = index.attribute_ids({"w": ["c", "a", "b"]}, 3)
    assert ids["w"].tolist() == [2, 0, 1]
    index.align(None)
    assert index.values("w") == ["a", "b", "c"]


def _pending(index: SliceIndex) -> dict[str, list[object]]:
    return {k: list(v) for k, v in index._pending.items()}


def test_values_unseen_on_one_rank_do_not_shift_ids() -> None:
    specs = parse_slice_specs(["w"])
    rank0, rank1 = SliceIndex(specs), SliceIndex(specs)
    ids0 = rank0.attribute_ids({"w": ["fog", "sun"]}, 2)["w"]
    ids1 = rank1.attribute_ids({"w": ["rain", "sun", "snow"]}, 3)["w"]
    everyone = [_pending(rank0), _pending(rank1)]
    remap0 = rank0.align(lambda _: everyone)["w"]
    remap1 = rank1.align(lambda _: everyone)["w"]
    assert rank0.values("w") == rank1.values("w") == ["fog", "rain", "snow", "sun"]
    assert [rank0.values("w")[i] for i in remap0[ids0]] == ["fog", "sun"]
    assert [rank1.values("w")[i] for i in remap1[ids1]] == ["rain", "sun", "snow"]


def _decoded(index: SliceIndex, ids: torch.Tensor) -> list[object]:
    remap = index.align(None).get("g")
    ids = remap[ids] if remap is not None else ids
    return [index.values("g")[i] for i in ids.tolist()]


def test_array_inputs_match_list_inputs() -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(0, 5, 100)
    for given in (values.tolist(), values, torch.from_numpy(values), values * 10**9):
        index = SliceIndex(parse_slice_specs(["g"]))
        decoded = _decoded(index, index.attribute_ids({"g": given}, 100)["g"])
        assert decoded == list(np.asarray(given).tolist())
    strings = values.astype(str)
    index = SliceIndex(parse_slice_specs(["g"]))
    assert _decoded(index, index.attribute_ids({"g": strings}, 100)["g"]) == strings.tolist()


def test_attribute_errors() -> None:
    index = SliceIndex(parse_slice_specs(["g"]), max_slices=3)
    with pytest.raises(RuntimeError, match=r"Expected attribute 'g'.*found were \['h'\]"):
        index.attribute_ids({"h": [1]}, 1)
    with pytest.raises(ValueError, match=r"one value per prediction \(2\), but got 3"):
        index.attribute_ids({"g": [1, 2, 3]}, 2)
    with pytest.raises(ValueError, match="at most max_slices=3 distinct values"):
        index.attribute_ids({"g": ["a", "b", "c", "d"]}, 4)
    with pytest.raises(TypeError, match="got float values"):
        SliceIndex(parse_slice_specs(["g"])).attribute_ids({"g": np.array([0.5, 1.5])}, 2)
    with pytest.raises(TypeError, match="to hold numbers"):
        SliceIndex(parse_slice_specs(["g:0,1"])).attribute_ids({"g": ["x"]}, 1)


def test_streaming_equals_one_shot_with_growing_vocabulary() -> None:
    rng = np.random.default_rng(1)
    n = 900
    probs = rng.random(n)
    target = rng.integers(0, 2, n)
    w = rng.choice([f"w{i}" for i in range(12)], n)  # more values than the first capacity (4)
    t = rng.choice(["day", "night"], n)
    specs = parse_slice_specs(["w", "w&t"])
    expected = slice_counts(probs, target, {"w": w, "t": t}, task="binary", specs=specs)
    metric = SlicedConfusion(task="binary", specs=specs)
    for start in range(0, n, 64):
        s = slice(start, start + 64)
        metric.update(
            torch.tensor(probs[s]), torch.tensor(target[s]), {"w": list(w[s]), "t": list(t[s])}
        )
    got = metric.compute()
    for dim in ("w", "w&t"):
        names_e, counts_e = expected.dimensions[dim]
        names_g, counts_g = got.dimensions[dim]
        assert dict(zip(names_e, counts_e.tolist(), strict=True)) == dict(
            zip(names_g, counts_g.tolist(), strict=True)
        )
    assert got.overall.tolist() == expected.overall.tolist()


def test_repeated_sample_ids_are_counted_once() -> None:
    specs = parse_slice_specs(["g"])
    metric = SlicedConfusion(task="binary", specs=specs)
    metric.update(
        torch.tensor([0.9, 0.1]), torch.tensor([1, 1]), {"g": ["a", "b"]}, torch.tensor([0, 1])
    )
    metric.update(
        torch.tensor([0.9, 0.6]), torch.tensor([1, 0]), {"g": ["a", "b"]}, torch.tensor([0, 2])
    )
    out = metric.compute()
    names, counts = out.dimensions["g"]
    assert names == ["g=a", "g=b"]
    assert counts.tolist() == [[0, 0, 0, 1], [0, 1, 1, 0]]
    assert out.overall.tolist() == [0, 1, 1, 1]


def test_invalid_rows_after_the_first_batch_are_reported_at_compute() -> None:
    metric = SlicedConfusion(task="binary", specs=parse_slice_specs(["g"]))
    metric.update(torch.tensor([0.9]), torch.tensor([1]), {"g": ["a"]})
    metric.update(torch.tensor([float("nan"), 1.5]), torch.tensor([1, 0]), {"g": ["a", "a"]})
    with pytest.raises(
        ValueError, match="1 with preds containing NaN, 1 with binary probabilities outside"
    ):
        metric.compute()


def test_reset_keeps_ids_and_reports_absent_values_with_count_zero() -> None:
    metric = SlicedConfusion(task="binary", specs=parse_slice_specs(["g", "g&h"]))
    metric.update(torch.tensor([0.9, 0.2]), torch.tensor([1, 0]), {"g": ["a", "b"], "h": [1, 2]})
    first = metric.compute()
    metric.reset()
    metric.update(torch.tensor([0.9]), torch.tensor([1]), {"g": ["b"], "h": [2]})
    second = metric.compute()
    assert second.dimensions["g"][0] == first.dimensions["g"][0] == ["g=a", "g=b"]
    assert second.dimensions["g"][1].sum(axis=1).tolist() == [0, 1]
    # an intersection seen once keeps being reported (count 0) so plots do not lose the series
    assert second.dimensions["g&h"][0] == ["g=a&h=1", "g=b&h=2"]
