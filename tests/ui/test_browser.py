"""The review workflow in a real browser: Debian's chromium driven by pytest-playwright against a uvicorn server on
loopback. Upload 100 photos, filter, correct by keyboard, undo, accept the rest, export and read the files back, reload
and find the batch, the audit share; two reviewers on one row; a saved correction survives a kill -9 of the server."""

import csv
import importlib.util
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

CHROMIUM = os.environ.get("FASHIONCAT_CHROMIUM") or "/usr/bin/chromium"  # Debian's; never a downloaded one
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("pytest_playwright") is None or not Path(CHROMIUM).exists(),
    reason=f"needs pytest-playwright (pip install -e '.[dev]') and {CHROMIUM} (apt-get install chromium)",
)
ROOT = Path(__file__).resolve().parents[2]
AUDIT_SHARE = 0.2
VIEW = {"viewport": {"width": 1280, "height": 800}, "locale": "ru-RU"}


# pytest-playwright keeps Playwright (and its asyncio loop, marked as running in the main thread) for the whole session,
# which breaks every later test that calls asyncio.run; here it lives for this module only.
@pytest.fixture(scope="module")
def playwright():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright):
    browser = playwright.chromium.launch(executable_path=CHROMIUM)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def browser_context_args():
    return {**VIEW, "accept_downloads": True}


