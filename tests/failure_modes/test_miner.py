from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightning_insight.failure_modes import FailureModeMiner, FailureModeReport


def planted_data(
    n: int = 4000, d: int = 64, noise: float = 0.02, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian features; the model fails where x7 > 0.5 and x23 <= -0.3, plus a small noise rate."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    hard = (x[:, 7] > 0.5) & (x[:, 23] <= -0.3)
    failures = hard ^ (rng.random(n) < noise)
    target = rng.integers(0, 3, size=n)
    preds = np.where(failures, (target + 1) % 3, target)
    return x, preds, target


def assert_recovers_planted(report: FailureModeReport) -> None:
    top = report.modes[0]
    assert top.importance == max(mode.importance for mode in report.modes)
    conditions = {feature: [(t, d) for f, t, d in top.path if f == feature] for feature in (7, 23)}
    assert any(abs(t - 0.5) < 0.1 and d == ">" for t, d in conditions[7]), top.path
    assert any(abs(t + 0.3) < 0.1 and d == "<=" for t, d in conditions[23]), top.path
    assert top.error_rate > 0.8
    assert top.error_rate > 3 * report.base_error_rate[top.group]


def test_recovers_planted_failure_mode_with_one_group() -> None:
    x, preds, target = planted_data()
    miner = FailureModeMiner(
        grouping="all", num_features=10, max_samples_per_group=2000, mutual_information="knn"
    )
    report = miner.fit(x, preds, target)
    assert_recovers_planted(report)
    assert set(miner.selected_features_["all"][:2].tolist()) == {7, 23}
    assert report.grouping == "all"
    assert list(report.base_error_rate) == ["all"]


def test_recovers_planted_failure_mode_with_explicit_group() -> None:
    x, preds, target = planted_data()
    report = FailureModeMiner(mutual_information="binned").fit(
        x, preds, target, groups=np.full(len(x), "val")
    )
    assert report.grouping == "explicit"
    assert report.modes[0].group == "val"
    assert_recovers_planted(report)


def oracle_check(
    miner: FailureModeMiner,
    report: FailureModeReport,
    x: np.ndarray,
    failures: np.ndarray,
    groups: np.ndarray,
    ids: np.ndarray,
) -> None:
    """Recompute every number of the report with numpy from the raw failure indicator."""
    id_failed = dict(zip(ids.tolist(), failures.tolist(), strict=True))
    x32 = x.astype(np.float32)  # scikit-learn's trees compare float32 values
    for entry in report.groups:
        rows = np.flatnonzero(groups == entry.group)
        assert entry.size == rows.size
        assert entry.failures == failures[rows].sum()
        assert entry.base_error_rate == pytest.approx(failures[rows].mean())
        modes = report.modes_of(entry.group)
        if not entry.fitted:
            assert not modes
            assert np.isnan(entry.aler)
            assert entry.group not in miner.trees_
            continue
        tree, columns = miner.trees_[entry.group], miner.selected_features_[entry.group]
        leaf_of = tree.apply(x[rows][:, columns])
        total = failures[rows].sum()
        assert {m.leaf_id for m in modes} == set(np.unique(leaf_of).tolist())
        aler = 0.0
        for mode in modes:
            members = leaf_of == mode.leaf_id
            er = failures[rows][members].mean()
            ec = failures[rows][members].sum() / total
            aler += er * ec
            assert mode.size == members.sum()
            assert mode.error_rate == pytest.approx(er)
            assert mode.error_coverage == pytest.approx(ec)
            assert mode.importance == pytest.approx(er * ec)
            assert sorted(ids[rows][members].tolist()) == list(mode.sample_ids)
            assert mode.error_rate == pytest.approx(
                np.mean([id_failed[i] for i in mode.sample_ids])
            )
            inside = np.ones(rows.size, dtype=bool)
            for feature, threshold, direction in mode.path:
                values = x32[rows, feature]
                inside &= values <= threshold if direction == "<=" else values > threshold
            assert np.array_equal(inside, members)
            assert len(mode.path_error_rates) == len(mode.path) + 1
            assert mode.path_error_rates[0] == pytest.approx(entry.base_error_rate)
            assert mode.path_error_rates[-1] == pytest.approx(er)
        assert entry.aler == pytest.approx(aler)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(20, 160),
    d=st.integers(1, 6),
    num_groups=st.integers(1, 3),
    failure_rate=st.floats(0.02, 0.98),
    max_depth=st.integers(1, 4),
    min_samples_leaf=st.integers(1, 6),
    method=st.sampled_from(["knn", "binned"]),
)
def test_rates_hold_on_random_data(
    seed: int,
    n: int,
    d: int,
    num_groups: int,
    failure_rate: float,
    max_depth: int,
    min_samples_leaf: int,
    method: str,
) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    target = rng.integers(0, 2, size=n)
    failures = rng.random(n) < failure_rate
    preds = np.where(failures, 1 - target, target)
    groups = rng.integers(0, num_groups, size=n)
    ids = rng.permutation(10 * n)[:n]
    miner = FailureModeMiner(
        max_depth=max_depth,
        num_features=3,
        min_samples_leaf=min_samples_leaf,
        min_failures=1,
        mutual_information=method,
        max_samples_per_group=50,
        random_state=seed % 1000,
    )
    report = miner.fit(x, preds, target, groups=groups, sample_ids=ids)
    importances = [mode.importance for mode in report.modes]
    assert importances == sorted(importances, reverse=True)
    for entry in report.groups:
        modes = report.modes_of(entry.group)
        if entry.fitted:
            assert entry.base_error_rate <= entry.aler + 1e-12
            assert entry.aler <= 1 + 1e-12
            assert sum(m.error_coverage for m in modes) == pytest.approx(1.0)
            assert sum(m.size for m in modes) == entry.size
            assert all(0.0 <= m.error_rate <= 1.0 for m in modes)
            assert len(modes) <= 2**max_depth
        else:
            assert entry.status in ("not enough failures", "no successes")
    oracle_check(miner, report, x, failures, groups, ids)
    json.dumps(report.to_dict(), allow_nan=False)


