"""The REST API, end to end through the ASGI app (`with TestClient(app)` runs the lifespan that loads the model)."""

import base64
import io
import json
import logging
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.core.config import Settings
from app.core.logs import JSONFormatter
from app.main import create_app
from fashioncat.photos import PHOTO_KINDS, catalogue_photo, prepare
from fashioncat.serving import Engine

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "app" / "examples").glob("*.png"))  # real test images, one per category


def make_app(model_path, tmp_path, ui=False, **kw):
    return create_app(Settings(model_path=str(model_path), data_dir=str(tmp_path / "feedback"), **kw), ui=ui)


@pytest.fixture(scope="module")
def client(model_path, tmp_path_factory):
    with TestClient(make_app(model_path, tmp_path_factory.mktemp("app"))) as c:
        yield c


@pytest.fixture(scope="module")
def engine(model_path):
    return Engine(model_path)


def png(a: np.ndarray) -> bytes:
    b = io.BytesIO()
    Image.fromarray(a).save(b, "PNG")
    return b.getvalue()


def bomb(w=20_000, h=20_000) -> bytes:
    "A PNG header claiming w x h pixels, with a tiny body."

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + ihdr + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b"")


def metric(text: str, name: str, **labels) -> float:
    "The value of one sample in Prometheus exposition text (0 when absent)."
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)  # label values may hold braces
        if m:
            got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1) or ""))
            if all(got.get(k) == v for k, v in labels.items()):
                return float(m.group(2))
    return 0.0


# --- system routes ---


def test_health_ready_model(client, engine):
    assert client.get("/health").json() == {"status": "ok"}
    r = client.get("/ready")
    assert r.status_code == 200 and r.json() == {"ready": True, "model_version": engine.info.version, "ui": "disabled"}
    for path in ("/health", "/ready"):  # load balancers' health checks often use HEAD
        r = client.head(path)
        assert (r.status_code, r.content) == (200, b""), path
    m = client.get("/model").json()
    assert m["version"] == engine.info.version and m["sha256"] == engine.info.sha256
    assert [c["category"] for c in m["categories"]][:2] == ["T-shirt/top", "Trouser"]
    assert m["categories"][9]["category_ru"] == "Ботинки"
    assert m["review_threshold_effective"] == engine.review_threshold
    assert m["limits"]["max_batch"] == 64 and "path" not in m


def test_the_shipped_model_serves(tmp_path, test_set):
    "The committed model loads in the service, describes itself in short, and categorises real test images."
    path = ROOT / "models" / "fashioncat-int8.onnx"
    if not path.exists():
        pytest.skip("models/fashioncat-int8.onnx is not exported")
    x, y = test_set
    with TestClient(make_app(path, tmp_path)) as c:
        m = c.get("/model").json()
        assert m["file"] == "fashioncat-int8.onnx" and 0 < m["metrics"]["valid_accuracy"] <= 1
        assert re.fullmatch(r"[\w+ ().,=-]{1,120}", m["architecture"]), m["architecture"]  # a short metric label
        hits = [
            c.post("/predict", files={"file": ("a.png", png(x[i]), "image/png")}).json()["class_index"] == y[i]
            for i in range(100)
        ]
        assert sum(hits) >= 88, sum(hits)  # the real model, not the stand-in (~80%): >= 88% of 100 real test images


# --- /predict on real photos ---


@pytest.mark.parametrize("kind", PHOTO_KINDS)
def test_predict_each_kind_of_photo(client, engine, photos, kind):
    data, _ = photos[kind]
    r = client.post("/predict", files={"file": (f"item.{kind}", data, "application/octet-stream")})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = engine.result(engine.predict(prepare(data)[None])[0])  # the library's answer for the same bytes
    assert body["category"] == expected["category"] and body["category_ru"] == expected["category_ru"]
    assert body["confidence"] == pytest.approx(expected["confidence"], abs=1e-5)
    assert [t["category"] for t in body["top_k"]] == [t["category"] for t in expected["top_k"]]
    assert body["top_k"][0]["probability"] == body["confidence"] and len(body["top_k"]) == 3
    assert body["needs_review"] == (body["confidence"] < engine.review_threshold)
    assert body["model_version"] == engine.info.version
    assert body["request_id"] == r.headers["x-request-id"]
    w, h = Image.open(io.BytesIO(data)).size
    assert body["image"]["bytes"] == len(data) and {body["image"]["width"], body["image"]["height"]} == {w, h}


