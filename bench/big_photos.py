"""Memory under big uploads: N large photos posted to /predict at once, and the server's peak resident memory.

A photo's pixels, not its bytes, set what decoding it costs: an 8000x5000 RGBA PNG of a product on a plain
background compresses to ~170 KB, well under the 10 MiB upload limit, and decodes to 160 MB. This starts the
service as `make serve` does (one worker, the UI mounted, MALLOC_ARENA_MAX=2 unless told otherwise), posts `--n`
such photos at once, and prints the server's peak RSS (VmHWM) with the answers' statuses and latencies.

    .venv/bin/python bench/big_photos.py                       # 8 photos of 8000x5000 at once
    .venv/bin/python bench/big_photos.py --malloc-arena-max 0  # glibc's default arenas, for comparison
"""

import argparse
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
    "Send one prepared raw request; store (status, seconds, error code)."
    t0 = time.perf_counter()
    with socket.create_connection((HOST, port), timeout=300) as s:
        s.sendall(raw)
        resp = http.client.HTTPResponse(s)
        resp.begin()
        body = resp.read()
    out[i] = (resp.status, time.perf_counter() - t0, json.loads(body).get("error", ""))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=8, help="photos posted at once")
    p.add_argument("--width", type=int, default=8000)
    p.add_argument("--height", type=int, default=5000)
    p.add_argument("--malloc-arena-max", type=int, default=2, help="0: leave glibc's default")
    p.add_argument("--python", default=sys.executable, help="the server's interpreter")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)

    png = big_png(args.width, args.height)
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False")
    env.pop("MALLOC_ARENA_MAX", None)
    if args.malloc_arena_max:
        env["MALLOC_ARENA_MAX"] = str(args.malloc_arena_max)
    srv = Server("fashioncat", "app.main:app", "/predict")
    log = Path(tempfile.mkdtemp(prefix="fashioncat-big-")) / "server.log"
    srv.start(args.python, 1, env, log)
    try:
        raw = multipart_request("/predict", srv.port, png, "big.png", "image/png")
        answers: list = [None] * args.n
        t0 = time.perf_counter()
        threads = [threading.Thread(target=post, args=(srv.port, raw, answers, i)) for i in range(args.n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        time.sleep(1)
        res = {
            "photo": f"{args.width}x{args.height} RGBA PNG, {len(png):,} bytes",
            "n": args.n,
            "malloc_arena_max": args.malloc_arena_max or "default",
            "idle_rss_mb": round(srv.rss_idle_mb),
            "peak_rss_mb": round(rss_bytes(srv.proc.pid, "VmHWM") / 2**20),
            "rss_after_mb": round(rss_bytes(srv.proc.pid) / 2**20),
            "statuses": sorted({a[0] for a in answers if a}),
            "errors": sorted({a[2] for a in answers if a and a[2]}),
            "latency_s": {"min": round(min(a[1] for a in answers), 2), "max": round(max(a[1] for a in answers), 2)},
            "wall_s": round(wall, 2),
        }
    finally:
        srv.stop()
    print(
        f"{res['n']} x {res['photo']} at once, MALLOC_ARENA_MAX={res['malloc_arena_max']}: "
        f"server RSS idle {res['idle_rss_mb']} MB, peak {res['peak_rss_mb']} MB, after {res['rss_after_mb']} MB; "
        f"statuses {res['statuses']}, latency {res['latency_s']['min']}-{res['latency_s']['max']} s, "
        f"all answered in {res['wall_s']} s"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main()
