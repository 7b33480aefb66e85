"""The merchandisers' review workflow, timed in a real browser (Debian's chromium through playwright) against a server
started here on 127.0.0.1 with the shipped model.

    .venv/bin/python bench/review_workflow.py                 # 500 photos processed, a 200-photo batch reviewed
    .venv/bin/python bench/review_workflow.py --process 100 --review 50 --out /tmp/quick.json

1. **Processing**: `--process` catalogue photos of Fashion-MNIST test images (every kind of `PHOTO_KINDS` in turn)
   uploaded as one batch; the server's processing time (the batch's creation to its last stored row) and the time
   from choosing the files to the last row on screen.
2. **Review by keyboard alone**: a `--review`-photo batch (other test images) from the upload to the exported CSV. In
   the "needs review" filter each row gets Enter (the model is right) or the digit of the true category, J turns the
   page; then F to the "all" filter, A accepts the rest, E downloads the CSV, which is read back. Each key's latency is
   the page's own measure: from the key's event to the next frame drawn after the queue changed; a save's latency runs
   from the key to the server's answer that it is committed.
Prints the figures and writes them as JSON (`--out`).
"""

import argparse
import csv
import io
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def photos(folder: Path, start: int, n: int) -> tuple[list[Path], list[int]]:
    "`n` catalogue photos of the test images from `start`, the kinds in turn; their files and true labels."
    from fashioncat.data import load_split
    from fashioncat.photos import PHOTO_KINDS, catalogue_photo

    x, y = load_split("test")
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(start, start + n):
        kind = PHOTO_KINDS[i % len(PHOTO_KINDS)]
        ext = {"transparent": "png", "exif": "jpg", "grey_bg": "jpg", "jpeg": "jpg"}.get(kind, kind)
        (p := folder / f"item-{i:05d}.{ext}").write_bytes(catalogue_photo(x[i], kind, seed=i))
        files.append(p)
    return files, [int(v) for v in y[start : start + n]]


