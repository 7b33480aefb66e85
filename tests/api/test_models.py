"""Model updates in the running service: versions, the admin API, hot swaps under load, SIGHUP, the `current` watcher
and shadow mode (app/core/models.py, app/core/shadow.py, app/api/routes/admin.py)."""

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.metrics import Metrics
from app.core.shadow import Shadow
from app.main import create_app
from fashioncat.versions import CURRENT, MODEL_FILE, VERSIONS, set_current

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "app" / "examples").glob("*.png"))  # real test images, one per category
KEY = {"X-Admin-Key": "admin-secret"}


def metric(text: str, name: str, **labels) -> float:
    "The value of one sample in Prometheus exposition text (0 when absent)."
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if m:
            got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1) or ""))
            if all(got.get(k) == v for k, v in labels.items()):
                return float(m.group(2))
    return 0.0


@pytest.fixture()
def versions(model_path, tmp_path):
    "A models folder: versions v1 and v2 (the same model file, told apart by their folder's name), current -> v1."
    root = tmp_path / "models"
    for v in ("v1", "v2"):
        (root / VERSIONS / v).mkdir(parents=True)
        shutil.copy(model_path, root / VERSIONS / v / MODEL_FILE)
    set_current(root, "v1")
    return root


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def make_app(model_path, tmp_path, root, **kw):
    s = Settings(model_path=str(model_path), models_dir=str(root), data_dir=str(tmp_path / "fb"), **kw)
    return create_app(s, ui=False)


def predict(client, i=0):
    return client.post("/predict", files={"file": ("a.png", EXAMPLES[i % len(EXAMPLES)].read_bytes(), "image/png")})


def test_no_versions_folder_serves_the_default_model(model_path, tmp_path):
    from fashioncat.serving import Engine

    with TestClient(make_app(model_path, tmp_path, tmp_path / "nowhere")) as c:
        version = Engine(model_path).info.version
        assert c.get("/model").json()["version"] == version and predict(c).json()["model_version"] == version


def test_admin_api_is_off_without_admin_keys(model_path, tmp_path, versions):
    with TestClient(make_app(model_path, tmp_path, versions, api_keys="k")) as c:  # API keys do not open it
        for method, path in (
            ("get", "/admin/models"),
            ("post", "/admin/reload"),
            ("post", "/admin/models/v2/activate"),
        ):
            for headers in ({}, KEY, {"X-Admin-Key": ""}):
                r = c.request(method, path, headers=headers)
                assert r.status_code == 404 and "set FASHIONCAT_ADMIN_KEYS" in r.json()["detail"], (path, r.text)
        assert c.get("/model").json()["version"] == "v1"


def test_admin_key_is_checked(model_path, tmp_path, versions):
    with TestClient(make_app(model_path, tmp_path, versions, admin_keys="other, admin-secret")) as c:
        assert c.post("/admin/reload").status_code == 401
        r = c.post("/admin/models/v2/activate", headers={"X-Admin-Key": "admin-secre"})
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
        assert c.get("/model").json()["version"] == "v1"  # refused: nothing swapped
        r = c.get("/admin/models", headers={"X-Admin-Key": "other"})
        assert r.status_code == 200
        assert r.json() | {"models_dir": None} == {
            "serving": "v1",
            "current": "v1",
            "versions": ["v1", "v2"],
            "models_dir": None,
            "shadow": None,
        }