def test_oracle_on_planted_data_grouped_by_prediction() -> None:
    x, preds, target = planted_data(n=1500, d=30)
    ids = np.arange(1500) * 3 + 1000
    miner = FailureModeMiner(num_features=5, min_failures=5)
    report = miner.fit(x, preds, target, sample_ids=ids)
    assert report.grouping == "prediction"
    assert [entry.group for entry in report.groups] == [0, 1, 2]
    assert miner.groups_ == (0, 1, 2)
    oracle_check(miner, report, x, preds != target, preds, ids)


def test_grouping_by_label() -> None:
    x, preds, target = planted_data(n=600, d=30)
    miner = FailureModeMiner(grouping="label", num_features=4, min_failures=3)
    report = miner.fit(x, preds, target)
    assert report.grouping == "label"
    oracle_check(miner, report, x, preds != target, target, np.arange(600))


def test_group_with_few_failures_is_reported_not_raised() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    target = np.zeros(300, dtype=int)
    preds = target.copy()
    preds[:3] = 1  # 3 failures in group "a"
    groups = np.array(["a"] * 150 + ["b"] * 150)
    preds[150:200] = 1  # 50 failures in group "b"
    report = FailureModeMiner(min_failures=10).fit(x, preds, target, groups=groups)
    skipped = report.group("a")
    assert skipped.status == "not enough failures"
    assert skipped.reason == "not enough failures (3 < min_failures=10 of 150 samples)"
    assert (skipped.size, skipped.failures) == (150, 3)
    assert report.base_error_rate["a"] == pytest.approx(0.02)
    assert np.isnan(report.aler["a"])
    assert report.modes_of("a") == ()
    assert report.status == {"a": "not enough failures", "b": "fitted"}
    assert report.modes and all(mode.group == "b" for mode in report.modes)
    assert "group a: not enough failures" in report.markdown()


def test_group_where_everything_failed() -> None:
    x = np.random.default_rng(0).normal(size=(40, 3))
    target = np.zeros(40, dtype=int)
    report = FailureModeMiner(grouping="all", min_failures=1).fit(x, np.ones(40, dtype=int), target)
    assert report.status == {"all": "no successes"}
    assert report.base_error_rate == {"all": 1.0}
    assert report.modes == ()


def test_score_preds_are_argmax() -> None:
    x, preds, target = planted_data(n=800, d=30)
    scores = np.eye(3)[preds] * 2.0 + 0.1
    miner = FailureModeMiner(num_features=4, min_failures=3)
    assert miner.fit(x, scores, target).to_dict() == miner.fit(x, preds, target).to_dict()


def test_torch_inputs_match_numpy() -> None:
    x, preds, target = planted_data(n=800, d=30)
    scores = torch.nn.functional.one_hot(torch.from_numpy(preds), 3).float()
    x32 = x.astype(np.float32)
    miner = FailureModeMiner(num_features=4, min_failures=3)
    from_torch = miner.fit(torch.from_numpy(x32), scores, torch.from_numpy(target),
                           sample_ids=torch.arange(800)).to_dict()  # fmt: skip
    assert from_torch == miner.fit(x32, preds, target).to_dict()
    half = miner.fit(torch.from_numpy(x32).to(torch.bfloat16), preds, target)
    assert half.num_samples == 800


