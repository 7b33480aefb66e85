"""The merchandisers' UI through `gradio_client`, against a real uvicorn server on loopback (started and stopped here)."""

import codecs
import csv
import hashlib
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.ui.feedback import CSV_COLUMNS, FeedbackStore

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "app" / "examples").glob("*.png"))


def read_csv(path) -> list[dict]:
    with open(path, encoding="utf-8-sig", newline="") as f:  # as the csv module asks: a \r inside a cell stays one
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
    assert summary.startswith("Обработано фото: 2. Требуют проверки: ") and summary.endswith(" Ошибок: 1 (notes.png).")
    assert [r.get("filename") for r in results] == ["jacket.jpg", "cutout.png", "notes.png"]  # the JSON: upload order
    ok = results[0]
    api = httpx.post(server["url"] + "/predict", files={"file": ("jacket.jpg", photos["jpeg"][0])}).json()
    assert (ok["category"], ok["confidence"]) == (api["category"], api["confidence"])  # the UI and the API agree
    assert len(ok["top_k"]) == 3 and isinstance(ok["needs_review"], bool)
    assert results[2]["error"] == "not_an_image" and results[2]["status"] == 415

    wrong, other = [i for i in range(10) if i != ok["class_index"]][:2]
    categories = httpx.get(server["url"] + "/model").json()["categories"]
    names = categories[wrong]
    label = f"{names['category_ru']} ({names['category']})"
    msg = ui.predict(ok["id"], label, api_name="/correct")
    assert msg == f"Сохранено: {label} (модель: {ok['category_ru']} ({ok['category']}))."  # Russian, as the choices
    other_label = f"{categories[other]['category_ru']} ({categories[other]['category']})"
    msg = ui.predict(results[1]["id"], categories[other]["category"], api_name="/correct")  # English names work too
    assert msg.startswith(f"Сохранено: {other_label} (модель: ")
    msg = ui.predict(results[1]["id"], names["category_ru"].lower(), api_name="/correct")  # in any case
    assert msg.startswith(f"Исправление заменено: было {other_label}, теперь {label} (модель: ")  # one per photo

    rows = ui.predict(api_name="/feedback_table")
    got = rows["data"] if isinstance(rows, dict) else rows
    assert [r[4] for r in got] == [label] * 2 and got[1][1] == "jacket.jpg"
    assert got[1][2] == f"{ok['category_ru']} ({ok['category']})"

    csv_path = ui.predict(api_name="/feedback_csv")
    assert Path(csv_path).read_bytes().startswith(codecs.BOM_UTF8)  # Excel reads it as UTF-8
    out = read_csv(csv_path)
    assert list(out[0]) == CSV_COLUMNS and [r["filename"] for r in out] == ["jacket.jpg", "cutout.png"]
    assert int(out[0]["chosen_index"]) == wrong and len(out[0]["pixels"].split()) == 784
    assert [r["chosen_ru"] for r in out] == [names["category_ru"]] * 2

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


def test_ui_rejects_unknown_category_and_stale_ids(server, ui):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="Неизвестная категория"):
        ui.predict("whatever", "Kilt", api_name="/correct")
    with pytest.raises(AppError, match="устарел"):
        ui.predict("no-such-id", "Trouser", api_name="/correct")
    log = (server["data_dir"] / "server.log").read_text()
    assert "Неизвестная категория" not in log and "Traceback" not in log, log[-2000:]  # refusals, not server faults


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