def test_photos_are_categorised_as_well_as_raw_images(client, engine, test_set, sample):
    "Through the API, catalogue photos score within 10 points of the raw 28x28 images (the notebook's test is 3)."
    x, y = test_set
    files = [
        ("files", (f"{i}.img", catalogue_photo(x[i], PHOTO_KINDS[k % 9], seed=k), "image/*"))
        for k, i in enumerate(sample)
    ]
    r = client.post("/predict/batch", files=files)
    assert r.status_code == 200
    got = np.array([res["class_index"] for res in r.json()["results"]])
    acc_api, acc_raw = (got == y[sample]).mean(), (engine.predict(x[sample]).argmax(1) == y[sample]).mean()
    assert acc_api >= acc_raw - 0.10, (acc_api, acc_raw)


def test_predict_json_base64_and_data_url(client, photos):
    data, _ = photos["png"]
    a = client.post("/predict", files={"file": ("a.png", data, "image/png")}).json()
    b64 = base64.b64encode(data).decode()
    b = client.post("/predict", json={"image_base64": b64, "filename": "a.png"})
    c = client.post("/predict", json={"image_base64": "data:image/png;base64," + b64})
    wrapped = "\n".join(b64[i : i + 76] for i in range(0, len(b64), 76)) + "\n"  # as `base64 photo.png` prints it
    d = client.post("/predict", json={"image_base64": wrapped})
    assert b.status_code == c.status_code == d.status_code == 200, d.json()
    assert a["category"] == b.json()["category"] == c.json()["category"] == d.json()["category"]
    assert a["confidence"] == b.json()["confidence"] and b.json()["filename"] == "a.png"


def test_dataset_image_passes_through(client, engine, test_set):
    x, _ = test_set
    body = client.post("/predict", files={"file": ("x.png", png(x[0]), "image/png")}).json()
    assert body["confidence"] == pytest.approx(float(engine.predict(x[:1])[0].max()), abs=1e-5)


# --- every bad input gets its 4xx ---

TRUNC = catalogue_photo(np.full((28, 28), 200, np.uint8), "jpeg")[:400]
BAD = [
    ("empty", b"", 400, "empty"),
    ("text", b"just some text, not a picture", 415, "not_an_image"),
    ("pdf", b"%PDF-1.7\n...", 415, "unsupported_format"),
    ("heic", b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64, 415, "unsupported_format"),
    ("svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>', 415, "unsupported_format"),
    ("truncated_jpeg", TRUNC, 422, "corrupt_image"),
    ("corrupt_gif", b"GIF89a" + b"\x01" * 30, 422, "corrupt_image"),
    ("bomb_400mp", bomb(), 413, "too_many_pixels"),
    ("over_40mp", bomb(8_000, 6_000), 413, "too_many_pixels"),
    ("blank_white", png(np.full((600, 400), 255, np.uint8)), 422, "no_item"),
    ("bmp_lookalike_text", b"BMW owners manual, page 1", 415, "not_an_image"),
]


@pytest.mark.parametrize("name,data,status,code", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs(client, name, data, status, code):
    r = client.post("/predict", files={"file": (name, data, "application/octet-stream")})
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code and body["request_id"] == r.headers["x-request-id"] and len(body["detail"]) > 20
    j = client.post("/predict", json={"image_base64": base64.b64encode(data).decode()})
    assert (j.status_code, j.json()["error"]) == (status, code)


def test_oversized_upload_is_refused(client):
    big = b"\xff\xd8\xff" + b"\x00" * (10 * 2**20)  # 10 MiB + 3 bytes: over the 10 MiB limit
    r = client.post("/predict", files={"file": ("big.jpg", big, "image/jpeg")})
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    assert "10,485,760" in r.json()["detail"]
    r = client.post("/predict", json={"image_base64": base64.b64encode(big + b"\x00" * 4 * 2**20).decode()})
    assert r.status_code == 413 and "request body" in r.json()["detail"]


def test_oversized_chunked_upload_is_refused_while_streaming(client):
    def chunks():
        yield b'{"image_base64": "'
        for _ in range(20):
            yield b"A" * 2**20

    r = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "too_large"


def test_oversized_image_is_refused_before_decoding(model_path, tmp_path, monkeypatch):
    "Over FASHIONCAT_MAX_BYTES, on every way in: 413 from the byte count, the image never opened."
    import app.api.uploads
    import app.core.service

    def never(*a, **kw):
        raise AssertionError("an oversized image was opened")

    monkeypatch.setattr(app.core.service, "photo_view", never)
    data = EXAMPLES[7].read_bytes()  # 5,533 bytes
    b64 = base64.b64encode(data).decode()
    with TestClient(make_app(model_path, tmp_path, max_bytes=1000)) as c:
        for direct_max in (app.api.uploads._DIRECT_MAX, 0):  # read directly, then by the general multipart parser
            monkeypatch.setattr(app.api.uploads, "_DIRECT_MAX", direct_max)
            r = c.post("/predict", files={"file": ("a.png", data, "image/png")})
            assert (r.status_code, r.json()["error"]) == (413, "too_large")
            assert "the limit is 1,000" in r.json()["detail"]
        r = c.post("/predict", json={"image_base64": b64})
        assert (r.status_code, r.json()["error"]) == (413, "too_large")
        for kw in ({"files": [("files", ("a.png", data, "image/png"))]}, {"json": {"images": [{"image_base64": b64}]}}):
            (item,) = c.post("/predict/batch", **kw).json()["results"]
            assert (item["error"], item["status"]) == ("too_large", 413)


def test_batch_body_limit(model_path, tmp_path):
    "FASHIONCAT_MAX_BATCH_BYTES bounds a /predict/batch body, declared (Content-Length) or streamed (chunked)."
    import httpx

    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in EXAMPLES * 2]
    assert sum(len(f[1][1]) for f in files) > 200_000
    with TestClient(make_app(model_path, tmp_path, max_batch_bytes=200_000)) as c:
        assert c.post("/predict/batch", files=files[:3]).json()["count"] == 3
        r = c.post("/predict/batch", files=files)  # refused from its Content-Length, before it is read
        assert (r.status_code, r.json()["error"]) == (413, "too_large") and "the limit is 200,000" in r.json()["detail"]
        req = httpx.Request("POST", "http://x/predict/batch", files=files)
        body = req.read()
        chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))  # no Content-Length
        r = c.post("/predict/batch", content=chunks, headers={"content-type": req.headers["content-type"]})
        assert (r.status_code, r.json()["error"]) == (413, "too_large") and "exceeds 200,000" in r.json()["detail"]


