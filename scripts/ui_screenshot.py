"""Take the screenshots of the merchandisers' UI in docs/ from a running server, with the shipped model.

    make serve PORT=8000 &                                   # the server, with the model in the repository
    sudo apt-get install -y chromium                         # playwright drives the system's browser
    .venv/bin/python scripts/ui_screenshot.py --url http://127.0.0.1:8000/ui/     # docs/ui.png and docs/ui-*.png

docs/ui.png ("Отдельные фото"): four Fashion-MNIST test images dressed as catalogue photos
(`fashioncat.photos.catalogue_photo`: white background, larger, several formats), three the model is sure of and one it
flags for review, uploaded in a headless Chromium as a merchandiser would. docs/ui-queue.png ("Проверка партий"): a
batch of 120 such photos in the review queue at 1280x800, after a correction, a confirmation and "не товар" by
keyboard; docs/ui-all.png: the same batch in the "Все" filter; docs/ui-batches.png: the list of batches.
"""

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KINDS = ["jpeg", "png", "webp", "exif"]


def photos(folder: Path, model: Path) -> list[Path]:
    "Four catalogue-style photos of test images: three (of different classes) the model accepts, then one it flags."
    from fashioncat.data import CLASS_NAMES, load_split
    from fashioncat.photos import catalogue_photo
    from fashioncat.serving import Engine

    x, y = load_split("test")
    engine = Engine(model)
    chosen = {}  # slot -> (test index, photo); slots 0-2 accepted, slot 3 flagged for review
    for i in range(len(y)):
        sure = [y[j] for k, (j, _) in chosen.items() if k < 3]  # the classes of the accepted photos so far
        slots = [len(sure)] if len(sure) < 3 and y[i] not in sure else []
        for slot in slots + ([3] if 3 not in chosen else []):
            photo = catalogue_photo(x[i], KINDS[slot], seed=slot)
            if engine.predict_images([photo])[0]["needs_review"] == (slot == 3):
                chosen[slot] = (i, photo)
                break
        if len(chosen) == 4:
            break
    out = []
    for slot in range(4):
        i, photo = chosen[slot]
        ext = {"jpeg": "jpg", "exif": "jpg"}.get(KINDS[slot], KINDS[slot])
        p = folder / f"{CLASS_NAMES[y[i]].split('/')[0].lower().replace(' ', '-')}-{slot + 1}.{ext}"
        p.write_bytes(photo)
        out.append(p)
    return out


def batch_views(browser, url: str, folder: Path, docs: Path, n: int = 120) -> None:
    "docs/ui-queue.png, ui-all.png and ui-batches.png: a batch of `n` catalogue photos reviewed by keyboard."
    from fashioncat.data import load_split
    from fashioncat.photos import PHOTO_KINDS, catalogue_photo

    x, _ = load_split("test")
    files = []
    for i in range(n):
        kind = PHOTO_KINDS[i % 3]  # png, jpeg, webp
        (p := folder / f"art-{1000 + i}.{'jpg' if kind == 'jpeg' else kind}").write_bytes(
            catalogue_photo(x[i], kind, seed=i)
        )
        files.append(p)
    (p := folder / "price-list.pdf").write_bytes(b"%PDF-1.4 not a photo")
    files.append(p)
    page = browser.new_page(viewport={"width": 1280, "height": 800}, locale="ru-RU")
    page.add_init_script("localStorage.setItem('fc-reviewer', 'Мария')")
    page.goto(url, wait_until="load")
    page.locator("#fc-queue .fc-top").wait_for(timeout=30_000)
    page.locator("input[type=file]").first.set_input_files([str(f) for f in files])
    page.wait_for_function("window.fcState?.info?.status === 'ready'", timeout=120_000)
    state = page.evaluate("window.fcState.rows.map(r => r.predicted_index)")
    page.keyboard.press(str((state[0] + 2) % 10 + 1)[-1])  # a correction (another class), then a confirmation
    page.keyboard.press("Enter")
    page.keyboard.press("n")
    page.locator("#fc-msg").filter(has_text="не товар").wait_for(timeout=10_000)
    page.wait_for_timeout(500)  # the thumbnails
    page.screenshot(path=str(docs / "ui-queue.png"))
    page.get_by_role("button", name="Все").click()
    page.wait_for_function("window.fcState.filter === 'all' && window.fcState.loads > 1")
    page.wait_for_timeout(500)
    page.screenshot(path=str(docs / "ui-all.png"))
    page = browser.new_page(viewport={"width": 1280, "height": 800}, locale="ru-RU")
    page.goto(url, wait_until="load")
    page.locator("#fc-batches li").first.wait_for(timeout=30_000)
    page.screenshot(path=str(docs / "ui-batches.png"))
    print(f"ui_screenshot: {docs / 'ui-queue.png'}, {docs / 'ui-all.png'}, {docs / 'ui-batches.png'} ({n + 1} files)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000/ui/", help="the UI of a running server")
    ap.add_argument("--out", default=str(ROOT / "docs" / "ui.png"))
    ap.add_argument("--model", default=str(ROOT / "models" / "fashioncat-int8.onnx"), help="the model the server runs")
    ap.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"),
                    help="a Chromium binary (default: on the PATH; else playwright's own)")  # fmt: skip
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--views", choices=["all", "single", "batch"], default="all")
    a = ap.parse_args()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sys.exit("ui_screenshot: needs playwright: .venv/bin/pip install playwright")
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=a.chromium) if a.chromium else pw.chromium.launch()
        if a.views in ("all", "batch"):
            batch_views(browser, a.url, Path(tmp), Path(a.out).parent)
        if a.views == "batch":
            browser.close()
            return 0
        files = photos(Path(tmp), Path(a.model))
        page = browser.new_page(viewport={"width": a.width, "height": 900}, locale="ru-RU")
        page.goto(a.url, wait_until="load")  # not "networkidle": gradio keeps a heartbeat stream open
        page.get_by_role("tab", name="Отдельные фото").click()
        page.get_by_role("button", name="Определить категории").wait_for(timeout=30_000)
        page.locator("input[type=file]").last.set_input_files([str(f) for f in files])  # the tab's, not the batch's
        page.wait_for_timeout(1500)  # the upload, before the button reads the file box
        page.get_by_role("button", name="Определить категории").click()
        page.get_by_text("Обработано фото").wait_for(timeout=30_000)
        page.wait_for_timeout(1500)  # the rows' images
        page.screenshot(path=a.out, full_page=True)
        browser.close()
    print(f"ui_screenshot: {a.out} ({', '.join(f.name for f in files)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