def test_ui_gallery_click_categorises_the_example(server, ui):
    """A click on an example, as the browser runs it: `pick` puts (a cached copy of) it in the file box, then `categorise`.
    The gallery is in a closed "Примеры" accordion, and an example's correction is refused: it is a test image."""
    config = httpx.get(server["url"] + "/ui/config").json()
    pick = next(d for d in config["dependencies"] if d["api_name"] == "pick")
    then = next(d for d in config["dependencies"] if d["trigger_after"] == pick["id"])
    gallery = next(c for c in config["components"] if c["id"] == pick["targets"][0][0])
    accordion = next(c for c in config["components"] if c["type"] == "accordion")
    assert (accordion["props"]["label"], accordion["props"]["open"]) == ("Примеры", False)
    assert gallery["id"] in layout_ids(config["layout"], accordion["id"])
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
    render = queue_call(server["url"], show["id"], [None], session)["output"]["render_config"]
    drawn = render["components"]
    photo = next(c for c in drawn if c["type"] == "image" and c["props"]["label"] == EXAMPLES[1].name)
    assert httpx.get(photo["props"]["value"]["url"]).content == EXAMPLES[1].read_bytes()
    assert {"label", "radio"} <= {c["type"] for c in drawn}  # the top 3 and the one-click correction
    summary, results = done["output"]["data"][1:]
    assert summary.startswith("Обработано фото: 1.") and [r["filename"] for r in results] == [EXAMPLES[1].name]
    api = httpx.post(server["url"] + "/predict", files={"file": (EXAMPLES[1].name, EXAMPLES[1].read_bytes())}).json()
    assert (results[0]["category"], results[0]["confidence"]) == (api["category"], api["confidence"])

    n = len(FeedbackStore(server["data_dir"] / "feedback.sqlite").rows())
    radio = next(c for c in drawn if c["type"] == "radio")
    fix = next(d for d in render["dependencies"] if d["targets"] == [[radio["id"], "input"]])
    label = radio["props"]["choices"][0][0]
    fixed = queue_call(server["url"], fix["id"], [None, label], session, trigger_id=radio["id"])
    (status,) = fixed["output"]["data"]
    assert status.startswith("⚠ Не сохранено. Это пример из тестового набора"), status
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="Это пример из тестового набора"):  # nor through the API
        ui.predict(results[0]["id"], label, api_name="/correct")
    assert len(FeedbackStore(server["data_dir"] / "feedback.sqlite").rows()) == n


def layout_ids(node: dict, under: int | None = None) -> set[int]:
    "The ids of the components in a config's layout tree, or in the subtree of component `under`."
    if under is not None and node.get("id") != under:
        return set().union(*(layout_ids(c, under) for c in node.get("children", [])))
    return {node.get("id")} | set().union(*(layout_ids(c) for c in node.get("children", [])))


def test_ui_upload_limits(model_path, tmp_path, monkeypatch):
    "Uploads over FASHIONCAT_MAX_BYTES are refused by gradio (413) or, if already there, per item; over MAX_BATCH: all."
    from fastapi.testclient import TestClient
    from gradio.utils import get_upload_folder

    from app.core.config import Settings
    from app.main import create_app

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
            assert event == "complete" and data[1].endswith(f"Ошибок: 1 ({big.name.replace('_', chr(92) + '_')}).")
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

    import app.ui.review
    from app.core.config import Settings
    from app.main import create_app

    gate, build = threading.Event(), app.ui.review.build_ui
    monkeypatch.setattr(app.ui.review, "build_ui", lambda ui: gate.wait(60) and build(ui))
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
        assert r.status_code == 200 and "gradio" in r.text.lower() and isinstance(c.app.state.ui, app.ui.review.UI)
        config = c.get("/ui/config").json()  # served under the mount: the page's asset and queue URLs start at /ui
        assert config["root"].rstrip("/").endswith("/ui") and config["mode"] == "blocks"
        assert c.get("/ui/gradio_api/info").json()["named_endpoints"].keys() >= {"/categorise", "/correct"}
        queue = c.app.state.ui.blocks._queue  # the running queue polls every 20 ms when idle, not gradio's 1 ms
        assert queue.sleep_when_free == app.ui.review.QUEUE_POLL_S and not queue.stopped
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
        "from app.core.config import Settings\n"
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
    assert store.add(**kw, chosen="Coat", chosen_index=4) == (1, None)
    assert store.add(**kw, chosen="Dress", chosen_index=3) == (2, "Coat")  # the same photo again: replaced
    assert store.add(**kw | {"image": b"other"}, chosen="Bag", chosen_index=8) == (3, None)
    assert store.count() == 2 and [r["chosen"] for r in store.rows()] == ["Bag", "Dress"]
    out = store.to_csv(tmp_path / "out.csv", {"Dress": "Платье", "Bag": "Сумка"})
    assert out.read_bytes().startswith(codecs.BOM_UTF8)  # so that Excel reads the Cyrillic as UTF-8
    rows = read_csv(out)
    assert list(rows[0]) == CSV_COLUMNS and CSV_COLUMNS.index("chosen_ru") == CSV_COLUMNS.index("chosen") + 1
    assert [(r["chosen"], r["chosen_ru"], r["chosen_index"]) for r in rows] == [
        ("Dress", "Платье", "3"),
        ("Bag", "Сумка", "8"),
    ]
    assert np.array_equal(np.array(rows[0]["pixels"].split(), dtype=np.uint8).reshape(28, 28), view)