def serve(model: str, data: Path, audit_share: float) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "FASHIONCAT_MODEL_PATH": model, "FASHIONCAT_DATA_DIR": str(data), "TMPDIR": str(data)}
    env |= {
        "FASHIONCAT_AUDIT_SHARE": str(audit_share),
        "FASHIONCAT_LOG_LEVEL": "WARNING",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    cmd = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    with open(data / "server.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    import httpx

    for _ in range(480):
        try:
            if httpx.get(url + "/ready", timeout=1).json().get("ui") == "ready":
                return proc, url
        except (httpx.HTTPError, ValueError):
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.25)
    proc.kill()
    sys.exit("review_workflow: the server did not start; see " + str(data / "server.log"))


def upload(page, url: str, files: list[Path]) -> tuple[str, float, float]:
    "Upload `files` as a batch: its id, seconds to the first row on screen, seconds until every row is processed."
    page.goto(url + "/ui/")
    page.locator("#fc-queue .fc-top").wait_for(timeout=60_000)
    t0 = time.perf_counter()
    page.locator("input[type=file]").first.set_input_files([str(f) for f in files])
    page.wait_for_function("window.fcState?.info?.done > 0", timeout=120_000, polling=20)
    first = time.perf_counter() - t0
    page.wait_for_function("window.fcState?.info?.status === 'ready'", timeout=300_000, polling=20)
    return page.evaluate("window.fcState.batch"), first, time.perf_counter() - t0


def processing_s(url: str, batch_id: str) -> float:
    "The server's processing time: the batch's creation to its last row stored."
    import httpx

    d = httpx.get(f"{url}/ui/review/batches/{batch_id}/rows", params={"filter": "all", "limit": 500}).json()
    last = max(r["updated_at"] for r in d["rows"])
    return last - d["batch"]["created_at"]


def stats(ms: list[float]) -> dict:
    a = np.asarray(ms, float)
    return {"n": int(a.size), "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p95_ms": round(float(np.percentile(a, 95)), 1), "max_ms": round(float(a.max()), 1)}  # fmt: skip


def review(page, url: str, files: list[Path], truth: list[int]) -> dict:
    "A batch from the upload to the exported CSV by keyboard alone; the figures."
    t0 = time.perf_counter()
    upload(page, url, files)
    keys = 0

    def press(key: str) -> None:
        nonlocal keys
        page.keyboard.press(key)
        keys += 1

    def wait_load(before: int) -> None:
        page.wait_for_function(f"window.fcState.loads > {before}", polling=10)

    while True:
        s = page.evaluate("(() => { const S = window.fcState; const r = S.rows[S.cur]; return {cur: S.cur, n: "
                          "S.rows.length, offset: S.offset, total: S.total, loads: S.loads, row: r && "
                          "{idx: r.idx, source: r.source, p: r.predicted_index}}; })()")  # fmt: skip
        row = s["row"]
        if row is not None and row["source"] == "model":
            t = truth[row["idx"]]
            press("Enter" if t == row["p"] else str((t + 1) % 10))
            if s["cur"] < s["n"] - 1:
                continue
        if s["offset"] + s["n"] >= s["total"]:
            break
        press("j")  # the last row of the page: the next page
        wait_load(s["loads"])
    page.evaluate("window.fcIdle()")  # every save answered
    while page.evaluate("window.fcState.filter") != "all":
        loads = page.evaluate("window.fcState.loads")
        press("f")
        wait_load(loads)
    press("a")
    page.locator("#fc-msg").filter(has_text="принято").wait_for(timeout=60_000)
    with page.expect_download() as dl:
        press("e")
    out = list(csv.DictReader(io.StringIO(Path(dl.value.path()).read_text(encoding="utf-8-sig"))))
    total = time.perf_counter() - t0
    classes = [c["en"] for c in page.evaluate("window.fcState.classes")]
    final = [classes.index(o["category"]) if o["category"] in classes else -1 for o in out]
    model = [classes.index(o["model_category"]) if o["model_category"] in classes else -1 for o in out]
    sources = {s: sum(o["source"] == s for o in out) for s in ("confirmed", "corrected", "not_a_product", "failed")}
    lat, saved = page.evaluate("window.fcState.latency"), page.evaluate("window.fcState.saved")
    return {
        "photos": len(files), "exported_rows": len(out), "keys": keys, "upload_to_export_s": round(total, 2),
        "key_latency": stats(lat), "save_latency": stats(saved), "sources": sources,
        "accuracy_model": round(float(np.mean(np.array(model) == truth)), 4),
        "accuracy_final": round(float(np.mean(np.array(final) == truth)), 4),
    }  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--process", type=int, default=500, help="photos in the processing batch")
    ap.add_argument("--review", type=int, default=200, help="photos in the batch reviewed by keyboard")
    ap.add_argument("--audit-share", type=float, default=0.02)
    ap.add_argument("--model", default=str(ROOT / "models" / "fashioncat-int8.onnx"))
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "review_workflow.json"))
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright

    load = os.getloadavg()[0]  # the machine may be shared: the figures are read against it
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        big, _ = photos(tmp / "process", 0, a.process)
        small, truth = photos(tmp / "review", 5000, a.review)
        proc, url = serve(a.model, tmp, a.audit_share)
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=a.chromium)
                page = browser.new_page(viewport={"width": 1280, "height": 800}, locale="ru-RU")
                page.add_init_script("localStorage.setItem('fc-reviewer', 'bench')")
                batch_id, first, ready = upload(page, url, big)
                proc_s = processing_s(url, batch_id)
                page = browser.new_page(viewport={"width": 1280, "height": 800}, locale="ru-RU")
                page.add_init_script("localStorage.setItem('fc-reviewer', 'bench')")
                rev = review(page, url, small, truth)
                browser.close()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    result = {
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "load_avg_1m_at_start": round(load, 1)},
        "model": Path(a.model).name,
        "processing": {"photos": a.process, "server_processing_s": round(proc_s, 2),
                       "photos_per_s": round(a.process / proc_s, 1), "upload_to_first_row_s": round(first, 2),
                       "upload_to_all_rows_s": round(ready, 2)},
        "review": rev,
    }  # fmt: skip
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    p, r = result["processing"], rev
    print(f"processing: {p['photos']} photos in {p['server_processing_s']} s on the server ({p['photos_per_s']}/s); "
          f"first row on screen {p['upload_to_first_row_s']} s, all rows {p['upload_to_all_rows_s']} s after choosing the files")  # fmt: skip
    print(f"review: {r['photos']} photos from upload to exported CSV in {r['upload_to_export_s']} s by {r['keys']} keys; "
          f"key latency p50 {r['key_latency']['p50_ms']} ms, p95 {r['key_latency']['p95_ms']} ms, max "
          f"{r['key_latency']['max_ms']} ms; save p95 {r['save_latency']['p95_ms']} ms; accuracy {r['accuracy_model']} "
          f"(model) -> {r['accuracy_final']} (final)")  # fmt: skip
    print(f"review_workflow: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