@pytest.mark.parametrize(
    "kwargs,status,code",
    [
        ({"content": b"abc", "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type"),
        ({"json": {"image": "x"}}, 400, "bad_request"),
        ({"json": {"image_base64": "not base64!"}}, 400, "bad_base64"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "bad_request"),
        ({"files": {"other": ("a.png", b"x", "image/png")}}, 400, "bad_request"),
        ({"data": {"file": "a text field"}, "files": {"x": ("a", b"", "text/plain")}}, 400, "bad_request"),
    ],
    ids=["text_plain", "json_without_image", "bad_base64", "invalid_json", "no_file_field", "file_as_text"],
)
def test_malformed_requests(client, kwargs, status, code):
    r = client.post("/predict", **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"] == code and r.json()["detail"]


def test_json_filename_must_be_text_and_nesting_is_bounded(client):
    "A non-string filename is the request's (or that item's) 400, not a 500; so is JSON nested 100,000 deep."
    b64 = base64.b64encode(EXAMPLES[1].read_bytes()).decode()
    r = client.post("/predict", json={"image_base64": b64, "filename": 5})
    assert (r.status_code, r.json()["error"]) == (400, "bad_request")
    assert '"filename" must be a string' in r.json()["detail"]
    images = [{"image_base64": b64, "filename": ["a.png"]}, {"image_base64": b64, "filename": "b.png"}]
    r = client.post("/predict/batch", json={"images": images})
    assert r.status_code == 200 and r.json()["errors"] == 1
    bad, ok = r.json()["results"]
    assert ("filename" in bad, bad["error"], bad["status"]) == (False, "bad_request", 400)
    assert "images[0].filename must be a string" in bad["detail"]
    assert (ok["filename"], ok["category"]) == ("b.png", "Trouser")
    deep = "[" * 100_000 + "]" * 100_000
    for path in ("/predict", "/predict/batch"):
        r = client.post(path, content=deep, headers={"content-type": "application/json"})
        assert (r.status_code, r.json()["error"]) == (400, "bad_request") and "nested too deeply" in r.json()["detail"]


def test_predict_takes_one_file(client):
    "Two (or five) `file` parts to /predict are refused, not read as the last one; /predict/batch takes them."
    files = [("file", (p.name, p.read_bytes(), "image/png")) for p in EXAMPLES[:5]]
    for n in (2, 5):
        r = client.post("/predict", files=files[:n])
        assert (r.status_code, r.json()["error"]) == (400, "bad_request"), r.text
        assert "/predict takes one image" in r.json()["detail"] and "/predict/batch" in r.json()["detail"]
    mixed = [files[0], ("files", files[1][1]), files[2]]  # "file" and "files" parts alike, in order
    body = client.post("/predict/batch", files=mixed).json()
    assert [x["filename"] for x in body["results"]] == [p.name for p in EXAMPLES[:3]] and body["errors"] == 0


# --- the direct paths for a small single-file upload ---


def _multipart(parts: list[tuple[bytes, bytes]], boundary: bytes = b"xYz0-9", tail: bytes = b"\r\n") -> bytes:
    "A multipart body from (part headers, part data) pairs."
    out = b"".join(b"--" + boundary + b"\r\n" + h + b"\r\n\r\n" + d + b"\r\n" for h, d in parts)
    return out + b"--" + boundary + b"--" + tail


_DISP = b'Content-Disposition: form-data; name="file"; filename="a.png"'
_DATA = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) + b"\r\n--not-the-boundary\r\n"  # bytes that look like structure
MULTIPART = {  # (content type, body, read directly?)
    "usual": (
        "multipart/form-data; boundary=xYz0-9",
        _multipart([(_DISP + b"\r\nContent-Type: image/png", _DATA)]),
        True,
    ),
    "no_part_type": ("multipart/form-data; boundary=xYz0-9", _multipart([(_DISP, _DATA)]), True),
    "no_tail": ("multipart/form-data; boundary=xYz0-9", _multipart([(_DISP, _DATA)], tail=b""), True),
    "lower_case": (
        "multipart/form-data;boundary=xYz0-9",
        _multipart([(_DISP.lower().replace(b"a.png", b"A.png"), _DATA)]),
        True,
    ),
    "quoted_boundary": ('multipart/form-data; boundary="xYz0-9"', _multipart([(_DISP, _DATA)]), False),
    "charset": ("multipart/form-data; boundary=xYz0-9; charset=latin-1", _multipart([(_DISP, _DATA)]), False),
    "two_parts": ("multipart/form-data; boundary=xYz0-9", _multipart([(_DISP, _DATA), (_DISP, b"second")]), False),
    "text_field_too": (
        "multipart/form-data; boundary=xYz0-9",
        _multipart([(_DISP, _DATA), (b'Content-Disposition: form-data; name="note"', b"hi")]),
        False,
    ),
    "other_name": (
        "multipart/form-data; boundary=xYz0-9",
        _multipart([(_DISP.replace(b'"file"', b'"File"'), _DATA)]),
        False,
    ),
    "text_not_file": (
        "multipart/form-data; boundary=xYz0-9",
        _multipart([(_DISP.split(b"; filename")[0], b"text")]),
        False,
    ),
    "windows_path": (
        "multipart/form-data; boundary=xYz0-9",
        _multipart([(_DISP.replace(b"a.png", b"C:\\x\\a.png"), _DATA)]),
        False,
    ),
    "utf8_name": (
        "multipart/form-data; boundary=xYz0-9",
        _multipart([(_DISP.replace(b"a.png", "é.png".encode()), _DATA)]),
        False,
    ),
    "extra_header": ("multipart/form-data; boundary=xYz0-9", _multipart([(_DISP + b"\r\nX-Other: 1", _DATA)]), False),
    "preamble": ("multipart/form-data; boundary=xYz0-9", b"preamble\r\n" + _multipart([(_DISP, _DATA)]), False),
    "epilogue": ("multipart/form-data; boundary=xYz0-9", _multipart([(_DISP, _DATA)], tail=b"\r\nepilogue"), False),
    "unclosed": ("multipart/form-data; boundary=xYz0-9", _multipart([(_DISP, _DATA)])[:-10], False),
}


@pytest.mark.parametrize("name", list(MULTIPART))
def test_single_file_reads_what_the_multipart_parser_reads(name):
    "The direct read gives the general parser's (filename, bytes), and declines every other shape of body."
    import asyncio

    from starlette.datastructures import Headers, UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    from app.api.uploads import single_file

    ctype, body, direct = MULTIPART[name]

    async def parse():
        async def stream():
            yield body

        form = await MultiPartParser(Headers({"content-type": ctype}), stream(), max_files=4, max_fields=4).parse()
        part = form.get("file")
        return (part.filename, await part.read()) if isinstance(part, UploadFile) else ("not a file", len(form))

    try:
        parsed = asyncio.run(parse())
    except MultiPartException as e:
        parsed = ("malformed", e.message)
    got = single_file(body, ctype)
    assert (got is not None) == direct
    if direct:
        assert got == parsed and got[1] == _DATA


@pytest.mark.parametrize("name", list(MULTIPART))
def test_every_shape_of_multipart_gets_the_same_answer(client, photos, name):
    "Read directly or by the general parser, the API answers each body as it did with the parser alone."
    import app.api.uploads

    ctype, body, _ = MULTIPART[name]
    body = body.replace(_DATA, photos["png"][0])
    answers = []
    for direct_max in (app.api.uploads._DIRECT_MAX, 0):  # 0: every body goes to the general parser
        old, app.api.uploads._DIRECT_MAX = app.api.uploads._DIRECT_MAX, direct_max
        try:
            r = client.post("/predict", content=body, headers={"content-type": ctype})
        finally:
            app.api.uploads._DIRECT_MAX = old
        j = r.json()
        answers.append((r.status_code, j.get("category"), j.get("filename"), j.get("error"), j.get("detail")))
    assert answers[0] == answers[1]


def test_small_pngs_are_categorised_on_the_event_loop(client, photos, test_set, monkeypatch):
    "A Fashion-MNIST-sized PNG skips the threadpool; photos, large PNGs and other formats still go there."
    import app.api.routes.predict
    from app.core.service import INLINE_MAX_PIXELS, inline_ok

    x, _ = test_set
    small = png(x[0])
    assert inline_ok(small) and not inline_ok(photos["png"][0]) and not inline_ok(photos["jpeg"][0])
    assert not inline_ok(bomb()) and not inline_ok(bomb(65, 64)) and inline_ok(bomb(64, 64)) and not inline_ok(b"")
    assert (
        INLINE_MAX_PIXELS <= 64 * 64
    )  # a few tenths of a millisecond of CPU at most (bench figures in app/core/service.py)
    hops = []
    real = app.api.routes.predict.run_in_threadpool

    async def counted(*args, **kwargs):
        hops.append(args[0].__name__)
        return await real(*args, **kwargs)

    monkeypatch.setattr(app.api.routes.predict, "run_in_threadpool", counted)
    a = client.post("/predict", files={"file": ("a.png", small, "image/png")})
    b = client.post("/predict", files={"file": ("b.jpg", photos["jpeg"][0], "image/jpeg")})
    assert a.status_code == b.status_code == 200 and hops == ["categorise"]


# --- batch ---


def test_batch_with_one_bad_item(client, engine, photos):
    kinds = ["jpeg", "webp", "transparent"]
    files = [("files", (f"{k}.img", photos[k][0], "image/*")) for k in kinds]
    files.insert(2, ("files", ("broken.jpg", TRUNC, "image/jpeg")))
    r = client.post("/predict/batch", files=files)
    assert r.status_code == 200
    body = r.json()
    assert (body["count"], body["errors"]) == (4, 1)
    assert [x["index"] for x in body["results"]] == [0, 1, 2, 3]
    bad = body["results"][2]
    assert (bad["filename"], bad["error"], bad["status"]) == (
        "broken.jpg",
        "corrupt_image",
        422,
    ) and "category" not in bad
    for res, k in zip([body["results"][i] for i in (0, 1, 3)], kinds):
        assert res["category"] == engine.result(engine.predict(prepare(photos[k][0])[None])[0])["category"]


def test_batch_json(client, photos):
    images = [{"image_base64": base64.b64encode(photos[k][0]).decode(), "filename": k} for k in ("png", "gif")]
    images.append({"image_base64": "###", "filename": "junk"})
    body = client.post("/predict/batch", json={"images": images}).json()
    assert body["count"] == 3 and body["errors"] == 1 and body["results"][2]["error"] == "bad_base64"
    assert [x["filename"] for x in body["results"]] == ["png", "gif", "junk"]


def test_batch_limits(model_path, tmp_path, photos):
    with TestClient(make_app(model_path, tmp_path, max_batch=3)) as c:
        files = [("files", (f"{i}.png", photos["png"][0], "image/png")) for i in range(4)]
        r = c.post("/predict/batch", files=files)
        assert r.status_code == 413 and r.json()["error"] == "too_many_images" and "more than 3" in r.json()["detail"]
        assert c.post("/predict/batch", files=files[:3]).json()["count"] == 3
        r = c.post("/predict/batch", files=files * 2)  # past the multipart parser's own count (max_batch + 1)
        assert r.status_code == 413 and r.json()["error"] == "too_many_images", r.text
        assert r.json()["detail"] == "more than 3 images in one batch; split it into several requests"
        r = c.post("/predict/batch", files=files[:1], data={f"note{i}": "x" for i in range(8)})  # text, not images
        assert r.status_code == 400 and r.json()["error"] == "bad_request", r.text
        assert r.json()["detail"].startswith("more than 4 text fields in one form"), r.text
        r = c.post("/predict/batch", json={"images": []})
        assert r.status_code == 400 and "empty" in r.json()["detail"]


# --- API keys ---


def test_api_keys_on(model_path, tmp_path, photos):
    with TestClient(make_app(model_path, tmp_path, api_keys="k-one, k-two")) as c:
        f = {"file": ("a.png", photos["png"][0], "image/png")}
        r = c.post("/predict", files=f)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized" and "missing" in r.json()["detail"]
        r = c.post("/predict", files=f, headers={"X-API-Key": "wrong"})
        assert r.status_code == 401 and "invalid" in r.json()["detail"]
        assert c.post("/predict", files=f, headers={"X-API-Key": "k-two"}).status_code == 200
        assert c.post("/predict/batch", files=[("files", f["file"])]).status_code == 401
        assert c.post("/predict/batch", files=[("files", f["file"])], headers={"X-API-Key": "k-one"}).status_code == 200
        assert c.get("/health").status_code == 200 and c.get("/metrics").status_code == 200
        from app.api.routes import predict  # every /predict* route checks the key first, before it reads the upload

        for route in predict.router.routes:
            r = c.post(route.path, content=b"not even a valid body", headers={"content-type": "text/plain"})
            assert (route.path, r.status_code, r.headers["www-authenticate"]) == (route.path, 401, "API-Key")
        op = c.get("/openapi.json").json()["paths"]
        for path in ("/predict", "/predict/batch"):  # the header is documented as FastAPI's Header() did
            (param,) = op[path]["post"]["parameters"]
            assert param["name"] == "x-api-key" and param["in"] == "header" and not param["required"]


def test_predict_before_the_model_is_loaded_is_a_503(model_path, tmp_path, photos):
    app = make_app(model_path, tmp_path)
    with TestClient(app) as c:
        app.state.engine = None  # as between the process start and the end of the lifespan's model load
        r = c.get("/ready")
        assert r.status_code == 503 and r.json() == {"ready": False, "ui": "disabled", "request_id": r.headers["x-request-id"]}  # fmt: skip
        assert c.head("/ready").status_code == 503 and c.get("/health").status_code == 200
        r = c.post("/predict", files={"file": ("a.png", photos["png"][0], "image/png")})
        assert (r.status_code, r.json()["error"]) == (503, "not_ready")
        assert c.post("/predict/batch", files=[("files", ("a.png", photos["png"][0], "image/png"))]).status_code == 503


def test_api_keys_off_by_default(client, photos):
    assert Settings().api_key_set == set()
    assert client.post("/predict", files={"file": ("a.png", photos["png"][0], "image/png")}).status_code == 200


# --- request ids, errors, logs, metrics ---


def test_request_id_is_echoed(client):
    r = client.get("/health", headers={"X-Request-ID": "order-42.a_b"})
    assert r.headers["x-request-id"] == "order-42.a_b"
    r = client.get("/health", headers={"X-Request-ID": "bad id with spaces"})
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])


