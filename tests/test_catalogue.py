"""Catalogue photos against a floor, the not-a-product judgement on a few outliers and products, and its API fields."""

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from fashioncat.catalogue import SHOP_KINDS, bench_subset, catalogue_views, shop_photo
from fashioncat.ood import OUTLIER_KINDS, outlier_photo
from fashioncat.photos import prepare
from fashioncat.serving import Engine

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "fashioncat-int8.onnx"
FLOOR = 0.7  # of 10 photos per kind (one per class); the shipped model reads 85-94% of each kind (bench/results)


@pytest.fixture(scope="module")
def shipped():
    if not SHIPPED.exists():
        pytest.skip("models/fashioncat-int8.onnx is not exported")
    return Engine(SHIPPED)


def test_every_kind_of_shop_photo_is_read(shipped, test_set):
    "One test image per class rendered as every kind: each kind's accuracy at or above the floor."
    x, y = test_set
    i = bench_subset(y, 1)
    views = catalogue_views(x[i], SHOP_KINDS, seed=7)
    acc = {k: float((shipped.predict(v).argmax(1) == y[i]).mean()) for k, (v, _) in views.items()}
    low = {k: a for k, a in acc.items() if a < FLOOR}
    assert not low, low
    assert np.mean(list(acc.values())) >= 0.85, acc


def test_not_a_product(shipped, test_set):
    "Outliers of every kind it does well on are flagged; real products (raw and as white-background photos) are not."
    if shipped.ood is None:
        pytest.skip("the shipped model has no not-a-product calibration (scripts/calibrate_ood.py --write)")
    x, _ = test_set

    def judged(srcs):
        return [
            r.get("is_product", False) for r in shipped.predict_images(srcs, errors="return")
        ]  # refused: not categorised

    outliers = [
        outlier_photo(k, s) for k in OUTLIER_KINDS if k not in ("digits", "size_chart", "barcode") for s in range(4)
    ]
    assert sum(judged(outliers)) <= 2, "outliers the shipped model takes for products"
    products = [x[i] for i in range(10)] + [shop_photo(x[i], "white", i) for i in range(10)]
    assert sum(judged(products)) >= 19


def test_api_answers_carry_is_product(model_path, tmp_path, test_set):
    "Every /predict answer has is_product and product_score; a non-product needs review."
    from app.core.config import Settings
    from app.main import create_app

    x, _ = test_set
    b = io.BytesIO()
    Image.fromarray(x[0]).save(b, "PNG")
    shapes, flat = outlier_photo("shapes", 1), outlier_photo("flat", 1)
    with TestClient(create_app(Settings(model_path=str(model_path), data_dir=str(tmp_path / "fb")), ui=False)) as c:
        r = c.post("/predict", files={"file": ("a.png", b.getvalue(), "image/png")}).json()
        assert {"is_product", "product_score"} <= set(r)
        if Engine(model_path).ood is not None:
            assert r["is_product"] is True and 0.5 <= r["product_score"] <= 1
            f = c.post("/predict", files={"file": ("s.jpg", shapes, "image/jpeg")}).json()
            assert f["is_product"] is False and f["needs_review"] is True
            items = c.post("/predict/batch", files=[("files", ("s.jpg", shapes, "image/jpeg"))]).json()["results"]
            assert items[0]["is_product"] is False
        f = c.post("/predict", files={"file": ("f.jpg", flat, "image/jpeg")})  # an empty frame: no item to categorise
        assert f.status_code == 422 and f.json()["error"] == "no_item"


def test_prepare_reads_the_renderer_deterministically():
    "The same seed gives the same bytes and so the same view; different seeds, different photos."
    x = np.zeros((28, 28), np.uint8)
    x[4:24, 8:20] = 200
    assert shop_photo(x, "sweep", 3) == shop_photo(x, "sweep", 3)
    assert (prepare(shop_photo(x, "sweep", 3)) == prepare(shop_photo(x, "sweep", 3))).all()
    assert shop_photo(x, "sweep", 3) != shop_photo(x, "sweep", 4)