def test_fit_is_deterministic_and_sets_fitted_attributes() -> None:
    x, preds, target = planted_data(n=800, d=30)
    first = FailureModeMiner(num_features=5, min_failures=3, random_state=7)
    second = FailureModeMiner(num_features=5, min_failures=3, random_state=7)
    assert first.fit(x, preds, target).to_dict() == second.fit(x, preds, target).to_dict()
    assert first.report_ is not None
    assert first.n_features_in_ == 30
    assert first.failures_.sum() == (preds != target).sum()
    fitted = [entry.group for entry in first.report_.groups if entry.fitted]
    assert sorted(first.trees_) == sorted(first.selected_features_) == fitted
    assert all(first.selected_features_[g].shape == (5,) for g in fitted)
    assert all(
        tuple(first.selected_features_[g].tolist()) == first.report_.group(g).selected_features
        for g in fitted
    )


def test_feature_names_describe_paths() -> None:
    x, preds, target = planted_data(n=2000, d=30)
    names = [f"unit{i}" for i in range(30)]
    report = FailureModeMiner(grouping="all", num_features=5).fit(
        x, preds, target, feature_names=names
    )
    top = report.modes[0]
    assert report.feature_names == tuple(names)
    assert report.describe(top) == " and ".join(f"unit{f} {d} {t:.4g}" for f, t, d in top.path)
    assert {7, 23} <= {f for f, _, _ in top.path}


def test_parameters_are_stored_unchanged() -> None:
    miner = FailureModeMiner(max_depth=0, grouping="nope")
    assert (miner.max_depth, miner.grouping) == (0, "nope")


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"max_depth": 0}, r"`max_depth` to be an int >= 1, but got 0"),
        ({"num_features": 0}, r"`num_features` to be an int >= 1, but got 0"),
        ({"min_failures": 2.5}, r"`min_failures` to be an int >= 1, but got 2.5"),
        ({"min_samples_leaf": 0}, r"`min_samples_leaf` to be an int >= 1 or a float in \(0, 0.5\]"),
        ({"min_samples_leaf": 0.7}, r"`min_samples_leaf` .* but got 0.7"),
        ({"min_samples_leaf": True}, r"`min_samples_leaf` .* but got True"),
        ({"grouping": "cluster"}, r"`grouping` to be one of .*'cluster'.*HINT"),
        ({"max_samples_per_group": 1}, r"`max_samples_per_group` to be None or an int >= 2"),
        ({"mutual_information": "gini"}, r"`mutual_information` to be one of .*'gini'"),
        ({"random_state": -1}, r"`random_state` to be an int >= 0, but got -1"),
    ],
)
def test_bad_parameters_raise_in_fit(params: dict[str, object], match: str) -> None:
    miner = FailureModeMiner(**params)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=match):
        miner.fit(np.zeros((4, 2)), [0, 1, 0, 1], [0, 0, 0, 0])
    with pytest.raises(ValueError, match=match):
        miner.check_params()


def test_fractional_min_samples_leaf_is_accepted() -> None:
    x, preds, target = planted_data(n=500, d=30)
    report = FailureModeMiner(grouping="all", min_samples_leaf=0.1).fit(x, preds, target)
    assert all(mode.size >= 50 for mode in report.modes)


