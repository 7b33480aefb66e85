"""/docs and /redoc render in a real browser with every request outside 127.0.0.1 refused: their assets are packaged.

The browser tests need pytest-playwright (the dev extra) and a Chromium binary (`/usr/bin/chromium`: Debian's
`chromium` package, or `FASHIONCAT_CHROMIUM`); `playwright install` is never needed. Without either, they skip.
"""

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("FASHIONCAT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
needs_browser = pytest.mark.skipif(
    importlib.util.find_spec("pytest_playwright") is None or not Path(CHROMIUM).exists(),
    reason="needs pytest-playwright (pip install -e '.[dev]') and a Chromium binary (apt-get install chromium)",
)


def test_docs_pages_name_only_local_assets(model_path, tmp_path):
    "Without a browser: both pages load their script and style from the app, under the proxy's prefix when there is one."
    s = Settings(model_path=str(model_path), data_dir=str(tmp_path), ui_enabled=False)
    app = create_app(s)
    with TestClient(app, root_path="/shop") as c:
        swagger, redoc = c.get("/docs").text, c.get("/redoc").text
    with TestClient(app) as c:
        js = c.get("/docs-assets/swagger-ui-bundle.js")
    assert '"/shop/docs-assets/swagger-ui-bundle.js"' in swagger and "/shop/openapi.json" in swagger
    assert '"/shop/docs-assets/redoc.standalone.js"' in redoc and "/shop/openapi.json" in redoc
    for page in (swagger, redoc):
        assert "https://" not in page.replace("https://swagger.io", ""), page  # no CDN, no Google fonts
    assert js.status_code == 200 and len(js.content) > 100_000


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    "pytest-playwright launches the system's Chromium, never a downloaded one."
    return {**browser_type_launch_args, "executable_path": CHROMIUM}


# pytest-playwright keeps Playwright (and its asyncio loop, marked as running in the main thread) for the whole session,
# which breaks every later test that calls asyncio.run; here it lives for this module only.
@pytest.fixture(scope="module")
def playwright():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser_context_args():
    return {}


@pytest.fixture(scope="module")
def browser(playwright, browser_type_launch_args):
    browser = playwright.chromium.launch(**browser_type_launch_args)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory):
    "The service under uvicorn on a free port of 127.0.0.1, API only; killed afterwards."
    tmp = tmp_path_factory.mktemp("docs-server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "FASHIONCAT_MODEL_PATH": str(model_path), "FASHIONCAT_DATA_DIR": str(tmp / "fb")}
    env |= {"FASHIONCAT_UI_ENABLED": "false", "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with open(tmp / "server.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail("server not ready in 60 s: " + (tmp / "server.log").read_text()[-2000:])
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def offline(page) -> list[str]:
    "Abort every request that leaves 127.0.0.1; the list of those refused."
    refused = []

    def route(r):
        if urlsplit(r.request.url).hostname == "127.0.0.1":
            return r.continue_()
        refused.append(r.request.url)
        return r.abort()

    page.route("**/*", route)
    return refused


@needs_browser
def test_swagger_ui_renders_offline(server, page):
    "Swagger UI draws the API's operations from packaged assets, with nothing fetched from outside."
    refused = offline(page)
    page.goto(server + "/docs")
    page.wait_for_selector(".opblock", timeout=20_000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert {"/predict", "/predict/batch", "/model"} <= {p.strip() for p in paths}, paths
    assert page.locator(".swagger-ui .info .title").inner_text().startswith("fashioncat")
    assert refused == []


@needs_browser
def test_redoc_renders_offline(server, page):
    "ReDoc lists the same operations, without Google's fonts or a CDN (only its 'powered by' badge is left out)."
    refused = offline(page)
    page.goto(server + "/redoc")
    page.get_by_text("/predict/batch").first.wait_for(timeout=20_000)
    assert page.locator("h1").first.inner_text().startswith("fashioncat")
    assert set(refused) <= {"https://cdn.redoc.ly/redoc/logo-mini.svg"}, refused


@needs_browser
def test_the_check_sees_a_cdn(page):
    "The offline route really refuses the outside: a page that asks a CDN has its request refused and listed."
    refused = offline(page)
    page.set_content('<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>')
    assert refused == ["https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"]