def test_feedback_store_keeps_one_correction_per_photo(tmp_path):
    """A file from before (no index, a photo corrected twice) opens unchanged; the photo's next correction replaces both
    rows, and two stores on one file (two processes) correcting one photo at once leave one row."""
    from app.ui.feedback import _SCHEMA

    path, sha = tmp_path / "feedback.sqlite", hashlib.sha256(b"img").hexdigest()
    with sqlite3.connect(path) as db:
        db.execute(_SCHEMA)
        for chosen in ("Coat", "Dress"):
            db.execute(
                "INSERT INTO feedback (created_at, filename, image_sha256, image, view_png, predicted, confidence, chosen,"
                " chosen_index, model_version) VALUES ('2026-01-01T00:00:00Z', 'a.png', ?, x'00', x'00', 'Shirt', 0.5,"
                " ?, 0, 'v0')",
                (sha, chosen),
            )
    stores = [FeedbackStore(path), FeedbackStore(path)]
    assert stores[0].count() == 2  # nothing dropped by opening it
    kw = {"view": np.zeros((28, 28), np.uint8), "filename": "a.png", "predicted": "Shirt", "confidence": 0.5}
    kw |= {"model_version": "v1"}
    saved = stores[0].add(image=b"img", **kw, chosen="Bag", chosen_index=8)
    assert saved.replaced == "Dress" and [(r["chosen"], r["image_sha256"]) for r in stores[1].rows()] == [("Bag", sha)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: stores[i % 2].add(image=b"new", **kw, chosen="Coat", chosen_index=4), range(16)))
    assert stores[0].count() == 2
    with sqlite3.connect(path) as db:
        assert "feedback_image_sha256" in {
            r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")
        }


def test_feedback_export_is_what_training_reads(tmp_path):
    "The UI's CSV export is the format `data.feedback` trains on: the view the model saw and the latest chosen label."
    pytest.importorskip("torch")  # fashioncat.data is training code
    from fashioncat.data import read_feedback

    store = FeedbackStore(tmp_path / "feedback.sqlite")
    views = [np.full((28, 28), i * 40, np.uint8) for i in range(2)]
    photos = [(b"a", views[0]), (b"b", views[1]), (b"c", views[0])]  # two photos that the model sees the same
    for (image, view), (chosen, idx) in zip(photos, [("Coat", 4), ("Bag", 8), ("Dress", 3)]):
        store.add(image=image, view=view, filename="=x.png", predicted="Shirt", confidence=0.5, chosen=chosen,
                  chosen_index=idx, model_version="v1")  # fmt: skip
    x, y = read_feedback(store.to_csv(tmp_path / "feedback.csv"))
    assert np.array_equal(x, np.stack([views[1], views[0]])) and y.tolist() == [8, 3]  # the first view's latest label


def test_feedback_csv_defuses_formulas(tmp_path):
    "A file name a spreadsheet would run as a formula is exported with a leading quote; the store keeps it as sent."
    store = FeedbackStore(tmp_path / "feedback.sqlite")
    names = ['=HYPERLINK("http://x","a").png', "+1.png", "-2.png", "@SUM(A1).png", "\tx.png", "\rx.png", "a=b-c.png"]
    view = np.zeros((28, 28), np.uint8)
    for name in [*names, None]:
        store.add(image=str(name).encode(), view=view, filename=name, predicted="Bag", confidence=0.5, chosen="Bag", chosen_index=8,
                  model_version="v1")  # fmt: skip
    got = [r["filename"] for r in read_csv(store.to_csv(tmp_path / "out.csv"))]
    assert got == ["'" + n for n in names[:-1]] + ["a=b-c.png", ""]
    assert [r["filename"] for r in store.rows()][::-1] == [*names, None]


