"""Routes through TensorBoard's real WSGI app and werkzeug's test client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from lightning_insight.tensorboard_plugin import plugin as plugin_module

BASE = "/data/plugin/lightning_insight/"


def _get(client: Any, route: str, **params: Any) -> Any:
    query = urlencode(params, doseq=True)  # a list value repeats the parameter
    return client.get(BASE + route + (f"?{query}" if query else ""))


def _json(response: Any, code: int = 200) -> Any:
    assert response.status_code == code, response.data
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    return json.loads(response.data)


GOOD = [
    ("runs", {}),
    ("scalars", {"run": "baseline"}),
    ("slices", {"run": "baseline", "dimension": "weather", "metric": "accuracy"}),
    ("slices", {"run": "baseline", "dimension": "weather", "metric": "f1", "source": "test"}),
    ("slice_table", {"run": "with_mitigation/version_0", "epoch": 1}),
    ("fairness", {"run": "baseline"}),
    ("correlation", {"run": "baseline", "series": "train_loss,lr,val_loss", "lag": -1}),
    ("correlation", {"run": "baseline", "series": "train_loss,lr", "start": 1, "end": 3}),
    ("correlation", {"run": "baseline", "series": "train_loss,lr", "start": 2}),
    ("scatter", {"run": "baseline", "x": "lr", "y": "train_loss"}),
    ("scatter", {"run": "baseline", "x": "lr", "y": "train_loss", "lag": 1, "end": 3}),
    ("report", {"run": "baseline", "kind": "comparison", "epoch": 3}),
]


@pytest.mark.parametrize(("route", "params"), GOOD)
def test_every_route_answers_json(client: Any, route: str, params: dict[str, Any]) -> None:
    answer = _json(_get(client, route, **params))
    assert "error" not in answer
    if "run" in params:
        assert answer["run"] == params["run"]
    assert b"NaN" not in _get(client, route, **params).data  # strict JSON: NaN is null


def test_correlation_accepts_repeated_series(client: Any) -> None:
    answer = _json(client.get(BASE + "correlation?run=baseline&series=lr&series=train_loss"))
    assert answer["series"] == ["lr", "train_loss"]
    # repeated values are taken literally: a tag may hold a comma
    answer = _json(_get(client, "correlation", run="baseline", series=["loss,ema", "lr"]))
    assert answer["series"] == ["loss,ema", "lr"]
    assert answer["n"] == [[5, 5], [5, 5]]
    # a single value is a comma-separated list, so it cannot name that tag
    assert _json(_get(client, "correlation", run="baseline", series="loss,ema"), 404)["error"]


def test_correlation_and_scatter_restrict_to_start_end(client: Any) -> None:
    params = {"run": "baseline", "series": ["train_loss", "lr"]}
    full = _json(_get(client, "correlation", **params, lag=1))
    ranged = _json(_get(client, "correlation", **params, lag=1, start=1, end=3))
    assert (full["start"], full["end"]) == (None, None)
    assert (ranged["start"], ranged["end"]) == (1, 3)
    assert full["epochs"] == [0, 1, 2, 3] and ranged["epochs"] == [1, 2]
    assert ranged["n"] == [[2, 2], [2, 2]]
    scatter = _json(_get(client, "scatter", run="baseline", x="lr", y="train_loss", start=3))
    assert [p["epoch"] for p in scatter["points"]] == [3, 4]
    assert (scatter["start"], scatter["end"]) == (3, None)


NOT_FOUND = [
    ("scalars", {"run": "nope"}),
    ("scalars", {"run": "../baseline"}),
    ("scalars", {"run": "/etc/passwd"}),
    ("slices", {"run": "baseline", "dimension": "season", "metric": "accuracy"}),
    ("slices", {"run": "baseline", "dimension": "weather", "metric": "accuracy", "source": "x"}),
    ("slice_table", {"run": "baseline", "epoch": 99}),
    ("fairness", {"run": "with_mitigation"}),
    ("correlation", {"run": "baseline", "series": "lr,unknown_tag"}),
    ("scatter", {"run": "baseline", "x": "lr", "y": "unknown_tag"}),
    ("report", {"run": "baseline", "kind": "weather", "epoch": 1}),
    ("report", {"run": "baseline", "kind": "discovery", "epoch": 0}),
    ("report", {"run": "with_mitigation/version_0", "kind": "failure_modes", "epoch": 4}),
    ("image", {"run": "baseline", "tag": "insight/unknown", "step": 40}),
    ("image", {"run": "baseline", "tag": "insight/failure_modes/mode_0", "step": 41}),
    ("image", {"run": "../baseline", "tag": "insight/failure_modes/mode_0", "step": 50}),
]


@pytest.mark.parametrize(("route", "params"), NOT_FOUND)
def test_unknown_things_are_404(client: Any, route: str, params: dict[str, Any]) -> None:
    assert _json(_get(client, route, **params), 404)["error"]


BAD = [
    ("scalars", {}),
    ("slices", {"run": "baseline", "dimension": "weather"}),
    ("slice_table", {"run": "baseline"}),
    ("slice_table", {"run": "baseline", "epoch": "two"}),
    ("correlation", {"run": "baseline", "series": "lr"}),
    ("correlation", {"run": "baseline"}),
    ("correlation", {"run": "baseline", "series": "lr,train_loss", "lag": "1.5"}),
    ("correlation", {"run": "baseline", "series": "lr,train_loss", "lag": 5}),
    ("scatter", {"run": "baseline", "x": "lr", "y": "train_loss", "lag": -7}),
    ("scatter", {"run": "baseline", "x": "lr"}),
    ("correlation", {"run": "baseline", "series": "lr,train_loss", "start": "a"}),
    ("correlation", {"run": "baseline", "series": "lr,train_loss", "end": "1.5"}),
    ("correlation", {"run": "baseline", "series": "lr,train_loss", "start": 3, "end": 2}),
    ("scatter", {"run": "baseline", "x": "lr", "y": "train_loss", "start": "first"}),
    ("scatter", {"run": "baseline", "x": "lr", "y": "train_loss", "end": "2e0"}),
    ("scatter", {"run": "baseline", "x": "lr", "y": "train_loss", "start": 4, "end": 0}),
    ("report", {"run": "baseline", "kind": "discovery"}),
    ("image", {"run": "baseline", "tag": "insight/failure_modes/mode_0", "step": "last"}),
    ("image", {"run": "baseline", "tag": "insight/failure_modes/mode_0", "step": 50, "index": "a"}),
]


@pytest.mark.parametrize(("route", "params"), BAD)
def test_bad_parameters_are_400(client: Any, route: str, params: dict[str, Any]) -> None:
    error = _json(_get(client, route, **params), 400)["error"]
    assert "Expected" in error


def test_image_route_serves_png_of_the_report_url(client: Any) -> None:
    answer = _json(_get(client, "report", run="baseline", kind="failure_modes", epoch=4))
    (image,) = answer["images"]
    response = client.get(BASE + image["url"])
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.data.startswith(b"\x89PNG\r\n\x1a\n")


@pytest.fixture
def static_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "static"
    (root / "vendor").mkdir(parents=True)
    (root / "index.js").write_text("export function render() {}\n")
    (root / "charts.js").write_text("export const x = 1;\n")
    (root / "vendor" / "LICENSE.txt").write_text("MIT\n")
    (tmp_path / "secret.py").write_text("SECRET = 1\n")
    monkeypatch.setattr(plugin_module, "STATIC_DIR", root)
    return root


def test_static_files_are_served_as_javascript(client: Any, static_dir: Path) -> None:
    for path, body in (
        ("index.js", "export function render"),
        ("static/charts.js", "export const"),
    ):
        response = client.get(BASE + path)
        assert response.status_code == 200, path
        assert response.headers["Content-Type"].startswith("text/javascript")
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.data.decode().startswith(body)
    response = client.get(BASE + "static/vendor/LICENSE.txt")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize(
    "path",
    [
        "static/../secret.py",
        "static/%2e%2e/secret.py",
        "static/..%2fsecret.py",
        "static/%2e%2e%2f%2e%2e%2fplugin.py",
        "static//etc/passwd",
        "static/%2Fetc%2Fpasswd",
        "static/vendor/../../secret.py",
        "static/missing.js",
        "static/",
        "static/.hidden",
        "secret.py",
        "static/index.js/../../secret.py",
    ],
)
def test_static_traversal_is_404(client: Any, static_dir: Path, path: str) -> None:
    response = client.get(BASE + path)
    assert response.status_code == 404, (path, response.data)
    assert b"SECRET" not in response.data


def test_index_js_is_404_without_a_frontend(
    client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plugin_module, "STATIC_DIR", tmp_path / "absent")
    assert _json(client.get(BASE + "index.js"), 404)["error"]


def test_plugin_listing_and_html_csp(client: Any) -> None:
    listing = json.loads(client.get("/data/plugins_listing").data)
    entry = listing["lightning_insight"]
    assert entry["enabled"] is True
    assert entry["tab_name"] == "InsightBoard"
    assert entry["loading_mechanism"] == {
        "type": "IFRAME", "module_path": "/data/plugin/lightning_insight/index.js"
    }  # fmt: skip
    # The iframe page that hosts index.js is TensorBoard's own HTML, sent through Respond with a CSP.
    response = client.get("/data/plugin_entry.html?name=lightning_insight")
    assert response.status_code == 200
    csp = response.headers["Content-Security-Policy"]
    assert "script-src" in csp and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
