def test_interval_and_support_are_the_issue_s_tuples() -> None:
    from lightning_insight.comparison.results import ComparisonCluster

    cluster = ComparisonCluster(
        cluster_id=0, regions=5, images=3, attribution_a=0.1, attribution_b=0.4, difference=0.3,
        lower=0.2, upper=0.5, effect_size=1.0, accuracy_a=0.9, accuracy_b=0.5, exemplars=(),
    )  # fmt: skip
    assert cluster.interval == (0.2, 0.5) and cluster.support == (5, 3)