def test_server_error_answers_json_with_request_id(model_path, tmp_path, photos):
    app = make_app(model_path, tmp_path)
    with TestClient(app, raise_server_exceptions=False) as c:

        def boom(x):
            raise RuntimeError("simulated failure")

        app.state.engine.predict = app.state.engine.predict_scored = boom
        r = c.post("/predict", files={"file": ("a.png", photos["png"][0], "image/png")})
        assert r.status_code == 500
        body = r.json()
        assert body["error"] == "server_error" and "simulated" not in body["detail"]
        assert body["request_id"] and body["request_id"] == r.headers["x-request-id"]
        assert metric(c.get("/metrics").text, "fashioncat_requests_total", route="/predict", status="500") >= 1


def test_client_hanging_up_mid_upload_is_a_499_not_a_server_error(client, photos):
    "An upload cut off by the client (a timeout, a closed tab) is counted and logged as 499, with no traceback."
    import asyncio

    app = client.app
    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n' + photos["png"][0][:40]
    messages = iter([{"type": "http.request", "body": body, "more_body": True}, {"type": "http.disconnect"}])
    sent = []

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/predict", "raw_path": b"/predict", "query_string": b"", "root_path": "",
        "headers": [(b"content-type", b"multipart/form-data; boundary=b"), (b"content-length", b"100000")],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    errors = []  # the app's error lines, caught on the "fashioncat" logger itself: it does not propagate to root
    handler = logging.Handler(logging.ERROR)
    handler.emit = errors.append
    logging.getLogger("fashioncat").addHandler(handler)
    try:
        asyncio.run(app(scope, receive, send))
    finally:
        logging.getLogger("fashioncat").removeHandler(handler)
    assert sent[0]["status"] == 499 and not [e.getMessage() for e in errors]  # no "unhandled error" line
    assert json.loads(sent[1]["body"])["error"] == "client_closed_request"
    assert metric(client.get("/metrics").text, "fashioncat_requests_total", route="/predict", status="499") == 1