def test_activate_names_the_version_everywhere_and_failures_keep_the_old_model(model_path, tmp_path, versions):
    (versions / VERSIONS / "broken").mkdir()
    (versions / VERSIONS / "broken" / MODEL_FILE).write_bytes(b"not an onnx model")
    (versions / VERSIONS / "v2" / "version.json").write_text(json.dumps({"sha256": {"int8": sha(model_path)}}))
    (versions / VERSIONS / "partial").mkdir()
    (versions / VERSIONS / "partial" / MODEL_FILE).write_bytes(model_path.read_bytes())
    (versions / VERSIONS / "partial" / "version.json").write_text('{"sha256": {"int8": "0123abcd"}}')
    with TestClient(make_app(model_path, tmp_path, versions, admin_keys="admin-secret")) as c:
        assert predict(c).json()["model_version"] == "v1"
        r = c.post("/admin/models/v2/activate", headers=KEY)
        assert r.status_code == 200, r.text
        assert r.json()["version"] == "v2" and r.json()["previous"] == "v1" and r.json()["pid"] == os.getpid()
        assert c.get("/model").json()["version"] == "v2" and predict(c).json()["model_version"] == "v2"
        assert c.get("/ready").json()["model_version"] == "v2"
        m = c.get("/metrics").text
        assert (
            metric(m, "fashioncat_model_info", version="v2") == 1
            and metric(m, "fashioncat_model_info", version="v1") == 0
        )
        for version, status, code, detail in (
            ("v9", 404, "version_not_found", "no version 'v9'"),
            ("bad!name", 422, "invalid_version", "invalid version name"),
            ("broken", 409, "model_rejected", "the served model is unchanged: "),
            ("partial", 409, "model_rejected", "its version.json says 0123abcd"),
        ):
            r = c.post(f"/admin/models/{version}/activate", headers=KEY)
            assert r.status_code == status and r.json()["error"] == code and detail in r.json()["detail"], r.text
            assert predict(c).json()["model_version"] == "v2"
        m = c.get("/metrics").text
        assert metric(m, "fashioncat_model_swaps_total", outcome="ok") == 1
        assert metric(m, "fashioncat_model_swaps_total", outcome="failed") == 4
        r = c.post("/admin/reload", headers=KEY)  # `current` still says v1: activate does not move it
        assert r.status_code == 200 and r.json()["version"] == "v1" and predict(c).json()["model_version"] == "v1"


def test_a_version_with_other_classes_is_refused(model_path, tmp_path, versions):
    onnx = pytest.importorskip("onnx")
    m = onnx.load(str(model_path))
    for p in m.metadata_props:
        if p.key == "fashioncat.classes":
            p.value = p.value.replace("Trouser", "Jeans")
    (versions / VERSIONS / "v3").mkdir()
    onnx.save(m, str(versions / VERSIONS / "v3" / MODEL_FILE))
    with TestClient(make_app(model_path, tmp_path, versions, admin_keys="admin-secret")) as c:
        r = c.post("/admin/models/v3/activate", headers=KEY)
        assert r.status_code == 409 and "Jeans" in r.json()["detail"] and "differ from the served" in r.json()["detail"]
        assert c.get("/model").json()["version"] == "v1"


def test_startup_refuses_a_current_that_names_no_version(model_path, tmp_path, versions):
    (versions / CURRENT).write_text("v7\n")
    app = make_app(model_path, tmp_path, versions)
    with pytest.raises(RuntimeError, match="no model to serve: no version 'v7'"), TestClient(app):
        pass


def test_swaps_under_concurrent_requests_fail_none(model_path, tmp_path, versions):
    "Six swaps while 8 clients send requests: every request answers 200, from v1 or v2, and both versions answered."
    with TestClient(make_app(model_path, tmp_path, versions, admin_keys="admin-secret")) as c:
        stop, seen, statuses = threading.Event(), [], []

        def client(k):
            i = 0
            while not stop.is_set() or i < 5:
                r = predict(c, k + i)
                statuses.append(r.status_code)
                if r.status_code == 200:
                    seen.append(r.json()["model_version"])
                i += 1

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(client, k) for k in range(8)]
            swaps = []
            for v in ("v2", "v1", "v2", "v1", "v2", "v1"):
                time.sleep(0.05)
                swaps.append(c.post(f"/admin/models/{v}/activate", headers=KEY))
            stop.set()
            for f in futures:
                f.result(timeout=120)
        assert [r.status_code for r in swaps] == [200] * 6
        assert len(statuses) >= 40 and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
        assert set(seen) == {"v1", "v2"}
        assert metric(c.get("/metrics").text, "fashioncat_model_swaps_total", outcome="ok") == 6


