"""A real uvicorn on 127.0.0.1, started as the image starts it: limits at the edge (slow and oversized headers, a
stalled body, bytes that are not HTTP) and the UI behind its login, the Gradio API routes included."""

import json
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from app.core.auth import hash_password

ROOT = Path(__file__).resolve().parents[2]
IMG = (ROOT / "app" / "examples" / "1_trouser.png").read_bytes()
PROTOCOL = "app.core.edge:GuardedHttpTools"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def uvicorn(env: dict, log: Path, wait_ui: bool = False):
    "uvicorn app.main:app with the guarded protocol on 127.0.0.1; stopped (SIGKILL after 15 s) on exit."
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--http", PROTOCOL, "--timeout-keep-alive", "5"]
    base = {k: v for k, v in os.environ.items() if not k.startswith("FASHIONCAT_")}
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**base, **env}, stdout=f, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                r = httpx.get(url + "/ready", timeout=1)
                if r.status_code == 200 and not (wait_ui and r.json()["ui"] == "loading"):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        else:
            pytest.fail("server not ready: " + log.read_text()[-3000:])
        yield url, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def response(sock: socket.socket) -> tuple[int, dict, float]:
    "Read one response (the server closes the connection after it): status, JSON body, seconds waited."
    t0, data = time.monotonic(), b""
    sock.settimeout(30)
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body) if body else {}, time.monotonic() - t0


@pytest.fixture(scope="module")
def api(model_path, tmp_path_factory):
    d = tmp_path_factory.mktemp("edge")
    env = {
        "FASHIONCAT_MODEL_PATH": str(model_path),
        "FASHIONCAT_UI_ENABLED": "false",
        "FASHIONCAT_HEADER_TIMEOUT_S": "2",
    }
    with uvicorn(env, d / "server.log") as (url, port):
        yield url, port


def test_half_sent_headers_get_408_in_json(api):
    _, port = api
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        status, body, waited = response(s)
    assert (status, body["error"]) == (408, "request_timeout") and 1.5 < waited < 10, (status, body, waited)


def test_an_oversized_header_gets_431_before_it_is_read(api):
    url, port = api
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nCookie: " + b"a" * 40_000 + b"\r\n")
        status, body, _ = response(s)
    assert (status, body["error"]) == (431, "headers_too_large"), body
    assert httpx.get(url + "/health", headers={"X-Fine": "a" * 8000}).status_code == 200


def test_a_big_body_in_one_send_is_not_taken_for_headers(api):
    _, port = api
    body = b"x" * 3_000_000  # arrives in chunks much larger than the header limit, right after the headers
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(
        body
    )
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(head + body + b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")  # and one more
        s.settimeout(30)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 ") == 2 and b"not valid JSON" in data and b'{"status":"ok"}' in data, data[:600]


def test_bytes_that_are_not_http_get_a_json_400(api):
    _, port = api
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        status, body, _ = response(s)
    assert status == 400 and body["error"] == "bad_request", body


def test_a_stalled_body_is_cut_and_the_server_stays_healthy(api):
    url, port = api
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 100000\r\n\r\n--b\r\n"
        )
        s.settimeout(15)
        t0 = time.monotonic()
        assert s.recv(65536) == b""  # closed by the server: no answer is owed to a client that stalled
        assert time.monotonic() - t0 < 10
    r = httpx.post(url + "/predict", files={"file": ("a.png", IMG, "image/png")})
    assert r.status_code == 200 and r.json()["category"] == "Trouser"
    with httpx.Client() as c:  # keep-alive requests are unaffected by the header deadline between them
        assert [c.get(url + "/health").status_code for _ in range(2) if time.sleep(0.5) is None] == [200, 200]


def test_the_ui_and_its_gradio_api_need_a_login(model_path, tmp_path):
    users = tmp_path / "users"
    users.write_text("anna:" + hash_password("pw-anna-123") + "\n")
    env = {"FASHIONCAT_MODEL_PATH": str(model_path), "FASHIONCAT_DATA_DIR": str(tmp_path / "data"),
           "FASHIONCAT_UI_USERS": str(users), "GRADIO_ANALYTICS_ENABLED": "False", "TMPDIR": str(tmp_path)}  # fmt: skip
    with uvicorn(env, tmp_path / "server.log", wait_ui=True) as (url, _):
        assert httpx.get(url + "/ready").json()["ui"] == "ready"
        anon = httpx.Client(base_url=url + "/ui")
        assert anon.get("/config").status_code == 401
        up = anon.post("/gradio_api/upload", files={"files": ("a.png", IMG, "image/png")})
        assert up.status_code == 401, up.text
        assert anon.get("/gradio_api/info").status_code == 401
        assert anon.post("/login", data={"username": "anna", "password": "wrong"}).status_code == 400
        anna = httpx.Client(base_url=url + "/ui")
        assert anna.post("/login", data={"username": "anna", "password": "pw-anna-123"}).status_code == 200
        assert anna.get("/config").status_code == 200
        up = anna.post("/gradio_api/upload", files={"files": ("a.png", IMG, "image/png")})
        assert up.status_code == 200, up.text
        assert httpx.post(url + "/predict", files={"file": ("a.png", IMG, "image/png")}).status_code == 200  # API