@pytest.fixture(scope="module")
def local(model_path, tmp_path_factory):
    "The app with its UI in this process (its state at hand, for the tests to change), through a TestClient."
    from fastapi.testclient import TestClient

    from app.core.config import Settings
    from app.main import create_app

    data_dir = tmp_path_factory.mktemp("ui-local")
    s = Settings(model_path=str(model_path), data_dir=str(data_dir), max_batch=7, max_bytes=3 * 2**20)
    with TestClient(create_app(s, ui=True)) as c:
        assert wait_ui(c)["ui"] == "ready"
        yield c


class Session:
    "One browser session on `local`: upload and categorise as the button does, draw the results, pick in a row."

    def __init__(self, client):
        self.c, self.hash = client, uuid.uuid4().hex
        self.config = client.get("/ui/config").json()
        self.render: dict = {}

    def run(self, fn_index: int, data: list, **kw) -> dict:
        "Join the queue, read the session's stream to its end: the completed message."
        body = {"data": data, "fn_index": fn_index, "session_hash": self.hash, "event_data": None, "trigger_id": None}
        assert self.c.post("/ui/gradio_api/queue/join", json=body | kw).status_code == 200
        with self.c.stream("GET", "/ui/gradio_api/queue/data", params={"session_hash": self.hash}) as r:
            msgs = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]
        return next(m for m in msgs if m.get("msg") == "process_completed")

    def categorise(self, files: list[tuple[str, bytes]]) -> tuple[str, list[dict], list[dict]]:
        "Upload `files` (name, bytes), categorise them and draw the results: the summary, the JSON, the rows shown."
        parts = [("files", (name, data, "application/octet-stream")) for name, data in files]
        uploaded = self.c.post("/ui/gradio_api/upload", files=parts).json()
        dep = next(d for d in self.config["dependencies"] if d["api_name"] == "categorise")
        done = self.run(dep["id"], [[file_data(u)[0] for u in uploaded]])
        assert done["success"], done
        _, summary, public = done["output"]["data"]
        show = next(d for d in self.config["dependencies"] if dep["outputs"][0] in d["inputs"])
        self.render = self.run(show["id"], [None])["output"]["render_config"]
        return summary, public, self.rows()

    def rows(self) -> list[dict]:
        "Each result row drawn: its photo's label, its texts, its radio's id (None for a failed photo)."
        rows = []
        for comp in self.render["components"]:
            if comp["type"] == "row":
                rows.append({"name": None, "texts": [], "radio": None})
            elif rows and comp["type"] == "image" and rows[-1]["name"] is None:
                rows[-1]["name"] = comp["props"]["label"]
            elif rows and comp["type"] == "markdown":
                rows[-1]["texts"].append(comp["props"].get("value"))
            elif rows and comp["type"] == "radio":
                rows[-1]["radio"] = comp["id"]
        return rows

    def pick(self, row: dict, label: str) -> tuple[str, list[dict]]:
        "Choose `label` in a row's radio, as the browser does: the row's status, and the events that follow the choice."
        dep = next(d for d in self.render["dependencies"] if d["targets"] == [[row["radio"], "input"]])
        done = self.run(dep["id"], [None, label], trigger_id=row["radio"])  # the row's State: the server's copy
        assert done["success"], done
        return done["output"]["data"][0], [d for d in self.render["dependencies"] if d["trigger_after"] == dep["id"]]


def ru_label(client, i: int) -> str:
    c = client.get("/model").json()["categories"][i]
    return f"{c['category_ru']} ({c['category']})"


