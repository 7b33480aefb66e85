"""The merchandisers' UI through `gradio_client`, against a real uvicorn server on loopback (started and stopped here)."""

import csv
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.feedback import CSV_COLUMNS, FeedbackStore

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "app" / "examples").glob("*.png"))


def read_csv(path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:  # as the csv module asks: a \r inside a cell stays one
        return list(csv.DictReader(f))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory):
    """uvicorn app.main:app on 127.0.0.1:<free port>, with the test model and a fresh feedback directory, outside both
    the cwd and the server's temp directory (where gradio keeps uploads), as a mounted volume would be."""
    data_dir, tmp = tmp_path_factory.mktemp("ui-data"), tmp_path_factory.mktemp("ui-tmp")
    port = free_port()
    env = {**os.environ, "FASHIONCAT_MODEL_PATH": str(model_path), "FASHIONCAT_DATA_DIR": str(data_dir)}
    env |= {"GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp)}
    env.pop("GRADIO_TEMP_DIR", None)
    cmd = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with open(data_dir / "server.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(240):  # /ready answers 200 once the model is warm; the UI comes up after it, in the background
            if proc.poll() is not None:
                break
            try:
                r = httpx.get(url + "/ready", timeout=1)
                if r.status_code == 200 and r.json()["ui"] != "loading":
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        else:
            pytest.fail("server or UI not ready in 60 s")
        if proc.poll() is not None:
            pytest.fail("server exited: " + (data_dir / "server.log").read_text()[-3000:])
        assert r.json()["ui"] == "ready", (data_dir / "server.log").read_text()[-3000:]
        yield {"url": url, "data_dir": data_dir, "log": data_dir / "server.log", "uploads": tmp / "gradio"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def ui(server):
    from gradio_client import Client

    return Client(server["url"] + "/ui/", verbose=False)


def test_ui_page_is_served(server):
    r = httpx.get(server["url"] + "/ui/", timeout=10)
    assert r.status_code == 200 and "gradio" in r.text.lower()


def test_ui_categorise_and_correct(server, ui, photos):
    from gradio_client import handle_file

    d = server["data_dir"]
    (d / "jacket.jpg").write_bytes(photos["jpeg"][0])
    (d / "cutout.png").write_bytes(photos["transparent"][0])
    (d / "notes.png").write_bytes(b"not an image at all")
    summary, results = ui.predict(
        [handle_file(str(d / n)) for n in ("jacket.jpg", "cutout.png", "notes.png")], api_name="/categorise"
    )
    assert summary.startswith("Обработано фото: 3.") and "Ошибок: 1." in summary
    assert [r.get("filename") for r in results] == ["jacket.jpg", "cutout.png", "notes.png"]
    ok = results[0]
    api = httpx.post(server["url"] + "/predict", files={"file": ("jacket.jpg", photos["jpeg"][0])}).json()
    assert (ok["category"], ok["confidence"]) == (api["category"], api["confidence"])  # the UI and the API agree
    assert len(ok["top_k"]) == 3 and isinstance(ok["needs_review"], bool)
    assert results[2]["error"] == "not_an_image" and results[2]["status"] == 415

    wrong = next(i for i in range(10) if i != ok["class_index"])
    names = httpx.get(server["url"] + "/model").json()["categories"][wrong]
    label = f"{names['category_ru']} ({names['category']})"
    msg = ui.predict(ok["id"], label, api_name="/correct")
    assert msg.startswith("Сохранено: " + label)
    ui.predict(results[1]["id"], names["category"], api_name="/correct")  # English names work too

    rows = ui.predict(api_name="/feedback_table")
    got = rows["data"] if isinstance(rows, dict) else rows
    assert [r[4] for r in got] == [names["category"]] * 2 and got[1][1] == "jacket.jpg" and got[1][2] == ok["category"]

    csv_path = ui.predict(api_name="/feedback_csv")
    out = read_csv(csv_path)
    assert list(out[0]) == CSV_COLUMNS and [r["filename"] for r in out] == ["jacket.jpg", "cutout.png"]
    assert int(out[0]["chosen_index"]) == wrong and len(out[0]["pixels"].split()) == 784

    with sqlite3.connect(d / "feedback.sqlite") as db:
        (n, image) = db.execute(
            "SELECT COUNT(*), (SELECT image FROM feedback ORDER BY id LIMIT 1) FROM feedback"
        ).fetchone()
    assert n == 2 and image == photos["jpeg"][0]

    metrics = httpx.get(server["url"] + "/metrics").text
    assert f'fashioncat_feedback_total{{category="{names["category"]}"}} 2.0' in metrics
    labels = set(re.findall(r'route="([^"]*)"', metrics))  # the UI's routes by template: the CSV's download too
    assert {"/ui/gradio_api/queue/join", "/ui/gradio_api/upload", "/ui/gradio_api/file={path_or_url:path}"} <= labels
    assert not [x for x in labels if "file=/" in x or csv_path.rsplit("/", 1)[-1] in x], labels


def test_ui_rejects_unknown_category_and_stale_ids(ui):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="Неизвестная категория"):
        ui.predict("whatever", "Kilt", api_name="/correct")
    with pytest.raises(AppError, match="устарел"):
        ui.predict("no-such-id", "Trouser", api_name="/correct")


def call(http, name: str, data: list) -> tuple[str, object]:
    "An API call as `curl` makes it (gradio's /call/<name>, then its event stream): the last event and its data."
    r = http.post(f"/ui/gradio_api/call/{name}", json={"data": data})
    assert r.status_code == 200, r.text
    text = http.get(f"/ui/gradio_api/call/{name}/{r.json()['event_id']}").text
    event, data = re.findall(r"^event: (\S+)\ndata: (.*)$", text, re.MULTILINE)[-1]
    return event, json.loads(data)


def queue_call(url: str, fn_index: int, data: list, session: str, **kw) -> dict:
    "An event as the browser runs it: join gradio's queue, then read the session's stream to the completed message."
    body = {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None, **kw}
    assert httpx.post(url + "/ui/gradio_api/queue/join", json=body, timeout=10).status_code == 200
    with httpx.stream("GET", url + "/ui/gradio_api/queue/data", params={"session_hash": session}, timeout=30) as r:
        for line in r.iter_lines():
            msg = json.loads(line[5:]) if line.startswith("data:") else {}
            if msg.get("msg") == "process_completed":
                return msg
    pytest.fail("the queue closed without completing the event")


def file_data(path) -> list[dict]:
    return [{"path": str(path), "meta": {"_type": "gradio.FileData"}}]


def test_ui_refuses_files_it_was_not_sent(server):
    "The function's files must be uploads: a server path named by a client is neither categorised nor copied out."
    secret = server["data_dir"] / f"secret-{uuid.uuid4().hex[:8]}.png"
    secret.write_bytes(EXAMPLES[1].read_bytes())  # an image on the server, outside the upload folder
    with httpx.Client(base_url=server["url"], timeout=30) as http:
        for path in (secret, ROOT / "docs" / "ui.png", EXAMPLES[1]):  # the examples too: the gallery sends copies
            event, data = call(http, "categorise", [file_data(path)])
            assert event == "error" and "not uploaded" in data["error"], (path, event, data)
    assert not list(server["uploads"].rglob(secret.name))  # not copied into gradio's cache, so not served either


def test_ui_gallery_click_categorises_the_example(server):
    "A click on an example, as the browser runs it: `pick` puts (a cached copy of) it in the file box, then `categorise`."
    config = httpx.get(server["url"] + "/ui/config").json()
    pick = next(d for d in config["dependencies"] if d["api_name"] == "pick")
    then = next(d for d in config["dependencies"] if d["trigger_after"] == pick["id"])
    gallery = next(c for c in config["components"] if c["id"] == pick["targets"][0][0])
    event = {"index": 1, "value": gallery["props"]["value"][1], "selected": True}  # what the browser sends
    session = uuid.uuid4().hex
    picked = queue_call(server["url"], pick["id"], [], session, trigger_id=gallery["id"], event_data=event)
    assert picked["success"], picked
    (files,) = picked["output"]["data"]
    assert [Path(f["path"]).name for f in files] == [EXAMPLES[1].name]
    assert Path(files[0]["path"]).is_relative_to(server["uploads"])  # a copy in the upload folder
    done = queue_call(server["url"], then["id"], [files], session)
    assert done["success"], done
    show = next(d for d in config["dependencies"] if then["outputs"][0] in d["inputs"])  # the results, drawn
    drawn = queue_call(server["url"], show["id"], [None], session)["output"]["render_config"]["components"]
    photo = next(c for c in drawn if c["type"] == "image" and c["props"]["label"] == EXAMPLES[1].name)
    assert httpx.get(photo["props"]["value"]["url"]).content == EXAMPLES[1].read_bytes()
    assert {"label", "radio"} <= {c["type"] for c in drawn}  # the top 3 and the one-click correction
    summary, results = done["output"]["data"][1:]
    assert summary.startswith("Обработано фото: 1.") and [r["filename"] for r in results] == [EXAMPLES[1].name]
    api = httpx.post(server["url"] + "/predict", files={"file": (EXAMPLES[1].name, EXAMPLES[1].read_bytes())}).json()
    assert (results[0]["category"], results[0]["confidence"]) == (api["category"], api["confidence"])


def test_ui_upload_limits(model_path, tmp_path, monkeypatch):
    "Uploads over FASHIONCAT_MAX_BYTES are refused by gradio (413) or, if already there, per item; over MAX_BATCH: all."
    from fastapi.testclient import TestClient
    from gradio.utils import get_upload_folder

    from app.main import create_app
    from fashioncat.serving import Settings

    small, big = EXAMPLES[1], EXAMPLES[0]  # 9,367 and 42,326 bytes
    assert small.stat().st_size < 20_000 < big.stat().st_size
    s = Settings(model_path=str(model_path), data_dir=str(tmp_path), max_bytes=20_000, max_batch=2)
    with TestClient(create_app(s, ui=True)) as c:
        assert wait_ui(c)["ui"] == "ready"
        r = c.post("/ui/gradio_api/upload", files=[("files", (big.name, big.read_bytes(), "image/png"))])
        assert r.status_code == 413 and "20000 bytes" in r.text
        r = c.post("/ui/gradio_api/upload", files=[("files", (small.name, small.read_bytes(), "image/png"))] * 3)
        uploaded = r.json()
        assert r.status_code == 200 and len(uploaded) == 3
        event, data = call(c, "categorise", [[file_data(u)[0] for u in uploaded]])
        assert event == "error" and data["error"] == "Слишком много фото за один раз: 3. Загрузите не больше 2."
        event, data = call(c, "categorise", [[file_data(u)[0] for u in uploaded[:2]]])
        assert event == "complete" and data[1].startswith("Обработано фото: 2.")

        there = Path(get_upload_folder()) / uuid.uuid4().hex / big.name  # in the upload folder by another way
        there.parent.mkdir(parents=True)
        read = Path.read_bytes

        def read_bytes(path: Path) -> bytes:
            assert path != there, "an oversized file was read"
            return read(path)

        try:
            there.write_bytes(big.read_bytes())
            monkeypatch.setattr(Path, "read_bytes", read_bytes)
            event, data = call(c, "categorise", [file_data(there)])
            assert event == "complete" and data[1].endswith("Ошибок: 1.")
            assert (data[2][0]["error"], data[2][0]["status"]) == ("too_large", 413)
            assert "42,326 bytes; the limit is 20,000" in data[2][0]["detail"]
        finally:
            monkeypatch.undo()
            there.unlink()
            there.parent.rmdir()

        import gradio as gr  # called directly, past gradio's own check: a file outside the upload folder is refused

        with pytest.raises(gr.Error, match="не был загружен"):
            c.app.state.ui.categorise([str(tmp_path / "feedback.sqlite")])


def test_server_logs_are_json_lines(server):
    import json

    lines = [json.loads(s) for s in server["log"].read_text().splitlines() if s.startswith("{")]
    assert any(x["msg"] == "model loaded" for x in lines)
    assert [x["msg"] for x in lines].index("model loaded") < [x["msg"] for x in lines].index("UI ready")
    assert any(x.get("route") == "/predict" and x.get("status") == 200 for x in lines)


def wait_ui(client, timeout: float = 60) -> dict:
    "Poll /ready (bounded) until the UI has left 'loading'; the last body."
    deadline = time.monotonic() + timeout
    while (body := client.get("/ready").json())["ui"] == "loading" and time.monotonic() < deadline:
        time.sleep(0.05)
    return body


def test_ui_answers_503_while_starting_then_serves(model_path, tmp_path, monkeypatch, photos):
    "The API is ready before the UI: /ui answers 503 + Retry-After while the Blocks are built, then the Gradio app."
    from fastapi.testclient import TestClient

    import app.ui
    from app.main import create_app
    from fashioncat.serving import Settings

    gate, build = threading.Event(), app.ui.build_ui
    monkeypatch.setattr(app.ui, "build_ui", lambda ui: gate.wait(60) and build(ui))
    s = Settings(model_path=str(model_path), data_dir=str(tmp_path))
    with TestClient(create_app(s, ui=True)) as c:
        r = c.get("/ready")
        assert r.status_code == 200 and r.json()["ready"] is True and r.json()["ui"] == "loading"
        r = c.get("/ui/")
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"] == "ui_loading" and r.json()["request_id"] == r.headers["x-request-id"]
        page = c.get("/ui/", headers={"Accept": "text/html"})
        assert page.status_code == 503 and '<meta http-equiv="refresh" content="1">' in page.text
        assert "запускается" in page.text
        assert c.post("/predict", files={"file": ("a.jpg", photos["jpeg"][0])}).status_code == 200  # API serves
        assert not hasattr(c.app.state, "ui")

        gate.set()
        assert wait_ui(c)["ui"] == "ready"
        r = c.get("/ui/")
        assert r.status_code == 200 and "gradio" in r.text.lower() and isinstance(c.app.state.ui, app.ui.UI)
        config = c.get("/ui/config").json()  # served under the mount: the page's asset and queue URLs start at /ui
        assert config["root"].rstrip("/").endswith("/ui") and config["mode"] == "blocks"
        assert c.get("/ui/gradio_api/info").json()["named_endpoints"].keys() >= {"/categorise", "/correct"}
        queue = c.app.state.ui.blocks._queue  # the running queue polls every 20 ms when idle, not gradio's 1 ms
        assert queue.sleep_when_free == app.ui.QUEUE_POLL_S and not queue.stopped
        metrics = c.get("/metrics").text
        assert 'fashioncat_requests_total{method="GET",route="/ui/{path:path}",status="503"} 2.0' in metrics


def test_ui_failure_leaves_the_api_serving(model_path, tmp_path):
    "In a fresh process with gradio missing: `import app.main` does not need it, the API serves, /ui says why (logged once)."
    code = (
        "import sys, time\n"
        "import app.main\n"
        "assert 'gradio' not in sys.modules, 'app.main imports gradio'\n"
        "sys.modules['gradio'] = None\n"
        "from fastapi.testclient import TestClient\n"
        "from fashioncat.serving import Settings\n"
        f"s = Settings(model_path={str(model_path)!r}, data_dir={str(tmp_path)!r})\n"
        "with TestClient(app.main.create_app(s)) as c:\n"
        "    t = time.monotonic()\n"
        "    while c.get('/ready').json()['ui'] == 'loading' and time.monotonic() - t < 30: time.sleep(0.05)\n"
        "    assert c.get('/ready').json()['ui'] == 'failed', c.get('/ready').json()\n"
        "    for _ in range(2):\n"
        "        r = c.get('/ui/')\n"
        "        assert r.status_code == 503 and 'retry-after' not in r.headers, r.headers\n"
        "        assert r.json()['error'] == 'ui_failed' and 'ModuleNotFoundError' in r.json()['detail'], r.json()\n"
        "    r = c.post('/predict', files={'file': ('a.png', open('app/examples/1_trouser.png', 'rb').read())})\n"
        "    assert r.status_code == 200, r.text\n"
        "print('ok')"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]
    failures = [line for line in r.stderr.splitlines() if "UI failed to start" in line]
    assert len(failures) == 1 and "import of gradio halted" in failures[0]


def test_examples_are_real_test_images(model_path):
    "The committed examples: one per category, recognised as images and categorised by the model."
    from fashioncat.serving import Engine

    assert len(EXAMPLES) == 10 and all(p.stat().st_size < 60_000 for p in EXAMPLES)
    res = Engine(model_path).predict_images(EXAMPLES)
    assert all("category" in r for r in res)
    assert sum(r["class_index"] == int(p.name[0]) for r, p in zip(res, EXAMPLES)) >= 6


def test_feedback_store_roundtrip(tmp_path):
    store = FeedbackStore(tmp_path / "fb" / "feedback.sqlite")
    view = np.arange(784, dtype=np.uint8).reshape(28, 28)
    kw = {
        "image": b"img",
        "view": view,
        "filename": "a.png",
        "predicted": "Shirt",
        "confidence": 0.5,
        "model_version": "v1",
    }
    assert store.add(**kw, chosen="Coat", chosen_index=4) == 1
    assert store.add(**kw, chosen="Dress", chosen_index=3) == 2
    assert store.count() == 2 and [r["chosen"] for r in store.rows()] == ["Dress", "Coat"]
    rows = read_csv(store.to_csv(tmp_path / "out.csv"))
    assert [r["chosen"] for r in rows] == ["Coat", "Dress"]
    assert np.array_equal(np.array(rows[0]["pixels"].split(), dtype=np.uint8).reshape(28, 28), view)


def test_feedback_export_is_what_training_reads(tmp_path):
    "The UI's CSV export is the format `data.feedback` trains on: the view the model saw and the latest chosen label."
    pytest.importorskip("torch")  # fashioncat.data is training code
    from fashioncat.data import read_feedback

    store = FeedbackStore(tmp_path / "feedback.sqlite")
    views = [np.full((28, 28), i * 40, np.uint8) for i in range(2)]
    for view, (chosen, idx) in zip([views[0], views[1], views[0]], [("Coat", 4), ("Bag", 8), ("Dress", 3)]):
        store.add(image=b"img", view=view, filename="=x.png", predicted="Shirt", confidence=0.5, chosen=chosen,
                  chosen_index=idx, model_version="v1")  # fmt: skip
    x, y = read_feedback(store.to_csv(tmp_path / "feedback.csv"))
    assert np.array_equal(x, np.stack([views[1], views[0]])) and y.tolist() == [8, 3]  # the first view's latest label


def test_feedback_csv_defuses_formulas(tmp_path):
    "A file name a spreadsheet would run as a formula is exported with a leading quote; the store keeps it as sent."
    store = FeedbackStore(tmp_path / "feedback.sqlite")
    names = ['=HYPERLINK("http://x","a").png', "+1.png", "-2.png", "@SUM(A1).png", "\tx.png", "\rx.png", "a=b-c.png"]
    view = np.zeros((28, 28), np.uint8)
    for name in [*names, None]:
        store.add(image=b"img", view=view, filename=name, predicted="Bag", confidence=0.5, chosen="Bag", chosen_index=8,
                  model_version="v1")  # fmt: skip
    got = [r["filename"] for r in read_csv(store.to_csv(tmp_path / "out.csv"))]
    assert got == ["'" + n for n in names[:-1]] + ["a=b-c.png", ""]
    assert [r["filename"] for r in store.rows()][::-1] == [*names, None]