def start_server(model_path, data_dir: Path, tmp: Path) -> tuple[subprocess.Popen, str]:
    "uvicorn on a free port with its data in `data_dir`; returns once the UI is ready."
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "FASHIONCAT_MODEL_PATH": str(model_path), "FASHIONCAT_DATA_DIR": str(data_dir)}
    env |= {"FASHIONCAT_AUDIT_SHARE": str(AUDIT_SHARE), "TMPDIR": str(tmp), "FASHIONCAT_LOG_LEVEL": "WARNING"}
    cmd = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    with open(data_dir / "server.log", "a") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        if proc.poll() is not None:
            pytest.fail("server exited: " + (data_dir / "server.log").read_text()[-3000:])
        try:
            if httpx.get(url + "/ready", timeout=1).json().get("ui") == "ready":
                return proc, url
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.25)
    proc.kill()
    pytest.fail("server not ready in 60 s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory):
    data = tmp_path_factory.mktemp("browser-data")
    proc, url = start_server(model_path, data, tmp_path_factory.mktemp("browser-tmp"))
    yield url
    stop(proc)


@pytest.fixture(scope="module")
def photo_files(test_set, tmp_path_factory) -> list[Path]:
    "100 catalogue photos of test images and one file that is not a photo."
    from fashioncat.photos import catalogue_photo

    x, _ = test_set
    d = tmp_path_factory.mktemp("browser-photos")
    out = []
    for i in range(100):
        (p := d / f"item-{i:03d}.jpg").write_bytes(catalogue_photo(x[i], "jpeg", seed=i))
        out.append(p)
    (p := d / "notes.txt").write_bytes(b"not a photo")
    return [*out, p]


def open_ui(page, url: str, reviewer: str = "Аня", query: str = "") -> None:
    page.add_init_script(f"localStorage.setItem('fc-reviewer', {reviewer!r})")
    page.goto(f"{url}/ui/{query}")
    page.locator("#fc-queue .fc-top").wait_for(timeout=30_000)


def upload(page, files: list[Path]) -> str:
    "Upload `files` as a batch and wait until it is processed; the batch id (from the page's address)."
    page.locator("input[type=file]").first.set_input_files([str(f) for f in files])
    page.wait_for_function("window.fcState?.info?.status === 'ready'", timeout=60_000)
    return page.evaluate("window.fcState.batch")


def batch_rows(url: str, batch_id: str) -> list[dict]:
    return httpx.get(f"{url}/ui/review/batches/{batch_id}/rows", params={"filter": "all", "limit": 500}).json()["rows"]


def saved(page, text: str) -> None:
    page.locator("#fc-msg").filter(has_text=text).wait_for(timeout=10_000)


def test_review_a_batch_by_keyboard(page, server, photo_files, tmp_path):
    open_ui(page, server)
    assert page.evaluate("document.documentElement.lang") == "ru"
    batch_id = upload(page, photo_files)
    assert page.url.endswith(f"?batch={batch_id}")
    rows = batch_rows(server, batch_id)
    assert len(rows) == 101 and rows[-1]["source"] == "failed"
    review = [r for r in rows if r["needs_review"] or r["audit"]]
    assert page.locator("#fc-rows tr[data-k]").count() == min(len(review), 50)  # the default filter, one page
    assert page.locator("#fc-pending").inner_text() == str(len(review))

    # the audit: a share of the confident answers, marked in the queue
    confident = [r for r in rows if r["source"] == "model" and not r["needs_review"]]
    audited = [r for r in confident if r["audit"]]
    n = len(confident)
    assert abs(len(audited) - AUDIT_SHARE * n) <= 4 * np.sqrt(n * AUDIT_SHARE * (1 - AUDIT_SHARE)) + 1
    assert page.locator("#fc-rows .fc-audit").count() == len([r for r in review[:50] if r["audit"]])
    assert "порог" not in page.content()
    assert page.locator("img[src*='/thumb']").count() >= 1 and page.locator("#fc-rows img").evaluate_all(
        "imgs => imgs.every(i => !i.complete || i.naturalWidth > 0)"
    )  # no broken images

    first, second, third = review[0], review[1], review[2]
    wrong = (first["predicted_index"] + 1) % 10
    page.keyboard.press(str((wrong + 1) % 10))  # keys 1-9, 0: categories 0-9
    saved(page, f"№{first['idx'] + 1}")
    page.keyboard.press("Enter")  # the cursor moved on: the model's answer is right
    page.keyboard.press("n")  # and the third is not a product ...
    saved(page, f"№{third['idx'] + 1} — не товар")
    page.keyboard.press("u")  # ... no, it is: undone
    saved(page, "отменено")
    now = {r["idx"]: r for r in batch_rows(server, batch_id)}
    assert (now[first["idx"]]["source"], now[first["idx"]]["final_index"], now[first["idx"]]["reviewer"]) == (
        "corrected", wrong, "Аня")  # fmt: skip
    assert now[second["idx"]]["source"] == "confirmed"
    assert now[third["idx"]]["source"] == "model"

    page.keyboard.press("k")  # back to the first row, then down with the arrow
    page.keyboard.press("ArrowDown")
    assert page.evaluate("window.fcState.cur") == 2
    other = (third["predicted_index"] + 2) % 10
    for key in ("Enter", "k", str((other + 1) % 10)):  # a burst: confirm, back, correct the same row
        page.keyboard.press(key)
    page.evaluate("window.fcIdle()")
    now = next(r for r in batch_rows(server, batch_id) if r["idx"] == third["idx"])
    assert (now["source"], now["final_index"], now["version"]) == ("corrected", other, third["version"] + 4)

    page.get_by_role("button", name="Исправленные").click()
    page.wait_for_function("window.fcState?.filter === 'corrected' && window.fcState.total === 2")
    assert page.locator("#fc-rows tr[data-k]").count() == 2
    page.get_by_role("button", name="Все").click()
    page.wait_for_function("window.fcState?.filter === 'all' && window.fcState.rows.length === 50")
    page.keyboard.press("a")  # "принять остальные" of the filter: every unreviewed row
    saved(page, "принято 97 фото")  # 101 less the failed one, the two corrected and the confirmed one
    assert {r["source"] for r in batch_rows(server, batch_id)} == {"corrected", "confirmed", "failed"}
    page.keyboard.press("u")  # a bulk accept is undone as a whole
    saved(page, "отменено (97 фото)")
    assert sum(r["source"] == "model" for r in batch_rows(server, batch_id)) == 97
    page.get_by_role("button", name="Принять остальные").click()
    saved(page, "принято 97 фото")

    with page.expect_download() as dl:
        page.keyboard.press("e")
    out = list(csv.DictReader(io.StringIO(Path(dl.value.path()).read_text(encoding="utf-8-sig"))))
    assert [o["file"] for o in out] == [f.name for f in photo_files]
    got = out[first["idx"]]
    wrong_en = httpx.get(server + "/model").json()["categories"][wrong]["category"]
    assert (got["source"], got["category"], got["reviewer"]) == ("corrected", wrong_en, "Аня")
    assert out[-1]["source"] == "failed" and out[-1]["category"] == ""
    with page.expect_download() as dl:
        page.get_by_text("Скачать Excel").click()
    from openpyxl import load_workbook

    assert dl.value.suggested_filename == f"batch-{batch_id}.xlsx"
    book = load_workbook(io.BytesIO(Path(dl.value.path()).read_bytes()))
    sheet = [list(r) for r in book.active.iter_rows(values_only=True)]
    assert [s[0] for s in sheet[1:]] == [o["file"] for o in out] and sheet[1 + first["idx"]][3] == "corrected"

    page.reload()  # the link reopens the batch
    page.wait_for_function(f"window.fcState?.info?.id === '{batch_id}'", timeout=30_000)
    assert page.locator("#fc-summary").inner_text().startswith("Партия от ")
    page.goto(f"{server}/ui/")  # and the list of batches finds it
    page.locator("#fc-batches a").first.wait_for(timeout=30_000)
    page.locator(f"#fc-batches a[data-b='{batch_id}']").click()
    page.wait_for_function(f"window.fcState?.info?.id === '{batch_id}'")


def test_two_reviewers_on_one_row_get_a_conflict(browser, server, photo_files):
    "The later of two reviewers who saw the same version of a row is told, and their change is not saved."
    pages = []
    for who in ("Аня", "Боря"):
        ctx = browser.new_context(**VIEW)
        pages.append(ctx.new_page())
        open_ui(pages[-1], server, who)
    a, b = pages
    batch_id = upload(a, photo_files[:10])
    open_ui(b, server, "Боря", f"?batch={batch_id}")
    b.wait_for_function("window.fcState?.info?.status === 'ready'")
    a.get_by_role("button", name="Все").click()
    b.get_by_role("button", name="Все").click()
    for p in pages:
        p.wait_for_function("window.fcState?.filter === 'all' && window.fcState.rows.length === 10")
    a.keyboard.press("n")
    saved(a, "№1 — не товар")
    b.keyboard.press("Enter")
    saved(b, "Конфликт: фото №1 уже изменил(а) Аня")
    (row,) = [r for r in batch_rows(server, batch_id) if r["idx"] == 0]
    assert (row["source"], row["reviewer"]) == ("not_a_product", "Аня")
    assert b.locator("#fc-rows tr[data-k='0'] .fc-final").inner_text().startswith("не товар")


def test_a_saved_correction_survives_kill_9(browser, model_path, photo_files, tmp_path_factory):
    data = tmp_path_factory.mktemp("kill9-data")
    tmp = tmp_path_factory.mktemp("kill9-tmp")
    proc, url = start_server(model_path, data, tmp)
    try:
        page = browser.new_context(**VIEW).new_page()
        open_ui(page, url)
        batch_id = upload(page, photo_files[:5])
        page.get_by_role("button", name="Все").click()
        page.wait_for_function("window.fcState?.filter === 'all' && window.fcState.rows.length === 5")
        first = batch_rows(url, batch_id)[0]
        wrong = (first["predicted_index"] + 3) % 10
        page.keyboard.press(str((wrong + 1) % 10))
        saved(page, "Сохранено: №1")
        os.kill(proc.pid, signal.SIGKILL)  # no shutdown, no flush: only what was committed
        proc.wait()
        page.context.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    proc, url = start_server(model_path, data, tmp)
    try:
        b = httpx.get(f"{url}/batches/{batch_id}").json()
        row = b["rows"][0]
        assert (row["source"], row["reviewer"], b["n_files"]) == ("corrected", "Аня", 5)
        import sqlite3

        with sqlite3.connect(data / "feedback.sqlite") as db:
            assert db.execute("SELECT chosen_index, reviewer FROM feedback").fetchall() == [(wrong, "Аня")]
    finally:
        stop(proc)