def test_one_json_log_line_per_request(client, photos):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    log = logging.getLogger("fashioncat.access")
    log.addHandler(handler)
    try:
        data = photos["jpeg"][0]
        r1 = client.post(
            "/predict", files={"file": ("a.jpg", data, "image/jpeg")}, headers={"X-Request-ID": "log-test-1"}
        )
        client.post(
            "/predict", files={"file": ("b.txt", b"hello", "text/plain")}, headers={"X-Request-ID": "log-test-2"}
        )
    finally:
        log.removeHandler(handler)
    lines = [json.loads(s) for s in stream.getvalue().splitlines()]
    assert [x["request_id"] for x in lines] == ["log-test-1", "log-test-2"]
    ok, bad = lines
    assert (ok["route"], ok["method"], ok["status"]) == ("/predict", "POST", 200)
    assert ok["category"] == r1.json()["category"] and ok["confidence"] == r1.json()["confidence"]
    assert ok["image"]["bytes"] == len(data) and ok["latency_ms"] > 0 and ok["level"] == "INFO"
    assert (bad["status"], bad["error"]) == (415, "not_an_image")
    assert all(len(s) < 1000 for s in stream.getvalue().splitlines())  # never the image


def test_metrics(client, photos):
    before = client.get("/metrics").text
    body = client.post("/predict", files={"file": ("a.png", photos["png"][0], "image/png")}).json()
    client.post("/predict/batch", files=[("files", ("a.png", photos["png"][0], "image/png"))] * 3)
    client.post("/predict", files={"file": ("t.txt", b"text", "text/plain")})
    after = client.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    a = after.text

    def delta(name, **labels):
        return metric(a, name, **labels) - metric(before, name, **labels)

    assert delta("fashioncat_requests_total", route="/predict", method="POST", status="200") == 1
    assert delta("fashioncat_requests_total", route="/predict", method="POST", status="415") == 1
    assert delta("fashioncat_requests_total", route="/predict/batch", method="POST", status="200") == 1
    assert delta("fashioncat_request_latency_seconds_count", route="/predict") == 2
    assert delta("fashioncat_inference_latency_seconds_count") == 2
    assert delta("fashioncat_batch_size_bucket", le="2.0") == 1 and delta("fashioncat_batch_size_bucket", le="4.0") == 2
    assert delta("fashioncat_predictions_total", category=body["category"]) == 4
    assert delta("fashioncat_confidence_count") == 4
    assert delta("fashioncat_confidence_sum") == pytest.approx(4 * body["confidence"])
    assert delta("fashioncat_confidence_bucket", le="0.95") == (4 if body["confidence"] <= 0.95 else 0)
    assert delta("fashioncat_needs_review_total") == (4 if body["needs_review"] else 0)
    assert metric(a, "fashioncat_model_info", version=body["model_version"]) == 1
    assert metric(a, "process_resident_memory_bytes") > 1e6 and "process_cpu_seconds_total" in a
    assert "fashioncat_feedback_total" not in a  # the corrections are the UI's: counted where the UI runs (tests/ui)