def test_ui_row_correction_uses_the_session_not_the_cache(local, photos, monkeypatch):
    "A row's correction works after the shared cache forgot the result (>1,000 later photos, a restart); a failed save says so."
    session = Session(local)
    _, (result,), (row,) = session.categorise([("jacket.jpg", photos["jpeg"][0])])
    local.app.state.ui.recent.clear()  # as after colleagues' 1,000 photos
    wrong = next(i for i in range(10) if i != result["class_index"])
    store = local.app.state.feedback
    n = store.count()
    status, _ = session.pick(row, ru_label(local, wrong))
    assert status.startswith(f"Сохранено: {ru_label(local, wrong)}") and store.count() == n + 1
    assert store.rows(limit=1)[0]["filename"] == "jacket.jpg"

    def locked(**kw):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(store, "add", locked)
    status, _ = session.pick(row, ru_label(local, result["class_index"]))
    assert status.startswith("⚠ Не сохранено: ошибка на сервере") and "Сохранено" not in status.replace("сохранено", "")


def test_ui_corrections_speak_russian_and_refresh_the_table(local, photos):
    "The save message and the corrections table use the UI's Russian labels; the table is refreshed after a correction."
    session = Session(local)
    _, (result,), (row,) = session.categorise([("cutout.png", photos["transparent"][0])])
    wrong = next(i for i in range(10) if i != result["class_index"])
    status, after = session.pick(row, ru_label(local, wrong))
    assert status == f"Сохранено: {ru_label(local, wrong)} (модель: {ru_label(local, result['class_index'])})."
    table = next(c for c in session.config["components"] if c["type"] == "dataframe")
    (refresh,) = after
    assert refresh["outputs"] == [table["id"]]
    done = session.run(refresh["id"], [])
    newest = done["output"]["data"][0]["data"][0]
    assert newest[1:3] == ["cutout.png", ru_label(local, result["class_index"])] and newest[4] == ru_label(local, wrong)


def test_ui_failed_and_doubtful_photos_come_first_and_are_named(local, photos, monkeypatch):
    "Failed photos first, then those needing review, then the rest (upload order within each); the summary names them."
    engine = local.app.state.engine
    kinds = ["png", "jpeg", "webp", "exif", "bmp"]
    conf = {k: r["confidence"] for k, r in zip(kinds, engine.predict_images([photos[k][0] for k in kinds]))}
    low = sorted(conf.values())
    assert low[1] < low[2]
    monkeypatch.setattr(engine, "review_threshold", (low[1] + low[2]) / 2)  # the two least sure need review
    names = {k: f"{k}_photo.{k}" for k in kinds}
    files = [(names[k], photos[k][0]) for k in kinds[:2]] + [("notes.txt", b"hello")]
    files += [(names[k], photos[k][0]) for k in kinds[2:]]
    summary, public, rows = Session(local).categorise(files)
    assert [r["filename"] for r in public] == [f for f, _ in files]  # the JSON keeps upload order
    review = [names[k] for k in kinds if conf[k] < engine.review_threshold]
    rest = [names[k] for k in kinds if conf[k] >= engine.review_threshold]
    assert [r["name"] for r in rows] == ["notes.txt", *review, *rest]
    named = ", ".join(n.replace("_", "\\_") for n in review)  # Markdown: a file name shows as it is
    assert summary == f"Обработано фото: 5. Требуют проверки: 2 ({named}). Ошибок: 1 (notes.txt)."


def test_ui_summary_names_at_most_ten():
    from app.ui.review import _summary

    results = [{"filename": f"{i}.jpg", "needs_review": True} for i in range(13)] + [
        {"filename": "x", "error": "empty"}
    ]
    assert _summary(results) == (
        "Обработано фото: 13. Требуют проверки: 13 (0.jpg, 1.jpg, 2.jpg, 3.jpg, 4.jpg, 5.jpg, 6.jpg, 7.jpg, 8.jpg, 9.jpg"
        " и ещё 3). Ошибок: 1 (x)."
    )