GOOD_X = np.zeros((4, 2))
GOOD_Y = np.array([0, 1, 0, 1])


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((np.array([["a", "b"]] * 4), GOOD_Y, GOOD_Y), {}, TypeError, r"`features` to hold numbers, but got dtype <U1"),
        ((GOOD_X > 0, GOOD_Y, GOOD_Y), {}, TypeError, r"`features` to hold numbers, but got dtype bool"),
        (([[1.0, 2.0], [3.0]], GOOD_Y, GOOD_Y), {}, TypeError, r"`features` to be a numpy array, a tensor or a sequence, but got list"),
        ((np.zeros(4), GOOD_Y, GOOD_Y), {}, ValueError, r"`features` to be 2-D \(N samples, D features\), but got shape \(4,\).*HINT"),
        ((np.zeros((0, 3)), [], []), {}, ValueError, r"at least one sample and one feature, but got shape \(0, 3\)"),
        ((np.array([[np.nan, 1], [0, 0], [np.inf, 0], [0, 0]]), GOOD_Y, GOOD_Y), {}, ValueError, r"finite, but got NaN or inf in 2 of 4 rows \(first rows: \[0, 2\]\)"),
        ((GOOD_X, [0, 1, 0], GOOD_Y), {}, ValueError, r"`preds` to hold one value per row of `features` \(4\), but got 3"),
        ((GOOD_X, np.zeros((3, 2)), GOOD_Y), {}, ValueError, r"`preds` to hold one row per row of `features` \(4\), but got 3"),
        ((GOOD_X, [0.2, 0.9, 0.1, 0.7], GOOD_Y), {}, ValueError, r"`preds` to be \(N,\) integer labels or \(N, C\) scores.*HINT: for binary"),
        ((GOOD_X, np.zeros((4, 2, 2)), GOOD_Y), {}, ValueError, r"`preds` to be \(N,\) integer class labels, but got shape \(4, 2, 2\)"),
        ((GOOD_X, GOOD_Y, [0, 1]), {}, ValueError, r"`target` to hold one value per row of `features` \(4\), but got 2"),
        ((GOOD_X, GOOD_Y, [0.5, 1, 0, 1]), {}, ValueError, r"`target` to be \(N,\) integer class labels"),
        ((GOOD_X, GOOD_Y, GOOD_Y), {"groups": [0, 1]}, ValueError, r"`groups` to be one group value per row of `features` \(4\), but got shape \(2,\)"),
        ((GOOD_X, GOOD_Y, GOOD_Y), {"groups": [0.5, 1, 2, 3]}, TypeError, r"`groups` to hold integers or strings, but got dtype float64"),
        ((GOOD_X, GOOD_Y, GOOD_Y), {"sample_ids": [1, 2, 3]}, ValueError, r"`sample_ids` to be one integer id per row of `features` \(4\), but got shape \(3,\)"),
        ((GOOD_X, GOOD_Y, GOOD_Y), {"sample_ids": [0.5, 1, 2, 3]}, ValueError, r"`sample_ids` .* of dtype float64"),
        ((GOOD_X, GOOD_Y, GOOD_Y), {"feature_names": ["a"]}, ValueError, r"`feature_names` to name the 2 feature columns, but got 1 names"),
    ],
)  # fmt: skip
def test_bad_inputs_raise(
    args: tuple[object, ...], kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        FailureModeMiner().fit(*args, **kwargs)


def test_explain_images_shows_the_group_top_activations_and_the_failures() -> None:
    # One feature is each image's brightness; the model fails on the brightest images.
    rng = np.random.default_rng(0)
    brightness = rng.uniform(0.05, 0.95, size=400)
    features = np.column_stack([brightness, rng.normal(size=(400, 3))])
    target = np.zeros(400, dtype=int)
    preds = (brightness > 0.7).astype(int)
    ids = np.arange(1000, 1400)
    miner = FailureModeMiner(grouping="all", max_depth=1, min_samples_leaf=5)
    report = miner.fit(features, preds, target, sample_ids=ids)
    assert report.modes[0].path[0][:1] == (0,) and report.modes[0].path[0][2] == ">"
    images = torch.as_tensor(brightness, dtype=torch.float32)[:, None, None, None].expand(
        -1, 1, 8, 8
    )
    # the monitor hands over a subset in another order: every 2nd sample, reversed
    subset = np.arange(0, 400, 2)[::-1].copy()
    picture = miner.explain_images(0, images[subset], sample_ids=ids[subset], top_k=6)
    assert picture is not None and picture.dtype == np.uint8
    tile = 10  # 8 pixels + a 1-pixel frame on each side
    assert picture.shape == (2 * tile, 12 * tile, 3)  # one feature row, one failure row of 12
    shown = [int(picture[tile // 2, column * tile + tile // 2, 0]) for column in range(6)]
    expected = np.sort(brightness[subset])[::-1][:6]
    assert shown == [int(np.rint(value * 255)) for value in expected.astype(np.float32)]
    # the failure row is framed red and shows only failures (brightness > 0.7) of the subset
    assert picture[tile, 0].tolist() == [214, 39, 40]
    failures = [picture[tile + tile // 2, c * tile + tile // 2, 0] / 255 for c in range(12)]
    assert all(value > 0.7 for value in failures)
    with pytest.raises(ValueError, match=r"`mode` to be a rank in \[0, 2\), but got 5"):
        miner.explain_images(5, images, sample_ids=ids)
    assert miner.explain_images(0, images[:3], sample_ids=[1, 2, 3]) is None  # unknown ids
    with pytest.raises(RuntimeError, match="call fit first"):
        FailureModeMiner().explain_images(0, images, sample_ids=ids)