def test_needs_review_is_counted(model_path, tmp_path):
    "With a review threshold of 1, every answer needs review: the counter goes up by one per image."
    with TestClient(make_app(model_path, tmp_path, review_threshold=1.0)) as c:
        before = c.get("/metrics").text
        one = c.post("/predict", files={"file": (EXAMPLES[1].name, EXAMPLES[1].read_bytes(), "image/png")}).json()
        batch = c.post("/predict/batch", files=[("files", (p.name, p.read_bytes(), "image/png")) for p in EXAMPLES[:3]])
        after = c.get("/metrics").text
    assert [r["needs_review"] for r in [one, *batch.json()["results"]]] == [True] * 4
    assert metric(after, "fashioncat_needs_review_total") - metric(before, "fashioncat_needs_review_total") == 4


def test_review_threshold_setting(model_path, tmp_path, engine, monkeypatch):
    "FASHIONCAT_REVIEW_THRESHOLD overrides the model's threshold: /model says so, and an answer under it needs review."
    conf = {p: engine.predict_images([p])[0]["confidence"] for p in EXAMPLES}
    photo = next((p for p, c in conf.items() if engine.review_threshold <= c < 0.999), None)
    assert photo is not None, conf  # an example the model's own threshold passes, and 0.999 does not
    monkeypatch.setenv("FASHIONCAT_REVIEW_THRESHOLD", "0.999")
    with TestClient(make_app(model_path, tmp_path)) as c:
        assert c.get("/model").json()["review_threshold_effective"] == 0.999
        body = c.post("/predict", files={"file": (photo.name, photo.read_bytes(), "image/png")}).json()
    assert body["confidence"] == pytest.approx(conf[photo]) and body["needs_review"] is True


