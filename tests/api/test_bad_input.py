"""Client input that once made the API answer 500: huge JSON integers, lone surrogates, long file names."""

import base64
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.api.uploads import FILENAME_MAX
from app.core.config import Settings
from app.main import create_app

ROOT = Path(__file__).resolve().parents[2]
IMG = (ROOT / "app" / "examples" / "1_trouser.png").read_bytes()
B64 = base64.b64encode(IMG).decode()
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def client(model_path, tmp_path_factory):
    app = create_app(Settings(model_path=str(model_path), ui_enabled=False), ui=False)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
def test_huge_json_integer_is_400(client, path):
    body = f'{{"n": {"7" * 5000}, "image_base64": "{B64}", "images": [{{"image_base64": "{B64}"}}]}}'
    r = client.post(path, content=body.encode(), headers=JSON)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "bad_request" and "number too large" in r.json()["detail"]


def test_lone_surrogate_filename_predict_is_400(client):
    body = f'{{"filename": "a\\ud800.png", "image_base64": "{B64}"}}'
    r = client.post("/predict", content=body.encode(), headers=JSON)
    assert r.status_code == 400, r.text
    assert "not valid Unicode" in r.json()["detail"]


def test_lone_surrogate_filename_batch_is_an_item_error(client):
    body = f'{{"images": [{{"filename": "a\\udfff.png", "image_base64": "{B64}"}}, {{"image_base64": "{B64}"}}]}}'
    r = client.post("/predict/batch", content=body.encode(), headers=JSON)
    assert r.status_code == 200, r.text
    first, second = r.json()["results"]
    assert first["status"] == 400 and "not valid Unicode" in first["detail"] and first["filename"] == "a?.png"
    assert second["category"] == "Trouser"


def test_same_filename_limit_on_both_routes(client):
    name = "a" * (FILENAME_MAX - 3) + ".png"
    one = client.post("/predict", files={"file": (name, IMG, "image/png")})
    assert one.status_code == 400 and one.json()["error"] == "filename_too_long", one.text
    batch = client.post("/predict/batch", files={"files": (name, IMG, "image/png")})
    assert batch.status_code == 200 and batch.json()["results"][0]["error"] == "filename_too_long", batch.text
    js = client.post("/predict", json={"image_base64": B64, "filename": name})
    assert js.status_code == 400 and js.json()["error"] == "filename_too_long"
    ok = client.post("/predict", files={"file": ("a" * (FILENAME_MAX - 4) + ".png", IMG, "image/png")})
    assert ok.status_code == 200


def test_file_name_past_the_part_header_limit_is_the_same_400_on_both_routes(client):
    name = "a" * 10_000 + ".png"  # over python-multipart's 4 KB part header: the general parser refuses the body
    for path, field in (("/predict", "file"), ("/predict/batch", "files")):
        r = client.post(path, files={field: (name, IMG, "image/png")})
        assert r.status_code == 400 and "part header over 4 KB" in r.json()["detail"], (path, r.text)
