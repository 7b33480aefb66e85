"""Admission control: bodies and decodes take from the memory budget first; what cannot get it in time is a 503 with
Retry-After, counted in the metrics, and small requests still pass."""

import base64
import io
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.core.admission import BUDGET, DECODE_FACTOR, JSON_FACTOR, Budget, Overloaded, body_cost, decode_cost
from app.core.config import Settings
from app.main import create_app

ROOT = Path(__file__).resolve().parents[2]
SMALL = (ROOT / "app" / "examples" / "1_trouser.png").read_bytes()


def png(w, h, mode="RGBA") -> bytes:
    b = io.BytesIO()
    Image.new(mode, (w, h)).save(b, "PNG")
    return b.getvalue()


def test_decode_cost_from_the_header():
    assert decode_cost(png(1000, 500, "RGBA"), 40_000_000) == 1000 * 500 * 4 * DECODE_FACTOR
    assert decode_cost(png(1000, 500, "RGB"), 40_000_000) == 1000 * 500 * 4 * DECODE_FACTOR  # Pillow keeps 4 bytes
    assert decode_cost(png(1000, 500, "L"), 40_000_000) == 1000 * 500 * DECODE_FACTOR
    assert decode_cost(png(1000, 500), 1000) == 0  # refused by its header before decoding anyway
    assert decode_cost(b"GIF89a" + b"\0" * 5, 10**6) == 0 and decode_cost(b"junk", 10**6) == 0
    b = io.BytesIO()
    Image.new("RGB", (4000, 3000)).save(b, "JPEG")
    assert 0 < decode_cost(b.getvalue(), 40_000_000) < 4000 * 3000  # JPEGs decode reduced, in grayscale
    assert body_cost(1000, 500, json_body=False) == 500 and body_cost(None, 500, json_body=True) == 500 * JSON_FACTOR


def test_budget_waits_then_refuses_and_releases():
    b = Budget(100, wait_s=0.05)
    assert b.take(60, "a") == 60
    with pytest.raises(Overloaded) as e:
        b.take(50, "b")
    assert e.value.status == 503 and e.value.headers == {"Retry-After": "2"}
    with pytest.raises(Overloaded):
        b.take(101, "more than the whole budget")
    threading.Timer(0.01, b.release, (60,)).start()
    b.wait_s = 5
    assert b.take(100, "c") == 100 and b.used == 100
    b.release(100)
    assert b.used == 0


@pytest.fixture
def small_budget(model_path):
    app = create_app(Settings(model_path=str(model_path), ui_enabled=False, memory_budget_mb=16, admission_wait_s=0.2))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
    BUDGET.configure(340 * 2**20, 2.0)


def test_a_decode_over_the_free_budget_is_503_and_counted(small_budget):
    c = small_budget
    big = png(2000, 2000)  # 2000 x 2000 RGBA: 32 MB to decode, over a 16 MB budget
    r = c.post("/predict", files={"file": ("big.png", big, "image/png")})
    assert r.status_code == 503 and r.json()["error"] == "overloaded" and r.headers["retry-after"] == "2", r.text
    batch = c.post("/predict/batch", files=[("files", ("big.png", big, "image/png")), ("files", ("s.png", SMALL, "image/png"))])  # fmt: skip
    first, second = batch.json()["results"]
    assert batch.status_code == 200 and first["status"] == 503 and second["category"] == "Trouser"
    assert c.post("/predict", files={"file": ("s.png", SMALL, "image/png")}).status_code == 200
    m = c.get("/metrics").text
    assert 'fashioncat_overloaded_total{stage="decode"} 2.0' in m
    assert BUDGET.used == 0  # everything given back


def test_a_body_over_the_free_budget_is_503_before_it_is_read(small_budget):
    c = small_budget
    BUDGET.take(15 * 2**20, "held by another request")
    try:
        images = [{"image_base64": base64.b64encode(SMALL).decode()}] * 2000  # ~1.5 MB of JSON: x3 over what is free
        r = c.post("/predict/batch", json={"images": images[:64]} | {"pad": "x" * 600_000})
        assert r.status_code == 503 and r.headers["retry-after"] == "2", r.text
        assert c.post("/predict", files={"file": ("s.png", SMALL, "image/png")}).status_code == 200  # small ones pass
    finally:
        BUDGET.release(15 * 2**20)
    assert 'fashioncat_overloaded_total{stage="body"} 1.0' in c.get("/metrics").text
    assert c.post("/predict/batch", json={"images": images[:3]}).status_code == 200