def test_routes_are_labelled_by_template(client):
    client.get("/no/such/path/123")
    client.get("/docs")
    client.get("/openapi.json")
    text = client.get("/metrics").text
    assert 'route="unmatched"' in text and "/no/such" not in text
    for route in ("/docs", "/openapi.json"):  # FastAPI's own pages, by their path
        assert metric(text, "fashioncat_requests_total", route=route, method="GET", status="200") >= 1


# --- layering ---


def test_serving_and_app_import_no_torch(model_path, tmp_path):
    "In a fresh process: no torch/fastai after importing the service, and it serves with training packages blocked."
    code = (
        "import sys, time\n"
        "for m in ('torch', 'torchvision', 'fastai', 'onnx', 'onnxscript', 'sklearn', 'safetensors'): sys.modules[m] = None\n"
        "import fashioncat.serving, app.main, app.ui.review\n"
        "from fastapi.testclient import TestClient\n"
        "from app.core.config import Settings\n"
        f"s = Settings(model_path={str(model_path)!r}, data_dir={str(tmp_path)!r})\n"
        "with TestClient(app.main.create_app(s)) as c:\n"
        "    assert c.get('/ready').status_code == 200\n"
        "    for _ in range(600):\n"
        "        if c.get('/ready').json()['ui'] != 'loading': break\n"
        "        time.sleep(0.05)\n"
        "    assert c.get('/ready').json()['ui'] == 'ready' and c.get('/ui/').status_code == 200\n"
        "    r = c.post('/predict', files={'file': ('a.png', open('app/examples/1_trouser.png', 'rb').read())})\n"
        "    assert r.status_code == 200, r.text\n"
        "bad = [m for m in ('torch', 'fastai', 'torchvision') if sys.modules.get(m) is not None]\n"
        "assert not bad, bad; print('ok')"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]