def test_the_watcher_follows_the_current_pointer(model_path, tmp_path, versions):
    with TestClient(make_app(model_path, tmp_path, versions, model_poll_s=0.05)) as c:
        assert c.get("/model").json()["version"] == "v1"
        set_current(versions, "v2")
        deadline = time.monotonic() + 20
        while c.get("/model").json()["version"] != "v2" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert predict(c).json()["model_version"] == "v2"
        (versions / CURRENT).write_text("v9\n")  # a pointer naming nothing: logged, v2 keeps serving
        time.sleep(0.5)
        assert predict(c).json()["model_version"] == "v2"
        assert metric(c.get("/metrics").text, "fashioncat_model_swaps_total", outcome="failed") == 1


# --- shadow mode ---


def test_shadow_leaves_answers_alone_and_moves_its_metrics(model_path, tmp_path, versions):
    bodies = [p.read_bytes() for p in EXAMPLES]

    def answers(c):
        out = []
        for b in bodies:
            r = c.post("/predict", files={"file": ("a.png", b, "image/png")}).json()
            out.append({k: v for k, v in r.items() if k != "request_id"})
        r = c.post("/predict/batch", files=[("files", ("a.png", b, "image/png")) for b in bodies]).json()
        return out + [{k: v for k, v in r.items() if k != "request_id"}]

    with TestClient(make_app(model_path, tmp_path, versions)) as c:
        plain = answers(c)
    with TestClient(make_app(model_path, tmp_path, versions, shadow_version="v2", shadow_share=1.0)) as c:
        shadowed = answers(c)
        c.app.state.shadow.join()
        m = c.get("/metrics").text
    assert shadowed == plain
    n = len(bodies) * 2  # each image once alone, once in the batch
    cats = {a["category"] for a in plain[:-1]}
    compared = sum(metric(m, "fashioncat_shadow_compared_total", version="v2", category=k) for k in cats)
    agreed = sum(metric(m, "fashioncat_shadow_agreed_total", version="v2", category=k) for k in cats)
    assert compared == n and agreed == n  # v2 is the same model file: it agrees everywhere
    assert metric(m, "fashioncat_shadow_latency_seconds_count", version="v2") == len(bodies) + 1
    assert metric(m, "fashioncat_shadow_dropped_total", version="v2") == 0


def test_shadow_share_and_admin_calls(model_path, tmp_path, versions):
    with TestClient(make_app(model_path, tmp_path, versions, admin_keys="admin-secret")) as c:
        assert c.put("/admin/shadow/v9", headers=KEY).status_code == 404
        r = c.put("/admin/shadow/v2", headers=KEY, json={"share": 0.0})
        assert r.status_code == 200 and r.json()["shadow"]["version"] == "v2" and r.json()["shadow"]["share"] == 0
        assert c.put("/admin/shadow/v2", headers=KEY, json={"share": 1.5}).status_code == 422
        for i in range(5):
            predict(c, i)
        assert metric(c.get("/metrics").text, "fashioncat_shadow_compared_total", version="v2") == 0  # share 0
        c.put("/admin/shadow/v2", headers=KEY, json={"share": 1.0})
        for i in range(5):
            predict(c, i)
        c.app.state.shadow.join()
        m = c.get("/metrics").text
        assert sum(metric(m, "fashioncat_shadow_compared_total", version="v2", category=k) for k in _classes(c)) == 5
        assert c.get("/admin/models", headers=KEY).json()["shadow"]["share"] == 1.0
        r = c.delete("/admin/shadow", headers=KEY)
        assert r.status_code == 200 and r.json() == {"shadow": None} and c.app.state.shadow is None
        assert predict(c).status_code == 200


def _classes(c):
    return [x["category"] for x in c.get("/model").json()["categories"]]