def test_ui_bad_files_fail_alone_in_russian(local, photos):
    "A non-image or an extensionless JPEG in a selection: not a whole-selection refusal, each file gets its own row."
    summary, public, rows = Session(local).categorise(
        [("notes.txt", b"hello"), ("IMG_0042", photos["jpeg"][0]), ("blank.png", b"")]
    )
    assert summary.startswith("Обработано фото: 1.") and summary.endswith("Ошибок: 2 (notes.txt, blank.png).")
    assert [r.get("error") for r in public] == ["not_an_image", None, "empty"] and public[1]["category"]
    texts = {r["name"]: r["texts"] for r in rows}
    assert texts["notes.txt"] == [
        "**Не удалось распознать:** это не изображение. Загрузите фото в формате PNG, JPEG, WebP, BMP, GIF или TIFF."
    ]
    assert texts["blank.png"] == ["**Не удалось распознать:** файл пустой (0 байт). Загрузите сам файл фото ещё раз."]


def test_ui_error_messages_cover_the_engine_codes():
    "Every error code of the engine has a Russian message without the HTTP status; an unknown code shows its detail."
    from app.ui.review import _error_ru
    from fashioncat import photos

    codes = {c.code for c in vars(photos).values() if isinstance(c, type) and issubclass(c, photos.ServingError)}
    codes -= {"bad_request"}  # the base class: never raised by itself
    for code in codes:
        msg = _error_ru({"error": code, "status": 415, "detail": "English"}, 20_000)
        assert re.search("[а-я]", msg) and "415" not in msg and "English" not in msg, (code, msg)
    assert "19,5 КБ" in _error_ru({"error": "too_large", "status": 413, "detail": "x"}, 20_000)
    assert _error_ru({"error": "teapot", "status": 418, "detail": "I'm a teapot"}, 1) == "I'm a teapot"


def test_ui_header_announces_the_limits(local):
    "The page says how many photos at once and how large each may be, from the settings."
    config = local.get("/ui/config").json()
    header = next(c["props"]["value"] for c in config["components"] if c["type"] == "markdown")
    assert "каждое не больше 3 МБ" in header and "до 7 фото за раз" in header and "до 2000 фото" in header


def test_sizes_in_russian():
    from app.ui.review import _size_ru

    assert [_size_ru(n) for n in (10 * 2**20, 3 * 2**19, 20_000, 512)] == ["10 МБ", "1,5 МБ", "19,5 КБ", "512 байт"]


def test_review_mark_speaks_plainly():
    "The mark says whether to check, with the confidence rounded down (99.6% doubtful never reads 100%), no threshold."
    from types import SimpleNamespace

    from app.ui.review import _review_md

    engine = SimpleNamespace(review_threshold=0.9555)
    text = _review_md({"confidence": 0.996, "needs_review": True}, engine)
    assert text.endswith("Требует проверки</span>: модель не уверена (уверенность 99%)") and "порог" not in text
    text = _review_md({"confidence": 0.9555, "needs_review": False}, engine)
    assert text.endswith("Уверенно</span>: уверенность 95%") and "порог" not in text
    text = _review_md({"confidence": 0.99, "needs_review": True, "is_product": False}, engine)
    assert "Не товар?" in text and "порог" not in text


def test_ui_not_a_product_is_an_answer_and_never_a_label(local, photos, tmp_path):
    "'Не товар' can be chosen for a row; it is saved as not_a_product (-1), exported so, and training never learns it."
    pytest.importorskip("torch")  # fashioncat.data is training code
    from fashioncat.data import NOT_A_PRODUCT, read_feedback

    session = Session(local)
    _, _, (row,) = session.categorise([("banner.jpg", photos["jpeg"][0] + b"\0")])  # a photo no other test corrected
    status, _ = session.pick(row, "Не товар")
    assert status.startswith("Сохранено: Не товар"), status
    saved = local.app.state.feedback.rows(limit=1)[0]
    assert (saved["chosen"], saved["chosen_index"]) == ("not_a_product", NOT_A_PRODUCT)
    csv_path = local.app.state.ui.export_csv()
    assert "Не товар" in Path(csv_path).read_text(encoding="utf-8-sig")
    _, y = read_feedback(csv_path)
    assert NOT_A_PRODUCT not in y.tolist()