def test_ui_can_be_turned_off(model_path, tmp_path):
    "FASHIONCAT_UI_ENABLED=false serves the API only: /ui is not mounted (the API keys do not cover the UI)."
    app = make_app(model_path, tmp_path, ui=True, ui_enabled=False)
    assert not hasattr(app.state, "ui") and app.state.ui_mount is None
    with TestClient(app) as c:
        assert c.get("/ui/").status_code == 404
        r = c.get("/ready")
        assert r.status_code == 200 and r.json()["ui"] == "disabled"
    assert Settings(_env_file=None).ui_enabled is True


def test_several_workers_answer_one_set_of_metrics(model_path, tmp_path, photos):
    "Two uvicorn workers with PROMETHEUS_MULTIPROC_DIR: every scrape shows the traffic of both, and the UI is refused."
    import socket
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp = tmp_path / "metrics"
    mp.mkdir()
    env = {**os.environ, "FASHIONCAT_MODEL_PATH": str(model_path), "FASHIONCAT_DATA_DIR": str(tmp_path / "fb")}
    env |= {"PROMETHEUS_MULTIPROC_DIR": str(mp), "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port), "--workers", "2", "--no-access-log"]
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "server.log", "w") as log:
        proc = subprocess.Popen([*cmd, "--host", "127.0.0.1"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:  # both workers up: each publishes its process gauges under its own pid
                if (
                    httpx.get(url + "/ready", timeout=1).status_code == 200
                    and len(list(mp.glob("gauge_livesum_*"))) >= 2
                ):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail("two workers not ready in 90 s: " + (tmp_path / "server.log").read_text()[-2000:])
        assert httpx.get(url + "/ready").json()["ui"] == "disabled"
        for _ in range(30):  # a fresh connection each: the kernel hands them to either worker
            r = httpx.post(url + "/predict", files={"file": ("a.png", photos["png"][0], "image/png")})
            assert r.status_code == 200, r.text
        pids = {f.stem.rsplit("_", 1)[1] for f in mp.glob("counter_*.db")}
        assert len(pids) == 2, pids  # both workers served requests
        for _ in range(6):  # whichever worker answers the scrape, it reports both
            text = httpx.get(url + "/metrics").text
            assert metric(text, "fashioncat_requests_total", route="/predict", status="200") == 30
            assert metric(text, "fashioncat_predictions_total") == 30
            assert metric(text, "process_resident_memory_bytes") > 2e7  # two processes' memory
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    log = (tmp_path / "server.log").read_text()
    assert "the UI is not mounted: this is one of several workers" in log


def test_a_dead_workers_memory_is_not_counted(tmp_path):
    "Multiprocess mode: a worker that died without cleaning up (a crash) drops out of the summed process gauges."
    code = (
        "import os, shutil, sys\n"
        "from pathlib import Path\n"
        "from app.core.metrics import Metrics\n"
        "m = Metrics(); m.sample_process()\n"
        "d = Path(os.environ['PROMETHEUS_MULTIPROC_DIR']); own = d / f'gauge_livesum_{os.getpid()}.db'\n"
        "shutil.copy(own, d / 'gauge_livesum_999999999.db')  # a crashed worker: no such process\n"
        "rss = [float(l.split()[-1]) for l in m.render()[0].decode().splitlines() if l.startswith('process_resident_memory_bytes ')]\n"
        "assert rss == [m.process_rss._value.get()], (rss, m.process_rss._value.get())  # this worker's alone\n"
        "assert not (d / 'gauge_livesum_999999999.db').exists()\n"
        "m.worker_exit(); assert not own.exists(); print('ok')"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT, env=env, check=False
    )
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]
