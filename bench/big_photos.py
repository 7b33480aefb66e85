"""Memory under big uploads: bursts of large photos and of large JSON batches, the server's peak resident memory,
and the latency of small requests sent meanwhile.

A photo's pixels, not its bytes, set what decoding it costs: an 8000x5000 RGBA PNG of a product on a plain
background compresses to ~170 KB, well under the 10 MiB upload limit, and decodes to 160 MB. This starts the
service as `make serve` does (one worker, the UI mounted, MALLOC_ARENA_MAX=2 unless told otherwise), then:
`--bursts` bursts of `--n` such photos at once, and one burst of `--batches` JSON batches of about `--batch-mb` MiB
each, all while one client sends small photos one after another. It prints the server's peak RSS (VmHWM) beside the
memory budget, the answers' statuses (503: refused by admission control, with Retry-After) and the small requests'
p50/p95, idle and during the bursts.

    .venv/bin/python bench/big_photos.py --json bench/results/big_photos.json   # 3 x 20 photos, 12 x 60 MiB batches
    .venv/bin/python bench/big_photos.py --malloc-arena-max 0                   # glibc's default arenas, for comparison
"""

import argparse
import base64
import http.client
import io
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_test import HOST, Server, multipart_request, rss_bytes


def big_png(width: int, height: int) -> bytes:
    "A dark item filling the middle of a transparent RGBA frame, as PNG."
    a = np.zeros((height, width, 4), np.uint8)
    a[height // 5 : -height // 5, width // 4 : -width // 4] = (40, 40, 40, 255)
    b = io.BytesIO()
    Image.fromarray(a, "RGBA").save(b, "PNG")
    return b.getvalue()


def post(port: int, raw: bytes, out: list, i: int) -> None:
    "Send one prepared raw request; store (status, seconds, error code), or (0, seconds, the exception) if it broke."
    t0 = time.perf_counter()
    try:
        with socket.create_connection((HOST, port), timeout=300) as s:
            s.sendall(raw)
            resp = http.client.HTTPResponse(s)
            resp.begin()
            body = resp.read()
        out[i] = (resp.status, time.perf_counter() - t0, json.loads(body).get("error", ""))
    except (OSError, http.client.HTTPException, ValueError) as e:
        out[i] = (0, time.perf_counter() - t0, type(e).__name__)


def json_batch(port: int, mb: float) -> bytes:
    "A raw /predict/batch request: 64 incompressible RGB PNGs, base64 in JSON, about `mb` MiB in all."
    side = int((mb * 2**20 * 3 / 4 / 64 / 3) ** 0.5)
    rng = np.random.default_rng(0)
    b = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(b, "PNG", compress_level=1)
    item = {"image_base64": base64.b64encode(b.getvalue()).decode(), "filename": "noise.png"}
    payload = json.dumps({"images": [item] * 64}).encode()
    head = f"POST /predict/batch HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
    return (head + f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload


def burst(port: int, raw: bytes, n: int) -> list:
    "`n` copies of `raw` sent at once, each on its own connection; their (status, seconds, error)."
    answers: list = [None] * n
    threads = [threading.Thread(target=post, args=(port, raw, answers, i)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def small_client(port: int, raw: bytes, stop: threading.Event, out: list) -> None:
    "Small photos one after another on one keep-alive connection until `stop`: (status, seconds) each."
    s = socket.create_connection((HOST, port), timeout=60)
    try:
        while not stop.is_set():
            t0 = time.perf_counter()
            s.sendall(raw)
            resp = http.client.HTTPResponse(s)
            resp.begin()
            resp.read()
            out.append((resp.status, time.perf_counter() - t0))
            time.sleep(0.02)
    finally:
        s.close()


def pct(lat: list[float], q: float) -> float:
    return round(float(np.percentile(lat, q)) * 1000, 1) if lat else float("nan")


def summary(answers: list) -> dict:
    return {
        "statuses": {str(k): sum(a[0] == k for a in answers) for k in sorted({a[0] for a in answers})},
        "errors": sorted({a[2] for a in answers if a[2]}),
        "latency_s": {"min": round(min(a[1] for a in answers), 2), "max": round(max(a[1] for a in answers), 2)},
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=20, help="photos posted at once, per burst")
    p.add_argument("--bursts", type=int, default=3, help="bursts of photos, one after another")
    p.add_argument("--width", type=int, default=8000)
    p.add_argument("--height", type=int, default=5000)
    p.add_argument("--batches", type=int, default=12, help="JSON batches posted at once (0: none)")
    p.add_argument("--batch-mb", type=float, default=60, help="size of each JSON batch, MiB")
    p.add_argument("--malloc-arena-max", type=int, default=2, help="0: leave glibc's default")
    p.add_argument("--python", default=sys.executable, help="the server's interpreter")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)

    png = big_png(args.width, args.height)
    small = (Path(__file__).resolve().parents[1] / "app" / "examples" / "1_trouser.png").read_bytes()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False")
    env.pop("MALLOC_ARENA_MAX", None)
    if args.malloc_arena_max:
        env["MALLOC_ARENA_MAX"] = str(args.malloc_arena_max)
    srv = Server("fashioncat", "app.main:app", "/predict")
    log = Path(tempfile.mkdtemp(prefix="fashioncat-big-")) / "server.log"
    srv.start(args.python, 1, env, log)
    try:
        small_raw = multipart_request("/predict", srv.port, small, "small.png", "image/png")
        idle: list = []
        stop = threading.Event()
        t = threading.Thread(target=small_client, args=(srv.port, small_raw, stop, idle))
        t.start()
        time.sleep(3)
        stop.set()
        t.join()
        during: list = []
        stop = threading.Event()
        t = threading.Thread(target=small_client, args=(srv.port, small_raw, stop, during))
        t.start()
        t0 = time.perf_counter()
        raw = multipart_request("/predict", srv.port, png, "big.png", "image/png")
        photos = [a for _ in range(args.bursts) for a in burst(srv.port, raw, args.n)]
        batch_raw = json_batch(srv.port, args.batch_mb) if args.batches else b""
        batches = burst(srv.port, batch_raw, args.batches) if args.batches else []
        wall = time.perf_counter() - t0
        stop.set()
        t.join()
        del batch_raw
        time.sleep(1)
        health = http.client.HTTPConnection(HOST, srv.port, timeout=10)
        health.request("GET", "/ready")
        ready = health.getresponse().status
        res = {
            "photo": f"{args.width}x{args.height} RGBA PNG, {len(png):,} bytes",
            "n": args.n,
            "bursts": args.bursts,
            "batches": args.batches,
            "batch_mb": args.batch_mb,
            "malloc_arena_max": args.malloc_arena_max or "default",
            "memory_budget_mb": int(env.get("FASHIONCAT_MEMORY_BUDGET_MB", 340)),
            "idle_rss_mb": round(srv.rss_idle_mb),
            "peak_rss_mb": round(rss_bytes(srv.proc.pid, "VmHWM") / 2**20),
            "rss_after_mb": round(rss_bytes(srv.proc.pid) / 2**20),
            "photos": summary(photos),
            **({"json_batches": summary(batches)} if batches else {}),
            "small_idle": {
                "n": len(idle),
                "p50_ms": pct([a[1] for a in idle], 50),
                "p95_ms": pct([a[1] for a in idle], 95),
            },
            "small_during": {
                "n": len(during),
                "statuses": sorted({a[0] for a in during}),
                "p50_ms": pct([a[1] for a in during], 50),
                "p95_ms": pct([a[1] for a in during], 95),
            },
            "ready_after": ready,
            "wall_s": round(wall, 2),
        }
        # the earlier fields, kept for tests and readers of older results
        res["statuses"] = sorted({int(k) for k in res["photos"]["statuses"]})
        res["errors"] = res["photos"]["errors"]
    finally:
        srv.stop()
    batches_txt = (
        f"; {res['batches']} x {res['batch_mb']:g} MiB JSON batches at once: {res['json_batches']['statuses']}"
        if batches
        else ""
    )
    print(
        f"{res['bursts']} bursts of {res['n']} x {res['photo']} at once{batches_txt}, "
        f"MALLOC_ARENA_MAX={res['malloc_arena_max']}, memory budget {res['memory_budget_mb']} MB:\n"
        f"  server RSS idle {res['idle_rss_mb']} MB, peak {res['peak_rss_mb']} MB, after {res['rss_after_mb']} MB; "
        f"photos {res['photos']['statuses']} ({res['photos']['errors']})\n"
        f"  small requests p95: idle {res['small_idle']['p95_ms']} ms, during the bursts {res['small_during']['p95_ms']} ms "
        f"({res['small_during']['n']} requests, statuses {res['small_during']['statuses']}); /ready after: {ready}; "
        f"all answered in {res['wall_s']} s"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main()