class _SlowEngine:
    "A stand-in shadow model that waits for a signal before each answer."

    def __init__(self):
        self.classes = ["a", "b"]
        self.go = threading.Event()

    def predict(self, views):
        self.go.wait(10)
        return np.tile([0.9, 0.1], (len(views), 1))


def test_a_full_shadow_queue_drops_instead_of_waiting():
    m, engine = Metrics(), _SlowEngine()
    sh = Shadow(engine, "vs", 1.0, m, maxsize=1)
    views, served = np.zeros((1, 28, 28), np.uint8), np.array([0])
    assert sh.offer(views, served)  # taken by the thread, which waits
    deadline = time.monotonic() + 5
    while sh.queue.qsize() and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.perf_counter()
    assert sh.offer(views, served) and not sh.offer(views, np.array([1])) and not sh.offer(views, served)
    assert time.perf_counter() - t0 < 1  # never waited for the blocked shadow (a bound, not a benchmark)
    assert m.shadow_dropped.labels("vs")._value.get() == 2
    engine.go.set()
    sh.close()
    assert m.shadow_compared.labels("vs", "a")._value.get() == 2 and m.shadow_agreed.labels("vs", "a")._value.get() == 2


# --- real servers: SIGHUP, and several workers following the `current` pointer ---


def _serve(tmp_path, model_path, versions, *extra, **env_extra):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "FASHIONCAT_MODEL_PATH": str(model_path), "FASHIONCAT_DATA_DIR": str(tmp_path / "fb")}
    env |= {"FASHIONCAT_MODELS_DIR": str(versions), "FASHIONCAT_UI_ENABLED": "false", "OMP_NUM_THREADS": "1"}
    env |= env_extra
    cmd = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port), *extra]
    with open(tmp_path / "server.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    _stop(proc)
    pytest.fail("server not ready in 90 s: " + (tmp_path / "server.log").read_text()[-2000:])


def _stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _versions_answering(url, n):
    "The versions of `n` answers, each on a fresh connection (the kernel spreads them over the workers)."
    body = EXAMPLES[0].read_bytes()
    return [
        httpx.post(url + "/predict", files={"file": ("a.png", body, "image/png")}).json()["model_version"]
        for _ in range(n)
    ]


def test_sighup_reloads_the_current_pointer_in_place(model_path, tmp_path, versions):
    proc, url = _serve(tmp_path, model_path, versions, "--no-access-log")
    try:
        assert _versions_answering(url, 2) == ["v1", "v1"]
        set_current(versions, "v2")
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while httpx.get(url + "/model").json()["version"] != "v2" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _versions_answering(url, 2) == ["v2", "v2"] and proc.poll() is None  # swapped, not restarted
    finally:
        _stop(proc)
    assert '"reason": "SIGHUP"' in (tmp_path / "server.log").read_text()


def test_every_worker_follows_the_current_pointer(model_path, tmp_path, versions):
    "Two workers with FASHIONCAT_MODEL_POLL_S: after `current` moves, every answer, from either worker, names v2."
    mp = tmp_path / "metrics"
    mp.mkdir()
    proc, url = _serve(
        tmp_path,
        model_path,
        versions,
        "--workers",
        "2",
        FASHIONCAT_MODEL_POLL_S="0.2",
        PROMETHEUS_MULTIPROC_DIR=str(mp),
    )
    try:
        assert set(_versions_answering(url, 6)) == {"v1"}
        set_current(versions, "v2")
        time.sleep(1.5)  # several poll intervals
        assert set(_versions_answering(url, 20)) == {"v2"}
        assert len({f.stem.rsplit("_", 1)[1] for f in mp.glob("counter_*.db")}) == 2  # both workers answered
        text = httpx.get(url + "/metrics").text
        assert metric(text, "fashioncat_model_swaps_total", outcome="ok") == 2  # one swap per worker
    finally:
        _stop(proc)
