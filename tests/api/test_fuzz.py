"""Property-based fuzzing in CI, in-process (the ASGI app, lifespan run): schemathesis from the OpenAPI schema, then
bench/fuzz.py's Hypothesis strategies (multipart, JSON with huge numbers, surrogates, deep nesting and odd types,
headers, mutated image bytes). No answer may be a 5xx, and the app must serve normally afterwards. A few thousand
requests here; `bench/fuzz.py` sends 20,000+ to a real server."""

import sys
from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from app.core.config import Settings
from app.main import create_app

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from fuzz import json_body, multipart_body, request

IMG = (ROOT / "app" / "examples" / "1_trouser.png").read_bytes()
N = 1500  # Hypothesis requests; schemathesis adds up to 100 per operation
QUICK = settings(deadline=None, database=None, suppress_health_check=list(HealthCheck), derandomize=True)


@pytest.fixture(scope="module")
def app(model_path):
    app = create_app(Settings(model_path=str(model_path), ui_enabled=False, api_keys=None), ui=False)
    with TestClient(app):  # the lifespan loads the engine; schemathesis' own client then finds it on app.state
        yield app


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, raise_server_exceptions=False) as c:  # its own lifespan: the engine loaded again
        yield c


def test_schemathesis_finds_no_server_error(app):
    "Every operation of the OpenAPI schema, with schemathesis' cases (its pytest plugin is not used: see the report)."
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    ops = [o.ok() for o in schema.get_all_operations()]
    assert {op.label for op in ops} >= {"POST /predict", "POST /predict/batch", "GET /health", "GET /ready"}
    seen = Counter()
    for op in ops:
        _check_operation(op, seen)
    assert seen["POST /predict", 200] + seen["POST /predict/batch", 200] > 0 or sum(seen.values()) > 100, seen


def _check_operation(op, seen: Counter) -> None:
    @given(case=op.as_strategy())
    @settings(QUICK, max_examples=100)
    def one(case):
        response = case.call()
        seen[op.label, response.status_code] += 1
        case.validate_response(response, checks=[not_a_server_error])

    one()


def test_hypothesis_requests_get_no_5xx(client):
    seen = Counter()

    @given(req=request())
    @settings(QUICK, max_examples=N)
    def one(req):
        method, path, headers, body = req
        headers = {k: v.encode("latin-1") for k, v in headers.items()}  # as bytes on the wire, like bench/fuzz.py
        r = client.request(method, path, headers=headers, content=body)
        seen[r.status_code] += 1
        assert r.status_code < 500, (r.status_code, r.text[:300], repr(req)[:300])
        if r.status_code >= 400:
            assert r.headers["content-type"] == "application/json" and "error" in r.json(), r.text[:300]

    one()
    assert sum(seen.values()) == N and seen[200] > 0 and len(seen) >= 4, seen  # the strategies reach several answers
    assert client.post("/predict", files={"file": ("a.png", IMG, "image/png")}).json()["category"] == "Trouser"


@given(body=json_body())
@settings(QUICK, max_examples=300)
def test_json_bodies_on_both_routes(client, body):
    for path in ("/predict", "/predict/batch"):
        r = client.post(path, content=body, headers={"Content-Type": "application/json"})
        assert r.status_code < 500, (path, r.text[:300], body[:200])


@given(mp=multipart_body())
@settings(QUICK, max_examples=300)
def test_multipart_bodies_on_both_routes(client, mp):
    body, ctype = mp
    for path in ("/predict", "/predict/batch"):
        r = client.post(path, content=body, headers={"Content-Type": ctype})
        assert r.status_code < 500, (path, r.text[:300], body[:200])