def _with_parameters_only(model_path: Path, path: Path) -> Engine:
    "The shipped model's engine, after its copy at `path` has lost the distance's graph (its parameters stay)."
    onnx = pytest.importorskip("onnx")
    from fashioncat.ood import strip_ood_graph

    shipped = Engine(model_path)
    if not shipped._ood_graph:
        pytest.skip("the shipped model carries no not-a-product graph (scripts/calibrate_ood.py --write)")
    onnx.save(strip_ood_graph(onnx.load(str(model_path))), str(path))
    return shipped


def test_ood_from_the_graph_and_from_the_metadata_agree(model_path, tmp_path, test_set):
    "A model whose distance is in its graph, and the same model with the parameters only, judge alike."
    shipped = _with_parameters_only(model_path, tmp_path / "meta_only.onnx")
    meta_only = Engine(tmp_path / "meta_only.onnx")
    assert not meta_only._ood_graph and meta_only.ood is not None
    x, _ = test_set
    views = np.concatenate([x[:200], np.stack([prepare(outlier_photo(k, 3)) for k in ("banner", "label", "scribble")])])
    (pg, dg), (pm, dm) = shipped.predict_scored(views), meta_only.predict_scored(views)
    np.testing.assert_allclose(pg, pm, atol=1e-6)
    np.testing.assert_allclose(dg, dm, rtol=1e-3, atol=1e-3)
    t = shipped.ood["threshold"]
    assert ((dg > t) == (dm > t)).mean() >= 0.99


def test_graph_only_writes_the_graph_again_from_the_metadata(model_path, tmp_path, test_set):
    "`calibrate_ood.py --graph-only`: a model left with the parameters only gets its graph back, and judges as it did."
    import importlib.util

    import onnx

    from fashioncat.ood import OOD_PREFIX

    path = tmp_path / "copy.onnx"  # no shipped file's name: models/export_report.json is left alone
    shipped = _with_parameters_only(model_path, path)
    assert not Engine(path)._ood_graph
    spec = importlib.util.spec_from_file_location("calibrate_ood", ROOT / "scripts" / "calibrate_ood.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--graph-only", "--models", str(path)])
    assert sum(n.name.startswith(OOD_PREFIX) for n in onnx.load(str(path)).graph.node) <= 36
    again = Engine(path)
    assert again._ood_graph and again.ood["threshold"] == shipped.ood["threshold"]
    x, _ = test_set
    (p0, d0), (p1, d1) = shipped.predict_scored(x[:300]), again.predict_scored(x[:300])
    np.testing.assert_array_equal(p1, p0)
    np.testing.assert_allclose(d1, d0, atol=1e-4)
    bare = onnx.load(str(path))
    del bare.metadata_props[:]
    onnx.save(bare, str(path))
    with pytest.raises(SystemExit, match="no fashioncat.ood metadata"):
        script.main(["--graph-only", "--models", str(path)])


def test_a_model_calibrated_with_unknown_statistics_is_refused(model_path, tmp_path):
    "Metadata naming a view statistic this version cannot compute: a clear ModelError at load, not wrong answers."
    onnx = pytest.importorskip("onnx")
    import json

    from fashioncat.serving import ModelError

    m = onnx.load(str(model_path))
    props = {p.key: p.value for p in m.metadata_props}
    if "fashioncat.ood" not in props:
        pytest.skip("the shipped model has no not-a-product calibration")
    ood = json.loads(props["fashioncat.ood"])
    ood["stats"] = [*ood.get("stats", []), "colourfulness"]
    props["fashioncat.ood"] = json.dumps(ood)
    onnx.helper.set_model_props(m, props)
    onnx.save(m, str(tmp_path / "future.onnx"))
    with pytest.raises(ModelError, match="colourfulness.*recalibrate"):
        Engine(tmp_path / "future.onnx")
