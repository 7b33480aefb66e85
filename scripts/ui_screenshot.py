"""Take the README's screenshot of the merchandisers' UI (docs/ui.png) from a running server, with the shipped model.

    make serve PORT=8000 &                                   # the server, with the model in the repository
    .venv/bin/pip install playwright                         # not a project dependency: only this script uses it
    sudo apt-get install -y chromium                         # or `playwright install chromium` where the internet is reachable
    .venv/bin/python scripts/ui_screenshot.py --url http://127.0.0.1:8000/ui/ --out docs/ui.png

It dresses four Fashion-MNIST test images as catalogue photos (`fashioncat.photos.catalogue_photo`: white background,
larger, several formats), three the model is sure of and one it flags for review, uploads them in a headless Chromium
as a merchandiser would, presses the button and saves the page once the results are drawn.
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000/ui/", help="the UI of a running server")
    ap.add_argument("--out", default=str(ROOT / "docs" / "ui.png"))
    ap.add_argument("--model", default=str(ROOT / "models" / "fashioncat-int8.onnx"), help="the model the server runs")
    ap.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"),
                    help="a Chromium binary (default: on the PATH; else playwright's own)")  # fmt: skip
    ap.add_argument("--width", type=int, default=1280)
    a = ap.parse_args()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sys.exit("ui_screenshot: needs playwright: .venv/bin/pip install playwright")
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        files = photos(Path(tmp), Path(a.model))
        browser = pw.chromium.launch(executable_path=a.chromium) if a.chromium else pw.chromium.launch()
        page = browser.new_page(viewport={"width": a.width, "height": 900}, locale="ru-RU")
        page.goto(a.url, wait_until="load")  # not "networkidle": gradio keeps a heartbeat stream open
        page.get_by_role("button", name="Определить категории").wait_for(timeout=30_000)
        page.locator("input[type=file]").first.set_input_files([str(f) for f in files])
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
